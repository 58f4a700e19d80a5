"""Write a simulated visit as a genuine LAMOST DR7 MRS ``.fits.gz`` file.

Why copy the real layout key for key: the reader and every downstream tool must be
exercised on the structure they will meet in DR7 (header-only primary HDU "Information",
``COADD_B``/``COADD_R`` then ``B-<lmjm>``/``R-<lmjm>`` tables with one row per pixel,
the red exposures stored with descending LOGLAM). Files carry ``SIMULATE = T`` so they
can never be mistaken for survey data. Writes are atomic (temporary name, then
``os.replace``) and byte-for-byte reproducible (fixed gzip time stamp).
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np
import polars as pl

from rrnet.synth.observe import ARMS, ArmSpectrum, Visit
from rrnet.utils.atomic import atomic_path

LOCAL_UTC_OFFSET = dt.timedelta(hours=8)
"""LAMOST (Xinglong) local time is Beijing time, UTC+8; LMJD/LMJM count local time."""
MJD_EPOCH = dt.datetime(1858, 11, 17)
OVERHEAD_S = 210.0
"""Seconds between the end of one exposure and the start of the next (real file: ~211 s)."""


@dataclass(frozen=True)
class VisitInfo:
    """The non-spectral facts of one star-visit, written into the headers."""

    obsid: int
    ra: float
    """Right ascension [deg]."""
    dec: float
    """Declination [deg]."""
    planid: str
    spid: int
    """Spectrograph id, 1-16."""
    fiberid: int
    """Fibre id within the spectrograph, 1-250."""
    start_local: dt.datetime
    """Local (UTC+8) start of the first exposure."""
    exptime_s: int
    mags: tuple[float, float, float]
    """g, r, i [mag]."""
    helio_rv_kms: float
    """Heliocentric correction already applied to the spectra [km/s] (informational)."""
    seeing_arcsec: float
    objname: str

    @property
    def lmjd(self) -> int:
        """Local modified Julian day of the night (changes at local noon)."""
        return int(np.floor(_mjd(self.start_local) + 0.5))

    @property
    def filename(self) -> str:
        """Real-looking file name, e.g. ``med-58025-HIP9645901_sp02-051.fits.gz``."""
        return lamost_filename(self.lmjd, self.planid, self.spid, self.fiberid)

    def exposure_start(self, i: int) -> dt.datetime:
        return self.start_local + dt.timedelta(seconds=i * (self.exptime_s + OVERHEAD_S))

    def lmjm(self, i: int) -> int:
        """Local modified Julian minute at the start of exposure ``i``."""
        return int(np.floor(_mjd(self.exposure_start(i)) * 1440.0 + 1e-6))


def lamost_filename(lmjd: int, planid: str, spid: int, fiberid: int) -> str:
    return f"med-{lmjd}-{planid}_sp{spid:02d}-{fiberid:03d}.fits.gz"


def designation(ra_deg: float, dec_deg: float) -> str:
    """LAMOST designation ``LAMOST Jhhmmss.ss+ddmmss.s`` (truncated, like the survey)."""
    h = (ra_deg % 360.0) / 15.0
    hh, mm = int(h), int((h * 60) % 60)
    ss = np.floor(((h * 3600) % 60) * 100) / 100
    sign = "+" if dec_deg >= 0 else "-"
    d = abs(dec_deg)
    dd, dm = int(d), int((d * 60) % 60)
    ds = np.floor(((d * 3600) % 60) * 10) / 10
    return f"LAMOST J{hh:02d}{mm:02d}{ss:05.2f}{sign}{dd:02d}{dm:02d}{ds:04.1f}"


_EQ_TO_GAL = np.array(
    [
        [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
        [0.4941094278755837, -0.4448296299600112, 0.7469822444972189],
        [-0.8676661490190047, -0.1980763734312015, 0.4559837761750669],
    ]
)
"""J2000 equatorial -> galactic rotation (Hipparcos definition)."""


def galactic(ra_deg: float, dec_deg: float) -> tuple[float, float]:
    """Galactic longitude and latitude [deg] of an equatorial J2000 position [deg]."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    x, y, z = _EQ_TO_GAL @ np.array(
        [np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]
    )
    return float(np.degrees(np.arctan2(y, x)) % 360.0), float(np.degrees(np.arcsin(z)))


