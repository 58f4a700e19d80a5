"""One evaluation run: read, join, measure, plot, write the report directory.

The report directory holds ``metrics.json``, ``metrics.md``, ``index.html`` and
``figures/*.png``. With a checkpoint, metrics are computed on one split of it
(``test`` by default) and ``recalibrate`` fits the error factors on its
``valid`` split only, writing ``<checkpoint>/recalibration.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from rrnet.evaluation import calibration, figures, metrics, repeats, sample
from rrnet.evaluation.options import DEFAULT_REPEAT_KEY, SPLITS, EvalOptions
from rrnet.evaluation.report import Report, write_report
from rrnet.io import read_table
from rrnet.io.catalog import key_renames
from rrnet.labels import ALL_LABELS, internal_columns, label_columns
from rrnet.models.checkpoint import split_keys

SplitLoader = Callable[[Path], tuple[str, dict[str, list[object]]]]
"""checkpoint -> (star column, star ids per split)."""


def load_split(checkpoint: Path) -> tuple[str, dict[str, list[object]]]:
    """Star column and star ids per split (``train``/``valid``/``test``) of a checkpoint."""
    return split_keys(checkpoint)


def checkpoint_labels(checkpoint: Path, labels: list[str]) -> list[str]:
    """The labels (of ``labels``) that a checkpoint predicts; all if it has no config.json."""
    config = Path(checkpoint) / "config.json"
    if not config.is_file():
        return labels
    own = set(json.loads(config.read_text(encoding="utf-8")).get("labels", labels))
    return [lb for lb in labels if lb in own]


def _before_after(opts: EvalOptions, joined: Any, labels: list[str]) -> Any:
    """Calibration before/after per S/N bin from the checkpoints' calibration.json."""
    from rrnet.inference.writers import read_catalogue
    from rrnet.models.calibration import read_calibration

    params: dict[str, dict[str, float]] = {}
    for ckpt in opts.checkpoints:
        for label, p in (read_calibration(ckpt) or {}).items():
            params.setdefault(label, p)
    if not params:
        return None
    try:
        provenance = read_catalogue(opts.catalog)[1]
    except (OSError, ValueError, KeyError):
        provenance = {}
    calibrated = calibration.catalogue_errors_calibrated(provenance)
    table = calibration.before_after_table(joined, labels, params, calibrated=calibrated)
    return table if table.height else None


def _common_split(
    opts: EvalOptions, loader: SplitLoader
) -> tuple[str, dict[str, list[object]], int]:
    """The star column, the stars of each split over all checkpoints, and how many stars
    were left out: a star counts in a split when every checkpoint that knows it put it
    there; one that the checkpoints put in different splits counts in none (a training
    star of one checkpoint must never be a test star of the catalogue). Checkpoints of
    one labels table (CA trained with ``--split-from`` SP) agree on every star."""
    loaded = [loader(c) for c in opts.checkpoints]
    columns = sorted({column for column, _ in loaded})
    if len(columns) > 1:
        raise sample.SampleError(f"the checkpoints split by different columns: {columns}")
    where: dict[str, set[str]] = {}
    star: dict[str, object] = {}
    for _, split in loaded:
        for name, stars in split.items():
            for s in stars:
                where.setdefault(str(s), set()).add(name)
                star[str(s)] = s
    combined = {
        name: [star[s] for s, names in where.items() if names == {name}]
        for name in ("train", "valid", "test")
    }
    return columns[0], combined, sum(len(names) > 1 for names in where.values())


