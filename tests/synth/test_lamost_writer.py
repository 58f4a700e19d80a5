"""Synthetic files have the real DR7 MRS structure and open in every reader."""

from __future__ import annotations

import datetime as dt
import gzip

import fitsio
import numpy as np
import pytest

from helpers import REAL_FILE as REAL
from rrnet.io.lamost import read_arms, read_lamost
from rrnet.synth.lamost_writer import VisitInfo, designation, galactic, write_lamost_file
from rrnet.synth.observe import ObservationSettings, observe

needs_real = pytest.mark.skipif(not REAL.exists(), reason="real LAMOST file not available")

# The real file's visit: its start time, exposure time and position.
INFO = VisitInfo(
    obsid=700000042,
    ra=293.343833,
    dec=43.017495,
    planid="SYN000P0000",
    spid=2,
    fiberid=51,
    start_local=dt.datetime(2017, 9, 28, 19, 58, 49),
    exptime_s=600,
    mags=(12.41, 11.59, 11.29),
    helio_rv_kms=11.2524,
    seeing_arcsec=2.9,
    objname="star-42",
)


def a_visit(n_exposures: int = 4, seed: int = 0):
    wave = np.arange(4850.0, 6950.0, 0.02)
    flux = 1.0 - 0.4 * np.exp(-0.5 * ((wave % 5.0 - 2.5) / 0.08) ** 2)
    return observe(
        wave,
        flux,
        rv_kms=-42.0,
        snr={"B": 40.0, "R": 60.0},
        n_exposures=n_exposures,
        rng=np.random.default_rng(seed),
        settings=ObservationSettings(bad_pixel_rate=1e-3),
    )


def test_names_times_and_coordinates_follow_the_real_file():
    assert INFO.filename == "med-58025-SYN000P0000_sp02-051.fits.gz"
    assert INFO.lmjd == 58025
    # the real exposures B-83555758 ... B-83555799 (600 s each, ~211 s apart)
    assert [INFO.lmjm(i) for i in range(4)] == [83555758, 83555772, 83555785, 83555799]
    assert designation(293.343833, 43.017495) == "LAMOST J193322.51+430102.9"
    assert designation(10.0, -5.5) == "LAMOST J004000.00-053000.0"
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    gl, gb = galactic(293.343833, 43.017495)
    want = SkyCoord(293.343833 * u.deg, 43.017495 * u.deg, frame="icrs").galactic
    assert gl == pytest.approx(want.l.deg, abs=1e-3)  # an independent transformation
    assert gb == pytest.approx(want.b.deg, abs=1e-3)


@needs_real
def test_structure_matches_the_real_file(tmp_path):
    path = write_lamost_file(tmp_path / INFO.filename, INFO, a_visit())
    with fitsio.FITS(str(REAL)) as real, fitsio.FITS(str(path)) as ours:
        real_names = [h.get_extname() for h in real]
        # same start time and exposure time as the real visit: identical HDU names
        assert [h.get_extname() for h in ours] == real_names
        assert ours[0].read_header()["N_EXTEN"] == len(ours)
        for real_ext, our_ext in zip(real_names, [h.get_extname() for h in ours], strict=True):
            real_keys = set(real[real_ext].read_header().keys()) - {None, "COMMENT"}
            our_keys = set(ours[our_ext].read_header().keys())
            assert real_keys <= our_keys, (real_ext, sorted(real_keys - our_keys))
            if real_ext == "Information":
                continue
            real_data, our_data = real[real_ext].read(), ours[our_ext].read()
            assert our_data.dtype == real_data.dtype  # >f4 FLUX IVAR LOGLAM, >i2 masks
            assert our_data.size == real_data.size  # one row per pixel, same lengths
            assert np.sign(np.diff(our_data["LOGLAM"][:2])) == np.sign(
                np.diff(real_data["LOGLAM"][:2])
            )
        header = ours[0].read_header()
        assert header["VACUUM"] is True and header["SIMULATE"] is True
        assert header["DESIG"] == "LAMOST J193322.51+430102.9"
        assert ours["B-83555772"].read_header()["LMJM"] == "83555772"
        assert ours["COADD_R"].read_header()["LMJMLIS0"] == "83555758-83555772-83555785"
        assert ours["COADD_R"].read_header()["LMJMLIS1"] == "83555799"


def test_round_trip_through_the_reader(tmp_path):
    visit = a_visit(n_exposures=2)
    path = write_lamost_file(tmp_path / INFO.filename, INFO, visit)
    info = read_lamost(path)
    assert info.obsid == INFO.obsid and info.filename == INFO.filename.removesuffix(".gz")
    assert info.ra == pytest.approx(INFO.ra) and info.dec == pytest.approx(INFO.dec)
    lmjm = [INFO.lmjm(i) for i in range(2)]
    names = ["COADD_B", "COADD_R", *(f"{a}-{m}" for a in "BR" for m in lmjm)]
    assert info.extnames == tuple(names)
    _, arms = read_arms(path, names)
    for name in names:
        arm_letter = name[-1] if name.startswith("COADD") else name[0]
        if name.startswith("COADD"):
            spec = visit.coadd[arm_letter]
        else:
            spec = visit.exposures[lmjm.index(int(name[2:]))][arm_letter]
        arm = arms[name]
        np.testing.assert_array_equal(arm.flux, spec.flux)
        np.testing.assert_array_equal(arm.ivar, spec.ivar)
        np.testing.assert_array_equal(arm.loglam, spec.loglam.astype(np.float64))
        np.testing.assert_array_equal(arm.mask, spec.mask)
        assert arm.snr == pytest.approx(spec.snr_measured(), abs=0.006)
        assert arm.snr == pytest.approx(spec.snr_true, rel=0.1)


def test_astropy_opens_it(tmp_path):
    astropy_fits = pytest.importorskip("astropy.io.fits")
    path = write_lamost_file(tmp_path / INFO.filename, INFO, a_visit(n_exposures=1))
    with astropy_fits.open(path) as hdul:
        assert [h.name for h in hdul] == [
            "Information",
            "COADD_B",
            "COADD_R",
            "B-83555758",
            "R-83555758",
        ]
        assert hdul["COADD_B"].data["FLUX"].dtype == np.dtype(">f4")
        assert hdul[0].header["OBSID"] == INFO.obsid


def test_writes_are_reproducible_genuine_gzip_and_atomic(tmp_path):
    a = write_lamost_file(tmp_path / "a.fits.gz", INFO, a_visit(seed=3))
    b = write_lamost_file(tmp_path / "b.fits.gz", INFO, a_visit(seed=3))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes()[:2] == b"\x1f\x8b"  # gzip magic
    assert gzip.decompress(a.read_bytes())[:30] == b"SIMPLE  =                    T"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fits.gz", "b.fits.gz"]
    with pytest.raises(OSError):
        write_lamost_file(tmp_path / "missing-dir" / "c.fits.gz", INFO, a_visit())
    assert not (tmp_path / "missing-dir").exists()
