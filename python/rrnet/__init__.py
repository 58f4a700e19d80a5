"""rrnet: RRNet stellar labels from LAMOST medium-resolution spectra.

The top level stays light (``import rrnet`` loads neither torch nor polars); the
entry points below are imported on first use, yet ``dir(rrnet)`` and tab completion
list them. What each returns:

- ``preprocess_catalog(catalog, data_dir, out, ...) -> Store``: spectra -> a store.
- ``open_store(path) -> Store``: a store's manifest and memory-mapped flux.
- ``train_ensemble(...)``: an ensemble checkpoint directory from a store and labels.
- ``infer(models, store=..., out=...) -> polars.DataFrame``: the catalogue (also
  written to ``out`` when given).
- ``read_catalogue(path) -> (polars.DataFrame, dict)``: a written catalogue and its
  provenance (a pair: ``table, provenance = rrnet.read_catalogue(path)``).
- ``Ensemble``: the members of a checkpoint, ``Ensemble.from_checkpoint(dir).predict(flux)``.
- ``evaluate(EvalOptions(...)) -> Report``, ``overview(catalog, out) -> RunSummary``:
  the evaluation report and the catalogue overview pages.
- ``load_original`` / ``load_original_ensemble``: the authors' released weights.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("rrnet")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

_LAZY = {
    "open_store": "rrnet.store",
    "preprocess_catalog": "rrnet.preprocess.pipeline",
    "train_ensemble": "rrnet.training.api",
    "infer": "rrnet.inference",
    "read_catalogue": "rrnet.inference",
    "evaluate": "rrnet.evaluation.evaluate",
    "EvalOptions": "rrnet.evaluation.options",
    "overview": "rrnet.evaluation.overview",
    "Ensemble": "rrnet.models.ensemble",
    "load_original": "rrnet.models",
    "load_original_ensemble": "rrnet.models",
}

__all__ = ["__version__", *_LAZY]


def __dir__() -> list[str]:
    """Module attributes plus the lazy entry points (for dir() and tab completion)."""
    return sorted(set(globals()) | set(__all__))


_NEEDS_TORCH = {"train_ensemble", "infer", "evaluate", "Ensemble", "load_original",
                "load_original_ensemble"}  # fmt: skip
"""Entry points that load PyTorch (their first call would, after seconds of silence)."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        if name in _NEEDS_TORCH:
            from rrnet.utils.uninterrupted import import_torch_whole

            import_torch_whole()
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rrnet' has no attribute {name!r}")
