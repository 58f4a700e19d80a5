"""Training RRNet ensembles (method §4): all members at once, resumable.

:func:`train_ensemble` trains from a preprocessed store and a labels table;
:func:`train_arrays` is the same loop on in-memory arrays.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from rrnet.training.settings import TrainOptions, TrainSettings
from rrnet.training.split import Split, split_by_star

if TYPE_CHECKING:
    from rrnet.training.loop import CheckpointComplete, TrainResult, train_arrays

# The loop imports torch; it loads on first use, so that `rrnet-train --help` (which
# only needs TrainSettings' defaults) answers without importing torch.
_LAZY = {
    name: "rrnet.training.loop" for name in ("CheckpointComplete", "TrainResult", "train_arrays")
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rrnet.training' has no attribute {name!r}")


__all__ = [
    "CheckpointComplete",
    "Split",
    "TrainOptions",
    "TrainResult",
    "TrainSettings",
    "split_by_star",
    "train_arrays",
]
