"""Train an ensemble from a preprocessed store and a labels table (``rrnet-train``)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rrnet.io.lamost import is_coadd
from rrnet.labels import ALL_LABELS
from rrnet.models.calibration import calibration_snr
from rrnet.models.checkpoint import SPLIT_FILE
from rrnet.models.config import ModelConfig
from rrnet.models.device import resolve_device
from rrnet.training import files
from rrnet.training.calibrate import calibrate_checkpoint
from rrnet.training.data import (
    RV_LABEL,
    describe_counts,
    implausible_labels,
    resolve_labels,
    select_rows,
)
from rrnet.training.finetune import load_initialization
from rrnet.training.loop import _log_default, train_arrays
from rrnet.training.memory import check_member_memory
from rrnet.training.ood_fit import fit_ood_checkpoint
from rrnet.training.settings import TrainOptions, TrainSettings
from rrnet.training.split import checkpoint_assignment, split_by_star
from rrnet.training.stream import StreamedRows

ARCHITECTURES: dict[str, tuple[str, str]] = {
    "rrnet": ("rrnet", "post-RNN"),
    "resnet": ("rrnet", "raw"),
    "starnet": ("starnet", "raw"),
    "starnet-r": ("starnet", "post-RNN"),
}
"""The paper's model names -> (net, default mode)."""


def model_config_for(
    arch: str = "rrnet", mode: str | None = None, num_labels: int = 3, **kwargs: Any
) -> ModelConfig:
    """ModelConfig for a paper model name (rrnet, resnet, starnet, starnet-r)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown --arch {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    net, default_mode = ARCHITECTURES[arch]
    return ModelConfig(net=net, mode=mode or default_mode, num_labels=num_labels, **kwargs)


def train_ensemble(
    store: str | os.PathLike[str] | Any,
    labels: str | os.PathLike[str] | Any,
    out: str | os.PathLike[str],
    options: TrainOptions | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Train ``options.settings.members`` networks on ``store`` rows labelled by ``labels``.

    ``store`` is a store path or an opened :class:`rrnet.store.Store`; ``labels`` a
    CSV/Parquet/FITS path or a Polars DataFrame with the ``key`` column(s) and one column
    per label. The split (by ``star_column``, seeded by ``split_seed``, default the
    training seed) is saved as ``split.parquet``. Returns the checkpoint directory.
    """
    import polars as pl

    from rrnet.io.catalog import read_table
    from rrnet.store import open_store

    opts = options or TrainOptions()
    settings = opts.settings
    log = log or _log_default(opts.progress)
    store = open_store(store) if isinstance(store, str | os.PathLike) else store
    out = Path(out)
    if not opts.resume and out.exists() and any(out.iterdir()):  # before any data is read
        raise FileExistsError(
            f"{out} exists and is not empty; --resume continues it (TrainOptions(resume=True) "
            "in Python), or choose another --out"
        )
    if not isinstance(labels, pl.DataFrame) and not Path(labels).is_file():
        raise FileNotFoundError(f"labels table not found: {labels}")
    text_keys = [k for k in opts.key if store.manifest.schema.get(k) == pl.Utf8]
    table = labels if isinstance(labels, pl.DataFrame) else read_table(labels, text_keys)
    selected = select_rows(
        store.manifest,
        table,
        resolve_labels(opts.labels_to_fit),
        key=opts.key,
        star_column=opts.star_column,
        include_flagged=opts.include_flagged,
        predict_rv=opts.predict_rv,
    )
    log(describe_counts(selected.counts))
    names = selected.label_names
    if odd := implausible_labels(selected.labels, names):
        logging.getLogger(__name__).warning(
            "%s: not the catalogue's units (K, dex, [X/H]; docs/training.md)? The checkpoint "
            "would predict in the table's units under the catalogue's names",
            "; ".join(odd),
        )
    uncatalogued = [
        n for n in names if n not in ALL_LABELS and not (opts.predict_rv and n == RV_LABEL)
    ]
    if uncatalogued:
        logging.getLogger(__name__).warning(
            "%s not catalogue labels (Teff, log g and the 15 [X/H], named in either column "
            "style): rrnet-infer will not write them to a catalogue; Ensemble.predict "
            "returns them",
            ", ".join(uncatalogued),
        )
    init = None
    if opts.init is not None:
        init, config = load_initialization(
            opts.init, names, freeze=opts.freeze, label_norm=opts.label_norm
        )
        log(f"starting every member from {opts.init} ({init.provenance['label_normalization']}"
            f" label normalisation{', new output layer' if init.new_head else ''})")  # fmt: skip
        if init.label_norm == "checkpoint":
            _warn_shifted_labels(selected.labels, names, init.normalization)
    else:
        config = opts.model_config or model_config_for(opts.arch, opts.mode, num_labels=len(names))
    if config.num_labels != len(names):
        raise ValueError(f"model_config has {config.num_labels} outputs for {len(names)} labels")
    seed = settings.seed if opts.split_seed is None else opts.split_seed
    split_source, fixed = _kept_split(opts, selected.star_ids, log)
    split = split_by_star(selected.star_ids, fractions=opts.split_fractions, seed=seed, fixed=fixed)
    _warn_small_validation(selected.star_ids, split, opts.split_fractions)

    frozen = init.frozen if init is not None else None  # before the flux is read, split written
    check_member_memory(config, settings.members, resolve_device(settings.device), frozen)
    fits = selected.rows.size * config.n_pixels * 4 <= settings.ram_limit_gb * 2**30
    flux = store.read_flux(selected.rows) if fits else StreamedRows(store, selected.rows)
    log(f"training flux {'read into memory' if fits else 'streamed from the store shards'}")
    fingerprint = dict(store.fingerprint)
    labels_path = os.path.abspath(labels) if not isinstance(labels, pl.DataFrame) else None
    if not (opts.resume and (out / SPLIT_FILE).exists()):
        _write_split(out, selected, split, opts.star_column)
    result = train_arrays(
        flux,
        selected.labels,
        split,
        label_names=names,
        model_config=config,
        settings=settings,
        out=out,
        resume=opts.resume,
        keep_state=True,  # until calibrated and OOD-fitted: a run stopped there resumes
        progress=opts.progress,
        extra_training=_extra_training(
            opts, store, labels_path, selected, seed, fingerprint, split_source
        ),
        preprocessing=fingerprint,
        test_columns={"row": selected.rows, **selected.id_columns},
        stop_after_epoch=opts.stop_after_epoch,
        log=log,
        init=init,
    )
    if result.completed:
        snr_arms = _arm_snr(store, selected.rows)
        calibrate_checkpoint(
            out,
            flux,
            selected.labels,
            split.valid,
            calibration_snr(*snr_arms),
            device=settings.device,
            form=opts.calibration_form,
            groups=_repeat_groups(store, selected.rows, selected.star_ids),
            log=log,
        )
        fit_ood_checkpoint(out, flux, split.train, split.valid, *snr_arms, log=log)
        if not opts.keep_state:
            (out / files.STATE_FILE).unlink(missing_ok=True)
    return out


