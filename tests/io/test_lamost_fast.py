"""The Rust reader (rrnet.io.lamost_fast) against the reference reader (fitsio):
identical arrays or identical status for every HDU of the real file and of
synthesised and damaged copies; files outside its subset fall back to fitsio."""

from __future__ import annotations

import gzip
import io
import tempfile
from dataclasses import replace
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits as afits
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import (
    REAL_FILE,
    SHARED,
    as_vector_row,
    as_wavelength_row,
    drop_column,
    set_values,
    write_lamost_copy,
)
from rrnet.io.lamost import Arm, BadColumnsError, BadFitsError, LamostReadError, read_lamost
from rrnet.io.lamost_fast import FileRead, _odd_names, read_many

if not REAL_FILE.is_file():  # the module's data is read here, before any test
    pytest.skip(f"rrnet shared data not found: {SHARED}", allow_module_level=True)
ALL_EXTNAMES = list(read_lamost(REAL_FILE).extnames)
ASKED = [*ALL_EXTNAMES, "B-00000000"]  # every HDU plus one that is not there


def _bits(a: np.ndarray | None) -> bytes | None:
    return None if a is None else a.dtype.str.encode() + a.tobytes()


def _same(fast: FileRead, ref: FileRead) -> None:
    """Identical outcome: same error class and status, or bit-identical arms."""
    if ref.error is not None or fast.error is not None:
        assert type(fast.error) is type(ref.error), (fast.error, ref.error)
        return
    assert fast.info == ref.info
    assert list(fast.arms) == list(ref.arms)
    for name, want in ref.arms.items():
        got = fast.arms[name]
        if isinstance(want, LamostReadError) or isinstance(got, LamostReadError):
            assert type(got) is type(want), (name, got, want)
            continue
        for column in ("loglam", "flux", "ivar", "mask", "ormask"):
            assert _bits(getattr(got, column)) == _bits(getattr(want, column)), (name, column)
        assert (got.snr, got.lmjm, got.exptime) == (want.snr, want.lmjm, want.exptime)


def _compare(path: Path, names: list[str] = ASKED, **options) -> FileRead:
    (fast,) = read_many([(path, names)], reader="auto", **options)
    (ref,) = read_many([(path, names)], reader="fitsio", **options)
    _same(fast, ref)
    return fast


def _reverse_table(data: np.ndarray) -> np.ndarray:
    return data[::-1].copy()


def _with_wavelength_too(data: np.ndarray) -> np.ndarray:
    """LOGLAM and a WAVELENGTH column that is not its 10**x: LOGLAM must win."""
    out = np.empty(data.size, dtype=[*data.dtype.descr, ("WAVELENGTH", ">f8")])
    for n in data.dtype.names:
        out[n] = data[n]
    out["WAVELENGTH"] = 1.0
    return out


def test_real_file_every_hdu_gz_and_plain(tmp_path):
    plain = tmp_path / "plain.fits"
    plain.write_bytes(gzip.decompress(REAL_FILE.read_bytes()))
    for path in (REAL_FILE, plain):
        fast = _compare(path)
        assert fast.fallback is None and fast.error is None
        assert sum(not isinstance(a, LamostReadError) for a in fast.arms.values()) == 10


SUPPORTED = {
    "reordered": {"order": list(reversed(ALL_EXTNAMES))},
    "descending-coadd": {"edit": {"COADD_B": _reverse_table, "COADD_R": _reverse_table}},
    "ascending-exposure": {"edit": {f"R-{e}": _reverse_table for e in ("83555758",)}},
    "vector-row": {"edit": {"COADD_B": as_vector_row(), "R-83555758": as_vector_row()}},
    "loglam-float64": {"edit": {"COADD_B": set_values("LOGLAM", lambda x: x)}},
    "no-loglam": {"edit": {"COADD_B": drop_column("LOGLAM")}},
    "loglam-and-wavelength": {"edit": {"COADD_B": _with_wavelength_too}},
    "no-flux": {"edit": {"COADD_R": drop_column("FLUX")}},
    "no-ivar": {"edit": {"B-83555758": drop_column("IVAR")}},
    "no-mask": {"edit": {"COADD_B": drop_column("ANDMASK")}},
    "lengths": {"edit": {"COADD_B": as_vector_row({"IVAR": 100})}},
    "mask-length": {"edit": {"COADD_B": as_vector_row({"ORMASK": 10})}},
    "dropped-hdu": {"drop": ("COADD_R",)},
    "nan-values": {"edit": {"COADD_B": set_values("FLUX", lambda f: np.where(f > 0, f, np.nan))}},
}


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("case", sorted(SUPPORTED))
def test_synthesised_files_identical_without_fallback(tmp_path, case, compress):
    path = tmp_path / f"{case}.fits{'.gz' if compress else ''}"
    write_lamost_copy(path, compress=compress, **SUPPORTED[case])
    fast = _compare(path)
    assert fast.fallback is None


