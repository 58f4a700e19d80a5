"""Which store rows train the networks, with which labels: the join and the row filters.

Rules (issue 6): rows whose preprocessing failed (``status != "ok"``) are always
excluded, rows failing the paper's quality cuts (``quality_ok`` false) by default; the
labels table is joined on a key column (each key at most once in it); a missing label
(NaN/null) is masked out of the loss, and a row is dropped only when *all* its labels
are missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from rrnet.io.catalog import key_renames
from rrnet.labels import (
    ALL_LABELS,
    GROUPS,
    MISSING_AT_OR_BELOW,
    catalogue_label,
    label_columns,
    label_spellings,
    missing_labels,
)

RV_LABEL = "rv"
"""Name of the extra predicted label of the RRNet-ur variant (km/s, from the manifest)."""


def label_groups() -> dict[str, tuple[str, ...]]:
    """``{"SP": ..., "CA": ..., "all": ...}``: the paper's groups (method §4)."""
    return {**GROUPS, "all": ALL_LABELS}


def resolve_labels(group: str | Sequence[str]) -> list[str]:
    """Label names for a group name (SP, CA, all) or a comma list / sequence of names and
    groups (``SP,MgH``); catalogue labels in either column style and any case become their
    internal names (:func:`rrnet.labels.catalogue_label`: ``teff`` -> ``Teff[K]``)."""
    groups = label_groups()
    if isinstance(group, str):
        names = [g.strip() for g in group.split(",") if g.strip()]
    else:
        names = [str(g) for g in group]
    names = [m for n in names for m in groups.get(n, (n,))]  # SP,MgH
    names = [catalogue_label(n) for n in names]
    if not names:
        raise ValueError("no labels to fit")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate label names in {names}")
    return names


@dataclass
class TrainingRows:
    """The usable rows: manifest row numbers, labels ``[n, L]`` (NaN = missing), star ids."""

    rows: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    star_ids: np.ndarray
    id_columns: dict[str, np.ndarray]
    counts: dict[str, int] = field(default_factory=dict)


def _some_columns(columns: Sequence[str], most: int = 12) -> str:
    """A table's column names for a message; a survey's table may have hundreds."""
    shown = ", ".join(columns[:most])
    return shown if len(columns) <= most else f"{shown}, ... ({len(columns)} in all)"


def _require(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} has no column(s) {', '.join(missing)} (it has: {_some_columns(frame.columns)})"
        )


def _require_labels(labels_table: pl.DataFrame, fitted: Sequence[str], key: Sequence[str]) -> None:
    """Refuse a labels table without a column for a fitted label, naming the label as the
    user may spell it (``MgH``, ``mg_h``, ``MG_H``) and the table's own column names."""
    renames = label_columns(labels_table.columns, fitted, key)
    found = set(renames.values()) | set(labels_table.columns)
    missing = [name for name in fitted if name not in found]
    if missing:
        raise ValueError(
            f"the labels table has no column for {'; '.join(map(label_spellings, missing))} "
            f"(it has: {_some_columns(labels_table.columns)})"
            f"{_xfe_hint(labels_table.columns)}{_asked_xfe_hint(missing)}"
        )


