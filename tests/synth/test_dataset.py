"""make_dataset end to end on an analytic library: files -> reader -> preprocessing kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers import AnalyticLibrary, library
from rrnet.grid import BLUE_GRID, RED_GRID
from rrnet.io.lamost import read_arms
from rrnet.preprocess import normalize, normalize_detailed, resample_spectrum, snr_ivar
from rrnet.synth.dataset import LABELS, emulator_source, make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    paths = make_dataset(
        5,
        out,
        snr_range=(15, 120),
        exposures=(1, 3),
        seed=11,
        source=library(),
        workers=1,
        progress=False,
    )
    return paths


def test_tables(dataset):
    cat = pl.read_csv(dataset.catalogue)
    truth = pl.read_csv(dataset.truth)
    labels = pl.read_csv(dataset.labels)
    assert cat.columns == [
        "filename",
        "extname_blue",
        "extname_red",
        "rv",
        "obsid",
        "ra",
        "dec",
        "star_id",
    ]
    assert pl.read_parquet(dataset.catalogue.with_suffix(".parquet")).equals(cat)
    # one coadd row per visit plus one row per exposure
    coadds = truth.filter(pl.col("kind") == "coadd")
    assert coadds.height == 5 == dataset.n_visits
    assert truth.height == coadds.height + coadds["n_exposures"].sum()
    assert set(coadds["n_exposures"]) <= {1, 2, 3}
    assert cat.select("filename", "extname_blue").n_unique() == cat.height
    # labels come from the library rows the visits observed, under method §5 names
    lib = library().labels
    assert {"star_id", "Teff[K]", "Logg", "FeH", "CuH", "vmic", "rv_true[km/s]"} <= set(
        labels.columns
    )
    joined = labels.join(lib, on="star_id", suffix="_lib")
    assert joined.height == labels.height == 5
    np.testing.assert_allclose(joined["Teff[K]"], joined["Teff[K]_lib"])
    # catalogue RV = truth + ~1 km/s measurement error; S/N inside the asked range
    rv = cat.join(truth, on=["obsid", "extname_blue"])
    assert np.all(np.abs(rv["rv"].to_numpy() - rv["rv_true[km/s]"].to_numpy()) < 5.0)
    snr = coadds["snr_blue_true"].to_numpy()
    assert np.all((snr > 15 * 0.999) & (snr < 120.1))
    np.testing.assert_allclose(coadds["snr_blue_true"], coadds["snr_blue_target"], rtol=1e-4)


def test_round_trip_reader_and_preprocessor(dataset):
    """Every catalogue row reads, resamples onto the RRNet grids and normalises; the S/N
    the preprocessor measures matches the injected one within 10 %."""
    cat = pl.read_csv(dataset.catalogue)
    truth = pl.read_csv(dataset.truth)
    rows = cat.join(truth, on=["obsid", "extname_blue", "extname_red"])
    assert rows.height == cat.height
    for row in rows.iter_rows(named=True):
        _, arms = read_arms(
            dataset.data_dir / row["filename"], [row["extname_blue"], row["extname_red"]]
        )
        blue, red = arms[row["extname_blue"]], arms[row["extname_red"]]
        for arm, grid, key in ((blue, BLUE_GRID, "blue"), (red, RED_GRID, "red")):
            snr = snr_ivar(arm.loglam, arm.flux, arm.ivar, row["rv"], grid)
            assert snr == pytest.approx(row[f"snr_{key}_true_grid"], rel=0.1)
            assert arm.snr == pytest.approx(row[f"snr_{key}_true"], rel=0.1)
        flux = resample_spectrum(blue.loglam, blue.flux, red.loglam, red.flux, row["rv"])
        assert flux.shape == (7200,)
        result = normalize_detailed(flux[None, :])
        assert result.status[0] == 0, result
        assert np.isfinite(result.flux).all()
        assert 0.9 < np.median(result.flux) < 1.1


def broadened_on(grid: np.ndarray, wave: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """Library spectrum through a Gaussian LSF of FWHM 5150 A / 7500 (direct convolution)."""
    step = 0.02
    sigma_px = 5150.0 / 7500.0 / (2.0 * np.sqrt(2.0 * np.log(2.0))) / step
    x = np.arange(-60, 61)
    kernel = np.exp(-0.5 * (x / sigma_px) ** 2)
    smooth = np.convolve(flux - 1.0, kernel / kernel.sum(), mode="same") + 1.0
    return np.interp(grid, wave, smooth)


def test_lines_where_the_library_has_them_after_the_round_trip(dataset):
    """RV-corrected, normalised coadds match the library spectrum at R = 7500; the residual
    shift is the catalogue's RV error (rv_cat - rv_true), nothing more."""
    cat = pl.read_csv(dataset.catalogue).filter(pl.col("extname_blue") == "COADD_B")
    truth = pl.read_csv(dataset.truth).filter(pl.col("kind") == "coadd")
    lib = library()
    for row in cat.join(truth, on=["obsid", "extname_blue"]).iter_rows(named=True):
        _, arms = read_arms(dataset.data_dir / row["filename"], ["COADD_B", "COADD_R"])
        b, r = arms["COADD_B"], arms["COADD_R"]
        flux = resample_spectrum(b.loglam, b.flux, r.loglam, r.flux, row["rv"])
        observed = normalize(flux[None, :])[0][:3600]
        star = lib.labels["star_id"].to_list().index(row["star_id"])
        shifts = np.arange(-0.1, 0.1, 0.002)  # Angstrom
        chi2 = [
            np.sum((observed - broadened_on(BLUE_GRID + d, lib.wavelength, lib.flux[star])) ** 2)
            for d in shifts
        ]
        # the model at grid + d matches: observed lines sit d to the blue of the library's
        line_shift = -shifts[int(np.argmin(chi2))]
        expected = 5150.0 * (row["rv_true[km/s]"] - row["rv"]) / 299792.458
        assert line_shift == pytest.approx(expected, abs=0.006)  # 0.35 km/s


