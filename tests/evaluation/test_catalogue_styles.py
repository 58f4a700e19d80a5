"""rrnet-eval reads catalogues in either column style and in every catalogue format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrnet.cli.eval import main
from rrnet.evaluation.toy import toy_tables
from rrnet.inference.writers import write_catalogue
from rrnet.io import write_table

pytest.importorskip("astropy")


def _metrics(root: Path, catalogue: Path, name: str) -> dict:
    args = ["--catalog", str(catalogue), "--labels", str(root / "labels.csv")]
    assert main([*args, "--out", str(root / name), "--no-figures"]) == 0
    return json.loads((root / name / "metrics.json").read_text())["metrics"]


def test_identifier_ecsv_and_votable_give_the_paper_parquet_metrics(tmp_path: Path) -> None:
    catalog, labels = toy_tables(30, seed=2)
    write_table(labels, tmp_path / "labels.csv")
    write_table(catalog, tmp_path / "paper.parquet")
    want = _metrics(tmp_path, tmp_path / "paper.parquet", "paper")
    assert want  # the toy catalogue has labels to evaluate
    for fmt, suffix in (("ecsv", "ecsv"), ("votable", "vot"), ("fits", "fits")):
        path = write_catalogue(catalog, tmp_path / f"ident.{suffix}", fmt, {})
        got = _metrics(tmp_path, path, fmt)
        assert got == want, fmt


def test_reference_labels_in_any_case_give_the_same_metrics(tmp_path: Path) -> None:
    """A survey's reference table (``TEFF``, ``LOGG``, ``FE_H``) is read like ``Teff[K]``."""
    from rrnet.labels import IDENTIFIER_NAMES

    catalog, labels = toy_tables(30, seed=2)
    write_table(catalog, tmp_path / "cat.parquet")
    write_table(labels, tmp_path / "labels.csv")
    want = _metrics(tmp_path, tmp_path / "cat.parquet", "paper")
    upper = {c: IDENTIFIER_NAMES[c].upper() for c in labels.columns if c in IDENTIFIER_NAMES}
    assert upper  # the toy reference has labels
    shouted = tmp_path / "upper"
    shouted.mkdir()
    write_table(labels.rename(upper), shouted / "labels.csv")
    write_table(catalog, shouted / "cat.parquet")
    assert _metrics(shouted, shouted / "cat.parquet", "upper") == want


def test_overview_reads_a_catalogue_in_the_default_column_style(tmp_path: Path) -> None:
    """``rrnet-eval overview`` of what ``rrnet-infer`` writes by default (``teff``,
    ``teff_err``, ...) is the overview of the same catalogue in the paper's names."""
    catalog, _ = toy_tables(30, seed=2)
    write_table(catalog, tmp_path / "paper.parquet")
    ident = write_catalogue(catalog, tmp_path / "ident.parquet", "parquet", {})
    for name, path in (("paper", tmp_path / "paper.parquet"), ("ident", ident)):
        assert main(["overview", str(path), "--out", str(tmp_path / name)]) == 0
    summaries = [
        json.loads((tmp_path / n / "summary.json").read_text()) for n in ("paper", "ident")
    ]
    # the outputs are named relative to the report folder, so the two agree whole (the
    # absolute paths went stale when a report was moved)
    assert summaries[0]["outputs"] == {"page": "index.html", "counts": "summary.json"}
    assert summaries[0] == summaries[1]
    pages = [(tmp_path / n / "index.html").read_text() for n in ("paper", "ident")]
    assert pages[0].count("<img") == pages[1].count("<img") > 0