def select_rows(
    manifest: pl.DataFrame,
    labels_table: pl.DataFrame,
    label_names: Sequence[str],
    *,
    key: Sequence[str] = ("star_id",),
    star_column: str = "star_id",
    include_flagged: bool = False,
    predict_rv: bool = False,
    rv_column: str = "rv",
) -> TrainingRows:
    """Join ``labels_table`` to the store ``manifest`` on ``key`` and apply the row rules.

    With ``predict_rv`` (RRNet-ur) the label ``rv`` is appended, taken from the
    manifest's ``rv_column``.
    """
    key = [_manifest_name(manifest, k) for k in key]  # --key OBSID for the store's obsid
    names = list(label_names)
    fitted = [n for n in names if not (predict_rv and n == RV_LABEL)]
    if predict_rv and RV_LABEL not in names:
        names.append(RV_LABEL)
    _require_labels(labels_table, fitted, key)
    labels_table = labels_table.rename(key_renames(labels_table.columns, key))
    # the key, before the labels are renamed: the message lists the table's own names
    _require(labels_table, key, "the labels table")
    labels_table = labels_table.rename(label_columns(labels_table.columns, fitted, key))
    counts: dict[str, Any] = {"manifest_rows": manifest.height}
    labels_table = _keyed_rows(labels_table, key, counts)
    _check_tables(manifest, labels_table, key, rv_column if predict_rv else None)
    labels_table, key_problem = _matching_keys(labels_table, manifest, key, counts)
    counts["non_numeric"] = _non_numeric(labels_table, fitted)
    ok = _usable_rows(manifest, include_flagged, counts)
    joined = _join_labels(ok, labels_table, key, fitted, star_column)
    counts["without_labels"] = ok.height - joined.height
    if predict_rv:
        joined = joined.with_columns(
            pl.col(rv_column).cast(pl.Float64, strict=False).alias(f"__label__{RV_LABEL}")
        )
    label_cols = [f"__label__{n}" for n in names]
    values = joined.select(label_cols).to_numpy().astype(np.float64)
    with np.errstate(invalid="ignore"):  # -9999 (also after arithmetic): not measured
        sentinel = values <= MISSING_AT_OR_BELOW
    values[missing_labels(values)] = np.nan
    has_any = ~np.all(np.isnan(values), axis=1)
    counts["all_labels_missing"] = int((~has_any).sum())
    # in the rows used, as the message says (rows with no label at all are not used)
    counts["missing_sentinels"] = int(sentinel[has_any].sum())
    joined = joined.filter(pl.Series(has_any))
    values = values[has_any]
    if star_column not in joined.columns:
        raise ValueError(f"no star id column {star_column!r} in the manifest or labels table")
    stars = joined.get_column(star_column)
    if stars.null_count():
        raise ValueError(f"{stars.null_count()} usable rows have no {star_column!r}")
    counts["used"] = joined.height
    counts["missing_per_label"] = {
        n: int(k) for n, k in zip(names, np.isnan(values).sum(axis=0), strict=True) if k
    }
    if joined.height == 0:
        raise ValueError(f"no usable rows: {describe_counts(counts)}{key_problem}")
    ids = {c: joined.get_column(c).to_numpy() for c in _ID_COLUMNS if c in joined.columns}
    return TrainingRows(
        rows=joined.get_column("row").to_numpy().astype(np.int64),
        labels=values,
        label_names=names,
        star_ids=stars.to_numpy(),
        id_columns=ids,
        counts=counts,
    )


def _manifest_name(manifest: pl.DataFrame, name: str) -> str:
    """The manifest's own spelling of a key column named in another case, else ``name``."""
    if name in manifest.columns:
        return name
    same = [c for c in manifest.columns if c.lower() == name.lower()]
    return same[0] if len(same) == 1 else name


def _keyed_rows(labels_table: pl.DataFrame, key: list[str], counts: dict[str, Any]) -> pl.DataFrame:
    """Label rows with every key present (string keys stripped of blanks); the others are
    counted (``labels_without_key``), not mistaken for one repeated empty key."""
    present = [k for k in key if k in labels_table.columns]
    text = [k for k in present if labels_table.schema[k] == pl.String]
    labels_table = labels_table.with_columns(pl.col(text).str.strip_chars().replace("", None))
    kept = labels_table.drop_nulls(present)
    counts["labels_rows"] = labels_table.height
    counts["labels_without_key"] = labels_table.height - kept.height
    return kept