def test_same_seed_same_files_any_workers_and_resume(tmp_path, dataset):
    a = make_dataset(
        3,
        tmp_path / "a",
        seed=11,
        snr_range=(15, 120),
        exposures=(1, 3),
        source=library(),
        workers=2,
        progress=False,
    )
    files = sorted(p.name for p in a.data_dir.iterdir())
    assert len(files) == 3
    for name in files:  # the first 3 visits of the module data set (workers=1)
        assert (a.data_dir / name).read_bytes() == (dataset.data_dir / name).read_bytes()
    # kill-and-resume: lose one visit's file and record, run again
    victim = a.data_dir / files[0]
    before = victim.read_bytes()
    victim.unlink()
    for part in (a.root / ".parts").iterdir():
        if files[0] in part.read_text():
            part.unlink()
    b = make_dataset(
        3,
        tmp_path / "a",
        seed=11,
        snr_range=(15, 120),
        exposures=(1, 3),
        source=library(),
        workers=1,
        progress=False,
    )
    assert victim.read_bytes() == before
    assert pl.read_csv(b.catalogue).equals(pl.read_csv(a.catalogue))
    with pytest.raises(ValueError, match="other settings"):
        make_dataset(3, tmp_path / "a", seed=12, source=library(), workers=1, progress=False)


def test_bad_source_spectrum_does_not_stop_the_batch(tmp_path):
    lib = library()
    flux = lib.flux.copy()
    flux[:, 100] = np.nan  # every star broken ...
    broken = AnalyticLibrary(lib.labels, lib.wavelength, flux)
    broken.flux[2] = lib.flux[2]  # ... but one
    paths = make_dataset(6, tmp_path, seed=1, source=broken, workers=1, progress=False)
    assert paths.n_failed == 5 and paths.n_visits == 1
    assert pl.read_csv(paths.labels)["star_id"].to_list() == ["lib-002"]
    assert len(list(paths.data_dir.iterdir())) == 1


def test_argument_checks(tmp_path):
    for kwargs in ({"snr_range": (0, 10)}, {"snr_range": (50, 10)}, {"exposures": (0, 2)}):
        with pytest.raises(ValueError):
            make_dataset(1, tmp_path, source=library(), progress=False, **kwargs)
    with pytest.raises(ValueError, match="unknown source"):
        make_dataset(1, tmp_path / "x", source="nonsense", progress=False)


def test_real_layout_paths(dataset):
    assert dataset.catalogue == Path(dataset.root) / "catalogue.csv"
    names = [p.name for p in dataset.data_dir.iterdir()]
    assert all(n.startswith("med-") and n.endswith(".fits.gz") for n in names)


class FakeEmulator:
    """Emulator-shaped: ``.wavelength`` and ``.spectrum(mapping)``; refuses Teff > 6000 K."""

    def __init__(self) -> None:
        self.wavelength = library().wavelength

    def spectrum(self, labels):
        if labels["Teff[K]"] > 6000:
            raise ValueError("labels outside the emulator's training range: ['Teff[K]']")
        depth = 0.2 + 0.1 * labels["FeH"]
        return 1.0 - depth * np.exp(-0.5 * ((self.wavelength % 3.3 - 1.65) / 0.12) ** 2)


