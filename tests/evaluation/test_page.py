"""The people-facing page helpers: rounding, calibration in words, display names."""

from __future__ import annotations

import numpy as np
import polars as pl

from rrnet.evaluation.page import fmt_number, table_html, with_unit
from rrnet.evaluation.report import calibration_words
from rrnet.labels import ALL_LABELS, DISPLAY_NAMES, display_name


def test_rounding_for_people() -> None:
    assert fmt_number(0.0001477, "dex") == "0"
    assert fmt_number(0.04512, "dex") == "0.045"
    assert fmt_number(85.4, "K") == "85"
    assert with_unit(0.6827, "%") == "68 %"
    assert fmt_number(12345) == "12,345"
    assert fmt_number(float("nan")) == "–"
    assert fmt_number(1.2345) == "1.23"


def test_calibration_in_words() -> None:
    assert calibration_words(1.8) == "errors too small by ×1.8"
    assert calibration_words(0.5) == "errors too large by ×2.0"
    assert calibration_words(1.04).startswith("errors calibrated")
    assert calibration_words(1.04, coverage=0.69).startswith("errors calibrated")
    # right spread, wrong shape: uniform residuals put 58 % within 1 sigma
    assert calibration_words(1.04, coverage=0.54) == (
        "errors right on average (z spread 1.04) but 54% within 1σ, not 68%: residuals not Gaussian"
    )
    assert calibration_words(float("nan")) == "not measurable"


def test_display_names_cover_every_label_with_units() -> None:
    assert set(DISPLAY_NAMES) == set(ALL_LABELS)
    assert display_name("CH", with_unit=True) == "[C/H] [dex]"
    assert display_name("Teff[K]", with_unit=True) == "T_eff [K]"
    assert display_name("FeH") == "[Fe/H]"
    assert display_name("teff") == "teff"  # unknown names pass through


def test_table_rows_round_in_their_own_unit() -> None:
    table = pl.DataFrame({"label": ["Teff[K]", "CH"], "all": [85.37, 0.0001477]})
    text = table_html(table)
    assert "<td>T_eff [K]</td><td>85</td>" in text
    assert "<td>[C/H] [dex]</td><td>0</td>" in text


def test_headline_lines_say_accuracy_calibration_and_worries() -> None:
    from rrnet.evaluation.report import Report, headline_lines

    row = {"label": "Teff[K]", "snr_bin": "all", "n": 50, "mae": 85.4, "bias": 60.2}
    row |= {"scatter": 100.0, "z_std": 1.8}
    report = Report("t", {}, {"with_labels": 50}, pl.DataFrame([row]), pl.DataFrame())
    lines = headline_lines(report)
    assert lines[0] == "T_eff: MAE 85 K, bias 60 K, scatter 100 K; errors too small by ×1.8"
    assert "check: Only 50 spectra have reference labels: the statistics are rough." in lines
    assert "check: T_eff: errors too small by ×1.8." in lines
    assert "check: T_eff is biased by 60 K (0.6 × its scatter)." in lines


def test_worries_name_coverage_and_snr_bins_the_overall_spread_hides() -> None:
    """The verdict looked at the overall z spread alone: [S/H] with 57 % of 417
    residuals within 1 sigma, and [Fe/H] errors 1.4x too small at S/N >= 100, were
    called calibrated. Binomial and z-spread standard errors keep noise out."""
    from rrnet.evaluation.report import Report, worries

    def row(label, snr_bin, n, z_std, coverage):
        return {"label": label, "snr_bin": snr_bin, "n": n, "n_z": n, "mae": 0.1, "bias": 0.0,
                "scatter": 0.1, "z_std": z_std, "coverage_1sigma": coverage}  # fmt: skip

    metrics = pl.DataFrame([
        row("SH", "all", 417, 1.0, 0.566),     # off: coverage 5 SE below the window
        row("CaH", "all", 417, 1.0, 0.62),     # within 2 SE of 0.63: not named
        row("FeH", "all", 417, 1.02, 0.68),
        row("FeH", ">=100", 80, 1.42, 0.55),   # off by 0.42, 2 SE = 0.22
        row("FeH", "10-20", 80, 1.15, 0.64),   # off by 0.15 < 2 SE = 0.18: noise
    ])  # fmt: skip
    text = "\n".join(worries(Report("t", {}, {"with_labels": 417}, metrics, pl.DataFrame())))
    assert "for 1 abundances: [S/H]." in text
    assert "[Ca/H]" not in text
    assert "Errors off in some S/N bins (z spread): [Fe/H] at >=100 (1.42)." in text
    # the words agree with that verdict: 62 % of 417 is within sampling of the window
    from rrnet.evaluation.report import calibration_words

    assert calibration_words(1.0, coverage=0.62, n=417) == "errors calibrated (z spread 1.00)"
    assert "not Gaussian" in calibration_words(1.0, coverage=0.566, n=417)


