"""Read LAMOST DR7 medium-resolution (MRS) spectrum files with fitsio.

A MRS file holds a header-only primary HDU (OBSID, RA, DEC, DESIG, FILENAME, ...)
and one binary table per arm: the coadds ``COADD_B``/``COADD_R`` and single
exposures ``B-<id>``/``R-<id>``. Each table row is one pixel (columns FLUX, IVAR,
LOGLAM and a mask). Some releases store a single row of vector columns instead;
both layouts are accepted. LOGLAM (log10 of the observed wavelength in Angstrom)
is returned in the file's own pixel order: the single-exposure red tables of the
real DR7 files are *descending*, and the kernels handle either order.

Every failure raises a :class:`LamostReadError` subclass whose ``status`` is the
per-row status the preprocessing pipeline records (``missing_file``,
``bad_fits``, ``missing_extension``, ``bad_columns``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import fitsio
import numpy as np

REQUIRED_COLUMNS: tuple[str, ...] = ("FLUX", "IVAR", "LOGLAM")
"""Columns every arm table must have."""

MASK_COLUMNS: tuple[str, ...] = ("ANDMASK", "PIXMASK", "ORMASK")
"""Mask columns, first present wins for :attr:`Arm.mask` (coadds: ANDMASK, exposures: PIXMASK)."""


class LamostReadError(Exception):
    """A spectrum could not be read; ``status`` is the pipeline's per-row status."""

    status: str = "bad_fits"


class MissingFileError(LamostReadError):
    """The file does not exist or cannot be opened for reading."""

    status = "missing_file"


class BadFitsError(LamostReadError):
    """The file is not FITS, is truncated, or its structure cannot be parsed."""

    status = "bad_fits"


class MissingExtensionError(LamostReadError):
    """The named arm extension is not in the file."""

    status = "missing_extension"


class BadColumnsError(LamostReadError):
    """The arm table lacks a required column, or its columns differ in length."""

    status = "bad_columns"


@dataclass(frozen=True)
class LamostFile:
    """Header information of one MRS file (primary HDU) and its arm extension names."""

    path: Path
    obsid: int | None
    ra: float | None
    """Right ascension [deg]."""
    dec: float | None
    """Declination [deg]."""
    desig: str | None
    filename: str | None
    """FILENAME keyword (the original, uncompressed name)."""
    extnames: tuple[str, ...]
    """Extension names of all table HDUs, in file order."""


@dataclass(frozen=True)
class Arm:
    """One arm (blue or red; coadd or single exposure) of one spectrum."""

    extname: str
    loglam: np.ndarray = field(repr=False)
    """log10(observed wavelength / Angstrom), float64, file pixel order (may descend)."""
    flux: np.ndarray = field(repr=False)
    """Flux, float32 native byte order."""
    ivar: np.ndarray = field(repr=False)
    """Inverse variance of FLUX, float32."""
    mask: np.ndarray | None = field(repr=False)
    """ANDMASK (coadds) or PIXMASK (single exposures), int32; None when absent."""
    ormask: np.ndarray | None = field(repr=False)
    """ORMASK (coadds only), int32; None when absent."""
    snr: float | None
    """Header SNR of this arm."""
    lmjm: int | None
    """Header LMJM (local modified Julian minute) of a single exposure."""
    exptime: float | None
    """Header EXPTIME [s] of a single exposure."""

    @property
    def n_pix(self) -> int:
        return int(self.flux.size)


def _header_value(header: fitsio.FITSHDR, key: str, kind: type) -> object | None:
    """Header keyword converted to ``kind``, or None when absent or unparsable."""
    if key not in header:
        return None
    value = header[key]
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return kind(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None


def _open(path: str | os.PathLike[str]) -> fitsio.FITS:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"file not found: {path}")
    if not os.access(path, os.R_OK):
        raise MissingFileError(f"file not readable: {path}")
    try:
        return fitsio.FITS(str(path))
    except OSError as exc:
        raise BadFitsError(
            f"not a readable FITS file: {path.name}: {_fitsio_message(exc)}"
        ) from exc


