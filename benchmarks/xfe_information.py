"""How well could any method measure each label from a synthesised spectrum? (issue 17)

The Cramer-Rao bound from the shipped emulator: its derivatives by every one of its 18
labels (central differences, 50 K and 0.05 dex), seen through a Gaussian LSF of
R = 7500 (sigma 0.29 A blue, 0.37 A red) on the pipeline's 0.1 A grids, white noise of
1/S/N per pixel; the bound is the square root of the diagonal of the inverse Fisher
matrix, all labels free. A label whose network [X/Fe] skill is ~0 although its bound
is well below the 0.17 dex scatter of the prior's [X/Fe] is limited by the training,
not by the data (docs/results.md).

    python benchmarks/xfe_information.py [--snr 20 50 100]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.ndimage import gaussian_filter1d

from rrnet.grid import BLUE_GRID, RED_GRID
from rrnet.synth import load_emulator
from rrnet.synth.library import ELEMENTS, draw_labels, xfe_trend

LSF_SIGMA = (0.29, 0.37)
"""Gaussian LSF sigma in A at R = 7500, blue and red arm."""
STARS = {
    "giant 4600/2.5/-0.3": {"Teff[K]": 4600.0, "Logg": 2.5, "FeH": -0.3},
    "dwarf 5800/4.4/0.0": {"Teff[K]": 5800.0, "Logg": 4.4, "FeH": 0.0},
    "metal-poor 5200/3.0/-1.2": {"Teff[K]": 5200.0, "Logg": 3.0, "FeH": -1.2},
}


def observed(wave: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """Both arms through the LSF, interpolated onto the pipeline's grids."""
    out = []
    for grid, sigma in zip((BLUE_GRID, RED_GRID), LSF_SIGMA, strict=True):
        inside = (wave > grid[0]) & (wave < grid[-1])
        step = float(np.median(np.diff(wave[inside])))
        out.append(np.interp(grid, wave, gaussian_filter1d(flux, sigma / step)))
    return np.concatenate(out)


def on_trend(star: dict[str, float]) -> dict[str, float]:
    """Every abundance on the prior's Galactic trend (``draw_labels``), vmic 1.2 km/s."""
    labels = dict(draw_labels(0, 0))
    labels.update(star)
    feh = star["FeH"]
    for name in ELEMENTS:
        if name != "FeH":
            labels[name] = feh + xfe_trend(name, feh)
    labels["vmic"] = 1.2
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snr", type=float, nargs="+", default=[20.0, 50.0, 100.0])
    args = parser.parse_args()
    emu = load_emulator()
    names = list(emu.label_names)
    wave = np.asarray(emu.wavelength, np.float64)
    print("| star | S/N | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for title, star in STARS.items():
        labels = on_trend(star)
        jacobian = []
        for name in names:
            h = 50.0 if name == "Teff[K]" else 0.05
            up, down = dict(labels), dict(labels)
            up[name] += h
            down[name] -= h
            plus = observed(wave, np.asarray(emu.spectrum(up)))
            minus = observed(wave, np.asarray(emu.spectrum(down)))
            jacobian.append((plus - minus) / (2 * h))
        j = np.asarray(jacobian)
        for snr in args.snr:
            bound = np.sqrt(np.diag(np.linalg.inv(j @ j.T * snr**2)))
            print(f"| {title} | {snr:g} | " + " | ".join(f"{b:.3g}" for b in bound) + " |")


if __name__ == "__main__":
    main()
