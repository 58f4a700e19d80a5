"""Every figure is drawn from a tiny catalogue without error as a PNG of sensible size."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers import ISOCHRONES, needs_shared
from rrnet.evaluation.metrics import metrics_table, snr_bin_masks
from rrnet.evaluation.repeats import per_star, repeat_table
from rrnet.evaluation.sample import build_sample
from rrnet.evaluation.toy import toy_tables
from rrnet.plots import abundances, comparison, history, kiel, repeats, residuals, saliency, zscore

ALL = ("Teff[K]", "Logg", "CH", "MgH", "FeH", "CuH")


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG signature and IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def assert_sensible_png(path: Path) -> None:
    width, height = png_size(path)
    assert 300 <= width <= 6000 and 200 <= height <= 8000, (width, height)
    assert path.stat().st_size > 5_000


@pytest.fixture(scope="module")
def tiny() -> tuple[pl.DataFrame, pl.DataFrame]:
    catalog, labels = toy_tables(25, seed=2)
    joined, _ = build_sample(catalog, labels, list(ALL), snr="snr_blue")
    return catalog.with_columns(pl.col("snr_blue").alias("snr")), joined


def test_residual_and_sigma_vs_snr(tmp_path: Path, tiny) -> None:
    _, joined = tiny
    table = metrics_table(joined, ALL)
    assert_sensible_png(residuals.plot_residuals(joined, ALL, tmp_path / "r.png", metrics=table))
    assert_sensible_png(residuals.plot_sigma_vs_snr(table, ALL, tmp_path / "s.png"))


def test_zscores_and_coverage(tmp_path: Path, tiny) -> None:
    _, joined = tiny
    assert_sensible_png(zscore.plot_zscores(joined, ["Teff[K]", "Logg", "FeH"], tmp_path / "z.png"))
    assert_sensible_png(zscore.plot_coverage(joined, ALL, tmp_path / "c.png"))


@needs_shared
def test_kiel_with_isochrones(tmp_path: Path, tiny) -> None:
    catalog, _ = tiny
    iso = kiel.read_isochrones(ISOCHRONES)
    assert set(iso) == {"-0.5", "0", "0.5"}
    teff, logg = iso["0"]
    # first CSV row: teff_0 = 3.501075126 (log10 K), logg_0 = 5.08930516
    assert teff[0] == pytest.approx(10**3.501075126) and logg[0] == pytest.approx(5.08930516)
    # each track ends at its AGB tip (lowest log g, read from the CSV here): the post-AGB
    # and white-dwarf points after it (to 10^5 K) were drawn across the diagram
    raw = pl.read_csv(ISOCHRONES).select("teff_0", "logg_0").drop_nulls().to_numpy()
    tip = int(np.argmin(raw[:, 1]))
    assert logg.size == tip + 1 and logg[-1] == pytest.approx(raw[tip, 1])
    assert 10 ** raw[tip:, 0].max() > 50_000 > teff.max()
    panels = snr_bin_masks(catalog.get_column("snr").to_numpy())
    panels.pop("all")
    assert_sensible_png(kiel.plot_kiel(catalog, tmp_path / "k.png", panels=panels, isochrones=iso))


def test_xfe_giants_and_dwarfs_including_an_empty_class(tmp_path: Path, tiny) -> None:
    catalog, _ = tiny
    ab = ["CH", "MgH", "CuH"]
    for giants in (True, False):
        path = abundances.plot_xfe(catalog, ab, tmp_path / f"x{giants}.png", giants=giants)
        assert_sensible_png(path)
    dwarfs_only = catalog.with_columns(pl.lit(4.5).alias("Logg"))
    assert_sensible_png(abundances.plot_xfe(dwarfs_only, ab, tmp_path / "e.png", giants=True))


def test_repeats_figure(tmp_path: Path, tiny) -> None:
    catalog, _ = tiny
    table = repeat_table(per_star(catalog, ALL), ALL)
    assert table.filter(pl.col("n_stars") > 0).height > 0
    assert_sensible_png(repeats.plot_repeats(table, ALL, tmp_path / "rep.png"))


def test_loss_curves(tmp_path: Path) -> None:
    rows = [
        {"group": g, "member": m, "epoch": e, "train_loss": 2.0 / e + m * 0.01,
         "valid_loss": 1.5 / e}
        for g in ("SP", "CA") for m in range(3) for e in range(1, 6)
    ]  # fmt: skip
    assert_sensible_png(history.plot_history(pl.DataFrame(rows), tmp_path / "h.png"))


def test_saliency_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sal = {"cool": rng.normal(size=(3, 7200)), "hot": rng.normal(size=(3, 7200))}
    path = saliency.plot_saliency(
        sal, ["Teff[K]", "Logg", "FeH"], tmp_path / "sal.png", counts={"cool": 5, "hot": 7}
    )
    assert_sensible_png(path)


def test_comparison_bars(tmp_path: Path) -> None:
    table = pl.DataFrame(
        {
            "model": ["RRNet", "ResNet", "StarNet"],
            "Teff[K]": [50.0, 55, 70],
            "FeH": [0.03, 0.04, 0.05],
        }
    )
    assert_sensible_png(comparison.plot_mae_bars(table, tmp_path / "bars.png"))


@pytest.mark.parametrize("span", [(43.0, 93.0), (5.0, 300.0), (0.028, 0.031)])
def test_log_axes_have_plain_labels_that_do_not_overlap(span: tuple[float, float]) -> None:
    """``style.log_scale``: tick labels are plain numbers (``50``, not ``5x10^1``) and no
    two overlap, whether the data span a fraction of a decade or several."""
    import matplotlib.pyplot as plt

    from rrnet.plots.style import log_scale

    fig, ax = plt.subplots(figsize=(3.0, 2.5))
    values = np.geomspace(*span, 7)
    ax.plot(values, values, "o")
    log_scale(ax, "x")
    log_scale(ax, "y")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for axis in (ax.xaxis, ax.yaxis):
        labels = [t for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]
        assert len(labels) >= 2
        for label in labels:
            assert "10^" not in label.get_text() and "times" not in label.get_text()
            float(label.get_text().replace("\u2212", "-"))  # a plain number
        boxes = [t.get_window_extent(renderer) for t in labels]
        for a, b in itertools.pairwise(boxes):
            assert not a.overlaps(b), [t.get_text() for t in labels]
    plt.close(fig)


def test_label_histograms_count_every_value_tails_in_the_edge_bins(tmp_path, monkeypatch):
    """The overview's histograms spanned the 0.5-99.5 percentiles and dropped the rest:
    on 5 real spectra the Teff panel showed 3 of them."""
    from rrnet.plots import overview

    figures = []
    monkeypatch.setattr(overview, "save_figure", lambda fig, path: figures.append(fig) or path)
    teff = [3000.0, 4000.0, 4100.0, 4200.0, 9000.0, None]
    catalog = pl.DataFrame({"Teff[K]": teff}, schema={"Teff[K]": pl.Float64})
    recommended = np.array([True, False, True, True, True, True])
    overview.plot_distributions(catalog, ["Teff[K]"], tmp_path / "d.png", recommended=recommended)
    all_rows = figures[0].axes[0].containers[0]  # the filled "all with labels" bars
    assert sum(bar.get_height() for bar in all_rows) == 5
    assert all_rows[0].get_height() == 1 and all_rows[-1].get_height() == 1  # the tails


def test_residual_histograms_count_every_residual_tails_in_the_edge_bins(tmp_path, monkeypatch):
    """The range was the 0.5-99.5 percentiles: 3 of 417 residuals were not drawn while
    the panel printed N = 417."""
    from rrnet.evaluation.metrics import metrics_table

    figures = []
    monkeypatch.setattr(residuals, "save_figure", lambda fig, path: figures.append(fig) or path)
    rng = np.random.default_rng(3)
    true = rng.normal(5000.0, 500.0, 417)
    pred = true + rng.normal(0.0, 80.0, 417)
    pred[:3] += [2000.0, -3000.0, 5000.0]  # three far outliers
    sample = pl.DataFrame(
        {"Teff[K]": pred, "Teff[K]_true": true, "Teff[K]_err": np.full(417, 80.0), "snr": 50.0}
    )
    metrics = metrics_table(sample, ["Teff[K]"])
    residuals.plot_residuals(sample, ["Teff[K]"], tmp_path / "r.png", metrics=metrics)
    outline = figures[0].axes[0].patches[0].get_xy()  # the step line: 0, h0, h0, h1, h1, ..
    heights = outline[1:-1:2, 1]
    assert heights.sum() == 417
    resid = pred - true  # beyond the percentiles padded by 5 %: in the edge bins
    lo, hi = np.percentile(resid, [0.5, 99.5])
    assert heights[0] >= (resid < lo - 0.05 * (hi - lo)).sum() >= 1
    assert heights[-1] >= (resid > hi + 0.05 * (hi - lo)).sum() >= 1


def test_kiel_shows_every_star_above_the_isochrones(tmp_path, monkeypatch) -> None:
    """Isochrones hid the points (s=3, drawn below the lines); stars beyond 7000-3500 K or
    log g 5.5-0 fell outside the fixed axes though N counted them; [Fe/H] below -1 took the
    end colour with no arrow on the colour bar."""
    figures = []
    monkeypatch.setattr(kiel, "save_figure", lambda fig, path: figures.append(fig) or path)
    catalog = pl.DataFrame(
        {"Teff[K]": [8200.0, 5000.0, 3100.0], "Logg": [4.0, -0.4, 5.9], "FeH": [-2.0, 0.0, 0.8]}
    )
    panels = {"all": np.ones(3, dtype=bool)}
    kiel.plot_kiel(
        catalog, tmp_path / "k.png", panels=panels, isochrones=kiel.read_isochrones(ISOCHRONES)
    )
    fig = figures[0]
    ax = fig.axes[0]
    points = ax.collections[0]
    assert all(points.get_zorder() > line.get_zorder() for line in ax.get_lines())
    assert points.get_sizes()[0] >= 20  # three stars: visible dots
    (x_hi, x_lo), (y_hi, y_lo) = ax.get_xlim(), ax.get_ylim()
    teff, logg = catalog["Teff[K]"].to_numpy(), catalog["Logg"].to_numpy()
    assert x_lo < teff.min() and teff.max() < x_hi and y_lo < logg.min() and logg.max() < y_hi
    assert x_hi >= 7000 and x_lo <= 3500 and y_hi >= 5.5 and y_lo <= 0  # the defaults, at least
    assert fig.axes[-1].get_label() == "<colorbar>" and points.colorbar.extend == "both"
    assert "[Fe/H] = +0.5" in [t.get_text() for t in ax.get_legend().get_texts()][-1]


def test_xfe_counts_every_star_and_its_title_fits(tmp_path, monkeypatch) -> None:
    """The [Fe/H] range was fixed at -1.5..+0.6 and [X/Fe] cut at its percentiles: stars
    outside were dropped while N counted them; with one panel the title was cut off."""
    figures = []
    monkeypatch.setattr(abundances, "save_figure", lambda fig, path: figures.append(fig) or path)
    rng = np.random.default_rng(4)
    feh = rng.normal(-0.3, 0.5, 300)
    feh[:4] = [-2.5, -1.9, 0.9, 1.1]
    mg = feh + rng.normal(0.1, 0.05, 300)
    mg[4:6] += [2.0, -2.0]  # [Mg/Fe] outliers beyond the percentiles
    catalog = pl.DataFrame({"Logg": np.full(300, 2.5), "FeH": feh, "MgH": mg})
    abundances.plot_xfe(catalog, ["MgH"], tmp_path / "x.png", giants=True)
    fig = figures[0]
    counts = fig.axes[0].collections[0].get_array()
    assert int(np.ma.filled(counts, 0).sum()) == catalog.height
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_one_star_is_drawn_in_the_xfe_figure(tmp_path, monkeypatch) -> None:
    """One star: its panel said "no stars" under a title of N = 1 (review, 2026-12-06)."""
    figures = []
    monkeypatch.setattr(abundances, "save_figure", lambda fig, path: figures.append(fig) or path)
    catalog = pl.DataFrame({"Logg": [2.5], "FeH": [-0.4], "MgH": [-0.1]})
    abundances.plot_xfe(catalog, ["MgH"], tmp_path / "x.png", giants=True)
    ax = figures[0].axes[0]
    (points,) = ax.collections
    np.testing.assert_allclose(points.get_offsets(), [[-0.4, 0.3]])
    assert not any(t.get_text() == "no stars" for t in ax.texts)
    import matplotlib.pyplot as plt

    plt.close(figures[0])


def test_overview_of_one_row_shows_its_values(tmp_path, monkeypatch) -> None:
    """A one-row catalogue: every histogram said "no values" though the row has values,
    an empty legend box was drawn, "recommended" was listed with none recommended, and
    the one point of sigma against S/N was a faint 2 pt^2 dot."""
    from rrnet.plots import overview

    figures = []
    monkeypatch.setattr(overview, "save_figure", lambda fig, path: figures.append(fig) or path)
    row = {"Teff[K]": [5012.0], "Teff[K]_err": [60.0], "Logg": [4.4], "Logg_err": [0.1]}
    catalog = pl.DataFrame(row | {"snr": [35.0]})
    labels = ["Teff[K]", "Logg"]
    overview.plot_distributions(catalog, labels, tmp_path / "d.png", recommended=np.array([False]))
    overview.plot_distributions(catalog, labels, tmp_path / "e.png", recommended=np.array([True]))
    overview.plot_sigma_vs_snr_catalogue(catalog, labels, tmp_path / "s.png")
    shown_in = (["all with labels"], ["all with labels", "recommended"])
    for fig, shown in zip(figures[:2], shown_in, strict=True):
        for ax, label in zip(fig.axes, labels, strict=True):
            bars = ax.containers[0]
            assert sum(bar.get_height() for bar in bars) == 1
            (hit,) = [bar for bar in bars if bar.get_height() == 1]
            assert hit.get_x() <= catalog[label][0] <= hit.get_x() + hit.get_width()
            assert "no values" not in [t.get_text() for t in ax.texts]
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert [[t.get_text() for t in legend.get_texts()] for legend in legends] == [shown]
    point = figures[2].axes[0].collections[0]
    assert point.get_sizes()[0] >= 20 and point.get_alpha() >= 0.5


def test_residual_statistics_and_the_legend_cover_no_data(tmp_path, monkeypatch) -> None:
    """The statistics box of a residual histogram stood on the bars, and the legend of
    the sigma-vs-S/N figure hid a bin's point in small samples."""
    from rrnet.evaluation.metrics import metrics_table

    figures = []
    monkeypatch.setattr(residuals, "save_figure", lambda fig, path: figures.append(fig) or path)
    rng = np.random.default_rng(5)
    true = rng.normal(5000.0, 300.0, 40)
    sample = pl.DataFrame(
        {"Teff[K]": true + rng.normal(0, 80.0, 40), "Teff[K]_true": true,
         "Teff[K]_err": np.full(40, 80.0), "snr": rng.uniform(10, 150, 40)}
    )  # fmt: skip
    metrics = metrics_table(sample, ["Teff[K]"])
    residuals.plot_residuals(sample, ["Teff[K]"], tmp_path / "r.png", metrics=metrics)
    residuals.plot_sigma_vs_snr(metrics, ["Teff[K]"], tmp_path / "s.png")
    hist, snr = figures
    ax = hist.axes[0]
    hist.canvas.draw()
    bottom = ax.transData.inverted().transform(ax.texts[0].get_window_extent().p0)[1]
    highest = np.histogram(
        np.clip(sample["Teff[K]"] - true, *ax.patches[0].get_xy()[[0, -1], 0]), bins=50
    )[0].max()
    assert bottom > highest
    snr.canvas.draw()
    legend = (
        snr.legends[0].get_window_extent()
        if snr.legends
        else snr.axes[0].get_legend().get_window_extent()
    )
    for line in snr.axes[0].get_lines():
        points = line.get_transform().transform(np.column_stack(line.get_data()))
        assert not any(legend.contains(x, y) for x, y in points if np.isfinite([x, y]).all())


