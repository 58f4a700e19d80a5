"""Training RRNet ensembles (method §4): all members at once, resumable.

:func:`train_ensemble` trains from a preprocessed store and a labels table;
:func:`train_arrays` is the same loop on in-memory arrays.
"""

from __future__ import annotations

from rrnet.training.loop import CheckpointComplete, TrainResult, train_arrays
from rrnet.training.settings import TrainOptions, TrainSettings
from rrnet.training.split import Split, split_by_star

__all__ = [
    "CheckpointComplete",
    "Split",
    "TrainOptions",
    "TrainResult",
    "TrainSettings",
    "split_by_star",
    "train_arrays",
]
