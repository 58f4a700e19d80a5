"""The LAMOST-RRNet catalogue: streamed inference from a store or raw spectra.

:func:`infer` is the notebook entry point (returns a Polars DataFrame);
``rrnet-infer`` (:mod:`rrnet.cli.infer`) is the same for survey-scale runs.
The catalogue's columns, flag and quality bits are described in
``docs/catalogue.md`` and defined in :mod:`rrnet.inference.columns` and
:mod:`rrnet.inference.quality`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from rrnet.inference.columns import CATALOGUE_COLUMNS, SPEC_COLUMNS, SPEC_LABELS
from rrnet.inference.options import InferOptions, PathLike
from rrnet.inference.per_star import per_star_table
from rrnet.inference.provenance import FingerprintMismatch
from rrnet.inference.quality import QualityBit, QualityThresholds
from rrnet.inference.streaming import InferError, run_inference
from rrnet.inference.writers import read_catalogue
from rrnet.utils.scratch import scratch_root


def infer(
    models: InferOptions | PathLike | Sequence[PathLike],
    *,
    store: PathLike | None = None,
    catalog: PathLike | pl.DataFrame | None = None,
    data_dir: PathLike | None = None,
    out: PathLike | None = None,
    **settings: Any,
) -> pl.DataFrame:
    """Predict the catalogue of a preprocessed ``store`` or of a raw ``catalog``.

    Parameters
    ----------
    models
        An :class:`InferOptions`, or one checkpoint directory or several (e.g. SP
        then CA). Each label comes from the first checkpoint that predicts it.
    store
        A store written by ``rrnet-preprocess``; or give ``catalog`` (path or
        DataFrame) and ``data_dir`` to preprocess on the fly.
    out
        Also write the catalogue here (Parquet, CSV or FITS by ``fmt`` or
        suffix); without it the run happens in a temporary directory.
    settings
        :class:`InferOptions` fields (replacing those of given options):
        ``batch_size`` (spectra per forward call, all members at once; default:
        the ensemble's choice for the device, e.g. 32 on CPU, 4096 on a GPU),
        ``chunk_rows`` (catalogue rows per part file when preprocessing on the
        fly; a store's shards fix its chunks; ``resume`` needs the same value),
        ``device`` (``"auto"``: GPU when present, ``"cpu"``, ``"cuda"``, ...),
        ``resume``/``overwrite`` (continue an interrupted run writing ``out``, or
        replace it), ``per_star`` (also write ``<out stem>.per_star<suffix>``,
        needs ``star_column``), ``thresholds`` (cuts behind ``flag`` and
        ``quality_bits``), ``allow_fingerprint_mismatch`` (use checkpoints trained
        on differently preprocessed spectra; not advised), ``preprocess``
        (on-the-fly options of :func:`rrnet.preprocess.pipeline.iter_preprocessed`:
        ``rv_column``, ``correct_rv``, ``max_iter``).

    Returns
    -------
    pl.DataFrame
        One row per input row, in input order (columns: ``docs/catalogue.md``).
    """
    options = InferOptions.of(models, **settings)
    inputs: dict[str, Any] = {"store": store, "catalog": catalog, "data_dir": data_dir}
    if out is not None:
        path = run_inference(options, out=out, **inputs)
        return read_catalogue(path, options.fmt, column_style=options.column_style)[0]
    with tempfile.TemporaryDirectory(prefix="rrnet-infer-", dir=scratch_root()) as tmp:
        path = run_inference(options, out=Path(tmp) / "catalogue.parquet", fmt=None, **inputs)
        return pl.read_parquet(path)


__all__ = [
    "CATALOGUE_COLUMNS",
    "SPEC_COLUMNS",
    "SPEC_LABELS",
    "FingerprintMismatch",
    "InferError",
    "InferOptions",
    "QualityBit",
    "QualityThresholds",
    "infer",
    "per_star_table",
    "read_catalogue",
    "run_inference",
]
