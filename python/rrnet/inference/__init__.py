"""The LAMOST-RRNet catalogue: streamed inference from a store or raw spectra.

:func:`infer` is the notebook entry point (returns a Polars DataFrame);
``rrnet-infer`` (:mod:`rrnet.cli.infer`) is the same for survey-scale runs.
The catalogue's columns, flag and quality bits are described in
``docs/catalogue.md`` and defined in :mod:`rrnet.inference.columns` and
:mod:`rrnet.inference.quality`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from rrnet.inference.columns import CATALOGUE_COLUMNS, SPEC_COLUMNS, SPEC_LABELS
from rrnet.inference.per_star import per_star_table
from rrnet.inference.provenance import FingerprintMismatch
from rrnet.inference.quality import DEFAULT_THRESHOLDS, QualityBit, QualityThresholds
from rrnet.inference.streaming import DEFAULT_CHUNK_ROWS, InferError, run_inference
from rrnet.inference.writers import read_catalogue
from rrnet.labels import DEFAULT_COLUMN_STYLE

PathLike = str | os.PathLike[str]


def infer(
    models: PathLike | Sequence[PathLike],
    *,
    store: PathLike | None = None,
    catalog: PathLike | pl.DataFrame | None = None,
    data_dir: PathLike | None = None,
    out: PathLike | None = None,
    format: str | None = None,
    batch_size: int | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    per_star: bool = False,
    star_column: str = "star_id",
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
    allow_fingerprint_mismatch: bool = False,
    workers: int | None = None,
    preprocess: dict[str, Any] | None = None,
    progress: bool = False,
    column_style: str = DEFAULT_COLUMN_STYLE,
) -> pl.DataFrame:
    """Predict the catalogue of a preprocessed ``store`` or of a raw ``catalog``.

    Parameters
    ----------
    models
        One checkpoint directory or several (e.g. SP then CA). Each label comes
        from the first checkpoint that predicts it.
    store
        A store written by ``rrnet-preprocess``; or give ``catalog`` (path or
        DataFrame) and ``data_dir`` to preprocess on the fly.
    out
        Also write the catalogue here (Parquet, FITS, VOTable, ECSV or CSV by
        ``format`` or suffix); without it the run happens in a temporary directory.
    batch_size
        Spectra per forward call, all members at once (default: the ensemble's
        choice for the device, e.g. 32 on CPU, 4096 on a GPU). A whole chunk is
        handed to each checkpoint at once.
    chunk_rows
        Catalogue rows per part file when preprocessing on the fly (a store's
        shards fix its chunks); ``resume`` needs the same value.
    device
        ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda"``, ...
    resume, overwrite
        Continue an interrupted run writing ``out``, or replace an existing ``out``.
    per_star
        Also write ``<out stem>.per_star<suffix>`` (needs ``star_column``).
    thresholds
        Cuts behind ``flag`` and ``quality_bits``.
    allow_fingerprint_mismatch
        Use checkpoints trained on differently preprocessed spectra (not advised).
    column_style
        Column names of the catalogue (and of the returned table): ``"identifier"``
        (``teff``, ``fe_h``, ...) or ``"paper"`` (Table 3's ``Teff[K]``, ``FeH``, ...).
    preprocess
        On-the-fly preprocessing options of
        :func:`rrnet.preprocess.pipeline.iter_preprocessed` (``rv_column``,
        ``correct_rv``, ``max_iter``).

    Returns
    -------
    pl.DataFrame
        One row per input row, in input order (columns: ``docs/catalogue.md``).
    """
    paths = [models] if isinstance(models, str | os.PathLike) else list(models)
    options = dict(
        models=paths,
        store=store,
        catalog=catalog,
        data_dir=data_dir,
        fmt=format,
        batch_size=batch_size,
        chunk_rows=chunk_rows,
        device=device,
        resume=resume,
        overwrite=overwrite,
        per_star=per_star,
        star_column=star_column,
        thresholds=thresholds,
        allow_fingerprint_mismatch=allow_fingerprint_mismatch,
        workers=workers,
        preprocess=preprocess,
        progress=progress,
        column_style=column_style,
    )
    if out is not None:
        path = run_inference(out=out, **options)
        return read_catalogue(path, options["fmt"], column_style=column_style)[0]
    with tempfile.TemporaryDirectory(prefix="rrnet-infer-") as tmp:
        path = run_inference(out=Path(tmp) / "catalogue.parquet", **{**options, "fmt": None})
        return pl.read_parquet(path)


__all__ = [
    "CATALOGUE_COLUMNS",
    "SPEC_COLUMNS",
    "SPEC_LABELS",
    "FingerprintMismatch",
    "InferError",
    "QualityBit",
    "QualityThresholds",
    "infer",
    "per_star_table",
    "read_catalogue",
    "run_inference",
]