def test_float64_loglam_column_is_read_exactly(tmp_path):
    def widen(data: np.ndarray) -> np.ndarray:
        dtype = [(n, np.float64 if n == "LOGLAM" else data.dtype[n]) for n in data.dtype.names]
        out = np.empty(data.size, dtype=dtype)
        for n in data.dtype.names:
            out[n] = data[n] + (1e-9 if n == "LOGLAM" else 0)
        return out

    path = write_lamost_copy(tmp_path / "d.fits", edit={"COADD_B": widen})
    fast = _compare(path)
    assert fast.fallback is None
    assert fast.arms["COADD_B"].loglam.dtype == np.float64


@pytest.mark.parametrize("compress", [True, False])
def test_dr9_wavelength_layout_agrees_without_fallback(tmp_path, compress):
    # each reader takes log10 with its own libm (numpy may use SIMD): equal to 1 ulp
    path = tmp_path / f"dr9.fits{'.gz' if compress else ''}"
    edit = dict.fromkeys(
        ["COADD_B", "COADD_R", ALL_EXTNAMES[3], ALL_EXTNAMES[-1]], as_wavelength_row
    )
    write_lamost_copy(path, compress=compress, edit=edit)
    (fast,) = read_many([(path, ASKED)], reader="auto")
    (ref,) = read_many([(path, ASKED)], reader="fitsio")
    assert fast.fallback is None and fast.error is None
    assert list(fast.arms) == list(ref.arms)
    for name, want in ref.arms.items():
        got = fast.arms[name]
        if isinstance(want, LamostReadError):
            assert type(got) is type(want)
            continue
        np.testing.assert_array_max_ulp(got.loglam, want.loglam, maxulp=1)
        got = replace(got, loglam=want.loglam)
        _same(replace(fast, arms={name: got}), replace(ref, arms={name: want}))