def _warn_shifted_labels(labels: np.ndarray, names: list[str], norm: Any) -> None:
    """Fine-tuning with the checkpoint's label normalisation on labels far from its mean
    (another scale, another survey's zero point) starts the output layer far off."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a label with no value: NaN
        mean = np.nanmean(labels, axis=0)
    shift = (mean - np.asarray(norm.label_mean)) / np.asarray(norm.label_std)
    far = [
        f"{n} mean {m:g} ({d:+.1f} of its std from {c:g})"
        for n, m, d, c in zip(names, mean, shift, norm.label_mean, strict=True)
        if abs(d) > 3
    ]
    if far:
        logging.getLogger(__name__).warning(
            "labels far from the --init checkpoint's: %s; --label-norm data recomputes the "
            "label normalisation from this table",
            "; ".join(far),
        )


MIN_VALIDATION_STARS = 50
"""Below this many validation stars the error calibration and the out-of-distribution
thresholds, both fitted on the validation split, are rough (docs/results.md: 40 stars
leave the calibration factor 10-25 % off)."""


def _warn_small_validation(
    star_ids: np.ndarray, split: Any, fractions: tuple[float, float, float]
) -> None:
    stars = np.unique(np.asarray(star_ids)[split.valid]).size
    if stars < MIN_VALIDATION_STARS:
        remedy = (
            "more labelled stars (or a larger validation share, --split-fractions 4:4:2)"
            if fractions[1] / sum(fractions) < 0.4
            else "more labelled stars"
        )  # 4:4:2 already given: suggesting it read as if it had been ignored
        logging.getLogger(__name__).warning(
            "the validation split has %d star(s) (%d spectra): the error calibration and the "
            "out-of-distribution thresholds are fitted on it and are rough below %d stars; "
            "%s make them sound",
            stars,
            split.valid.size,
            MIN_VALIDATION_STARS,
            remedy,
        )


def _kept_split(
    opts: TrainOptions, star_ids: np.ndarray, log: Callable[[str], None]
) -> tuple[str | None, dict[str, str]]:
    """The checkpoint whose stars keep their split (``split_from``, else ``init``'s when it
    has a split) and that assignment; ``(None, {})`` when there is none."""
    if opts.split_from == "none":  # split anew, even with --init
        return None, {}
    source = opts.split_from or opts.init
    fixed = checkpoint_assignment(source) if source else {}
    if opts.split_from and not fixed:
        raise ValueError(f"--split-from {opts.split_from}: no {SPLIT_FILE} there to keep")
    if not fixed:
        return None, {}
    stars = {str(s) for s in star_ids}
    kept = len(stars & fixed.keys())
    log(f"{kept} of {len(stars)} stars keep their split from {source} (the rest are split anew)")
    return str(source), fixed


def _repeat_groups(store: Any, rows: np.ndarray, star_ids: np.ndarray) -> np.ndarray:
    """Star id of each independent spectrum; a coadd (made of exposures beside it) and a
    row of unknown star are groups of their own, so only true repeats are compared."""
    import polars as pl

    manifest = store.manifest
    ext = (
        manifest.get_column("extname_blue").cast(pl.String).fill_null("").to_numpy()[rows]
        if "extname_blue" in manifest.columns
        else np.full(rows.size, "")
    )
    unknown = np.asarray([s is None for s in star_ids], dtype=bool)
    own = is_coadd(ext) | unknown
    star = np.asarray([str(s) for s in star_ids], dtype=object)
    return np.where(own, [f"_own-{i}" for i in range(rows.size)], star)


def _arm_snr(store: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``snr_blue`` and ``snr_red`` of store ``rows`` (NaN where absent)."""
    manifest = store.manifest
    return tuple(  # type: ignore[return-value]
        manifest.get_column(c).cast(float).to_numpy()[rows]
        if c in manifest.columns
        else np.full(rows.size, np.nan)
        for c in ("snr_blue", "snr_red")
    )