def _matching_keys(
    labels_table: pl.DataFrame, manifest: pl.DataFrame, key: list[str], counts: dict[str, Any]
) -> tuple[pl.DataFrame, str]:
    """The labels table with its keys of the manifest's types; counts of the rows whose key
    is not of that type (``labels_bad_key``) or names no store row (``labels_unmatched``),
    and a sentence on the key for the error when nothing matches."""
    converted = []
    for k in key:
        want, have = manifest.schema[k], labels_table.schema[k]
        column = pl.col(k)
        if want != have:
            if have.is_float() and (want.is_integer() or want == pl.String):
                whole = column.is_null() | (column == column.floor())
                column = pl.when(whole).then(column.cast(pl.Int64, strict=False))  # 3.0 -> 3
            column = column.cast(want, strict=False)
        converted.append(column.alias(k))
    cast = labels_table.with_columns(converted)
    bad = cast.select(pl.any_horizontal(pl.col(key).is_null())).to_series()
    counts["labels_bad_key"] = int(bad.sum())
    problem = ""
    if counts["labels_bad_key"]:
        example = labels_table.filter(bad).select(key).row(0)
        problem = (
            f"; {counts['labels_bad_key']} label keys are not of the store's types "
            f"({', '.join(f'{k}: {manifest.schema[k]}' for k in key)}), e.g. {example!r}"
        )
    cast = cast.filter(~bad)
    found = cast.join(manifest.select(key).unique(), on=key, how="semi")
    counts["labels_unmatched"] = cast.height - found.height
    if counts["labels_unmatched"] and not problem:
        keyed = manifest.select(key).drop_nulls()
        ours = keyed.row(0) if keyed.height else ()
        theirs = cast.join(found.select(key), on=key, how="anti").select(key).row(0)
        problem = (
            f"; e.g. the labels' key {theirs!r} is no store row's (the store's look like "
            f"{ours!r}: check --key and the ids)"
        )
    return found, problem


def _non_numeric(labels_table: pl.DataFrame, fitted: list[str]) -> dict[str, int]:
    """Per label, the cells that hold something other than a number (``n/a``): read as
    missing, and counted so that the log says so."""
    out = {}
    for name in fitted:
        column = labels_table.get_column(name)
        if column.dtype.is_numeric():
            continue
        text = column.cast(pl.String).str.strip_chars().replace("", None)
        number = text.cast(pl.Float64, strict=False)
        if lost := int((text.is_not_null() & number.is_null()).sum()):
            out[name] = lost
    return out


def _xfe_hint(columns: list[str]) -> str:
    """A hint when a labels table holds [X/Fe] (``MG_FE``) where [X/H] is needed."""
    xfe = [c for c in columns if c.lower().endswith("_fe") and c.lower() != "fe_fe"]
    if not xfe:
        return ""
    return (
        f"; it has [X/Fe] columns ({', '.join(xfe[:4])}{', ...' if len(xfe) > 4 else ''}): "
        "rrnet's abundances are [X/H] = [X/Fe] + [Fe/H] (docs/training.md)"
    )


def _asked_xfe_hint(asked: Sequence[str]) -> str:
    """A hint when a wanted label is spelled like an [X/Fe] (``--group MG_FE``): rrnet's
    abundance labels are [X/H], and the user may not have meant a label of their own."""
    xfe = {f"{x.lower()}_fe": x for x in (name[:-1] for name in GROUPS["CA"])}
    hits = [(n, xfe[n.lower()]) for n in asked if n.lower() in xfe]
    if not hits:
        return ""
    name, element = hits[0]
    return (
        f"; {name} reads as [{element}/Fe], but rrnet fits [X/H]: ask for {element}H "
        f"(a table's [{element}/Fe] + [Fe/H]; docs/training.md)"
    )


def _check_tables(
    manifest: pl.DataFrame,
    labels_table: pl.DataFrame,
    key: list[str],
    rv_column: str | None,
) -> None:
    """Refuse tables that lack the needed columns or repeat a key in the labels (their
    key and label columns: :func:`select_rows` checked them before renaming)."""
    _require(manifest, [*key, "row", "status"], "the store manifest")
    if rv_column is not None:
        _require(manifest, [rv_column], "the store manifest")
    dup = labels_table.select(key).is_duplicated()
    if dup.any():
        example = labels_table.filter(dup).select(key).row(0, named=True)
        shown = ", ".join(f"{k} = {v!r}" for k, v in example.items())
        raise ValueError(
            f"the labels table has {int(dup.sum())} rows with a repeated key ({shown})"
        )


def _usable_rows(
    manifest: pl.DataFrame, include_flagged: bool, counts: dict[str, Any]
) -> pl.DataFrame:
    """Manifest rows that preprocessed fine (and pass the quality cuts unless
    ``include_flagged``); the exclusions are counted into ``counts``."""
    ok = manifest.filter(pl.col("status") == "ok")
    counts["failed_preprocessing"] = manifest.height - ok.height
    if "quality_ok" in ok.columns and not include_flagged:
        kept = ok.filter(pl.col("quality_ok").fill_null(False))
        counts["quality_flagged"] = ok.height - kept.height
        ok = kept
    else:
        counts["quality_flagged"] = 0
    return ok


