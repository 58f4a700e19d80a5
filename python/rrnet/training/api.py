"""Train an ensemble from a preprocessed store and a labels table (``rrnet-train``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rrnet.models.checkpoint import SPLIT_FILE
from rrnet.models.config import ModelConfig
from rrnet.training import files
from rrnet.training.data import RV_LABEL, describe_counts, resolve_labels, select_rows
from rrnet.training.loop import _log_default, train_arrays
from rrnet.training.settings import TrainSettings
from rrnet.training.split import DEFAULT_FRACTIONS, split_by_star

ARCHITECTURES: dict[str, tuple[str, str]] = {
    "rrnet": ("rrnet", "post-RNN"),
    "resnet": ("rrnet", "raw"),
    "starnet": ("starnet", "raw"),
    "starnet-r": ("starnet", "post-RNN"),
}
"""The paper's model names -> (net, default mode)."""


class _StoreRows:
    """Row-indexable view of selected store rows, read from the shards on demand."""

    def __init__(self, store: Any, rows: np.ndarray) -> None:
        self.store, self.rows = store, rows
        self.shape = (rows.size, 7200)

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        return self.store.read_flux(self.rows[np.asarray(idx)])


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
    *,
    labels_to_fit: str | Sequence[str] = "SP",
    arch: str = "rrnet",
    mode: str | None = None,
    model_config: ModelConfig | None = None,
    settings: TrainSettings | None = None,
    key: Sequence[str] = ("star_id",),
    star_column: str = "star_id",
    include_flagged: bool = False,
    predict_rv: bool = False,
    split_seed: int | None = None,
    split_fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    resume: bool = False,
    keep_state: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    stop_after_epoch: int | None = None,
) -> Path:
    """Train ``settings.members`` networks on ``store`` rows labelled by ``labels``.

    ``store`` is a store path or an opened :class:`rrnet.store.Store`; ``labels`` a
    CSV/Parquet/FITS path or a Polars DataFrame with the ``key`` column(s) and one column
    per label. The split (by ``star_column``, seeded by ``split_seed``, default the
    training seed) is saved as ``split.parquet``. Returns the checkpoint directory.
    """
    import polars as pl

    from rrnet.io.catalog import read_table
    from rrnet.store import open_store

    settings = settings or TrainSettings()
    log = log or _log_default(progress)
    store = open_store(store) if isinstance(store, str | os.PathLike) else store
    table = labels if isinstance(labels, pl.DataFrame) else read_table(labels)
    names = resolve_labels(labels_to_fit)
    selected = select_rows(
        store.manifest,
        table,
        names,
        key=key,
        star_column=star_column,
        include_flagged=include_flagged,
        predict_rv=predict_rv,
    )
    log(describe_counts(selected.counts))
    names = selected.label_names
    config = model_config or model_config_for(arch, mode, num_labels=len(names))
    if config.num_labels != len(names):
        raise ValueError(f"model_config has {config.num_labels} outputs for {len(names)} labels")
    seed = settings.seed if split_seed is None else split_seed
    split = split_by_star(selected.star_ids, fractions=split_fractions, seed=seed)

    fits = selected.rows.size * config.n_pixels * 4 <= settings.ram_limit_gb * 2**30
    flux = store.read_flux(selected.rows) if fits else _StoreRows(store, selected.rows)
    log(f"training flux {'read into memory' if fits else 'read from the store per batch'}")
    fingerprint = dict(store.fingerprint)
    extra = {
        "data": {
            "store": str(store.path),
            "labels": str(labels) if not isinstance(labels, pl.DataFrame) else None,
            "key": list(key),
            "star_column": star_column,
            "include_flagged": include_flagged,
            "row_counts": selected.counts,
        },
        "split": {
            "seed": seed,
            "fractions": list(split_fractions),
            "by": star_column,
            "file": SPLIT_FILE,
        },
        "variant": _variant(fingerprint, predict_rv, settings),
    }
    out = Path(out)
    if not (resume and (out / SPLIT_FILE).exists()):
        _write_split(out, selected, split, star_column, check_empty=not resume)
    test_columns = {"row": selected.rows, **selected.id_columns}
    train_arrays(
        flux,
        selected.labels,
        split,
        label_names=names,
        model_config=config,
        settings=settings,
        out=out,
        resume=resume,
        keep_state=keep_state,
        progress=progress,
        extra_training=extra,
        preprocessing=fingerprint,
        test_columns=test_columns,
        stop_after_epoch=stop_after_epoch,
        log=log,
    )
    return out


def _variant(fingerprint: dict[str, Any], predict_rv: bool, settings: TrainSettings) -> str:
    """The paper's name of what is trained (appendix C): RRNet-c, -cp, -u or -ur."""
    corrected = fingerprint.get("correct_rv", True)
    if not corrected:
        return "u-r" if predict_rv else "u"
    if predict_rv:
        return "c-r"
    return "cp" if settings.rv_shift_kms > 0 else "c"


def _write_split(
    out: Path, selected: Any, split: Any, star_column: str, *, check_empty: bool
) -> None:
    """split.parquet: every used store row, its star and its split."""
    if check_empty and out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"{out} exists and is not empty; use resume to continue it or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    which = split.labels(selected.rows.size)
    files.write_parquet(
        out / SPLIT_FILE,
        {"row": selected.rows, star_column: selected.star_ids, "split": which.astype(str)},
    )


__all__ = ["ARCHITECTURES", "RV_LABEL", "model_config_for", "train_ensemble"]
