"""RV accuracy (issue 16): synthesised LAMOST-like visits with known RV, and the real file.

Stars are drawn from the shipped library (template stars excluded, so the fit has the
template mismatch a real star has), observed with ``rrnet.synth.observe`` at a random RV
and S/N, then measured from the raw arms exactly as the pipeline would: the coadds, and
separately every single exposure of the same visits (binned by its own blue S/N, the
header SNR; most LAMOST MRS rows are single exposures). Prints per S/N bin: bias, robust
scatter (1.4826 MAD) and plain std, catastrophic rate (|err| > 20 km/s), the std of
(measured - true) / sigma and the 1-sigma coverage, and the real file's exposures vs coadd.

    python benchmarks/rv_accuracy.py --n 200 --seed 17

The errors include ``rv.GRID_ERR_SCALE``, set from a run with seed 16; use another seed
to check it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _shared import LAMOST_DIR
from rrnet.io.lamost import read_arm, read_lamost
from rrnet.preprocess import rv
from rrnet.synth.library import load_library
from rrnet.synth.observe import ObservationSettings, observe

BINS = ((10, 20), (20, 40), (40, 100), (100, 300))


def simulate(n_per_bin: int, seed: int) -> tuple[Sample, Sample]:
    """Coadd arms of ``n_per_bin`` visits per S/N bin, and their exposures' arms; each
    as (spectra, true rv, blue S/N)."""
    rng = np.random.default_rng(seed)
    lib = load_library()
    t = rv.default_templates()
    used = {tuple(x) for x in np.round(t.labels, 3)}
    labels = lib.labels.select("Teff[K]", "Logg", "FeH").to_numpy()
    pool = [i for i in range(len(labels)) if tuple(np.round(labels[i], 3)) not in used]
    settings = ObservationSettings(source_resolution=float(lib.meta["resolution"]))
    coadds: Sample = ([], [], [])
    exposures: Sample = ([], [], [])
    for lo, hi in BINS:
        for _ in range(n_per_bin):
            star = int(rng.choice(pool))
            v, snr = rng.uniform(-300, 300), float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            n_exp = int(rng.integers(1, 5))
            visit = observe(lib.wavelength, lib.flux[star], rv_kms=v, snr={"B": snr, "R": snr},
                            n_exposures=n_exp, rng=rng, settings=settings)  # fmt: skip
            _add(coadds, visit.coadd, v, snr)
            for arms, v_exp in zip(visit.exposures, visit.exposure_rv_kms, strict=True):
                _add(exposures, arms, v_exp, arms["B"].snr_measured())
    return coadds, exposures


Sample = tuple[list, list, list]
"""(spectra as measure_spectra takes them, true RVs, blue S/N)."""


def _add(sample: Sample, arms: dict, v: float, snr: float) -> None:
    sample[0].append(tuple((arms[a].loglam, arms[a].flux, arms[a].ivar) for a in ("B", "R")))
    sample[1].append(v)
    sample[2].append(snr)


def table(sample: Sample) -> None:
    """Print the accuracy table of the combined value per S/N bin."""
    res = rv.measure_spectra(sample[0])
    truth, snr = np.asarray(sample[1]), np.asarray(sample[2])
    print("| S/N | n | ok | bias km/s | scatter (MAD) | std | catastrophic | z std (robust) "
          "| 1-sigma coverage |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for lo, hi in (((5, 10),) if snr.min() < 10 else ()) + BINS:
        sel = (snr >= lo) & (snr < hi)
        ok = sel & (res.status[:, 2] == 0)
        d = res.rv[ok, 2] - truth[ok]
        z = d / res.err[ok, 2]
        good = np.abs(d) <= 20
        cat = (sel.sum() - good.sum()) / max(sel.sum(), 1)
        mad = 1.4826 * np.median(np.abs(d[good] - np.median(d[good])))
        zr = 1.4826 * np.median(np.abs(z[good] - np.median(z[good])))
        stats = f"{np.mean(d[good]):+.3f} | {mad:.3f} | {np.std(d[good]):.3f}"
        cover = np.mean(np.abs(z) < 1)
        print(f"| {lo}-{hi} | {sel.sum()} | {ok.sum()} | {stats} | {100 * cat:.1f} % | "
              f"{np.std(z[good]):.2f} ({zr:.2f}) | {cover:.2f} |")  # fmt: skip


def real_file(path: Path) -> None:
    """Exposures and coadd of the real file: RV, error, and the deviation from the coadd."""
    info = read_lamost(path)
    names = [n for n in info.extnames if n.startswith("B-")]
    pairs = [("COADD_B", "COADD_R")] + [(n, "R-" + n[2:]) for n in names]
    spectra = []
    for b, r in pairs:
        arms = [read_arm(path, e) for e in (b, r)]
        spectra.append(tuple((a.loglam, a.flux, a.ivar) for a in arms))
    res = rv.measure_spectra(spectra)
    for (b, _), v, e, s, m in zip(pairs, res.rv, res.err, res.status, res.template, strict=True):
        dev = (v[2] - res.rv[0, 2]) / np.hypot(e[2], res.err[0, 2]) if b != "COADD_B" else 0.0
        print(f"{b:12s} blue {v[0]:8.2f}+-{e[0]:.2f} "
              f"red {v[1]:8.2f}+-{e[1]:.2f} comb {v[2]:8.2f}+-{e[2]:.2f} status {s.tolist()} "
              f"template {m} dev {dev:+.2f} sigma")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="visits per S/N bin")
    ap.add_argument("--seed", type=int, default=16)
    args = ap.parse_args()
    coadds, exposures = simulate(args.n, args.seed)
    print("coadds")
    table(coadds)
    print("\nsingle exposures of the same visits, by their own blue S/N")
    table(exposures)
    for f in sorted(LAMOST_DIR.glob("*.fits.gz")):
        print(f"\n{f.name}")
        real_file(f)


if __name__ == "__main__":
    main()