def test_recalibrate_is_suggested_only_where_a_factor_helps() -> None:
    """A factor fixes the z spread, not the coverage, and checkpoints with calibration.json
    have their own: the suggestion stood under every report of the demo."""
    from rrnet.evaluation.report import Report, worries

    def report(z_std: float, coverage: float, calibrated: bool, z_mean: float = 0.0) -> str:
        row = {"label": "SH", "snr_bin": "all", "n": 417, "n_z": 417, "mae": 0.1, "bias": 0.0,
               "scatter": 0.1, "z_std": z_std, "coverage_1sigma": coverage,
               "z_mean": z_mean}  # fmt: skip
        before_after = pl.DataFrame({"label": ["SH"]}) if calibrated else None
        counts = {"with_labels": 417}
        made = Report("t", {}, counts, pl.DataFrame([row]), pl.DataFrame(),
                      calibration_by_snr=before_after)  # fmt: skip
        return "\n".join(worries(made))

    assert "--recalibrate" in report(1.4, 0.55, calibrated=False)
    assert "--recalibrate" not in report(1.0, 0.55, calibrated=False)  # the shape is off
    assert "--recalibrate" not in report(1.4, 0.55, calibrated=True)  # has calibration.json
    # biased residuals: a factor fitted to the spread (0.5) would halve errors that the
    # RMS of z (1.1) says are too small
    assert "--recalibrate" not in report(0.5, 0.55, calibrated=False, z_mean=0.96)
    assert "--recalibrate" in report(0.5, 0.55, calibrated=False, z_mean=0.02)
    # a bias (+0.25, beyond two standard errors) small next to the spread: the factor
    # (2) calibrates, the RMS of z after it is hypot(1, 0.125) = 1.008
    assert "--recalibrate" in report(2.0, 0.55, calibrated=False, z_mean=0.25)


def test_coverage_tables_show_percentages_in_every_label_row() -> None:
    """The BEFORE/AFTER 1-sigma coverage tables were rounded in the label's unit: Teff
    coverage 0.626 showed as "1", dex rows as "0.911"; "within 1σ" showed "63" with no %."""
    import re

    from rrnet.evaluation.report import Report, to_html

    cover = {"Teff[K]": [0.626, 0.4], "FeH": [0.911, 0.7]}
    by_snr = pl.DataFrame(
        {
            "label": ["Teff[K]", "Teff[K]", "FeH", "FeH"],
            "snr_bin": ["all", "10-20"] * 2,
            "n_z": [50] * 4,
            "z_std_raw": [1.0] * 4,
            "coverage_1sigma_raw": cover["Teff[K]"] + cover["FeH"],
            "z_std_calibrated": [1.0] * 4,
            "coverage_1sigma_calibrated": cover["Teff[K]"] + cover["FeH"],
        }
    )
    row = {"label": "FeH", "n_z": 50, "z_mean": 0.0, "z_std": 1.0, "coverage_1sigma": 0.626}
    row |= {"expected_1sigma": 0.6827, "coverage_2sigma": 0.95, "expected_2sigma": 0.9545}
    calib = pl.DataFrame([row | {"needs_recalibration": False}])
    from rrnet.evaluation.metrics import label_metrics

    one = label_metrics(np.array([1.0, 2.0]), np.array([1.1, 1.8]), np.array([0.1, 0.1]))
    metrics = pl.DataFrame([{"label": "FeH", "snr_bin": "all"} | one.to_dict()])
    report = Report("t", {}, {}, metrics, calib, calibration_by_snr=by_snr)
    page = to_html(report)
    for when in ("BEFORE", "AFTER"):
        table = page.split(f"1-sigma coverage per S/N bin {when} calibration</summary>")[1].split(
            "</table>"
        )[0]
        cells = re.findall(r"<tr><td>[^<]*</td>((?:<td>[^<]*</td>)+)</tr>", table)
        shown = [re.findall(r"<td>([^<]*)</td>", c) for c in cells]
        assert shown == [[f"{100 * v:.0f} %" for v in cover[k]] for k in ("Teff[K]", "FeH")]
    calibration = page.split("Calibration of the predicted uncertainties</summary>")[1].split(
        "</table>"
    )[0]
    assert "<td>63 %</td><td>68 %</td>" in calibration