def test_emulator_source_visits_row_k_and_survives_refusals(tmp_path):
    labels = pl.DataFrame(
        {
            "star_id": ["e0", "e1", "e2"],
            **{c: [0.1, 0.2, 0.3] for c in LABELS},
            "Teff[K]": [5000.0, 6500.0, 5500.0],
        }
    )
    src = emulator_source(FakeEmulator(), labels)
    paths = make_dataset(3, tmp_path, seed=2, source=src, workers=1, progress=False)
    assert paths.n_visits == 2 and paths.n_failed == 1  # e1 is refused, the batch goes on
    truth = pl.read_csv(paths.truth).filter(pl.col("kind") == "coadd")
    assert truth["star_id"].to_list() == ["e0", "e2"]  # visit k observes row k
    got = pl.read_csv(paths.labels).sort("star_id")
    np.testing.assert_allclose(got["FeH"], [0.1, 0.3])


def test_labels_keep_the_source_order_not_text_order(tmp_path):
    """Star ids such as s2, s10 come back in the source's order (text order: s10 before s2)."""
    labels = pl.DataFrame(
        {"star_id": ["s2", "s10", "s1"], **{c: [0.1, 0.2, 0.3] for c in LABELS}}
    ).with_columns(pl.lit(5000.0).alias("Teff[K]"))
    src = emulator_source(FakeEmulator(), labels)
    paths = make_dataset(3, tmp_path, seed=2, source=src, workers=1, progress=False)
    assert pl.read_csv(paths.labels)["star_id"].to_list() == ["s2", "s10", "s1"]


def test_a_data_set_that_cannot_fit_on_the_disk_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped --stars of 10**21 spent hours planning visits before writing any;
    visits an earlier run wrote count as done (a resume on a nearly full disk goes on)."""
    import shutil as sh
    from collections import namedtuple

    from rrnet.synth import dataset

    with pytest.raises(ValueError, match=r"10,000,000,000 visits need about .* TB"):
        make_dataset(10**10, tmp_path / "huge", progress=False)
    assert not (tmp_path / "huge").exists()  # nothing made

    per_visit = dataset.BYTES_PER_SPECTRUM * (1 + (1 + 4) / 2)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda _: usage(0, 0, int(5.5 * per_visit)))
    with pytest.raises(ValueError, match="10 visits need about"):
        dataset._check_disk(tmp_path / "out", 10, (1, 4))
    (tmp_path / "out" / "data").mkdir(parents=True)
    for k in range(5):  # five visits written before: five to go, and room for them
        (tmp_path / "out" / "data" / f"v{k}.fits.gz").write_bytes(b"x")
    dataset._check_disk(tmp_path / "out", 10, (1, 4))


def test_a_full_disk_stops_the_run_and_the_rerun_makes_the_visit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk was recorded as a failed visit for good (exit 0; a rerun skipped it):
    the machine's fault stops the run instead, and the rerun writes the visit."""
    import errno

    from rrnet.synth import dataset

    real_write = dataset.write_lamost_file
    calls = {"n": 0}

    def write(path, info, visit):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, info, visit)

    monkeypatch.setattr(dataset, "write_lamost_file", write)
    with pytest.raises(OSError, match="No space left"):
        make_dataset(3, tmp_path / "s", progress=False, workers=1)
    again = make_dataset(3, tmp_path / "s", progress=False, workers=1)
    assert (again.n_visits, again.n_failed) == (3, 0)


def test_a_users_folder_is_never_written_into(tmp_path: Path) -> None:
    """The data set replaced catalogue.csv and labels.csv of any folder given; now only
    a new or empty folder, or one of its own data sets (resumed), is written."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "labels.csv").write_text("my labels\n")
    with pytest.raises(ValueError, match="holds no rrnet-synth data set"):
        make_dataset(1, mine, progress=False, workers=1)
    assert sorted(p.name for p in mine.iterdir()) == ["labels.csv"]
    assert (mine / "labels.csv").read_text() == "my labels\n"
    (tmp_path / "cut" / "data").mkdir(parents=True)  # a start stopped before synth.json
    assert make_dataset(1, tmp_path / "cut", progress=False, workers=1).n_visits == 1
    assert make_dataset(1, tmp_path / "cut", progress=False, workers=1).n_visits == 1  # resumed
