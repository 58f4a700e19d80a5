"""OOD targets (issue 17, item 2): flag rates of the subspace test on synthesised spectra.

Stars are drawn like ``rrnet-synth`` draws them (``draw_labels``) but kept to Teff >=
TRAIN_TEFF (the "training labels"); rest-frame spectra come from the shipped emulator,
are observed with ``rrnet.synth.observe`` (R = 7500, noise, continuum, cosmics) and
preprocessed from the raw coadd arms exactly as the pipeline does (RV correction with
the true RV, resampling, continuum normalisation; S/N = the arms' median FLUX*sqrt(IVAR)).

* training set: fits the subspace; validation set: the floor and the thresholds;
* clean held-out set and six defect sets, each per S/N bin (lower arm S/N). Every defect
  is made as a real spectrum would show it: through the same instrument model, so
  anything that passed the spectrograph has the line-spread function (LSF, Gaussian,
  R = 7500: sigma 0.29 A blue, 0.37 A red) and the noise is added after it:
  emission  a Gaussian emission line of intrinsic sigma 0.3 A (14 km/s) and peak 0.3 of
            the continuum at a random wavelength of either arm, added to the rest-frame
            model before ``observe``, which convolves it with the LSF like the star's
            own lines (observed sigma ~0.46 A, peak ~0.2), then adds the noise;
  rv30      preprocessed with an RV wrong by +-30 km/s;
  resolution observed at R = 5000 instead of 7500 (``observe``'s LSF);
  telluric  the H2O band at 6470-6600 A (air) of :func:`telluric_transmission`: 120
            Voigt lines at airmass 1.2 and a precipitable water vapour drawn log-normally
            with median 8 mm (sigma 0.5 in ln), convolved with the R = 7500 LSF and multiplied
            into the exposure's noiseless flux in the observed frame, before the noise
            (``observe(transmission=...)``). At R = 7500 the deepest blends are ~5-7 %
            deep, most lines < 1 %; total equivalent width ~1.2 A at 8 mm. The O2 gamma
            band (6276-6330 A) lies blueward of the red arm's grid (>= 6339 A rest) and
            is not injected. (Until 2026-12-02 this set had 40 unconvolved lines of sigma
            0.12 A multiplied into the coadd after the noise: narrower than the LSF, so
            the test's artefact clip treated them as cosmic rays.)
  continuum the response of one arm steps by 5 % at a random wavelength in the middle
            60 % of that arm's grid (a broken join of the raw flux), multiplied in
            before the noise (``observe(transmission=...)``). (Until 2026-12-03 the
            step was at a random pixel, 20-80 %, of the raw exposure: the red exposures
            reach 6875 A, the red grid ends at 6699 A, so about a third of the red
            steps, 1 in 8 of the set, lay outside the spectrum the pipeline keeps and
            no test could see them);
  type      a star with Teff < OOD_TEFF (outside the training labels) from the same
            emulator and instrument model.

Prints the flag rate (score > 1) per kind and S/N bin at each ``--quantile`` (the
clean row also as counts), the scoring time per spectrum, the validation statistics'
median and 99.5 % quantile per S/N bin next to those of white noise (where the
thresholds come from: the null's tail, not its bulk), and the real LAMOST file's score
(its coadd, at the RV rrnet measures). The spectra are cached in ``--cache`` (an .npz)
so that a rerun only refits.

    python benchmarks/ood_targets.py --n-train 2500 --n-valid 1500 --n-test 120 \
        --quantile 0.99 0.95
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np

import rrnet.preprocess as pp
from _shared import LAMOST_DIR
from rrnet.grid import BLUE_GRID, RED_GRID
from rrnet.models import ood_subspace as oos
from rrnet.synth.library import draw_labels
from rrnet.synth.observe import ObservationSettings, observe

BINS = ((5, 10), (10, 20), (20, 40), (40, 100), (100, 300))
KINDS = ("clean", "emission", "rv30", "resolution", "telluric", "continuum", "type")
TRAIN_TEFF = 4800.0
OOD_TEFF = 4300.0


def _labels(emu, rng: np.random.Generator, n: int, ood: bool) -> np.ndarray:
    """``n`` label rows (emulator order) with Teff >= TRAIN_TEFF, or < OOD_TEFF if ``ood``."""
    rows = []
    while len(rows) < n:
        d = draw_labels(int(rng.integers(0, 2**31)), 99)
        if (d["Teff[K]"] < OOD_TEFF) if ood else (d["Teff[K]"] >= TRAIN_TEFF):
            rows.append([d[name] for name in emu.label_names])
    lo = np.array([emu.bounds[k][0] for k in emu.label_names])
    hi = np.array([emu.bounds[k][1] for k in emu.label_names])
    return np.clip(np.array(rows), lo, hi)


def _defect_flux(kind: str, wave: np.ndarray, flux: np.ndarray, rng) -> np.ndarray:
    """The rest-frame flux with an emission line (other kinds change it elsewhere)."""
    if kind != "emission":
        return flux
    lo, hi = ((4970.0, 5325.0), (6341.0, 6696.0))[int(rng.integers(0, 2))]
    centre = rng.uniform(lo, hi)
    return flux + 0.3 * np.exp(-0.5 * ((wave - centre) / 0.3) ** 2)


TELLURIC_BAND = (6470.0, 6600.0)
"""Air wavelengths [Angstrom] of the H2O band injected (in the red arm's observed range)."""
TELLURIC_LINES = 120
"""Lines of the band (positions and strengths drawn once, seed 6500: one atmosphere)."""


def _telluric_lines() -> tuple[np.ndarray, np.ndarray]:
    """(vacuum centres [A], centre optical depth at PWV 10 mm and airmass 1) of the band.

    No HITRAN list ships with rrnet, so the lines are drawn once: uniform positions over
    :data:`TELLURIC_BAND`, optical depths log-uniform in 0.003-0.5 (many weak lines, a few
    with a high-resolution depth of 30-40 %, like the strongest H2O lines near H-alpha,
    tau ~0.3 in solar atlases)."""
    from rrnet.synth.observe import air_to_vacuum

    rng = np.random.default_rng(6500)
    centres = air_to_vacuum(np.sort(rng.uniform(*TELLURIC_BAND, TELLURIC_LINES)))
    return centres, np.exp(rng.uniform(np.log(0.003), np.log(0.5), TELLURIC_LINES))


@functools.cache
def _telluric_depth() -> tuple[np.ndarray, np.ndarray]:
    """(vacuum wavelength grid [A], optical depth at PWV 10 mm and airmass 1) of the band:
    each line a Voigt profile (Doppler sigma 0.0074 A: H2O at 250 K; Lorentz HWHM 0.03 A:
    pressure broadening ~0.07 cm^-1 at 1 atm) scaled to its centre optical depth."""
    from scipy.special import voigt_profile

    centres, tau0 = _telluric_lines()
    wave = np.arange(centres.min() - 2.0, centres.max() + 2.0, 0.005)
    peak = voigt_profile(0.0, 0.0074, 0.03)
    tau = np.zeros_like(wave)
    for c, t in zip(centres, tau0, strict=True):
        near = np.abs(wave - c) < 3.0
        tau[near] += t * voigt_profile(wave[near] - c, 0.0074, 0.03) / peak
    return wave, tau


def telluric_transmission(pwv_mm: float, airmass: float = 1.2, resolution: float = 7500.0):
    """``loglam -> transmission`` of the H2O band at ``pwv_mm`` precipitable water and
    ``airmass``, convolved with the LSF of ``resolution`` (observed frame, vacuum).

    ``exp(-tau * airmass * pwv_mm / 10)`` on the 0.005 A grid of :func:`_telluric_depth`
    is convolved with the Gaussian LSF exactly as ``rrnet.synth.observe`` broadens the
    stellar spectrum. At R = 7500 the strongest lines are then ~3-7 % deep and most
    < 1 %."""
    from rrnet.synth.observe import FWHM_PER_SIGMA, broaden

    wave, tau = _telluric_depth()
    sigma_ln = 1.0 / (FWHM_PER_SIGMA * resolution)
    ln_range = (float(np.log(wave[0])), float(np.log(wave[-1])))
    trans = np.exp(-tau * (airmass * pwv_mm / 10.0))
    ln_fine, smooth = broaden(wave, trans, ln_range, sigma_ln)
    return lambda loglam: np.interp(np.log(10.0) * np.asarray(loglam, np.float64), ln_fine, smooth)


def _step_response(rng, arm: str):
    """``loglam -> factor``: the response of ``arm`` steps by 5 % at a random wavelength
    of the middle 60 % of its grid (inside what preprocessing keeps, at any RV)."""
    grid = BLUE_GRID if arm == "B" else RED_GRID
    cut = grid[0] + rng.uniform(0.2, 0.8) * (grid[-1] - grid[0])

    def factor(loglam: np.ndarray) -> np.ndarray:
        return np.where(10.0 ** np.asarray(loglam, np.float64) >= cut, 1.05, 1.0)

    return factor


def _transmission(kind: str, rng) -> dict | None:
    """Observed-frame factors of ``kind`` per arm, applied before the noise."""
    if kind == "telluric":
        return {"R": telluric_transmission(float(np.exp(rng.normal(np.log(8.0), 0.5))))}
    if kind == "continuum":
        arm = "BR"[int(rng.integers(0, 2))]
        return {arm: _step_response(rng, arm)}
    return None


def simulate(emu, kind: str, snr: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Preprocessed flux [n, 7200] and arm S/N of ``snr.size`` visits of ``kind``."""
    rng = np.random.default_rng(seed)
    labels = _labels(emu, rng, snr.size, ood=kind == "type")
    rest = emu.spectra(labels)
    base = ObservationSettings(source_resolution=20000.0)
    settings = ObservationSettings(source_resolution=20000.0, resolution=5000.0)
    arms, rvs = [], []
    for i, s in enumerate(snr):
        rv_true = rng.uniform(-150.0, 150.0)
        ratio = np.exp(rng.normal(np.log(1.4), 0.15))
        visit = observe(
            emu.wavelength, _defect_flux(kind, emu.wavelength, rest[i], rng), rv_kms=rv_true,
            snr={"B": s, "R": s * ratio}, n_exposures=1, rng=rng,
            settings=settings if kind == "resolution" else base,
            transmission=_transmission(kind, rng),
        )  # fmt: skip
        arms.append(visit.coadd)
        rvs.append(rv_true + (rng.choice([-30.0, 30.0]) if kind == "rv30" else 0.0))
    res = pp.resample_batch(
        [a["B"].loglam for a in arms], [a["B"].flux for a in arms],
        [a["R"].loglam for a in arms], [a["R"].flux for a in arms], np.asarray(rvs),
        blue_ivar=[a["B"].ivar for a in arms], red_ivar=[a["R"].ivar for a in arms],
    )  # fmt: skip
    norm = pp.normalize_detailed(res.flux)
    return {"flux": norm.flux, "snr_blue": res.snr_blue, "snr_red": res.snr_red}


def build(args: argparse.Namespace) -> dict[str, dict[str, np.ndarray]]:
    """All sets, from the cache when it exists."""
    from rrnet.synth import load_emulator

    cache = Path(args.cache)
    if cache.exists():
        data = np.load(cache)
        sets: dict[str, dict[str, np.ndarray]] = {}
        for key in data.files:
            name, field = key.split("/")
            sets.setdefault(name, {})[field] = data[key]
        return sets
    emu = load_emulator()
    rng = np.random.default_rng(args.seed)
    log_snr = (np.log(5.0), np.log(300.0))
    sets = {
        "train": simulate(emu, "clean", np.exp(rng.uniform(*log_snr, args.n_train)), args.seed),
        "valid": simulate(emu, "clean", np.exp(rng.uniform(*log_snr, args.n_valid)), args.seed + 1),
    }
    for k, kind in enumerate(KINDS):
        for b, (lo, hi) in enumerate(BINS):
            t0 = time.perf_counter()
            snr = np.exp(rng.uniform(np.log(lo), np.log(hi), args.n_test))
            sets[f"{kind}-{b}"] = simulate(emu, kind, snr, args.seed + 100 + 10 * k + b)
            print(f"  simulated {kind} S/N {lo}-{hi}: {time.perf_counter() - t0:.0f} s", flush=True)
    np.savez(cache, **{f"{n}/{f}": v for n, d in sets.items() for f, v in d.items()})
    return sets


def real_score(sub: oos.Subspace, quantile: float) -> tuple[float, float, float] | None:
    """(score, snr_blue, snr_red) of the real file's coadd, RV measured by rrnet."""
    from rrnet.io.lamost import read_arm
    from rrnet.preprocess import rv

    files = sorted(LAMOST_DIR.glob("*.fits.gz"))
    if not files:
        return None
    b, r = (read_arm(files[0], name) for name in ("COADD_B", "COADD_R"))
    v = rv.measure_spectra([((b.loglam, b.flux, b.ivar), (r.loglam, r.flux, r.ivar))]).rv[0, 2]
    res = pp.resample_batch([b.loglam], [b.flux], [r.loglam], [r.flux], np.array([v]),
                            blue_ivar=[b.ivar], red_ivar=[r.ivar])  # fmt: skip
    flux = pp.normalize_detailed(res.flux).flux
    s = oos.score(sub, flux, res.snr_blue, res.snr_red, quantile)
    return float(s[0]), float(res.snr_blue[0]), float(res.snr_red[0])


def null_tails(sub: oos.Subspace, valid: dict[str, np.ndarray]) -> None:
    """Median and 99.5 % quantile of each statistic on validation spectra per S/N bin,
    and for white noise of unit variance (what a perfect reference would give)."""
    stats = oos.statistics(sub, valid["flux"], valid["snr_blue"], valid["snr_red"])
    snr = oos.combined_snr(valid["snr_blue"], valid["snr_red"])
    noise = np.random.default_rng(0).normal(size=(400, sub.mean.size))
    white = oos.Subspace(np.zeros(sub.mean.size), np.zeros((0, sub.mean.size)),
                         np.zeros(sub.mean.size), sub.thresholds, window=sub.window)  # fmt: skip
    ones = np.ones(400)
    w = oos.statistics(white, noise, ones, ones)
    print("validation (global, local, line width, step, line, band): median / 99.5 % per S/N bin")
    print(f"  white noise: {np.median(w, 0).round(2)} / {np.quantile(w, 0.995, 0).round(2)}")
    for lo, hi in BINS:
        sel = (snr >= lo) & (snr < hi)
        if sel.sum() >= 20:
            q = np.quantile(stats[sel], 0.995, 0).round(2)
            print(f"  S/N {lo}-{hi} (n={sel.sum()}): {np.median(stats[sel], 0).round(2)} / {q}")


def rate_table(sub: oos.Subspace, sets: dict[str, dict[str, np.ndarray]], quantile: float) -> None:
    """Markdown table of flag rates per kind and S/N bin at ``quantile``."""
    print(f"\nquantile {quantile}")
    head = "| kind | " + " | ".join(f"S/N {lo}-{hi}" for lo, hi in BINS) + " |"
    print(head + "\n|" + "---|" * (len(BINS) + 1))
    for kind in KINDS:
        cells = []
        for b in range(len(BINS)):
            d = sets[f"{kind}-{b}"]
            flag = oos.score(sub, d["flux"], d["snr_blue"], d["snr_red"], quantile) > 1
            count = f" ({flag.sum()}/{flag.size})" if kind == "clean" else ""
            cells.append(f"{100 * np.mean(flag):.1f} %{count}")
        print(f"| {kind} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--n-valid", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=60, help="spectra per kind and S/N bin")
    parser.add_argument("--components", type=int, default=oos.N_COMPONENTS)
    parser.add_argument("--quantile", type=float, nargs="+", default=[0.99])
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--cache", default="/tmp/ood_targets.npz")
    parser.add_argument("--fit-train", type=int, default=None,
                        help="fit on the first N cached training spectra only")  # fmt: skip
    parser.add_argument("--fit-valid", type=int, default=None,
                        help="thresholds from the first N cached validation spectra")  # fmt: skip
    parser.add_argument("--max-pca", type=int, default=oos.MAX_FIT_SPECTRA,
                        help="at most N training spectra (S/N >= 30) in the subspace")  # fmt: skip
    parser.add_argument("--compare", action="store_true",
                        help="also the tests without filtered and shape statistics, "
                        "and with the 120-pixel window step")  # fmt: skip
    args = parser.parse_args()
    sets = build(args)
    # The same held-out sets whatever part of the cached training/validation sets is used.
    tr = {k: v[: args.fit_train] for k, v in sets["train"].items()}
    va = {k: v[: args.fit_valid] for k, v in sets["valid"].items()}
    print(f"fitting on {len(tr['flux'])} training and {len(va['flux'])} validation spectra")
    t0 = time.perf_counter()
    mean, comps = oos.fit_subspace(
        tr["flux"], oos.combined_snr(tr["snr_blue"], tr["snr_red"]), args.components,
        max_spectra=args.max_pca,
    )  # fmt: skip
    tests = {}
    variants = (
        ((False, False, False), (True, False, False), (True, True, False), (True, True, True))
        if args.compare
        else ((True, True, True),)
    )
    for shape, lines, arm_step in variants:
        tests[shape, lines, arm_step] = oos.calibrate(
            mean, comps, va["flux"], va["snr_blue"], va["snr_red"], shape, lines, arm_step
        )
    sub = tests[True, True, True]
    print(f"fit {args.components} components in {time.perf_counter() - t0:.1f} s; "
          f"floor rms median {np.sqrt(np.median(sub.floor2)):.4f}")  # fmt: skip
    clean = sets["clean-2"]
    for test in tests.values():
        t0 = time.perf_counter()
        oos.score(test, clean["flux"], clean["snr_blue"], clean["snr_red"], args.quantile[0])
        ms = 1e3 * (time.perf_counter() - t0) / len(clean["flux"])
        print(f"scoring ({oos.score_name(test)}): {ms:.1f} ms per spectrum (this machine)")
    null_tails(sub, va)
    for test in tests.values():
        print(f"\n## {oos.score_name(test)}")
        for quantile in args.quantile:
            rate_table(test, sets, quantile)
    real = real_score(sub, args.quantile[0])
    if real is not None:
        print(f"real LAMOST coadd: score {real[0]:.2f} (S/N blue {real[1]:.1f}, red {real[2]:.1f})")


if __name__ == "__main__":
    main()
