"""A synthetic LAMOST MRS data set: stars -> .fits.gz files + input catalogue + truth tables.

Why: the pipeline (preprocess -> train -> infer -> eval) needs files that look like DR7
and labels that are known exactly. Every visit is simulated from its own random stream,
``numpy.random.default_rng([seed, visit])``, so a visit's file does not depend on the
number of workers, on the order of completion, or on how many visits were asked for; a
killed run resumes by skipping visits whose file and record are already on disk.

Layout of ``out_dir``::

    data/med-<lmjd>-<planid>_sp<NN>-<fiber>.fits.gz   one file per star-visit
    catalogue.csv / .parquet   one row per spectrum (coadd pair, each exposure pair)
    labels.csv / .parquet      one row per star: star_id, labels, true RV and S/N
    truth.csv / .parquet       one row per spectrum: true S/N per arm, true RV
    synth.json                 the settings (a resumed run must use the same)
    .parts/visit-NNNNNN.json   per-visit records (what resuming relies on)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import polars as pl

from rrnet.io.catalog import write_table
from rrnet.labels import ALL_LABELS
from rrnet.synth.lamost_writer import (
    LAMOST_CATALOGUE_NAME,
    VisitInfo,
    write_lamost_catalogue,
    write_lamost_file,
)
from rrnet.synth.observe import ObservationSettings, observe
from rrnet.utils.atomic import write_text
from rrnet.utils.faults import is_machine_fault
from rrnet.utils.progress import Progress
from rrnet.utils.sizes import size_text

log = logging.getLogger("rrnet.synth")

ABUNDANCES: tuple[str, ...] = ALL_LABELS[2:]
LABELS: tuple[str, ...] = ("Teff[K]", "Logg", *ABUNDANCES, "vmic")
"""Label columns carried from the source into labels.csv (method §5 names; vmic in km/s)."""

RV_RANGE_KMS: tuple[float, float] = (-150.0, 150.0)
"""Per-star true RV, uniform [km/s]. +-150 km/s moves a rest wavelength by 0.05 %, far
inside the LAMOST coverage around the RRNet grids (>= 38 A of margin each side)."""
RV_ERROR_KMS: float = 1.0
"""RMS error of the catalogue RV against the truth [km/s] (LAMOST MRS RV precision)."""
RED_BLUE_SNR_RATIO: tuple[float, float] = (1.4, 0.15)
"""Red/blue S/N ratio: log-normal, median 1.4, log-RMS 0.15 (typical of FGK stars)."""
FIBERS_PER_PLAN: int = 16 * 250
EXPTIMES_S: tuple[int, ...] = (600, 900, 1200)


@dataclass(frozen=True)
class DatasetPaths:
    """Where :func:`make_dataset` put things."""

    root: Path
    catalogue: Path
    """Input catalogue for ``rrnet-preprocess`` (CSV; a Parquet twin sits next to it)."""
    labels: Path
    """Per-star labels (CSV; Parquet twin)."""
    truth: Path
    """Per-spectrum truth: S/N, RV (CSV; Parquet twin)."""
    data_dir: Path
    """Directory the catalogue's ``filename`` column is relative to."""
    n_visits: int = 0
    n_failed: int = 0


@dataclass
class Source:
    """Rest-frame spectra to observe: vacuum wavelength [Angstrom] and normalised flux."""

    wavelength: np.ndarray
    labels: pl.DataFrame
    """star_id plus the :data:`LABELS` columns present, one row per spectrum."""
    spectrum: Callable[[int], np.ndarray]
    """Row index of ``labels`` -> normalised flux on ``wavelength``."""
    resolution: float | None = None
    """Resolving power the spectra already have (None: unbroadened)."""
    name: str = "custom"
    independent: bool = False
    """Rows are independent random stars: visit k observes row k (no permutation)."""