def _damaged(tmp_path: Path) -> dict[str, Path]:
    raw = REAL_FILE.read_bytes()
    plain = gzip.decompress(raw)
    files = {
        "junk": b"this is not a FITS file" * 50,
        "empty": b"",
        "gzip-junk": b"\x1f\x8b" + b"x" * 100,
        "plain-half": plain[: len(plain) // 2],
        "plain-block-short": plain[:-2880],
        "plain-trailing": plain + b"\0" * 100,
        "crc": raw[:-8] + bytes([raw[-8] ^ 0xFF]) + raw[-7:],
        "two-members": raw + raw,
        "zero-padding": raw + b"\0" * 512,
        "trailing-garbage": raw + b"garbage",
        "not-fits-gz": gzip.compress(b"not fits" * 400),
    }
    for fraction in (0.005, 0.3, 0.6, 0.97, 0.9999):
        files[f"cut-{fraction}"] = raw[: int(len(raw) * fraction)]
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.fits.gz"
        paths[name].write_bytes(content)
    return paths


def test_damaged_files_give_the_same_status(tmp_path):
    for name, path in _damaged(tmp_path).items():
        fast = _compare(path)
        assert fast.error is not None or name in ("zero-padding", "plain-trailing"), name


def test_other_compressions_are_named_not_called_truncated(tmp_path):
    """cfitsio unpacks bzip2 itself and then judged the file truncated by its packed
    size; a file gzipped twice read as 'error uncompressing image'."""
    import bz2

    plain = gzip.decompress(REAL_FILE.read_bytes())
    cases = {
        "bz.fits.bz2": (bz2.compress(plain), "bzip2-compressed"),
        "twice.fits.gz": (gzip.compress(REAL_FILE.read_bytes()), "gzip-compressed data inside"),
        "text.fits": (b"hello" * 1000, "does not begin with SIMPLE"),
    }
    for name, (content, words) in cases.items():
        (tmp_path / name).write_bytes(content)
        fast = _compare(tmp_path / name)
        assert fast.error is not None and fast.error.status == "bad_fits", name
        assert words in str(fast.error), (name, str(fast.error))


def test_missing_file_and_directory(tmp_path):
    _compare(tmp_path / "absent.fits.gz")
    _compare(tmp_path)


def test_a_path_through_a_file_is_not_readable_not_missing(tmp_path):
    """ENOTDIR (a file used as a folder) is said as the system says it, by both readers."""
    (tmp_path / "plain").write_bytes(b"x")
    fast = _compare(tmp_path / "plain" / "a.fits.gz")
    assert "file not readable" in str(fast.error) and "Not a directory" in str(fast.error)


@pytest.mark.parametrize("kind", ["device", "fifo", "loop"])
def test_what_is_not_a_regular_file_gets_one_reason_from_both_readers(tmp_path, kind):
    """A device (a link to /dev/null), a FIFO and a symlink loop: the same status and
    the same words from both readers (the Rust reader called devices "file not found")."""
    import os

    path = tmp_path / f"{kind}.fits.gz"
    if kind == "device":
        path.symlink_to("/dev/null")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(path)
    fast = _compare(path)
    (ref,) = read_many([(path, ASKED)], reader="fitsio")
    assert str(fast.error) == str(ref.error)
    want = "not a regular file" if kind != "loop" else "symbolic links"  # ELOOP's words
    assert want in str(fast.error)


def test_image_extension_and_scaled_column_fall_back_or_agree(tmp_path):
    image = tmp_path / "image.fits"
    with fitsio.FITS(str(image), "rw", clobber=True) as f:
        f.write(None, header=[{"name": "OBSID", "value": 1}])
        f.write(np.zeros((3, 3), dtype=np.float32), extname="COADD_B")
    assert isinstance(_compare(image, ["COADD_B"]).arms["COADD_B"], LamostReadError)
    scaled = tmp_path / "scaled.fits"
    data = np.zeros(5, dtype=[("FLUX", "i2"), ("IVAR", "f4"), ("LOGLAM", "f4")])
    data["LOGLAM"] = np.linspace(3.7, 3.71, 5)
    with fitsio.FITS(str(scaled), "rw", clobber=True) as f:
        f.write(None, header=[{"name": "OBSID", "value": 1}])
        f.write(data, extname="COADD_B", header=[{"name": "TZERO1", "value": 10.0}])
    fast = _compare(scaled, ["COADD_B"])
    assert fast.fallback is not None and "scaled" in fast.fallback


def test_inflated_size_is_bounded_with_the_same_status(tmp_path):
    bomb = tmp_path / "bomb.fits.gz"
    bomb.write_bytes(gzip.compress(b"\0" * 20_000_000))
    fast = _compare(bomb, max_inflated=1_000_000)
    assert fast.error is not None and fast.error.status == "too_large"
    small = _compare(REAL_FILE, max_inflated=100_000)
    assert small.error.status == "too_large"
    assert _compare(REAL_FILE, max_inflated=len(gzip.decompress(REAL_FILE.read_bytes()))).info
    # a plain file is read whole too: a huge one stopped the run for memory
    huge = tmp_path / "huge.fits"
    with open(huge, "wb") as handle:
        handle.truncate(3_000_000)  # sparse: no disk used
    plain = _compare(huge, max_inflated=1_000_000)
    assert plain.error is not None and plain.error.status == "too_large"


def test_rust_only_reader_marks_unsupported_files_bad(tmp_path):
    path = tmp_path / "trailing.fits"
    path.write_bytes(gzip.decompress(REAL_FILE.read_bytes()) + b"x")
    (fast,) = read_many([(path, ["COADD_B"])], reader="rust")
    assert fast.error is not None and "unsupported" in str(fast.error)
    (auto,) = read_many([(path, ["COADD_B"])], reader="auto")
    assert auto.fallback is not None


def test_many_files_in_parallel_keep_order(tmp_path):
    paths = [REAL_FILE, tmp_path / "absent.fits.gz"] * 20
    names = [["COADD_B", "COADD_R"], ["COADD_B"]] * 20
    reads = read_many(list(zip(paths, names, strict=True)), threads=2)
    assert [r.error is None for r in reads] == [True, False] * 20
    with pytest.raises(ValueError, match="reader"):
        read_many([], reader="astropy")


def _without_masks(read: FileRead) -> FileRead:
    """``read`` as ``masks=False`` should give it: the Rust reader's arms without masks."""
    if read.fallback is not None or read.error is not None:
        return read
    arms = {
        name: arm if isinstance(arm, LamostReadError) else replace(arm, mask=None, ormask=None)
        for name, arm in read.arms.items()
    }
    return replace(read, arms=arms)


def _mask_cases(tmp_path: Path) -> list[Path]:
    """Files whose mask columns are odd (float, scaled, short, absent) and others
    of every size and kind, for one batch that reuses the reader's buffers."""
    as_float = set_values("ANDMASK", lambda m: m)

    def float_mask(data: np.ndarray) -> np.ndarray:
        dtype = [(n, np.float32 if n == "ORMASK" else data.dtype[n]) for n in data.dtype.names]
        out = np.empty(data.size, dtype=dtype)
        for n in data.dtype.names:
            out[n] = data[n]
        return out

    edits = {
        "float-mask": {"edit": {"COADD_B": float_mask}},
        "mask-length": SUPPORTED["mask-length"],
        "no-mask": SUPPORTED["no-mask"],
        "same": {"edit": {"COADD_R": as_float}},
        "vector-row": SUPPORTED["vector-row"],
    }
    paths = [REAL_FILE]
    for i, (name, edit) in enumerate(edits.items()):
        paths.append(write_lamost_copy(tmp_path / f"{name}.fits.gz", compress=i % 2 == 0, **edit))
    paths += list(_damaged(tmp_path).values())
    return [*paths, REAL_FILE, tmp_path / "absent.fits.gz", *reversed(paths)]


def test_masks_false_checks_masks_the_same_and_reuses_buffers_safely(tmp_path):
    """``masks=False``: every status, fallback and array as with masks (fitsio's
    too), only mask/ormask None; one thread reads all files in a row, so each
    file's read reuses the buffers the previous (larger or smaller) one left."""
    paths = _mask_cases(tmp_path)
    jobs = [(p, ASKED) for p in paths]
    with_masks = read_many(jobs, threads=1)
    without = read_many(jobs, threads=1, masks=False)
    for path, full, bare in zip(paths, with_masks, without, strict=True):
        (ref,) = read_many([(path, ASKED)], reader="fitsio")
        _same(full, ref)
        _same(bare, _without_masks(full))
        assert bare.fallback == full.fallback, path
        if full.fallback is None and full.error is None:
            assert all(
                isinstance(a, LamostReadError) or (a.mask is None and a.ormask is None)
                for a in bare.arms.values()
            )
    fallbacks = {p.name: r.fallback for p, r in zip(paths, without, strict=True)}
    assert fallbacks["float-mask.fits.gz"] is not None  # not an integer column: fitsio
    assert "ORMASK" in fallbacks["float-mask.fits.gz"]


_PLAIN = gzip.decompress(REAL_FILE.read_bytes())
_HEADERS = [
    i for i in range(0, len(_PLAIN), 2880) if _PLAIN[i : i + 8] in (b"SIMPLE  ", b"XTENSION")
]


def _edited(edits: list[tuple[int, int, bool]]) -> bytes:
    """The real file with bytes replaced, one ``(where, byte, in_header)`` each: in a header,
    ``where % n_headers`` picks the header and ``where // n_headers`` the offset in its
    first two blocks; otherwise ``where`` is the offset in the file."""
    content = bytearray(_PLAIN)
    for where, byte, in_header in edits:
        start = _HEADERS[where % len(_HEADERS)] if in_header else 0
        span = 2 * 2880 if in_header else len(content)
        offset = where // len(_HEADERS) if in_header else where
        content[min(start + offset % span, len(content) - 1)] = byte
    return bytes(content)


@settings(max_examples=40, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 2**40), st.integers(0, 255), st.booleans()), min_size=1, max_size=3
    ),
    compress=st.booleans(),
)
@example(edits=[(24 * len(_HEADERS), 0x1F, True)], compress=False)  # SIMPLE's value damaged
@example(edits=[(21 * len(_HEADERS), ord("1"), True)], compress=True)  # SIMPLE = 1  T
@example(edits=[(412 * len(_HEADERS) + 7, ord("s"), True)], compress=True)  # PCOUNT = s 0
@example(edits=[(4401, ord(" "), True)], compress=False)  # " COUNT": no PCOUNT in COADD_B
@example(edits=[(353328395281, ord("t"), True)], compress=True)  # TTYPE1 t= 'FLUX'
def test_randomly_damaged_files_give_the_same_outcome(edits, compress):
    """Bytes replaced in headers (where a reader must decide what it understands) or
    anywhere: the same arrays or the same status as cfitsio, never an exception
    (found by this test: cfitsio rejects SIMPLE off column 30, a garbled PCOUNT, or an
    extension without PCOUNT, which the Rust reader had read, and reads a keyword field
    with a space inside as the name before it; such headers now go to cfitsio)."""
    content = _edited(edits)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("x.fits.gz" if compress else "x.fits")
        path.write_bytes(gzip.compress(content, 1) if compress else content)
        _compare(path)
        (ref,) = read_many([(path, ASKED)], reader="fitsio")
        # "auto" falls back to fitsio for what Rust does not understand, and then compared
        # fitsio with fitsio: the Rust reader's own answer must be "unsupported" or
        # cfitsio's (about half the damaged files reach this point).
        (rust,) = read_many([(path, ASKED)], reader="rust")
        unsupported = rust.error is not None and str(rust.error).startswith("unsupported:")
        if not unsupported and not _odd_names(rust):
            _same(rust, ref)