def _snr(store: Any, rows: np.ndarray) -> np.ndarray:
    """The calibration's S/N (header snr_blue, else snr_red) of store ``rows``."""
    return calibration_snr(*_arm_snr(store, rows))


def _extra_training(
    opts: TrainOptions,
    store: Any,
    labels_path: str | None,
    selected: Any,
    seed: int,
    fingerprint: dict[str, Any],
    split_source: str | None = None,
) -> dict[str, Any]:
    """config.json "training" entries that record where the data and split came from."""
    return {
        "data": {
            "store": os.path.abspath(store.path),
            "labels": labels_path,
            "key": list(opts.key),
            "star_column": opts.star_column,
            "include_flagged": opts.include_flagged,
            "row_counts": selected.counts,
        },
        "split": {
            "seed": seed,
            "fractions": list(opts.split_fractions),
            "by": opts.star_column,
            "file": SPLIT_FILE,
            "kept_from": split_source,
        },
        "variant": _variant(fingerprint, opts.predict_rv, opts.settings),
        "domain": _domain(store, labels_path, selected),
    }


def _domain(store: Any, labels_path: str | None, selected: Any) -> dict[str, Any]:
    """What the checkpoint was trained on (repeated in catalogue provenance): synthetic
    when the labels table or the store's spectra sit in an rrnet-synth folder (beside its
    ``synth.json``; labels given as a DataFrame have no path, and such a checkpoint was
    recorded as trained on observed labels)."""
    data_dir = store.info.get("data_dir")
    places = [Path(labels_path).parent] if labels_path is not None else []
    places += [Path(data_dir), Path(data_dir).parent] if data_dir else []
    synthetic = any((place / "synth.json").is_file() for place in places)
    snr = _snr(store, selected.rows)
    return {
        "labels": "synthetic" if synthetic else "observed",
        "source": "rrnet-synth" if synthetic else labels_path,
        "store": str(Path(store.path).resolve()),
        "store_manifest_digest": store.manifest_digest,
        "store_spectra_digest": store.spectra_digest,
        "snr_range": [float(np.min(snr)), float(np.max(snr))] if snr.size else None,
        "label_ranges": "see training.label_ranges (training split)",
    }


def _variant(fingerprint: dict[str, Any], predict_rv: bool, settings: TrainSettings) -> str:
    """The paper's name of what is trained (appendix C): RRNet-c, -cp, -u or -ur."""
    corrected = fingerprint.get("correct_rv", True)
    if not corrected:
        return "u-r" if predict_rv else "u"
    if predict_rv:
        return "c-r"
    return "cp" if settings.rv_shift_kms > 0 else "c"


def _write_split(out: Path, selected: Any, split: Any, star_column: str) -> None:
    """split.parquet: every used store row, its star and its split."""
    out.mkdir(parents=True, exist_ok=True)
    which = split.labels(selected.rows.size)
    files.write_parquet(
        out / SPLIT_FILE,
        {"row": selected.rows, star_column: selected.star_ids, "split": which.astype(str)},
    )


__all__ = ["ARCHITECTURES", "RV_LABEL", "TrainOptions", "model_config_for", "train_ensemble"]