def test_rows_of_unitless_tables_carry_no_unit_and_xfe_skill_rows_are_ratios() -> None:
    """Every z-score and coverage table labelled its rows "T_eff [K]", and the [X/Fe]
    skill table "[C/H] [dex]" for the unitless skill of [C/Fe]."""
    import html
    import re

    from rrnet.evaluation.metrics import metrics_table
    from rrnet.evaluation.report import XFE_SKILL_HEADING, Report, to_html

    rng = np.random.default_rng(1)
    sample = {"snr": rng.uniform(10, 100, 40)}
    for label in ("Teff[K]", "CH"):
        sample[label + "_true"] = rng.normal(size=40)
        sample[label] = sample[label + "_true"] + rng.normal(size=40)
        sample[label + "_err"] = np.ones(40)
    metrics = metrics_table(pl.DataFrame(sample), ["Teff[K]", "CH"])
    skill = pl.DataFrame({"label": ["CH"], "snr_bin": ["all"], "n": [40], "xfe_skill": [0.2]})
    report = Report("t", {}, {}, metrics, pl.DataFrame(), xfe_skill_by_snr=skill)
    page = to_html(report)

    def row_names(heading: str) -> list[str]:
        table = page.split(f"{html.escape(heading)}</summary>")[1].split("</table>")[0]
        return re.findall(r"<tr><td>([^<]*)</td>", table)

    assert row_names("Table: MAE per S/N bin (paper eq. 4)") == ["T_eff [K]", "[C/H] [dex]"]
    assert row_names("Table: z-score std per S/N bin (1 if calibrated)") == ["T_eff", "[C/H]"]
    element = "CH"[:-1]  # the skill is of the ratio [X/Fe], which has no unit here
    assert row_names(f"Table: {XFE_SKILL_HEADING}") == [f"[{element}/Fe]"]


def test_metrics_md_reads_like_the_page() -> None:
    """metrics.md used internal names (``CH``) and 4 significant figures with no unit."""
    from rrnet.evaluation.metrics import metrics_table
    from rrnet.evaluation.report import Report, to_markdown

    rng = np.random.default_rng(2)
    sample = {"snr": np.full(30, 50.0)}
    for label, size in (("Teff[K]", 90.0), ("CH", 0.05)):
        sample[label + "_true"] = rng.normal(size=30)
        sample[label] = sample[label + "_true"] + size * rng.normal(size=30)
        sample[label + "_err"] = np.full(30, size)
    frame = pl.DataFrame(sample)
    text = to_markdown(Report("t", {}, {}, metrics_table(frame, ["Teff[K]", "CH"]), pl.DataFrame()))
    mae = {lb: np.mean(np.abs(sample[lb] - sample[lb + "_true"])) for lb in ("Teff[K]", "CH")}
    table = text.split("## MAE per S/N bin (paper eq. 4)")[1].split("\n\n")[1]
    assert f"| T_eff [K] | {mae['Teff[K]']:.0f} |" in table
    assert f"| [C/H] [dex] | {mae['CH']:.3f} |" in table
    assert "| CH |" not in text