def test_a_damaged_file_leaves_nothing_in_cfitsio_for_the_next_reader(tmp_path):
    """cfitsio keeps one error-message stack per process; a header read past its damaged
    END card leaves binary bytes there, and fitsio then raised UnicodeDecodeError on the
    next file's first (handled) error: a good file failed because of the one before it
    (found by the random-damage property test), and so would any later fitsio use, such
    as writing a FITS catalogue. Now the good file reads as it does on its own (every arm
    bit-identical to the Rust reader's, which does not use cfitsio), fitsio itself
    opens it after the damaged one, and the damaged file's reason is a line of text
    (its cfitsio message held the file's binary bytes)."""
    good = tmp_path / "good.fits"
    good.write_bytes(_PLAIN)
    bad = bytearray(_PLAIN)
    first = _HEADERS[1]  # the first extension's header: its END card becomes ENX
    end = first + bytes(bad[first : first + 2 * 2880]).index(b"END" + b" " * 77)
    bad[end : end + 3] = b"ENX"
    (tmp_path / "bad.fits").write_bytes(bytes(bad))
    for _ in range(2):
        (broken,) = read_many([(tmp_path / "bad.fits", ASKED)], reader="fitsio")
        assert isinstance(broken.error, BadFitsError)  # a one-line reason, not its bytes
        # cfitsio's own answer varies by build (unreadable at open, or HDU 2 malformed)
        assert str(broken.error).isprintable() and "bad.fits" in str(broken.error)
        (after,) = read_many([(good, ASKED)], reader="fitsio")
        (rust,) = read_many([(good, ASKED)], reader="rust")
        assert after.error is None and rust.fallback is None
        _same(rust, after)
        _compare(tmp_path / "bad.fits")  # the damaged file: the same outcome both ways
        with fitsio.FITS(str(good)) as fits:  # what a catalogue writer would do next
            assert len(fits) == len(_HEADERS)


