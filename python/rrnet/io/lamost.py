"""Read LAMOST DR7 medium-resolution (MRS) spectrum files with fitsio.

A MRS file holds a header-only primary HDU (OBSID, RA, DEC, DESIG, FILENAME, ...)
and one binary table per arm: the coadds ``COADD_B``/``COADD_R`` and single
exposures ``B-<id>``/``R-<id>``. Each table row is one pixel (columns FLUX, IVAR,
LOGLAM and a mask). Some releases store a single row of vector columns instead,
and from DR9 v1.0 on the wavelength in Angstrom (WAVELENGTH) instead of LOGLAM;
all these layouts are accepted. LOGLAM (log10 of the observed wavelength in Angstrom)
is returned in the file's own pixel order: the single-exposure red tables of the
real DR7 files are *descending*, and the kernels handle either order.

Every failure raises a :class:`LamostReadError` subclass whose ``status`` is the
per-row status the preprocessing pipeline records (``missing_file``,
``bad_fits``, ``too_large``, ``missing_extension``, ``bad_columns``).

This module is the reference reader (cfitsio through fitsio);
:mod:`rrnet.io.lamost_fast` reads the same files in Rust and falls back to it.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import fitsio
import numpy as np

from rrnet.io.values import convert
from rrnet.utils.faults import MachineFault, is_machine_fault
from rrnet.utils.scratch import scratch_root

REQUIRED_COLUMNS: tuple[str, ...] = ("FLUX", "IVAR", "LOGLAM")
"""Columns every arm table must have (LOGLAM or, from DR9 v1.0 on, WAVELENGTH)."""

WAVELENGTH_COLUMN = "WAVELENGTH"
"""The observed wavelength in Angstrom, which LAMOST's MRS files hold instead of LOGLAM
from DR9 v1.0 on (one row of vector columns; B. Zhang's laspec reads both layouts).
Read as ``log10(WAVELENGTH)``; LOGLAM wins when a table has both."""

MASK_COLUMNS: tuple[str, ...] = ("ANDMASK", "PIXMASK", "ORMASK")
"""Mask columns, first present wins for :attr:`Arm.mask` (coadds: ANDMASK, exposures: PIXMASK)."""


COADD_PREFIX = "COADD"
"""Extension names of coadded spectra start with this (``COADD_B``, ``COADD_R``; a file's
own spelling may be in another case, which :func:`is_coadd` accepts)."""
GZIP_MAGIC = b"\x1f\x8b"

DEFAULT_MAX_INFLATED = 256 << 20
"""Largest inflated size [bytes] of a ``.fits.gz`` file (a MRS file is ~2 MB): a
gzip bomb is refused with status ``too_large`` after at most this much work."""


class ScratchError(MachineFault):
    """The scratch copy of an inflated file failed (TMPDIR full, read-only, forbidden,
    over a size limit): the machine's fault whatever the errno."""


def is_environment_fault(exc: BaseException) -> bool:
    """Whether an error is a fault of the machine (disk full, read-only, I/O, no memory,
    the scratch folder)."""
    return not isinstance(exc, LamostReadError) and is_machine_fault(exc)


class LamostReadError(Exception):
    """A spectrum could not be read; ``status`` is the pipeline's per-row status."""

    status: str = "bad_fits"


class MissingFileError(LamostReadError):
    """The file does not exist or cannot be opened for reading."""

    status = "missing_file"


class BadFitsError(LamostReadError):
    """The file is not FITS, is truncated, or its structure cannot be parsed."""

    status = "bad_fits"


class TooLargeError(LamostReadError):
    """The gzip file inflates beyond the configured maximum size."""

    status = "too_large"


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
    notes: tuple[str, ...] = ()
    """Header values that could not be converted (each recorded as null), one line each."""


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
    notes: tuple[str, ...] = ()
    """Header values of this arm that could not be converted (recorded as null)."""

    @property
    def n_pix(self) -> int:
        return int(self.flux.size)


def is_coadd(extnames: np.ndarray) -> np.ndarray:
    """Which extension names (text array, '' for none) name a coadd, in any case."""
    return np.char.startswith(np.char.upper(np.asarray(extnames, dtype=str)), COADD_PREFIX)


PRIMARY_KEYS = frozenset({"OBSID", "RA", "DEC", "DESIG", "FILENAME", "N_EXTEN"})
ARM_KEYS = frozenset({"SNR", "LMJM", "EXPTIME"})


def _parse_cards(block: bytes, keys: frozenset[str]) -> dict[str, object]:
    """Values of the keywords ``keys`` in one FITS header (80-byte cards up to END).

    Parsing the few cards we need directly is much faster than building a
    fitsio header object, which dominated reading a file. Values are str
    (quotes removed, '' unescaped), bool, int or float; anything else is None.
    """
    values: dict[str, object] = {}
    for i in range(0, len(block) - 79, 80):
        key = block[i : i + 8].decode("ascii", errors="replace").strip()
        if key == "END":
            break
        if key in keys and block[i + 8 : i + 10] == b"= ":
            values[key] = _card_value(block[i + 10 : i + 80].decode("ascii", errors="replace"))
    return values


def _card_value(field: str) -> object:
    """A card's value: text (quotes removed, ``''`` unescaped, up to the closing
    quote or the end), ``T``/``F``, an int, a float (``D`` exponent too), else None.

    Runs for every header value the readers take (millions of files): text is cut
    at quotes with ``str.find``, and a number with ``.``, ``E`` or ``e`` (never
    an int) goes straight to float, without raising int's ValueError first.
    """
    field = field.strip()
    if field.startswith("'"):
        parts, i = [], 1
        while (j := field.find("'", i)) >= 0:
            parts.append(field[i:j])
            if field[j + 1 : j + 2] != "'":
                return "".join(parts).rstrip()
            parts.append("'")
            i = j + 2
        parts.append(field[i:])  # no closing quote: the rest of the card
        return "".join(parts).rstrip()
    token = field.split("/", 1)[0].strip()
    if token in ("T", "F"):
        return token == "T"
    kinds = (float,) if "." in token or "E" in token or "e" in token else (int, float)
    for kind in kinds:
        try:
            return kind(token.replace("D", "E") if kind is float else token)
        except ValueError:
            pass
    return None


_KINDS = {int: "int64", float: "float64", str: "str"}


def _typed(
    values: dict[str, object], key: str, kind: type, notes: list[str] | None = None
) -> object | None:
    """A header value converted to ``kind`` by :func:`rrnet.io.values.convert`.

    None when absent, blank or unconvertible; the reason for an unconvertible
    value is appended to ``notes`` (one bad card never stops a file or a run).
    """
    value, why = convert(values.get(key), _KINDS[kind], key)  # type: ignore[arg-type]
    if why is not None and notes is not None:
        notes.append(f"header {why}: recorded as null")
    return value


class _Opened:
    """An open MRS file: the fitsio handle plus the uncompressed bytes (for header cards)."""

    def __init__(self, path: Path, fits: fitsio.FITS, content: bytes) -> None:
        self.path, self.fits, self.content = path, fits, content

    def header(self, hdu: int, keys: frozenset[str]) -> dict[str, object]:
        offsets = self.fits[hdu].get_offsets()
        return _parse_cards(self.content[offsets["header_start"] : offsets["data_start"]], keys)


def _gunzip(raw: bytes, name: str, max_size: int = DEFAULT_MAX_INFLATED) -> bytes:
    """Decompress all gzip members; BadFitsError when cut short or corrupt,
    TooLargeError beyond ``max_size`` bytes in all.

    Done here rather than by cfitsio: zlib checks the CRC and length (cfitsio
    silently accepts a truncated stream), releases the GIL so reader threads run
    in parallel, and is about twice as fast.
    """
    parts, size = [], 0
    while raw:
        inflater = zlib.decompressobj(wbits=31)
        try:
            parts.append(inflater.decompress(raw, max_size - size + 1))
        except zlib.error as exc:
            raise BadFitsError(f"corrupt gzip file {name}: {exc}") from exc
        size += len(parts[-1])
        if size > max_size:
            raise TooLargeError(f"{name} inflates to more than the limit of {max_size} bytes")
        if not inflater.eof:
            raise BadFitsError(f"truncated gzip file {name}: the compressed stream is cut short")
        raw = inflater.unused_data
        if not raw.strip(b"\0"):  # trailing zero padding is allowed
            break
    return b"".join(parts)


@contextmanager
def _open(
    path: str | os.PathLike[str], max_inflated: int = DEFAULT_MAX_INFLATED
) -> Iterator[_Opened]:
    path = Path(path)
    try:
        status = path.stat()  # one stat: what the Rust reader asks too
    except OSError as exc:
        if is_environment_fault(exc):  # a stale network handle, an I/O error: the machine
            raise
        if exc.errno == errno.ENOENT:
            raise MissingFileError(f"file not found: {path}") from exc
        # no permission, a symbolic link loop, a name too long, a file as a folder
        raise MissingFileError(f"file not readable: {path}: {exc.strerror}") from exc
    if stat.S_ISDIR(status.st_mode):
        raise MissingFileError(f"{path} is a directory, not a spectrum file")
    if not stat.S_ISREG(status.st_mode):
        raise MissingFileError(f"{path} is not a regular file (device, socket or pipe)")
    if status.st_size > max_inflated:  # read whole: the limit bounds plain files too
        raise TooLargeError(
            f"{path.name} is {status.st_size} bytes, more than the limit of {max_inflated} bytes"
        )
    try:
        content = path.read_bytes()
    except OSError as exc:
        if is_environment_fault(exc):  # the disk, not the file: stop the run
            raise
        raise MissingFileError(f"file not readable: {path}: {exc.strerror}") from exc
    gzipped = content[:2] == GZIP_MAGIC
    if gzipped:
        content = _gunzip(content, path.name, max_inflated)
    _check_fits_start(content, path.name, gzipped)
    if gzipped:
        # fitsio opens files by name: hand it a scratch copy, unlinked once open
        # (cfitsio keeps its descriptor), so a killed process leaves nothing behind.
        # Any failure of the scratch folder (full, read-only, no permission) is the
        # machine's: it propagates as OSError and is never a property of the file.
        root = scratch_root()  # TMPDIR as set, not tempfile's silent fallback
        try:
            fd, scratch = tempfile.mkstemp(prefix="rrnet-", suffix=".fits", dir=root)
        except OSError as exc:
            raise ScratchError(exc.errno, f"scratch folder: {exc.strerror}") from exc
        try:
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(content)
            except OSError as exc:
                raise ScratchError(exc.errno, f"scratch copy {scratch}: {exc.strerror}") from exc
            fits = _fitsio_open(scratch, path.name)
        finally:
            os.unlink(scratch)
    else:
        fits = _fitsio_open(str(path), path.name)
    try:
        yield _Opened(path, fits, content)
    finally:
        fits.close()


_COMPRESSED = {
    GZIP_MAGIC: "gzip",
    b"BZh": "bzip2",
    b"PK\x03\x04": "zip",
    b"\x1f\x9d": "Unix compress",
}


def _check_fits_start(content: bytes, name: str, gzipped: bool) -> None:
    """A FITS file begins with SIMPLE: say what else it is (cfitsio would unpack some
    compressions itself and then call the file truncated, judging by its packed size)."""
    if content.startswith(b"SIMPLE  ="):
        return
    kind = next((k for magic, k in _COMPRESSED.items() if content.startswith(magic)), None)
    inside = " inside its gzip stream" if gzipped else ""
    if kind is not None:
        raise BadFitsError(
            f"{name} holds {kind}-compressed data{inside}: rrnet reads FITS files, plain or "
            "gzipped once"
        )
    raise BadFitsError(f"not a FITS file: {name}{inside} does not begin with SIMPLE")


def _fitsio_open(filename: str, name: str) -> fitsio.FITS:
    try:
        return fitsio.FITS(filename)
    except OSError as exc:
        raise BadFitsError(f"not a readable FITS file: {name}: {_fitsio_message(exc)}") from exc


def _fitsio_message(exc: BaseException) -> str:
    """First line of a cfitsio error (its messages repeat over several lines)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _file_info(opened: _Opened) -> LamostFile:
    path, fits = opened.path, opened.fits
    try:
        header = opened.header(0, PRIMARY_KEYS)
        extnames = tuple(str(hdu.get_extname()) for hdu in fits[1:])
        end = int(fits[-1].get_offsets()["data_end"])
    except (OSError, KeyError) as exc:
        raise BadFitsError(f"cannot read headers of {path.name}: {_fitsio_message(exc)}") from exc
    # cfitsio reads a file cut short up to the cut without complaint.
    if len(opened.content) < end:
        raise BadFitsError(
            f"truncated file {path.name}: {len(opened.content)} bytes (uncompressed), "
            f"its HDUs end at byte {end}"
        )
    return file_info(path, header, extnames, len(fits), len(opened.content) - end)


def file_info(
    path: Path,
    header: dict[str, object],
    extnames: tuple[str, ...],
    n_hdus: int,
    trailing: int = 0,
) -> LamostFile:
    """The file's :class:`LamostFile` from its primary-header values (shared by both readers).

    Raises BadFitsError when the file has fewer HDUs than its N_EXTEN says: a file that
    ends there (cut short, or written without them), or one with ``trailing`` bytes (a
    FITS block or more) after its last readable HDU, whose next header is malformed.
    """
    parsed = _typed(header, "N_EXTEN", int)
    n_expected = parsed if isinstance(parsed, int) and parsed >= 0 else None
    if n_expected is not None and n_hdus < n_expected and trailing >= 2880:
        # not cut short: the bytes of the next HDU are there, cfitsio stopped at its header
        raise BadFitsError(
            f"HDU {n_hdus} of {path.name} cannot be read: its header is malformed "
            f"({trailing} bytes follow HDU {n_hdus - 1}; header N_EXTEN={n_expected}, "
            f"{n_hdus} HDUs readable)"
        )
    if n_expected is not None and n_hdus < n_expected:
        raise BadFitsError(
            f"HDUs missing in {path.name}: header N_EXTEN={n_expected} but {n_hdus} HDUs found "
            "(a download cut short, or a file written without them)"
        )
    notes: list[str] = []
    return LamostFile(
        path=path,
        obsid=_typed(header, "OBSID", int, notes),
        ra=_typed(header, "RA", float, notes),
        dec=_typed(header, "DEC", float, notes),
        desig=_typed(header, "DESIG", str, notes),
        filename=_typed(header, "FILENAME", str, notes),
        extnames=extnames,
        notes=tuple(notes),
    )


def _column(data: np.ndarray, name: str, dtype: type) -> np.ndarray:
    """A column as a 1-D native-endian array (vector columns of a one-row table flattened)."""
    return np.ascontiguousarray(np.asarray(data[name]).reshape(-1), dtype=dtype)


def _read_arm(opened: _Opened, extname: str) -> Arm:
    path, fits = opened.path, opened.fits
    if extname not in fits:
        raise MissingExtensionError(f"extension {extname!r} not in {path.name}")
    hdu = fits[extname]
    try:
        header = opened.header(hdu.get_extnum(), ARM_KEYS)
        if hdu.get_exttype() not in ("BINARY_TBL", "ASCII_TBL"):
            raise BadColumnsError(f"extension {extname!r} of {path.name} is not a table")
        colnames = [c.upper() for c in hdu.get_colnames()]
        wavelength = "LOGLAM" not in colnames and WAVELENGTH_COLUMN in colnames
        source = {
            c: WAVELENGTH_COLUMN if wavelength and c == "LOGLAM" else c for c in REQUIRED_COLUMNS
        }
        missing = [c for c in source.values() if c not in colnames]
        if missing:
            raise BadColumnsError(
                f"extension {extname!r} of {path.name} lacks column(s) "
                + ", ".join(
                    f"{c} (or {WAVELENGTH_COLUMN})" if c == "LOGLAM" else c for c in missing
                )
            )
        # Reading the whole (small) table is ~30x faster in fitsio than a column subset.
        data = hdu.read()
    except OSError as exc:
        raise BadFitsError(
            f"cannot read extension {extname!r} of {path.name} "
            f"(truncated or corrupt): {_fitsio_message(exc)}"
        ) from exc
    names = {n.upper(): n for n in data.dtype.names}
    for column in source.values():  # a damaged TFORM (E read as J): the bits as integers
        kind = data.dtype[names[column]].base.kind
        if kind != "f":
            raise BadColumnsError(
                f"extension {extname!r} of {path.name}: column {column} holds "
                f"{data.dtype[names[column]].base.name}, not floating point (a damaged TFORM?)"
            )
    loglam = _column(data, names[source["LOGLAM"]], np.float64)
    if wavelength:
        with np.errstate(divide="ignore", invalid="ignore"):  # <= 0: non-finite, its reason later
            loglam = np.log10(loglam)
    flux = _column(data, names["FLUX"], np.float32)
    ivar = _column(data, names["IVAR"], np.float32)
    if not (loglam.size == flux.size == ivar.size):
        raise BadColumnsError(
            f"extension {extname!r} of {path.name}: column lengths differ "
            f"({source['LOGLAM']} {loglam.size}, FLUX {flux.size}, IVAR {ivar.size})"
        )
    masks = {c: _column(data, names[c], np.int32) for c in MASK_COLUMNS if c in names}
    for name, values in masks.items():
        if values.size != flux.size:
            raise BadColumnsError(
                f"extension {extname!r} of {path.name}: {name} has {values.size} values, "
                f"FLUX {flux.size}"
            )
    primary_mask = masks.get("ANDMASK", masks.get("PIXMASK"))
    return make_arm(extname, header, loglam, flux, ivar, primary_mask, masks.get("ORMASK"))


MAX_HEADER_SNR = 1.0e4
"""A header S/N above this (or negative) is a damaged card, not a spectrum: 1e300 passed,
overflowed the float32 catalogue column to inf and shrank the calibrated errors."""


def make_arm(
    extname: str,
    header: dict[str, object],
    loglam: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray | None,
    ormask: np.ndarray | None,
) -> Arm:
    """An :class:`Arm` from its columns and header values (shared by both readers)."""
    notes: list[str] = []
    snr = _typed(header, "SNR", float, notes)
    if isinstance(snr, float) and not 0.0 <= snr <= MAX_HEADER_SNR:
        notes.append(
            f"header SNR={snr:g} is not a plausible S/N (0-{MAX_HEADER_SNR:g}): recorded as null"
        )
        snr = None
    return Arm(
        extname=extname,
        loglam=loglam,
        flux=flux,
        ivar=ivar,
        mask=mask,
        ormask=ormask,
        snr=snr,
        lmjm=_typed(header, "LMJM", int, notes),
        exptime=_typed(header, "EXPTIME", float, notes),
        notes=tuple(f"{extname} {n}" for n in notes),
    )


_P = ParamSpec("_P")
_T = TypeVar("_T")
_NO_SUCH_FILE = os.path.join(os.devnull, "rrnet-no-such-file.fits")
"""A path no file can have (below a device), for :func:`drain_cfitsio_messages`."""
_CLEAN_OPEN_ERROR_LINES = 3
"""Lines of fitsio's message for a missing file when cfitsio had nothing else stacked."""
_MAX_DRAINS = 8
"""Failed opens at most per drain (cfitsio stacks ~25 messages, fitsio takes 1024 bytes)."""


def drain_cfitsio_messages() -> None:
    """Empty cfitsio's error-message stack.

    cfitsio keeps one such stack per process, and fitsio empties it only into the
    message of an error it raises. What a damaged file leaves there (a header read past
    its END holds binary bytes) is prepended to the next error's message, even one that
    fitsio handles itself, such as the end of the HDU list that every open reaches; if
    it is not UTF-8, fitsio raises ``UnicodeDecodeError`` instead, and a good file, or
    a FITS catalogue written later, failed because of a file read before it (found by
    the random-damage property test, ``tests/io/test_lamost_fast.py``). So: open a file
    that cannot exist until fitsio's error for it carries nothing else.
    """
    for _ in range(_MAX_DRAINS):
        try:
            fitsio.FITS(_NO_SUCH_FILE)
        except UnicodeDecodeError:
            continue
        except OSError as exc:
            if len(str(exc).splitlines()) <= _CLEAN_OPEN_ERROR_LINES:
                return
        else:  # pragma: no cover - the path cannot exist
            return


def _with_clean_cfitsio_messages(
    read: Callable[Concatenate[str | os.PathLike[str], _P], _T],
) -> Callable[Concatenate[str | os.PathLike[str], _P], _T]:
    """Run ``read(path, ...)`` on an empty cfitsio message stack and leave it empty,
    whatever the file (:func:`drain_cfitsio_messages`: two drains, ~16 us per read when
    nothing is stacked). A file whose own cfitsio messages are not UTF-8 is a
    :class:`BadFitsError` with the message's first line, not a ``UnicodeDecodeError``
    whose text is the file's binary bytes."""

    @functools.wraps(read)
    def wrapper(path: str | os.PathLike[str], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        drain_cfitsio_messages()
        try:
            return read(path, *args, **kwargs)
        except UnicodeDecodeError as exc:
            raw = exc.object if isinstance(exc.object, bytes) else b""
            lines = raw.decode("utf-8", "replace").splitlines() or ["unreadable header"]
            name = Path(path).name
            raise BadFitsError(f"not a readable FITS file: {name}: {lines[0]}") from None
        finally:
            drain_cfitsio_messages()

    return wrapper


@_with_clean_cfitsio_messages
def read_lamost(path: str | os.PathLike[str]) -> LamostFile:
    """Header information of a MRS file (``.fits`` or ``.fits.gz``).

    Raises
    ------
    LamostReadError
        ``MissingFileError`` or ``BadFitsError`` (not FITS, truncated).
    """
    with _open(path) as opened:
        return _file_info(opened)


@_with_clean_cfitsio_messages
def read_arm(path: str | os.PathLike[str], extname: str) -> Arm:
    """Read one arm table (e.g. ``"COADD_B"`` or ``"R-83555758"``) of a MRS file.

    Raises
    ------
    LamostReadError
        With ``status`` missing_file, bad_fits, missing_extension or bad_columns.
    """
    with _open(path) as opened:
        _file_info(opened)
        return _read_arm(opened, extname)


@_with_clean_cfitsio_messages
def read_arms(
    path: str | os.PathLike[str],
    extnames: Iterable[str],
    *,
    max_inflated: int = DEFAULT_MAX_INFLATED,
) -> tuple[LamostFile, dict[str, Arm | LamostReadError]]:
    """Open a file once and read several arms; per-arm failures are returned, not raised.

    This is what the pipeline calls: decompressing a ``.fits.gz`` file dominates
    the cost, so every spectrum of a file is read from one open.

    Raises
    ------
    LamostReadError
        When the file as a whole is unusable (missing, not FITS, truncated,
        inflating beyond ``max_inflated`` bytes).
    """
    with _open(path, max_inflated) as opened:
        info = _file_info(opened)
        arms: dict[str, Arm | LamostReadError] = {}
        for extname in dict.fromkeys(extnames):
            try:
                arms[extname] = _read_arm(opened, extname)
            except LamostReadError as exc:
                arms[extname] = exc
        return info, arms