def _mjd(t: dt.datetime) -> float:
    return (t - MJD_EPOCH) / dt.timedelta(days=1)


def _iso(t: dt.datetime, decimals: bool = False) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (".0" if decimals else "")


def _rec(name: str, value: object, comment: str = "") -> dict:
    return {"name": name, "value": value, "comment": comment}


def _section(title: str) -> dict:
    return {"name": "COMMENT", "value": f"--------{title}"}


def _primary_header(info: VisitInfo, n_exposures: int, n_hdu: int) -> list[dict]:
    """The real file's primary keys, in its order, with simulated values."""
    beg = info.start_local
    end = info.exposure_start(n_exposures - 1) + dt.timedelta(seconds=info.exptime_s)
    mid_utc = beg + (end - beg) / 2 - LOCAL_UTC_OFFSET
    created = (end + dt.timedelta(days=875)).replace(microsecond=0)
    g, r, i = info.mags
    gl, gb = galactic(info.ra, info.dec)
    return [
        _section("FILE INFORMATION"),
        _rec("FILENAME", info.filename.removesuffix(".gz")),
        _rec("OBSID", info.obsid, "Unique number ID of this spectrum"),
        _rec("AUTHOR", "LAMOST Pipeline", "Who compiled the information"),
        _rec("DATA_V", "LAMOST DR7", "Data release version"),
        _rec("N_EXTEN", n_hdu, "The extension number"),
        _rec("EXTNAME", "Information", "The extension name"),
        _rec("ORIGIN", "NAOC-LAMOST", "Organization responsible for creating this file"),
        _rec("DATE", _iso(created - LOCAL_UTC_OFFSET), "Time when this HDU is created (UTC)"),
        _rec("SIMULATE", True, "rrnet-synth synthetic spectrum, not survey data"),
        _section("TELESCOPE PARAMETERS"),
        _rec("TELESCOP", "LAMOST", "GuoShouJing Telescope"),
        _rec("LONGITUD", 117.58, "[deg] Longitude of site"),
        _rec("LATITUDE", 40.39, "[deg] Latitude of site"),
        _rec("FOCUS", 19964, "[mm] Telescope focus"),
        _rec("CAMPRO", "NEWCAM", "Camera program name"),
        _rec("CAMVER", "v2.0", "Camera program version"),
        _section("OBSERVATION PARAMETERS"),
        _rec("DATE-OBS", _iso(mid_utc), "The observation median UTC"),
        _rec("DATE-BEG", _iso(beg, True), "The observation start local time"),
        _rec("DATE-END", _iso(end, True), "The observation end local time"),
        _rec("LMJD", info.lmjd, "Local Modified Julian Day"),
        _rec("MJD", int(np.floor(_mjd(beg - LOCAL_UTC_OFFSET))), "Modified Julian Day"),
        _rec("PLANID", info.planid, "Plan ID in use"),
        _rec("RA", round(info.ra, 6), "[deg] Right ascension of object"),
        _rec("DEC", round(info.dec, 6), "[deg] Declination of object"),
        _rec("RA_OBS", round(info.ra, 6), "[deg] Right ascension during observing"),
        _rec("DEC_OBS", round(info.dec, 6), "[deg] Declination during observing"),
        _rec("OFFSET", False, "Whether there's a offset during observing"),
        _rec("OFFSET_V", 0.0, "Offset value in arcsecond"),
        _rec("GL", round(gl, 6), "[deg] Galactic longitude of object"),
        _rec("GB", round(gb, 6), "[deg] Galactic latitude of object"),
        _rec("DESIG", designation(info.ra, info.dec), "Designation of LAMOST target"),
        _rec("FIBERID", info.fiberid, "Fiber ID of Object"),
        _rec(
            "CELL_ID",
            f"E{info.spid:02d}{info.fiberid % 100:02d}",
            "Fiber Unit ID on the focal plane",
        ),
        _rec("X_VALUE", 0.0, "[mm] X coordinate of object on the focal plane"),
        _rec("Y_VALUE", 0.0, "[mm] Y coordinate of object on the focal plane"),
        _rec("OBJNAME", info.objname, "Name of object"),
        _rec("OBJTYPE", "Star", "Object type from input catalog"),
        _rec("TSOURCE", "RRNET_SYNTH", "Name of input catalog"),
        _rec("TCOMMENT", "", "Target information"),
        _rec("TFROM", "", "Target catalog"),
        _rec("FIBERTYP", "Obj", "Fiber type of object"),
        _rec("FIBERMAS", 0, "Bitmask of warning values, 0 means all is well"),
        _rec("MAGTYPE", "gri", "Magnitude type of object"),
        _rec("MAG1", round(g, 2), "[mag] Mag1 of object"),
        _rec("MAG2", round(r, 2), "[mag] Mag2 of object"),
        _rec("MAG3", round(i, 2), "[mag] Mag3 of object"),
        *(_rec(f"MAG{k}", 99.0, f"[mag] Mag{k} of object") for k in range(4, 8)),
        _rec("OBS_TYPE", "OBJ", "The type of target (OBJ, FLAT, ARC or BIAS)"),
        _rec("OBSCOMM", "Science", "Science or Test"),
        _rec("RADECSYS", "FK5", "Equatorial coordinate system"),
        _rec("EQUINOX", 2000.0, "Equinox in years"),
        _rec("SKYLIST", "skylines.dat", "Sky emission line list"),
        _rec("NEXP_B", n_exposures, "Number of valid blue exposures"),
        _rec("COMBIN_B", True, "Whether the combined data of B band exists"),
        _rec("NEXP_R", n_exposures, "Number of valid red exposures"),
        _rec("COMBIN_R", True, "Whether the combined data of R band exists"),
        _rec("SCAMEAN", 20.0, "[ADU] Mean level of scatter light"),
        _section("SPECTROGRAPH PARAMETERS"),
        _rec("SPID", info.spid, "Spectrograph ID"),
        _rec("SPRA", round(info.ra, 7), "[deg] Average RA of this spectrograph"),
        _rec("SPDEC", round(info.dec, 7), "[deg] Average DEC of this spectrograph"),
        _rec("SLIT_MOD", "x2/3", "Slit mode, x1, x2/3 or x1/2"),
        _section("WEATHER CONDITION"),
        _rec("SEEING", round(info.seeing_arcsec, 1), "[arcsec] Seeing during exposure"),
        _rec("MOONPHA", 0.0, "[day] Moon phase for a 29.53 days period"),
        _rec("TEMP_AIR", 10.0, "[deg] Temperature outside dome"),
        _rec("TEMP_FP", 10.0, "[degree celsius] Temprature of the focalplane"),
        _rec("DEWPOINT", -8.0, "[deg]"),
        _rec("DUST", "", "Reservation"),
        _rec("HUMIDITY", 30.0, ""),
        _rec("WINDD", 0.0, "[deg] Wind direction"),
        _rec("WINDS", 2.0, "[m/s] Wind speed"),
        _rec("SKYLEVEL", "", "Reservation"),
        _section("DATA REDUCTION PARAMETERS"),
        _rec("EXTRACT", "aperture", "Extraction method"),
        _rec("SFLATTEN", True, "Super flat has been applied"),
        _rec("PCASKYSB", True, "PCA sky-subtraction has been applied"),
        _rec("NSKIES", 20, "Sky fiber number"),
        _rec("SKYCHI2", 1.0, "Mean chi^2 of sky-subtraction"),
        _rec("HELIO", True, "Heliocentric correction"),
        _rec("HELIO_RV", round(info.helio_rv_kms, 4), "[km/s] Heliocentric correction"),
        _rec("VACUUM", True, "Wavelengths are in vacuum"),
    ]


