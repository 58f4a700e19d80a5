"""Preprocessing kernels: RV correction, resampling, continuum normalisation, S/N.

The functions here are the fast Rust implementations (``rrnet._core``, rayon,
GIL released); :mod:`rrnet.preprocess.reference` has the same names in pure
NumPy/SciPy and is the oracle the tests compare against.
"""

from rrnet.preprocess.kernels import (
    normalize,
    normalize_detailed,
    resample,
    resample_batch,
    resample_spectrum,
    rv_correct,
    snr_ivar,
)
from rrnet.preprocess.results import NormalizeResult, ResampleResult
from rrnet.preprocess.status import REASONS, PreprocessError, Status, reason, reasons

__all__ = [
    "REASONS",
    "NormalizeResult",
    "PreprocessError",
    "ResampleResult",
    "Status",
    "normalize",
    "normalize_detailed",
    "reason",
    "reasons",
    "resample",
    "resample_batch",
    "resample_spectrum",
    "rv_correct",
    "snr_ivar",
]