def _join_labels(
    ok: pl.DataFrame,
    labels_table: pl.DataFrame,
    key: list[str],
    fitted: list[str],
    star_column: str,
) -> pl.DataFrame:
    """``ok`` rows with their labels as float ``__label__<name>`` columns (inner join), and
    the star column from the labels table when the manifest has none (``APOGEE_ID``)."""
    star = [star_column] if star_column in labels_table.columns else []
    star = [c for c in star if c not in ok.columns and c not in key]
    right = labels_table.select(
        [
            *key,
            *star,
            *[_as_number(labels_table, n).alias(f"__label__{n}") for n in fitted],
        ]
    )
    return ok.join(right, on=key, how="inner", maintain_order="left")


def _as_number(table: pl.DataFrame, name: str) -> pl.Expr:
    """A label column as float (numbers unchanged); text that is no number (``n/a``) is
    null, text with blanks around a number is that number."""
    if table.schema[name].is_numeric():
        return pl.col(name).cast(pl.Float64)
    return pl.col(name).cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)


_ID_COLUMNS = ("obsid", "star_id", "filename", "extname_blue", "extname_red", "snr_blue", "snr_red")


PLAUSIBLE_MEDIANS: dict[str, tuple[float, float]] = {
    "Teff[K]": (2500.0, 50000.0),
    "Logg": (-1.0, 6.5),
    **{label: (-5.0, 1.5) for label in ALL_LABELS if label not in ("Teff[K]", "Logg")},
}
"""Where the median of a catalogue label's training values lies for stars in the units the
catalogue uses (K, dex, [X/H]); outside, the column is in other units ([X/Fe], kK)."""


def implausible_labels(labels: np.ndarray, names: Sequence[str]) -> list[str]:
    """Sentences on catalogue labels whose median lies outside :data:`PLAUSIBLE_MEDIANS`
    (Teff in kK, log g in cgs units, [X/H] in per cent): trained as they are, their
    predictions would carry the table's units under the catalogue's."""
    out = []
    for j, name in enumerate(names):
        column = labels[:, j]
        column = column[~np.isnan(column)]
        if name not in PLAUSIBLE_MEDIANS or column.size == 0:
            continue
        low, high = PLAUSIBLE_MEDIANS[name]
        median = float(np.median(column))
        if not low <= median <= high:
            out.append(f"{name} has median {median:g}, outside {low:g}..{high:g}")
    return out


def describe_counts(counts: dict[str, Any]) -> str:
    """One log line about how many rows were used and why others were not, and what of
    the labels table was left out (rows without a key, keys of another type or of no store
    row, cells that are no number, -9999)."""
    parts = [
        f"{counts.get('used', 0)} of {counts['manifest_rows']} store rows used "
        f"({counts.get('failed_preprocessing', 0)} failed preprocessing, "
        f"{counts.get('quality_flagged', 0)} quality-flagged, "
        f"{counts.get('without_labels', 0)} without labels, "
        f"{counts.get('all_labels_missing', 0)} with every label missing)"
    ]
    left_out = {
        "labels_without_key": "have no key",
        "labels_bad_key": "have a key not of the store's type",
        "labels_unmatched": "match no store row",
    }
    said = [f"{counts[k]} {what}" for k, what in left_out.items() if counts.get(k)]
    if said:
        parts.append(f"of the labels table's {counts['labels_rows']} rows {', '.join(said)}")
    if counts.get("non_numeric"):
        cells = ", ".join(f"{n} {k}" for n, k in counts["non_numeric"].items())
        parts.append(f"cells of the labels table that are no number, read as missing: {cells}")
    if counts.get("missing_sentinels"):  # counted in the joined spectra, as the next part
        parts.append(
            f"{counts['missing_sentinels']} label values <= -999 in the rows used (-9999: not "
            "measured) read as missing"
        )
    if counts.get("missing_per_label"):
        missing = ", ".join(f"{n} {k}" for n, k in counts["missing_per_label"].items())
        parts.append(f"missing values in the rows used: {missing}")
    return "; ".join(parts)
