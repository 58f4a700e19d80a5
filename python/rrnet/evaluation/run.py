"""One evaluation run: read, join, measure, plot, write the report directory.

The report directory holds ``metrics.json``, ``metrics.md``, ``index.html`` and
``figures/*.png``. With a checkpoint, metrics are computed on one split of it
(``test`` by default) and ``recalibrate`` fits the error factors on its
``valid`` split only, writing ``<checkpoint>/recalibration.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from rrnet.evaluation import calibration, metrics, repeats, sample
from rrnet.evaluation.report import Report, write_report
from rrnet.io import read_table
from rrnet.labels import ALL_LABELS

SPLITS: tuple[str, ...] = ("test", "valid", "train", "all")


@dataclass(frozen=True)
class EvalOptions:
    """Inputs of :func:`evaluate` (the CLI maps its flags one to one onto these)."""

    catalog: Path
    labels: Path
    out: Path
    key: tuple[str, ...] = ("star_id",)
    snr: str = "snr_blue"
    all_rows: bool = False
    repeat_key: str = "star_id"
    min_exposures: int = 2
    checkpoint: Path | None = None
    split: str = "test"
    recalibrate: bool = False
    store: Path | None = None
    isochrones: Path | None = None
    saliency_spectra: int = 200
    figures: bool = True


SplitLoader = Callable[[Path], dict[str, list[object]]]


def load_split(checkpoint: Path) -> dict[str, list[object]]:
    """Star ids per split (``train``/``valid``/``test``) saved in a checkpoint."""
    from rrnet.evaluation.checkpoint import split_keys

    return split_keys(checkpoint)


def _restrict(table: pl.DataFrame, keys: list[object], key: str) -> pl.DataFrame:
    return calibration.restrict_to_split(table, keys, key=key)


def evaluate(opts: EvalOptions, *, split_loader: SplitLoader = load_split) -> Report:
    """Run the whole evaluation and write the report; returns the :class:`Report`."""
    from rrnet.plots import figures

    if opts.split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {opts.split!r}")
    if opts.recalibrate and opts.checkpoint is None:
        raise ValueError("--recalibrate needs --checkpoint (the validation split lives there)")
    catalog = read_table(opts.catalog)
    labels_table = read_table(opts.labels)
    labels = [
        lb for lb in sample.predicted_labels(catalog, ALL_LABELS) if lb in labels_table.columns
    ]
    if not labels:
        raise sample.SampleError(
            "no label has prediction, _err and reference columns in both tables"
        )
    joined, counts = sample.build_sample(
        catalog, labels_table, labels, key=opts.key, snr=opts.snr, all_rows=opts.all_rows
    )
    count_dict = counts.to_dict()
    usable = sample.add_snr(sample.select_usable(catalog, all_rows=opts.all_rows), opts.snr)
    inputs: dict[str, object] = {
        "catalog": str(opts.catalog),
        "labels": str(opts.labels),
        "key": ",".join(opts.key),
        "S/N": opts.snr,
        "rows": "status ok" if opts.all_rows else "status ok and flag 1",
    }
    notes: list[str] = []
    recal = None
    if opts.checkpoint is not None:
        split = split_loader(opts.checkpoint)
        split_key = "star_id"
        if opts.recalibrate:
            valid = _restrict(joined, split["valid"], split_key)
            fitted = calibration.fit_recalibration(valid, labels)
            path = calibration.write_recalibration(
                opts.checkpoint, fitted, source=str(opts.catalog)
            )
            recal = {"path": str(path), "factors": {k: v["factor"] for k, v in fitted.items()}}
            count_dict["valid_rows_for_recalibration"] = valid.height
        if opts.split != "all":
            joined = _restrict(joined, split[opts.split], split_key)
            if opts.repeat_key in usable.columns:
                usable = _restrict(usable, split[opts.split], split_key)
        count_dict[f"in_{opts.split}_split"] = joined.height
        inputs["checkpoint"] = str(opts.checkpoint)
        inputs["split"] = opts.split
    if joined.height == 0:
        raise sample.SampleError("no catalogue row matches the reference labels")
    table = metrics.metrics_table(joined, labels)
    calib = calibration.calibration_table(table)
    rep = None
    if opts.repeat_key in usable.columns:
        stars = repeats.per_star(
            usable, labels, key=opts.repeat_key, min_exposures=opts.min_exposures
        )
        rep = repeats.repeat_table(stars, labels)
        count_dict["stars_with_repeats"] = stars.height
    else:
        notes.append(f"No repeat analysis: the catalogue has no {opts.repeat_key!r} column.")
    report = Report(
        title="RRNet evaluation",
        inputs=inputs,
        counts=count_dict,
        metrics=table,
        calibration=calib,
        repeats=rep,
        recalibration=recal,
        notes=notes,
    )
    if opts.figures:
        report.figures = figures.make_all(
            opts, joined=joined, usable=usable, labels=labels, report=report
        )
    write_report(report, opts.out)
    return report