def _lmjm_lists(lmjms: list[int]) -> list[dict]:
    """LMJMLIS0, LMJMLIS1, ...: the exposures' LMJM, three per key joined by '-'."""
    chunks = [lmjms[k : k + 3] for k in range(0, len(lmjms), 3)]
    return [
        _rec(f"LMJMLIS{k}", "-".join(str(m) for m in c), "Local Modified Julian Minute list")
        for k, c in enumerate(chunks)
    ]


def _table(spec: ArmSpectrum, coadd: bool) -> np.ndarray:
    """One row per pixel, big-endian float32/int16 columns as in the real file."""
    masks = [("ANDMASK", ">i2"), ("ORMASK", ">i2")] if coadd else [("PIXMASK", ">i2")]
    table = np.zeros(
        spec.flux.size, dtype=[("FLUX", ">f4"), ("IVAR", ">f4"), ("LOGLAM", ">f4"), *masks]
    )
    table["FLUX"], table["IVAR"], table["LOGLAM"] = spec.flux, spec.ivar, spec.loglam
    if coadd:
        table["ANDMASK"] = spec.mask
        table["ORMASK"] = spec.ormask if spec.ormask is not None else spec.mask
    else:
        table["PIXMASK"] = spec.mask
    return table


def write_lamost_file(path: str | os.PathLike[str], info: VisitInfo, visit: Visit) -> Path:
    """Write ``visit`` as a gzip-compressed LAMOST MRS file at ``path`` (atomically).

    HDU order as in DR7: Information, COADD_B, COADD_R, B-<lmjm>..., R-<lmjm>....
    Header SNR is the measured median FLUX * sqrt(IVAR), as the LAMOST pipeline reports.
    """
    path = Path(path)
    n_exp = len(visit.exposures)
    lmjms = [info.lmjm(i) for i in range(n_exp)]
    end = info.exposure_start(n_exp - 1) + dt.timedelta(seconds=info.exptime_s)
    mid_utc = info.start_local + (end - info.start_local) / 2 - LOCAL_UTC_OFFSET
    lamp = _rec("LAMPLIST", "lampsc_med.dat", "Arc lamp emission line list")
    tmp_fits = path.with_name(f".{path.name}.{os.getpid()}.tmp.fits")
    tmp_gz = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with fitsio.FITS(str(tmp_fits), "rw", clobber=True) as fits:
            fits.write(
                None, header=_primary_header(info, n_exp, 3 + 2 * n_exp), extname="Information"
            )
            for arm in ARMS:
                spec = visit.coadd[arm]
                header = [
                    _rec("EXTNAME", f"COADD_{arm}", "The extension name"),
                    *_lmjm_lists(lmjms),
                    _rec("DATE-OBS", _iso(mid_utc), "The observation median UTC"),
                    _rec(
                        "DATE-BEG", _iso(info.start_local, True), "The observation start local time"
                    ),
                    _rec("DATE-END", _iso(end, True), "The observation end local time"),
                    lamp,
                    _rec("SNR", round(spec.snr_measured(), 2), "Signal to noise ratio"),
                ]
                fits.write(_table(spec, coadd=True), extname=f"COADD_{arm}", header=header)
            for arm in ARMS:
                for i, exposure in enumerate(visit.exposures):
                    spec = exposure[arm]
                    beg = info.exposure_start(i)
                    fin = beg + dt.timedelta(seconds=info.exptime_s)
                    mid = beg + (fin - beg) / 2 - LOCAL_UTC_OFFSET
                    header = [
                        _rec("EXTNAME", f"{arm}-{lmjms[i]}", "The extension name"),
                        _rec("DATE-OBS", _iso(mid), "The observation median UTC"),
                        _rec("DATE-BEG", _iso(beg, True), "The observation start local time"),
                        _rec("DATE-END", _iso(fin, True), "The observation end local time"),
                        _rec("LMJM", str(lmjms[i]), "Local Modified Julian Minute"),
                        _rec("EXPTIME", info.exptime_s, "[s] Exposure duration time"),
                        _rec("SNR", round(spec.snr_measured(), 2), "Signal to noise ratio"),
                        lamp,
                    ]
                    fits.write(
                        _table(spec, coadd=False), extname=f"{arm}-{lmjms[i]}", header=header
                    )
        raw = tmp_fits.read_bytes()
        with open(tmp_gz, "wb") as out:
            out.write(gzip.compress(raw, compresslevel=1, mtime=0))
        os.replace(tmp_gz, path)
    finally:
        tmp_fits.unlink(missing_ok=True)
        tmp_gz.unlink(missing_ok=True)
    return path