@pytest.mark.parametrize("fmt", ["parquet", "fits"])
def test_overview_warns_of_little_xfe_skill_recorded_in_the_provenance(
    tmp_path: Path, fmt: str
) -> None:
    """The checkpoints' [X/Fe] skill travels in the catalogue's provenance: the overview
    says which abundances are mostly [Fe/H] and a trend, and only those."""
    catalog, _ = toy_tables(30, seed=2)
    skills = {"MgH": 0.05, "CH": 0.8, "NoSuchH": 0.0}  # only labels of the catalogue count
    provenance = {"rrnet.checkpoints": json.dumps([{"path": "ck", "xfe_skill": skills}])}
    for name, prov in (("low", provenance), ("none", {})):
        path = write_catalogue(catalog, tmp_path / f"{name}.{fmt}", fmt, prov)
        assert main(["overview", str(path), "--out", str(tmp_path / name)]) == 0
    low, none = ((tmp_path / n / "index.html").read_text() for n in ("low", "none"))
    warning = low.split("<b>[X/Fe]</b>")[1].split("</div>")[0]
    assert "[Mg/Fe] 0.05" in warning and "[C/Fe]" not in warning and "NoSuch" not in warning
    assert "<b>[X/Fe]</b>" not in none


def test_overview_says_why_the_kiel_diagram_is_missing(tmp_path: Path) -> None:
    """With no recommended row (e.g. every real spectrum flagged SYNTHETIC_DOMAIN) the
    Kiel and [X/Fe] figures cannot be drawn; the page says so instead of leaving them out."""
    import polars as pl

    catalog, _ = toy_tables(5, seed=3)
    write_table(catalog.with_columns(pl.lit(0).cast(catalog["flag"].dtype).alias("flag")),
                tmp_path / "none.parquet")  # fmt: skip
    assert main(["overview", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "o")]) == 0
    page = (tmp_path / "o" / "index.html").read_text()
    assert "Not drawn: no row is recommended" in page and "kiel.png" not in page


def test_overview_of_a_catalogue_with_a_label_no_row_has(tmp_path: Path) -> None:
    """An SP-only checkpoint leaves the 14 abundance columns null: their σ-S/N panels had
    nothing to log-scale (matplotlib raised, exit 2, no page); they say 'no values'."""
    import polars as pl

    catalog, _ = toy_tables(20, seed=3)
    empty = [c for c in catalog.columns if c.startswith("CH")]
    assert empty  # the carbon columns: value, error and what else the toy has
    catalog = catalog.with_columns(pl.lit(None, dtype=catalog[c].dtype).alias(c) for c in empty)
    write_table(catalog, tmp_path / "sp.parquet")
    assert main(["overview", str(tmp_path / "sp.parquet"), "--out", str(tmp_path / "o")]) == 0
    assert "sigma" in (tmp_path / "o" / "index.html").read_text()


def test_overview_is_locked_like_every_output(tmp_path: Path, capsys) -> None:
    from rrnet.utils.lock import output_lock

    catalog, _ = toy_tables(5, seed=3)
    write_table(catalog, tmp_path / "c.parquet")
    with output_lock(tmp_path / "o", directory=True):
        assert main(["overview", str(tmp_path / "c.parquet"), "--out", str(tmp_path / "o")]) == 75
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use by" in err


def test_reference_minus_9999_is_missing(tmp_path: Path) -> None:
    """A reference value of -9999 (a survey's "not measured") counts as missing, as an
    empty cell does, not as a -9999 K star with a 10,000 K residual."""
    import polars as pl

    catalog, labels = toy_tables(30, seed=2)
    write_table(catalog, tmp_path / "cat.parquet")
    holes = pl.Series([i % 5 == 0 for i in range(labels.height)])
    empty = labels.with_columns(
        pl.when(holes).then(None).otherwise(pl.col(c)).alias(c) for c in ("Teff[K]", "FeH")
    )
    write_table(empty, tmp_path / "labels.csv")
    want = _metrics(tmp_path, tmp_path / "cat.parquet", "empty")
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    # -9999, and a converted -9999 (a missing [Fe/H] after arithmetic)
    filled = empty.with_columns(
        pl.col("Teff[K]").fill_null(-9999.0), pl.col("FeH").fill_null(-9999.2)
    )
    write_table(filled, sentinel / "labels.csv")
    write_table(catalog, sentinel / "cat.parquet")
    assert _metrics(sentinel, sentinel / "cat.parquet", "sentinel") == want
    # text that is no number ("n/a"): missing too (it stopped the report with a polars error)
    text = tmp_path / "text"
    text.mkdir()
    words = empty.with_columns(
        pl.col(c).cast(pl.String).fill_null("n/a") for c in ("Teff[K]", "FeH")
    )
    write_table(words, text / "labels.csv")
    write_table(catalog, text / "cat.parquet")
    assert _metrics(text, text / "cat.parquet", "text") == want