def evaluate(opts: EvalOptions, *, split_loader: SplitLoader = load_split) -> Report:
    """Run the whole evaluation and write the report; returns the :class:`Report`."""
    if opts.split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {opts.split!r}")
    if opts.recalibrate and not opts.checkpoints:
        raise ValueError("recalibrate needs a checkpoint (the validation split lives there)")
    # Either column style (teff or Teff[K]) maps back to the internal label names.
    catalog = read_table(opts.catalog)
    catalog = catalog.rename(internal_columns(catalog.columns))
    text_keys = [k for k in opts.key if catalog.schema.get(k) == pl.String]  # "00235" as such
    labels_table = read_table(opts.labels, text_keys)
    labels_table = labels_table.rename(internal_columns(labels_table.columns))
    # reference labels also in any case (a survey's TEFF, FE_H)
    labels_table = labels_table.rename(label_columns(labels_table.columns, keep=opts.key))
    labels_table = labels_table.rename(key_renames(labels_table.columns, opts.key))
    predicted = sample.predicted_labels(catalog, ALL_LABELS)
    labels = [lb for lb in predicted if lb in labels_table.columns]
    unreferenced = [lb for lb in predicted if lb not in labels_table.columns]
    if not labels:
        raise sample.SampleError(
            "no label has prediction, _err and reference columns in both tables"
        )
    split_key, split, conflicting = (
        _common_split(opts, split_loader) if opts.checkpoints else (None, {}, 0)
    )
    joined, counts = sample.build_sample(
        catalog, labels_table, labels, key=opts.key, snr=opts.snr, all_rows=opts.all_rows,
        carry=(split_key,) if split_key else (),
    )  # fmt: skip
    count_dict: dict[str, int] = counts.to_dict()
    if split_key:  # from the labels table where the catalogue has no star column
        catalog = sample.with_label_columns(catalog, labels_table, (split_key,), key=opts.key)
    usable = sample.add_snr(sample.select_usable(catalog, all_rows=opts.all_rows), opts.snr)
    ood_rows = sample.add_snr(sample.select_usable(catalog, all_rows=True), opts.snr)
    inputs: dict[str, object] = {
        "catalog": str(opts.catalog),
        "labels": str(opts.labels),
        "key": ",".join(opts.key),
        "S/N": opts.snr,
        "rows": "status ok" if opts.all_rows else "status ok and flag 1",
    }
    if unreferenced:  # predicted but not evaluated: say so (an [X/Fe] table, say)
        inputs["labels without a reference column"] = ", ".join(unreferenced)
    notes: list[str] = []
    recal = None
    if split_key is not None:
        if conflicting:
            count_dict["stars_in_different_splits_left_out"] = conflicting
        if split_key not in joined.columns:
            raise sample.SampleError(f"the checkpoint split needs a {split_key!r} column")
        if opts.recalibrate:
            valid = calibration.restrict_to_split(joined, split["valid"], key=split_key)
            recal = {"factors": {}, "files": []}
            for ckpt in opts.checkpoints:
                fitted = calibration.fit_recalibration(valid, checkpoint_labels(ckpt, labels))
                path = calibration.write_recalibration(ckpt, fitted, source=str(opts.catalog))
                recal["factors"].update({k: v["factor"] for k, v in fitted.items()})
                recal["files"].append(str(path))
            count_dict["valid_rows_for_recalibration"] = valid.height
        if opts.split != "all":
            joined = calibration.restrict_to_split(joined, split[opts.split], key=split_key)
            usable = calibration.restrict_to_split(usable, split[opts.split], key=split_key)
            ood_rows = calibration.restrict_to_split(ood_rows, split[opts.split], key=split_key)
        count_dict[f"in_{opts.split}_split"] = joined.height
        inputs["checkpoints"] = ", ".join(map(str, opts.checkpoints))
        inputs["split"] = opts.split
    if joined.height == 0:
        raise sample.SampleError("no catalogue row matches the reference labels")
    table = metrics.metrics_table(joined, labels)
    calib = calibration.calibration_table(table)
    by_snr = _before_after(opts, joined, labels)
    rep = None
    if opts.repeat_key in usable.columns:
        stars = repeats.per_star(
            usable, labels, key=opts.repeat_key, min_exposures=opts.min_exposures
        )
        rep = repeats.repeat_table(stars, labels)
        count_dict["stars_with_repeats"] = stars.height
    elif opts.repeat_key != DEFAULT_REPEAT_KEY:  # asked for by name: not a note
        raise sample.SampleError(f"the catalogue has no repeat-key column {opts.repeat_key!r}")
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
        calibration_by_snr=by_snr,
        ood_by_snr=metrics.ood_rates(ood_rows),
        xfe_skill_by_snr=metrics.xfe_skill_table(joined, labels),
        notes=notes,
    )
    if opts.figures:
        report.figures = figures.make_all(
            opts, joined=joined, usable=usable, labels=labels, report=report
        )
    write_report(report, opts.out)
    return report