# --- LAMOST's MRS general catalogue ------------------------------------------------------------

LAMOST_CATALOGUE_NAME = "lamost_mrs.csv"
"""File name of the data set's catalogue in LAMOST's official layout."""
RV_MISSING_FRACTION = 0.03
"""Share of spectra whose RVs are all -9999 (not measured), as in the survey's catalogue."""
RV_ZERO_POINT_KMS = 0.3
"""Offset between the raw (``*0``) and zero-point-corrected (``*1``) RV columns [km/s]."""
_RV_FAMILIES = ("b", "r", "br")


def _official_rows(row: dict, lmjm_coadd: int, missing: bool) -> list[dict]:
    """The B and R rows of one spectrum in the MRS general catalogue's columns."""
    m = re.match(r"^med-(\d+)-(.+)_sp(\d+)-(\d+)\.fits\.gz$", row["filename"])
    if m is None:
        raise ValueError(f"not a LAMOST file name: {row['filename']}")
    coadd = row["kind"] == "coadd"
    lmjm = lmjm_coadd if coadd else int(row["extname_blue"].split("-", 1)[1])
    rv1 = -9999.0 if missing else row["rv"]
    rv0 = -9999.0 if missing else row["rv"] + RV_ZERO_POINT_KMS
    err = -9999.0 if missing else 1.0
    rvs: dict[str, object] = {}
    for fam in (*_RV_FAMILIES, "lasp"):
        rvs |= {f"rv_{fam}0": rv0, f"rv_{fam}0_err": err, f"rv_{fam}1": rv1, f"rv_{fam}1_err": err}
        if fam != "lasp":
            rvs[f"rv_{fam}_flag"] = 0
    out = []
    for band, snr in (("B", row["snr_blue_true"]), ("R", row["snr_red_true"])):
        out.append(
            {
                "obsid": row["obsid"],
                "gp_id": row["star_id"],
                "designation": designation(row["ra"], row["dec"]),
                "lmjd": int(m[1]),
                "mjd": int(m[1]) - 1,
                "planid": m[2],
                "spid": int(m[3]),
                "fiberid": int(m[4]),
                "lmjm": lmjm,
                "band": band,
                "coadd": int(coadd),
                "ra": row["ra"],
                "dec": row["dec"],
                "snr": round(float(snr), 2),
                **rvs,
            }
        )
    return out