def library_source(library: object, name: str = "library") -> Source:
    """Wrap a library-like object (``.wavelength``, ``.flux`` [n, n_wave], ``.labels``)."""
    flux = library.flux
    return Source(
        wavelength=np.asarray(library.wavelength, np.float64),
        labels=library.labels,
        spectrum=lambda i: np.asarray(flux[i]),
        resolution=getattr(library, "resolution", None)
        or (getattr(library, "meta", None) or {}).get("resolution"),
        name=name,
    )


def emulator_source(emulator: object, labels: pl.DataFrame, name: str = "emulator") -> Source:
    """Wrap an emulator (``.wavelength``, ``.spectrum(labels)``) evaluated at ``labels`` rows."""

    def spectrum(i: int) -> np.ndarray:
        row = labels.row(i, named=True)
        return np.asarray(emulator.spectrum({k: v for k, v in row.items() if k != "star_id"}))

    return Source(
        wavelength=np.asarray(emulator.wavelength, np.float64),
        labels=labels,
        spectrum=spectrum,
        resolution=getattr(emulator, "resolution", None),
        name=name,
        independent=True,
    )


def resolve_source(source: Source | str | object | None, seed: int = 0, n_stars: int = 0) -> Source:
    """``None``/"library": the shipped reference library; "emulator": the emulator at
    ``n_stars`` label sets drawn from the library's label prior (stream ``seed``); a
    :class:`Source`; or any library-like object."""
    if isinstance(source, Source):
        return source
    if source is None or source == "library":
        from rrnet.synth import load_library

        return library_source(load_library())
    if source == "emulator":
        from rrnet.synth import load_emulator
        from rrnet.synth.library import draw_labels

        rows = [{"star_id": f"emu-{i:06d}", **draw_labels(i, seed)} for i in range(max(n_stars, 1))]
        return emulator_source(load_emulator(), pl.DataFrame(rows))
    if isinstance(source, str):
        raise ValueError(f"unknown source {source!r} (expected 'library' or 'emulator')")
    return library_source(source, name=type(source).__name__)


# --- one visit -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisitTask:
    """Everything a worker needs to simulate and write one star-visit."""

    visit: int
    star_row: int
    star_id: str
    seed: int
    snr_range: tuple[float, float]
    exposures: tuple[int, int]
    data_dir: str
    parts_dir: str
    settings: ObservationSettings
    flux: np.ndarray = field(repr=False)


_WAVELENGTH: np.ndarray | None = None


def _init_worker(wavelength: np.ndarray) -> None:
    global _WAVELENGTH
    _WAVELENGTH = wavelength


def _visit_info(task: VisitTask, rng: np.random.Generator) -> VisitInfo:
    """Plan, fibre, sky position and timing: stars fill plans of 16 x 250 fibres."""
    plan, slot = divmod(task.visit, FIBERS_PER_PLAN)
    plan_rng = np.random.default_rng([task.seed, plan, 7])
    ra0, dec0 = plan_rng.uniform(0.0, 360.0), np.degrees(np.arcsin(plan_rng.uniform(-0.2, 0.95)))
    night = dt.datetime(2017, 9, 28, 19, 30) + dt.timedelta(days=int(plan_rng.integers(0, 900)))
    r = 2.5 * np.sqrt(rng.uniform())
    phi = rng.uniform(0.0, 2.0 * np.pi)
    dec = float(np.clip(dec0 + r * np.sin(phi), -89.9, 89.9))
    ra = float((ra0 + r * np.cos(phi) / np.cos(np.radians(dec))) % 360.0)
    return VisitInfo(
        obsid=700_000_000 + task.visit,
        ra=ra,
        dec=dec,
        planid=f"SYN{task.seed % 1000:03d}P{plan:04d}",
        spid=slot // 250 + 1,
        fiberid=slot % 250 + 1,
        start_local=night + dt.timedelta(minutes=int(rng.integers(0, 240))),
        exptime_s=int(rng.choice(EXPTIMES_S)),
        mags=tuple(float(m) for m in 13.0 + rng.normal(0.0, 1.0) + np.array([0.8, 0.0, -0.3])),
        helio_rv_kms=float(rng.uniform(-30.0, 30.0)),
        seeing_arcsec=float(rng.uniform(1.5, 3.5)),
        objname=task.star_id,
    )


