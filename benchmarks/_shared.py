"""Where the benchmarks find the project's shared data: ``../shared`` beside the
checkout, or ``$RRNET_SHARED`` (the rule the tests follow, ``tests/helpers.py``)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(
    os.environ.get("RRNET_SHARED") or Path(__file__).resolve().parents[1].parent / "shared"
)
LAMOST_DIR = SHARED / "data" / "lamost"
"""The real LAMOST DR7 MRS files."""
REAL_FILE = LAMOST_DIR / "med-58025-HIP9645901_sp02-051.fits.gz"
"""The real file most benchmarks copy or link many times."""
EXPOSURES = ("83555758", "83555772", "83555785", "83555799")
"""The real file's single exposures (extensions ``B-<id>`` and ``R-<id>``)."""
SPECTRA = [("COADD_B", "COADD_R")] + [(f"B-{i}", f"R-{i}") for i in EXPOSURES]
"""The real file's five spectra as (blue, red) extension names: the coadd, then each exposure."""