def _fitsio_message(exc: BaseException) -> str:
    """First line of a cfitsio error (its messages repeat over several lines)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _file_info(path: Path, fits: fitsio.FITS) -> LamostFile:
    try:
        header = fits[0].read_header()
        extnames = tuple(str(hdu.get_extname()) for hdu in fits[1:])
    except OSError as exc:
        raise BadFitsError(f"cannot read headers of {path.name}: {_fitsio_message(exc)}") from exc
    # cfitsio silently opens a truncated .gz file with its first HDUs only; the
    # LAMOST primary header says how many HDUs there should be.
    n_expected = _header_value(header, "N_EXTEN", int)
    if n_expected is not None and len(fits) < n_expected:
        raise BadFitsError(
            f"truncated file {path.name}: header N_EXTEN={n_expected} but {len(fits)} HDUs found"
        )
    _check_size(path, fits)
    return LamostFile(
        path=path,
        obsid=_header_value(header, "OBSID", int),
        ra=_header_value(header, "RA", float),
        dec=_header_value(header, "DEC", float),
        desig=_header_value(header, "DESIG", str),
        filename=_header_value(header, "FILENAME", str),
        extnames=extnames,
    )


def _check_size(path: Path, fits: fitsio.FITS) -> None:
    """Raise BadFitsError if the file ends before its last HDU does.

    cfitsio reads a truncated file up to the cut without complaint. For gzip the
    uncompressed size is in the stream's last 4 bytes (ISIZE, mod 2**32); a cut
    stream ends in arbitrary bytes instead, so the sizes disagree.
    """
    try:
        end = int(fits[-1].get_offsets()["data_end"])
        with open(path, "rb") as handle:
            gzipped = handle.read(2) == b"\x1f\x8b"
            if gzipped:
                handle.seek(-4, os.SEEK_END)
                size = int.from_bytes(handle.read(4), "little")
    except (OSError, KeyError) as exc:
        raise BadFitsError(f"cannot check the size of {path.name}: {exc}") from exc
    if gzipped and size != end % 2**32:
        raise BadFitsError(
            f"truncated or corrupt gzip file {path.name}: "
            f"its HDUs end at byte {end}, the gzip trailer says {size}"
        )
    if not gzipped and path.stat().st_size < end:
        raise BadFitsError(
            f"truncated file {path.name}: {path.stat().st_size} bytes, its HDUs end at byte {end}"
        )


def _column(data: np.ndarray, name: str, dtype: type) -> np.ndarray:
    """A column as a 1-D native-endian array (vector columns of a one-row table flattened)."""
    return np.ascontiguousarray(np.asarray(data[name]).reshape(-1), dtype=dtype)


def _read_arm(path: Path, fits: fitsio.FITS, extname: str) -> Arm:
    if extname not in fits:
        raise MissingExtensionError(f"extension {extname!r} not in {path.name}")
    hdu = fits[extname]
    try:
        header = hdu.read_header()
        if hdu.get_exttype() not in ("BINARY_TBL", "ASCII_TBL"):
            raise BadColumnsError(f"extension {extname!r} of {path.name} is not a table")
        colnames = [c.upper() for c in hdu.get_colnames()]
        missing = [c for c in REQUIRED_COLUMNS if c not in colnames]
        if missing:
            raise BadColumnsError(
                f"extension {extname!r} of {path.name} lacks column(s) {', '.join(missing)}"
            )
        wanted = list(REQUIRED_COLUMNS) + [c for c in MASK_COLUMNS if c in colnames]
        data = hdu.read(columns=wanted)
    except OSError as exc:
        raise BadFitsError(
            f"cannot read extension {extname!r} of {path.name} "
            f"(truncated or corrupt): {_fitsio_message(exc)}"
        ) from exc
    loglam = _column(data, "LOGLAM", np.float64)
    flux = _column(data, "FLUX", np.float32)
    ivar = _column(data, "IVAR", np.float32)
    if not (loglam.size == flux.size == ivar.size):
        raise BadColumnsError(
            f"extension {extname!r} of {path.name}: column lengths differ "
            f"(LOGLAM {loglam.size}, FLUX {flux.size}, IVAR {ivar.size})"
        )
    masks = {c: _column(data, c, np.int32) for c in MASK_COLUMNS if c in wanted}
    for name, values in masks.items():
        if values.size != flux.size:
            raise BadColumnsError(
                f"extension {extname!r} of {path.name}: {name} has {values.size} values, "
                f"FLUX {flux.size}"
            )
    primary_mask = masks.get("ANDMASK", masks.get("PIXMASK"))
    return Arm(
        extname=extname,
        loglam=loglam,
        flux=flux,
        ivar=ivar,
        mask=primary_mask,
        ormask=masks.get("ORMASK"),
        snr=_header_value(header, "SNR", float),
        lmjm=_header_value(header, "LMJM", int),
        exptime=_header_value(header, "EXPTIME", float),
    )


def read_lamost(path: str | os.PathLike[str]) -> LamostFile:
    """Header information of a MRS file (``.fits`` or ``.fits.gz``).

    Raises
    ------
    LamostReadError
        ``MissingFileError`` or ``BadFitsError`` (not FITS, truncated).
    """
    path = Path(path)
    with _open(path) as fits:
        return _file_info(path, fits)


def read_arm(path: str | os.PathLike[str], extname: str) -> Arm:
    """Read one arm table (e.g. ``"COADD_B"`` or ``"R-83555758"``) of a MRS file.

    Raises
    ------
    LamostReadError
        With ``status`` missing_file, bad_fits, missing_extension or bad_columns.
    """
    path = Path(path)
    with _open(path) as fits:
        _file_info(path, fits)
        return _read_arm(path, fits, extname)


def read_arms(
    path: str | os.PathLike[str], extnames: Iterable[str]
) -> tuple[LamostFile, dict[str, Arm | LamostReadError]]:
    """Open a file once and read several arms; per-arm failures are returned, not raised.

    This is what the pipeline calls: decompressing a ``.fits.gz`` file dominates
    the cost, so every spectrum of a file is read from one open.

    Raises
    ------
    LamostReadError
        When the file as a whole is unusable (missing, not FITS, truncated).
    """
    path = Path(path)
    with _open(path) as fits:
        info = _file_info(path, fits)
        arms: dict[str, Arm | LamostReadError] = {}
        for extname in dict.fromkeys(extnames):
            try:
                arms[extname] = _read_arm(path, fits, extname)
            except LamostReadError as exc:
                arms[extname] = exc
        return info, arms
