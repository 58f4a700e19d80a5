"""Synthetic LAMOST MRS universe: a Turbospectrum reference library and its emulator.

``load_library()`` returns the shipped, physically synthesised spectra (labels, vacuum rest
wavelength, normalised flux); ``load_emulator()`` returns a network that produces a spectrum
for any labels inside the library's range in milliseconds. Neither needs Fortran.
Imports are lazy so that ``python -m rrnet.synth.library`` runs cleanly and torch is only
loaded for the emulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rrnet.synth.emulator import Emulator
    from rrnet.synth.library import Library

__all__ = ["LABEL_NAMES", "Emulator", "Library", "load_emulator", "load_library"]

_LAZY = {
    "LABEL_NAMES": "rrnet.synth.library",
    "Library": "rrnet.synth.library",
    "load_library": "rrnet.synth.library",
    "Emulator": "rrnet.synth.emulator",
    "load_emulator": "rrnet.synth.emulator",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rrnet.synth' has no attribute {name!r}")