def _with_card(old: bytes, new: bytes, *, nth: int = 0) -> bytes:
    """The real file (plain) with its ``nth`` 80-byte card starting ``old`` replaced."""
    start = -1
    for _ in range(nth + 1):
        start = _PLAIN.index(old, start + 1)
        assert start % 80 == 0
    return _PLAIN[:start] + new.ljust(80) + _PLAIN[start + 80 :]


def test_odd_extension_names_and_column_names_give_fitsios_answer(tmp_path):
    """Headers cfitsio reads its own way: the Rust reader agrees or hands the file over
    (it called an EXTNAME with leading blanks, an HDUNAME or a lower-case keyword
    'missing_extension' where fitsio reads the arm; two EXTNAME cards disagreed)."""
    coadd_b = b"EXTNAME = 'COADD_B '"
    cases = {
        "leading-blanks": _with_card(coadd_b, b"EXTNAME = '  COADD_B'"),
        "hduname": _with_card(coadd_b, b"HDUNAME = 'COADD_B '"),
        "lower-case-keyword": _with_card(coadd_b, b"extname = 'COADD_B '"),
        "ttype-leading-blank": _with_card(b"TTYPE1  = 'FLUX", b"TTYPE1  = ' FLUX   '"),
    }
    at = _PLAIN.index(coadd_b)  # the card before it is a COMMENT: a first EXTNAME there
    for name, first, second in (
        ("extname-then-junk", b"COADD_B", b"JUNK"),
        ("junk-then-extname", b"JUNK", b"COADD_B"),
    ):
        content = bytearray(_PLAIN)
        content[at - 80 : at] = b"EXTNAME = '" + first + b"'".ljust(80 - 11 - len(first))
        content[at : at + 80] = b"EXTNAME = '" + second + b"'".ljust(80 - 11 - len(second))
        cases[name] = bytes(content)
    for name, content in cases.items():
        path = tmp_path / f"{name}.fits"
        path.write_bytes(content)
        fast = _compare(path, ["COADD_B", "COADD_R"])
        assert fast.error is None and isinstance(fast.arms["COADD_R"], Arm), name
        _compare(path, ["COADD_R"])  # the odd HDU not asked for: the same file info