def test_reference_key_in_another_case_joins_and_a_bad_key_is_one_line(tmp_path: Path, capsys):
    """--key star_id finds a reference table's STAR_ID; a key value the catalogue's type
    cannot hold is a one-line usage error (it was an unexpected polars error)."""
    import polars as pl

    catalog, labels = toy_tables(30, seed=2)
    write_table(catalog, tmp_path / "cat.parquet")
    write_table(labels, tmp_path / "labels.csv")
    want = _metrics(tmp_path, tmp_path / "cat.parquet", "lower")
    upper = tmp_path / "upper"
    upper.mkdir()
    write_table(labels.rename({"star_id": "STAR_ID"}), upper / "labels.csv")
    write_table(catalog, upper / "cat.parquet")
    assert _metrics(upper, upper / "cat.parquet", "upper") == want
    text = labels.with_columns(pl.col("star_id").cast(pl.Utf8) + "x")
    write_table(text, tmp_path / "text.csv")
    args = ["--catalog", str(tmp_path / "cat.parquet"), "--labels", str(tmp_path / "text.csv")]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "bad"), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "key column star_id" in err[0] and "not a catalogue" in err[0]


def test_labels_without_a_reference_are_named(tmp_path: Path, capsys) -> None:
    """Predicted labels the reference table lacks (an [X/Fe] table) are named, not
    silently dropped from the report."""
    catalog, labels = toy_tables(30, seed=2)
    write_table(catalog, tmp_path / "cat.parquet")
    reference = labels.drop("MgH").with_columns(labels["MgH"].alias("MG_FE"))
    write_table(reference, tmp_path / "labels.csv")
    capsys.readouterr()
    _metrics(tmp_path, tmp_path / "cat.parquet", "report")
    assert "Not evaluated, no reference column: [Mg/H]" in capsys.readouterr().err


def test_the_overview_names_low_xfe_skills_in_label_order_and_only_figures_it_draws(
    tmp_path: Path,
) -> None:
    """The overview listed [X/Fe] skills alphabetically (infer and eval use the labels'
    periodic order), printed "[Cr/Fe] -0.00", and spoke of "the [X/Fe] figures below"
    when no figure was drawn (no recommended row)."""
    import polars as pl

    from rrnet.labels import ALL_LABELS
    from rrnet.models.xfe_skill import xfe_name

    catalog, _ = toy_tables(20, seed=2)
    skills = {"CrH": -0.001, "AlH": 0.1, "CH": 0.2, "MgH": 0.05}  # alphabetical
    provenance = {"rrnet.checkpoints": json.dumps([{"path": "ck", "xfe_skill": skills}])}
    none = catalog.with_columns(pl.lit(0).cast(catalog["flag"].dtype).alias("flag"))
    for name, table in (("some", catalog), ("none", none)):
        write_catalogue(table, tmp_path / f"{name}.parquet", "parquet", provenance)
        assert (
            main(["overview", str(tmp_path / f"{name}.parquet"), "--out", str(tmp_path / name)])
            == 0
        )
    some, no_figures = ((tmp_path / n / "index.html").read_text() for n in ("some", "none"))
    warning = some.split("<b>[X/Fe]</b>")[1].split("</div>")[0]
    order = [xfe_name(lb) for lb in ALL_LABELS if lb in skills]
    assert [warning.index(name) for name in order] == sorted(warning.index(n) for n in order)
    assert "[Cr/Fe] 0.00" in warning and "-0.00" not in warning
    assert "figures below" in warning
    assert "figures below" not in no_figures.split("<b>[X/Fe]</b>")[1].split("</div>")[0]