def test_a_one_row_bin_draws_no_scatter_point(tmp_path, monkeypatch) -> None:
    """A bin of one residual has no scatter; sigma_vs_snr.png drew it as a point at 0."""
    from rrnet.evaluation.metrics import metrics_table

    figures = []
    monkeypatch.setattr(residuals, "save_figure", lambda fig, path: figures.append(fig) or path)
    snr = np.array([15.0, 16.0, 17.0, 50.0])  # three rows in 10-20, one in 40-60
    true = np.array([5000.0, 5100.0, 5200.0, 5300.0])
    sample = pl.DataFrame(
        {"Teff[K]": true + np.array([50.0, -40.0, 10.0, 30.0]), "Teff[K]_true": true,
         "Teff[K]_err": np.full(4, 60.0), "snr": snr}
    )  # fmt: skip
    residuals.plot_sigma_vs_snr(metrics_table(sample, ["Teff[K]"]), ["Teff[K]"], tmp_path / "s.png")
    scatter_line = figures[0].axes[0].get_lines()[0]  # "σ of residuals", one value per bin
    names = [t.get_text() for t in figures[0].axes[0].get_xticklabels()]
    drawn = dict(zip(names, scatter_line.get_ydata(), strict=True))
    assert drawn["10-20"] == pytest.approx(np.std([50.0, -40.0, 10.0]))
    assert not np.isfinite(drawn["40-60"])  # one residual: no point


def test_drawing_leaves_the_sessions_backend_and_pyplot_alone(tmp_path: Path) -> None:
    """Importing the plots switched the whole session to Agg (matplotlib.use at import):
    in a notebook, the user's own figures silently stopped showing. Figures are now
    bare Figures that pyplot never holds. In a fresh process, with a backend of the
    user's own choosing."""
    import subprocess
    import sys

    script = (
        "import matplotlib; matplotlib.use('svg'); import matplotlib.pyplot as plt\n"
        "import sys, numpy as np; from pathlib import Path\n"
        "from rrnet.plots.style import new_figure, save_figure\n"
        "fig, axes = new_figure(3); axes[0].plot([1, 2])\n"
        "path = save_figure(fig, Path(sys.argv[1]) / 'a.png')\n"
        "assert path.read_bytes()[:8] == b'\\x89PNG\\r\\n\\x1a\\n'\n"
        "print(matplotlib.get_backend(), plt.get_fignums())\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert run.stdout.split() == ["svg", "[]"], run.stdout + run.stderr