def simulate_visit(task: VisitTask, wavelength: np.ndarray | None = None) -> dict:
    """Simulate one visit, write its file and its record; returns the record."""
    wavelength = _WAVELENGTH if wavelength is None else wavelength
    rng = np.random.default_rng([task.seed, task.visit])
    star_rng = np.random.default_rng([task.seed, task.star_row, 3])
    rv_true = float(star_rng.uniform(*RV_RANGE_KMS))  # a property of the star, not the visit
    lo, hi = task.snr_range
    snr_b = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    ratio = np.exp(rng.normal(np.log(RED_BLUE_SNR_RATIO[0]), RED_BLUE_SNR_RATIO[1]))
    snr = {"B": snr_b, "R": float(np.clip(snr_b * ratio, lo, hi))}
    n_exp = int(rng.integers(task.exposures[0], task.exposures[1] + 1))
    info = _visit_info(task, rng)
    rv_cat = rv_true + float(rng.normal(0.0, RV_ERROR_KMS))
    record = {"visit": task.visit, "star_id": task.star_id, "filename": info.filename}
    try:
        if not np.all(np.isfinite(task.flux)):
            raise ValueError("source spectrum has non-finite flux")
        visit = observe(
            wavelength,
            task.flux,
            rv_kms=rv_true,
            snr=snr,
            n_exposures=n_exp,
            rng=rng,
            settings=task.settings,
        )
        write_lamost_file(Path(task.data_dir) / info.filename, info, visit)
    except (ValueError, OSError) as exc:
        if is_machine_fault(exc):  # a full disk is no fault of this visit: stop, rerun later
            raise
        record |= {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        _write_json(Path(task.parts_dir) / f"visit-{task.visit:06d}.json", record)
        return record
    # the coadd's lines sit at its exposures' mean RV (with jitter, not the visit's draw)
    exposure_rvs = visit.exposure_rv_kms
    coadd_rv = rv_true if len(set(exposure_rvs)) <= 1 else float(np.mean(exposure_rvs))
    spectra = [("coadd", "COADD_B", "COADD_R", visit.coadd, coadd_rv)]
    for i, exposure in enumerate(visit.exposures):
        lmjm = info.lmjm(i)
        spectra.append(("exposure", f"B-{lmjm}", f"R-{lmjm}", exposure, visit.exposure_rv_kms[i]))
    rows = []
    for kind, ext_b, ext_r, arms, rv in spectra:
        rows.append(
            {
                "filename": info.filename,
                "extname_blue": ext_b,
                "extname_red": ext_r,
                "rv": rv_cat,
                "obsid": info.obsid,
                "ra": info.ra,
                "dec": info.dec,
                "star_id": task.star_id,
                "kind": kind,
                "n_exposures": n_exp,
                "rv_true[km/s]": rv,
                "snr_blue_true": arms["B"].snr_true,
                "snr_red_true": arms["R"].snr_true,
                "snr_blue_true_grid": arms["B"].snr_true_window,
                "snr_red_true_grid": arms["R"].snr_true_window,
                "snr_blue_target": snr["B"] if kind == "coadd" else None,
                "snr_red_target": snr["R"] if kind == "coadd" else None,
            }
        )
    record |= {"status": "ok", "rows": rows}
    _write_json(Path(task.parts_dir) / f"visit-{task.visit:06d}.json", record)
    return record


def _write_json(path: Path, obj: object) -> None:
    write_text(path, json.dumps(obj))


# --- the data set ------------------------------------------------------------------------------


def _star_rows(src: Source, n_visits: int, seed: int) -> np.ndarray:
    """Source rows to observe. Independent rows (emulator draws): visit k is row k. A library:
    successive random permutations, so every prefix is stable (asking for more visits later
    keeps the first ones) and stars repeat only after the whole library has been used."""
    if src.independent:
        return np.arange(n_visits)
    rng = np.random.default_rng([seed, 1 << 21])
    n_lib = src.labels.height
    rows = [rng.permutation(n_lib) for _ in range(math.ceil(n_visits / n_lib))]
    return np.concatenate(rows)[:n_visits] if rows else np.zeros(0, np.int64)


def _check_folder(out: Path) -> None:
    """A data set is written into a new or empty folder, or resumed in its own (it
    replaced a user's catalogue.csv and labels.csv in any folder given)."""
    if not out.is_dir() or (out / "synth.json").exists():
        return
    own = ("data", ".parts")  # empty: a first start stopped before synth.json
    if any(p.name not in own or any(p.iterdir()) for p in out.iterdir()):
        raise ValueError(
            f"{out} is not empty and holds no rrnet-synth data set: give a new or empty folder"
        )


def _check_config(out_dir: Path, config: dict) -> None:
    path = out_dir / "synth.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != config:
            diff = sorted(k for k in config.keys() | old.keys() if old.get(k) != config.get(k))
            raise ValueError(
                f"{out_dir} holds a data set made with other settings ({', '.join(diff)}); "
                "use another directory or the same settings"
            )
    else:
        _write_json(path, config)


MAX_RV_JITTER_KMS = 500.0
"""Largest exposure-to-exposure RV jitter: binaries beyond that are no MRS target, and
spectra shifted further leave the library's coverage (3e5 km/s had reached -c)."""


def make_dataset(
    n_stars: int,
    out_dir: str | os.PathLike[str],
    *,
    snr_range: tuple[float, float] = (10.0, 200.0),
    exposures: tuple[int, int] = (1, 4),
    seed: int = 0,
    source: Source | str | object | None = None,
    workers: int | None = None,
    progress: bool = True,
    settings: ObservationSettings | None = None,
    rv_jitter_kms: float = 0.0,
) -> DatasetPaths:
    """Simulate ``n_stars`` star-visits and write files, catalogue, labels and truth.

    Parameters
    ----------
    n_stars
        Number of star-visits (files). Distinct library stars are used first; beyond the
        library size stars are revisited (same labels and RV, new noise).
    snr_range
        Blue-arm coadd S/N is drawn log-uniform in this range; red = blue x a log-normal
        ratio (median 1.4), clipped to the same range.
    exposures
        Inclusive range of the number of single exposures per visit.
    source
        None or "library" (reference library), "emulator", a :class:`Source`, or any
        object with ``.wavelength``, ``.flux`` and ``.labels`` (vacuum rest frame).
    rv_jitter_kms
        Standard deviation [km/s] of each exposure's RV about the visit's (a binary's
        orbit, say; truth.csv has each spectrum's own RV, the catalogue the visit's);
        with ``settings`` give it there instead.
    workers
        Processes (spawned); None: all cores when there are 16+ visits to do, else 1.
        Spawned workers re-import the calling script: call from under
        ``if __name__ == "__main__":`` (the CLI does).
    """
    if not 0 <= rv_jitter_kms <= MAX_RV_JITTER_KMS:  # also NaN; 3e5 reached -c
        raise ValueError(
            f"--rv-jitter (rv_jitter_kms) must be 0-{MAX_RV_JITTER_KMS:g} km/s, "
            f"got {rv_jitter_kms:g}"
        )
    if settings is not None and rv_jitter_kms:
        raise ValueError("give rv_jitter_kms in settings when settings are given")
    (lo, hi), (e_lo, e_hi) = _check_ranges(n_stars, snr_range, exposures)
    _check_disk(Path(out_dir), n_stars, (e_lo, e_hi))
    src = resolve_source(source, seed, n_stars)
    settings = settings or ObservationSettings(
        source_resolution=src.resolution, rv_jitter_kms=float(rv_jitter_kms)
    )
    out = Path(out_dir)
    data_dir, parts_dir = out / "data", out / ".parts"
    _check_folder(out)
    data_dir.mkdir(parents=True, exist_ok=True)
    parts_dir.mkdir(exist_ok=True)
    _check_config(
        out,
        {
            "seed": seed,
            "snr_range": [lo, hi],
            "exposures": [e_lo, e_hi],
            "source": src.name,
            "n_source_stars": None if src.independent else src.labels.height,
            "settings": asdict(settings),
        },
    )
    star_ids = src.labels["star_id"].cast(pl.String).to_list()
    rows = _star_rows(src, n_stars, seed)
    todo = [k for k in range(n_stars) if not (parts_dir / f"visit-{k:06d}.json").exists()]
    if len(todo) < n_stars:
        log.info(
            "rrnet-synth: resuming, %d of %d visits already done", n_stars - len(todo), n_stars
        )

    def tasks() -> Iterator[VisitTask]:
        for k in todo:
            yield VisitTask(
                visit=k,
                star_row=int(rows[k]),
                star_id=star_ids[rows[k]],
                seed=seed,
                snr_range=(lo, hi),
                exposures=(e_lo, e_hi),
                data_dir=str(data_dir),
                parts_dir=str(parts_dir),
                settings=settings,
                flux=_source_flux(src, int(rows[k])),
            )

    if workers is None:
        workers = (os.cpu_count() or 1) if len(todo) >= 16 else 1
    _run_visits(tasks(), len(todo), workers, progress, src.wavelength)
    return _write_tables(out, data_dir, parts_dir, n_stars, src)


def _check_ranges(
    n_stars: int, snr_range: tuple[float, float], exposures: tuple[int, int]
) -> tuple[tuple[float, float], tuple[int, int]]:
    """The S/N and exposure-count ranges as numbers, refused early when they are empty."""
    lo, hi = (float(s) for s in snr_range)
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(f"snr_range must satisfy 0 < low <= high, got {snr_range}")
    e_lo, e_hi = (int(e) for e in exposures)
    if not 1 <= e_lo <= e_hi:
        raise ValueError(f"exposures must satisfy 1 <= low <= high, got {exposures}")
    if n_stars < 0:
        raise ValueError(f"n_stars must be >= 0, got {n_stars}")
    return (lo, hi), (e_lo, e_hi)


BYTES_PER_SPECTRUM = 85_000
"""About what one simulated spectrum (an exposure or the coadd) adds to a ``.fits.gz``
file (docs/synth.md: ~290 kB per file of 1-4 exposures)."""


def _check_disk(out: Path, n_visits: int, exposures: tuple[int, int]) -> None:
    """Refuse, before any work, a data set that cannot fit on the disk (a mistyped
    ``--stars`` of 10**21 otherwise spent hours planning visits it could never write);
    visits already written by an earlier run count as done."""
    per_visit = BYTES_PER_SPECTRUM * (1 + sum(exposures) / 2)
    data_dir = out / "data"
    done = sum(1 for _ in os.scandir(data_dir)) if data_dir.is_dir() else 0
    need = max(n_visits - done, 0) * per_visit
    where = next(p for p in (out, *out.absolute().parents) if p.exists())
    free = shutil.disk_usage(where).free
    if need > free:
        raise ValueError(
            f"{n_visits:,} visits need about {size_text(need)} ({per_visit / 1e3:.0f} kB each) "
            f"and {where} has {size_text(free)} free"
        )


def _run_visits(
    tasks: Iterator[VisitTask], n: int, workers: int, progress: bool, wavelength: np.ndarray
) -> None:
    """Simulate every task, in this process or in ``workers`` spawned ones."""
    bar = Progress(n, enabled=progress, prefix="rrnet-synth", unit="visits", interval=10.0)
    try:
        if workers <= 1:
            for task in tasks:
                simulate_visit(task, wavelength)
                bar.update()
        else:
            with ProcessPoolExecutor(
                workers,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
                initargs=(wavelength,),
            ) as pool:
                pending: set = set()
                for task in tasks:  # bounded queue: spectra are not all held in memory
                    pending.add(pool.submit(simulate_visit, task))
                    if len(pending) >= 4 * workers:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        _collect(done, bar)
                _collect(wait(pending).done, bar)
    finally:
        bar.close()


def _source_flux(src: Source, row: int) -> np.ndarray:
    """The source spectrum of ``row``; NaN (a failed visit, not a crash) if it cannot be made."""
    try:
        return np.asarray(src.spectrum(row), np.float32)
    except (ValueError, KeyError, IndexError) as exc:
        log.warning("rrnet-synth: warning: no spectrum for source row %d: %s", row, exc)
        return np.full(src.wavelength.size, np.nan, np.float32)


def _collect(done: set[Future], bar: Progress) -> None:
    for future in done:
        future.result()  # re-raise a worker's unexpected error
        bar.update()


def _write_tables(out: Path, data_dir: Path, parts_dir: Path, n: int, src: Source) -> DatasetPaths:
    """Gather the per-visit records into catalogue, truth and labels (atomic writes)."""
    records = [json.loads((parts_dir / f"visit-{k:06d}.json").read_text()) for k in range(n)]
    failed = [r for r in records if r["status"] != "ok"]
    for r in failed:
        log.warning(
            "rrnet-synth: warning: visit %d (%s) failed: %s", r["visit"], r["star_id"], r["reason"]
        )
    spectra = pl.DataFrame(
        [row for r in records if r["status"] == "ok" for row in r["rows"]],
        schema_overrides={"snr_blue_target": pl.Float64, "snr_red_target": pl.Float64},
    )
    if spectra.is_empty():
        spectra = pl.DataFrame(schema=_EMPTY_SCHEMA)
    catalogue = spectra.select(_CATALOGUE_COLUMNS)
    truth = spectra.select(
        "obsid",
        "filename",
        "extname_blue",
        "extname_red",
        "star_id",
        "kind",
        "n_exposures",
        "rv_true[km/s]",
        "snr_blue_true",
        "snr_red_true",
        "snr_blue_true_grid",
        "snr_red_true_grid",
        "snr_blue_target",
        "snr_red_target",
    )
    best = (
        spectra.filter(pl.col("kind") == "coadd")
        .sort("snr_blue_true", descending=True)
        .group_by("star_id", maintain_order=True)
        .agg(
            pl.col("rv_true[km/s]").first(),
            pl.col("snr_blue_true").first(),
            pl.col("snr_red_true").first(),
            pl.len().alias("n_visits"),
        )
    )
    label_cols = ["star_id", *(c for c in LABELS if c in src.labels.columns)]
    labels = (
        src.labels.select(label_cols)
        .with_columns(pl.col("star_id").cast(pl.String))
        .join(best, on="star_id", how="inner", maintain_order="left")
    )
    paths = {}
    for name, table in (("catalogue", catalogue), ("labels", labels), ("truth", truth)):
        for ext in ("csv", "parquet"):
            write_table(table, out / f"{name}.{ext}")
        paths[name] = out / f"{name}.csv"
    write_lamost_catalogue(spectra.iter_rows(named=True), out / LAMOST_CATALOGUE_NAME)
    return DatasetPaths(
        root=out,
        catalogue=paths["catalogue"],
        labels=paths["labels"],
        truth=paths["truth"],
        data_dir=data_dir,
        n_visits=n - len(failed),
        n_failed=len(failed),
    )


_CATALOGUE_COLUMNS = (
    "filename",
    "extname_blue",
    "extname_red",
    "rv",
    "obsid",
    "ra",
    "dec",
    "star_id",
)
_EMPTY_SCHEMA = {
    "filename": pl.String, "extname_blue": pl.String, "extname_red": pl.String,
    "rv": pl.Float64, "obsid": pl.Int64, "ra": pl.Float64, "dec": pl.Float64,
    "star_id": pl.String, "kind": pl.String, "n_exposures": pl.Int64,
    "rv_true[km/s]": pl.Float64, "snr_blue_true": pl.Float64, "snr_red_true": pl.Float64,
    "snr_blue_true_grid": pl.Float64, "snr_red_true_grid": pl.Float64,
    "snr_blue_target": pl.Float64, "snr_red_target": pl.Float64,
}  # fmt: skip