def write_lamost_catalogue(
    spectra: Iterable[dict], path: str | os.PathLike[str], *, seed: int = 0
) -> Path:
    """Write the data set's spectra as LAMOST's MRS general catalogue (CSV, official columns).

    One row per band per spectrum (coadd and each exposure), in the order given.
    ``spectra`` are the data set's per-spectrum records (``filename``, ``extname_blue``,
    ``kind``, ``rv``, ``obsid``, ``ra``, ``dec``, ``star_id``, ``snr_*_true``). A
    :data:`RV_MISSING_FRACTION` of spectra get -9999 in every RV column; the others
    carry the data set's catalogue RV in the corrected (``*1``) columns and that value
    plus :data:`RV_ZERO_POINT_KMS` in the raw (``*0``) ones. The coadd rows' ``lmjm``
    is that of the file's first exposure.
    """
    spectra = list(spectra)
    first: dict[str, int] = {}
    for row in spectra:
        if row["kind"] != "coadd":
            lmjm = int(row["extname_blue"].split("-", 1)[1])
            first[row["filename"]] = min(first.get(row["filename"], lmjm), lmjm)
    missing = np.random.default_rng([seed, 9999]).random(len(spectra)) < RV_MISSING_FRACTION
    rows = [
        r
        for row, miss in zip(spectra, missing, strict=True)
        for r in _official_rows(row, first.get(row["filename"], -9999), bool(miss))
    ]
    path = Path(path)
    with atomic_path(path) as tmp:
        pl.DataFrame(rows, infer_schema_length=None).write_csv(tmp)
    return path