def test_the_verdict_judges_the_size_of_the_errors_with_the_bias_included() -> None:
    """Five spectra of one star, residuals all near -42 K with σ near 94 K: every |z| is
    near 0.45, yet the verdict (the spread about the mean) said errors too large by ×13.5."""
    from rrnet.evaluation.metrics import label_metrics
    from rrnet.evaluation.report import verdict

    resid = np.array([-44.0, -41.0, -43.0, -40.0, -42.0])
    err = np.array([95.0, 93.0, 94.0, 92.0, 96.0])
    m = label_metrics(5000.0 + resid, np.full(5, 5000.0), err).to_dict()
    z = resid / err
    rms = np.sqrt(np.mean(z**2))
    words = verdict(m)
    assert words.startswith(f"errors too large by ×{1 / rms:.1f}")
    assert f"biased by {np.mean(z):+.2f}σ" in words
    assert f"×{1 / np.std(z):.1f}" not in words  # the spread about the mean: ×13.5


def test_the_sample_line_says_what_each_count_is() -> None:
    """The line "2,493 with labels, 2,053 counted (flag 1), 2,053 with reference labels"
    read as if 440 rows had no reference, though all had one: "with labels" meant predicted."""
    from rrnet.evaluation.report import Report, headline_html

    counts = {"catalog_rows": 2493, "status_ok": 2493, "flag_ok": 2053, "with_labels": 2053}
    counts |= {"in_test_split": 417}
    inputs = {"rows": "status ok and flag 1", "split": "test"}
    no_metrics = pl.DataFrame(schema={"label": pl.Utf8, "snr_bin": pl.Utf8, "n": pl.Int64})
    text = headline_html(Report("t", inputs, counts, no_metrics, pl.DataFrame()))
    sample = text.split("Sample: ")[1].split(".</p>")[0].split("; ")
    assert sample == [
        "2,493 catalogue rows",
        "2,493 with predicted labels (status ok)",
        "2,053 of them recommended (flag 1)",
        "2,053 recommended (flag 1) and matched to a reference row",
        "417 of those in the test split (evaluated)",
    ]
    inputs["rows"] = "status ok"  # --all-rows: every status-ok row counts
    text = headline_html(
        Report("t", inputs, counts | {"flag_ok": 2493}, no_metrics, pl.DataFrame())
    )
    assert "flag 1" not in text and "2,053 status ok (--all-rows) and matched" in text


def test_the_ood_table_reads_in_words_and_percent() -> None:
    """The OOD table showed raw headers (snr_bin, n_ood, ood_rate, ood_score_median) and a
    rate of 0.02 on a page of percentages."""
    import re

    from rrnet.evaluation.metrics import label_metrics, ood_rates
    from rrnet.evaluation.report import Report, to_html

    bits = np.where(np.arange(200) % 8 == 0, 16, 0)
    catalog = pl.DataFrame({"snr": np.linspace(5, 150, 200), "quality_bits": bits})
    catalog = catalog.with_columns(ood_score=pl.col("snr") / 100)
    one = label_metrics(np.array([1.0, 2.0]), np.array([1.1, 1.8]), np.array([0.1, 0.1]))
    metrics = pl.DataFrame([{"label": "FeH", "snr_bin": "all"} | one.to_dict()])
    report = Report("t", {}, {}, metrics, pl.DataFrame(), ood_by_snr=ood_rates(catalog))
    page = to_html(report)
    table = page.split("any flag)</summary>")[1].split("</table>")[0]
    heads = re.findall(r"<th>([^<]*)</th>", table)
    assert heads == ["S/N", "N", "flagged OOD", "OOD rate", "median OOD score"]
    everything = re.findall(r"<tr><td>all</td>((?:<td>[^<]*</td>)+)</tr>", table)[0]
    rate = np.mean(bits == 16)
    assert re.findall(r"<td>([^<]*)</td>", everything)[2] == f"{100 * rate:.0f} %"


def test_a_report_prints_as_one_line() -> None:
    """Its dataclass repr inlined every Polars table (~10 kB in a notebook)."""
    from rrnet.evaluation.report import Report

    metrics = pl.DataFrame({"label": ["Teff[K]", "Logg"], "mae": [80.0, 0.2]})
    report = Report("demo", {}, {"with_labels": 417, "evaluated": 400}, metrics, pl.DataFrame(),
                    figures=[("a.png", "A"), ("b.png", "B")])  # fmt: skip
    assert repr(report) == (
        "Report('demo': with_labels 417, evaluated 400; 2 metric rows, 2 figures; "
        "the tables are its attributes)"
    )