def _edit_card(plain: bytes, extname: str, key: bytes, value: bytes) -> bytes:
    """The file with one card of ``extname``'s header given another value (same width)."""
    with tempfile.NamedTemporaryFile(suffix=".fits") as tmp:
        Path(tmp.name).write_bytes(plain)
        with fitsio.FITS(tmp.name) as fits:
            offsets = fits[extname].get_offsets()
    start, stop = offsets["header_start"], offsets["data_start"]
    header = bytearray(plain[start:stop])
    for at in range(0, len(header), 80):
        if header[at : at + 8] == key.ljust(8):
            header[at + 10 : at + 30] = value.ljust(20)
            return plain[:start] + bytes(header) + plain[stop:]
    raise AssertionError(f"no card {key!r} in {extname}")


def _flux_tform(plain: bytes) -> bytes:
    names = [c.upper() for c in afits.open(io.BytesIO(plain))["COADD_B"].columns.names]
    return b"TFORM%d" % (names.index("FLUX") + 1)


def test_a_damaged_column_type_is_bad_columns_in_both_readers(tmp_path):
    """TFORM of FLUX turned from E to J: the Rust reader refused it, and fitsio then read
    the float bits as integers, status ok with garbage flux (Teff 5367 for 4727)."""
    plain = gzip.decompress(REAL_FILE.read_bytes())
    path = tmp_path / "tform.fits"
    path.write_bytes(_edit_card(plain, "COADD_B", _flux_tform(plain), b"'J       '"))
    for reader in ("auto", "fitsio"):
        (got,) = read_many([(path, ["COADD_B", "COADD_R"])], reader=reader)
        assert isinstance(got.arms["COADD_B"], BadColumnsError), (reader, got.arms["COADD_B"])
        assert "FLUX holds int32, not floating point" in str(got.arms["COADD_B"])
        assert not isinstance(got.arms["COADD_R"], LamostReadError)  # the other arm is read


def test_a_malformed_header_is_not_called_a_download_cut_short(tmp_path):
    """TFIELDS of COADD_B made 3 (NAXIS1 stays): cfitsio stops there and the file read
    as "HDUs missing ... a download cut short", though all its bytes are there."""
    plain = gzip.decompress(REAL_FILE.read_bytes())
    path = tmp_path / "tfields.fits"
    path.write_bytes(_edit_card(plain, "COADD_B", b"TFIELDS", b"3"))
    (got,) = read_many([(path, ["COADD_B"])], reader="fitsio")
    assert isinstance(got.error, BadFitsError)
    assert "header is malformed" in str(got.error) and "cut short" not in str(got.error)
    cut = tmp_path / "cut.fits"  # a file that does end after HDU 0 keeps that reason
    with fitsio.FITS(str(path)) as fits:
        first_end = int(fits[0].get_offsets()["data_end"])
    cut.write_bytes(plain[:first_end])
    (short,) = read_many([(cut, ["COADD_B"])], reader="fitsio")
    assert isinstance(short.error, BadFitsError) and "cut short" in str(short.error)


@pytest.mark.parametrize("value", [b"1E300", b"-5.0", b"20000.0"])
def test_an_implausible_header_snr_is_null_with_a_note_in_both_readers(tmp_path, value):
    """SNR = 1e300 passed as is: it overflowed the float32 catalogue column to inf and
    shrank the calibrated errors. Outside 0-10,000 it is now null, with a note."""
    plain = gzip.decompress(REAL_FILE.read_bytes())
    path = tmp_path / "snr.fits"
    path.write_bytes(_edit_card(plain, "COADD_B", b"SNR", value))
    got = _compare(path, ["COADD_B", "COADD_R"])  # both readers, the same arms
    blue, red = got.arms["COADD_B"], got.arms["COADD_R"]
    assert blue.snr is None and red.snr is not None
    assert any("is not a plausible S/N" in note for note in blue.notes)
    ok = _edit_card(plain, "COADD_B", b"SNR", b"9999.0")
    path.write_bytes(ok)
    assert _compare(path, ["COADD_B"]).arms["COADD_B"].snr == 9999.0
