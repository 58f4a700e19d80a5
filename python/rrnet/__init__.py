"""rrnet: RRNet stellar labels from LAMOST medium-resolution spectra.

The top level stays light (``import rrnet`` loads neither torch nor polars); the
entry points below are imported on first use.
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
    "Ensemble": "rrnet.models.ensemble",
    "load_original": "rrnet.models",
    "load_original_ensemble": "rrnet.models",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rrnet' has no attribute {name!r}")
