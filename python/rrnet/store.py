"""The preprocessed store: a manifest table plus memory-mappable float32 (or float16) flux shards.

Layout of a store directory (``docs/store.md`` has the full description)::

    store.json                     format, fingerprint, row count, shard size, kinds
    manifest.parquet               one row per catalogue row, in catalogue order
    summary.json                   rrnet-preprocess's counts at the end of its run
    shards/normalized-000000.npy   float32 [<= shard_size, 7200], standard .npy
                                   (float16 in a store written with dtype="float16")
    shards/resampled-000000.npy    (only with keep_resampled)

Catalogue row ``r`` lives in shard ``r // shard_size`` at offset ``r % shard_size``;
the manifest repeats both as the ``shard`` and ``offset`` columns. Rows that
failed preprocessing are all-NaN in the shards.

A float16 store (``store.json`` ``"dtype": "float16"``) halves the disk; its
readers upcast to float32 (:meth:`Store.read_flux`). A shard holding a finite value
beyond float16's range (|x| > 65504) is kept as float32 (:func:`storage_array`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from rrnet.grid import N_PIX

STORE_FORMAT = "rrnet-preprocessed-store"
STORE_FORMAT_VERSION = 1
KINDS: tuple[str, ...] = ("normalized", "resampled")
"""Flux kinds: continuum-normalised (model input) and resampled (before normalisation)."""
STORE_DTYPES: tuple[str, ...] = ("float32", "float16")
"""Storage types of the flux shards (``store.json`` ``dtype``; float32 when absent)."""
SUMMARY_FILE = "summary.json"
"""The finished run's counts, for scripts and workflow managers (written by
rrnet-preprocess; an ``--overwrite`` removes it with the store it describes)."""


class StoreError(ValueError):
    """The directory is not a complete, readable store (message is one line)."""


def shard_name(kind: str, shard: int) -> str:
    """File name of one shard, relative to the store directory."""
    return f"shards/{kind}-{shard:06d}.npy"


def check_store_dtype(dtype: str) -> str:
    """``dtype`` if it is one of :data:`STORE_DTYPES` (ValueError otherwise)."""
    if dtype not in STORE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(STORE_DTYPES)}, got {dtype!r}")
    return dtype


def storage_array(flux: np.ndarray, dtype: str) -> np.ndarray:
    """``flux`` as written to a shard of a ``dtype`` store.

    float16 keeps 11 significant bits (rounding error <= 2**-11 = 4.9e-4 relative,
    <= 4.9e-4 absolute for a normalised flux below 2) and reaches 65504. A shard with
    a finite value beyond that range (a resampled flux in counts, or a normalised flux
    over a near-zero continuum) is kept float32 whole, so no value becomes infinite;
    readers accept both.
    """
    flux = np.asarray(flux, dtype=np.float32)
    if check_store_dtype(dtype) == "float32":
        return flux
    with np.errstate(over="ignore"):  # an overflow is detected below
        half = flux.astype(np.float16)
    if np.count_nonzero(np.isinf(half)) != np.count_nonzero(np.isinf(flux)):
        return flux  # a finite value would overflow: this shard stays float32
    return half


def read_store_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parsed ``store.json`` (StoreError if absent or not a store)."""
    info_path = Path(path) / "store.json"
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError:
        raise StoreError(f"not a store (no store.json): {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"unreadable store.json in {path}: {exc}") from exc
    if info.get("format") != STORE_FORMAT:
        raise StoreError(f"not an rrnet store: {info_path}")
    if info.get("format_version") != STORE_FORMAT_VERSION:
        raise StoreError(
            f"store format version {info.get('format_version')} is not supported "
            f"(this rrnet reads version {STORE_FORMAT_VERSION})"
        )
    return info


class Store:
    """A complete preprocessed store, opened read-only.

    Use :func:`open_store`. Fluxes are read through memory maps, so opening a
    store of millions of spectra costs only the manifest.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.info = read_store_info(self.path)
        if not self.info.get("complete"):
            raise StoreError(
                f"store {self.path} is incomplete: rerun rrnet-preprocess with --resume"
            )
        self._maps: dict[tuple[str, int], np.ndarray] = {}

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, n_rows={self.n_rows}, kinds={list(self.kinds)})"

    def __len__(self) -> int:
        return self.n_rows

    @property
    def n_rows(self) -> int:
        return int(self.info["n_rows"])

    @cached_property
    def manifest_digest(self) -> str:
        """SHA-256 (16 hex digits) of ``manifest.parquet``: the store's identity wherever
        it is moved or copied (another store written at the same path differs)."""
        digest = hashlib.sha256()
        with open(self.path / "manifest.parquet", "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]

    @cached_property
    def spectra_digest(self) -> str | None:
        """:func:`spectra_digest` of the manifest: which spectra the store holds, whatever
        its shards, row order or the route that made it."""
        return spectra_digest(self.manifest)

    @property
    def shard_size(self) -> int:
        return int(self.info["shard_size"])

    @property
    def n_shards(self) -> int:
        return -(-self.n_rows // self.shard_size)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Flux kinds present: ``("normalized", "resampled")`` or ``("normalized",)``."""
        return tuple(self.info["kinds"])

    @property
    def dtype(self) -> str:
        """Storage type of the flux shards: ``float32`` or ``float16`` (read as float32)."""
        return str(self.info.get("dtype", "float32"))

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Preprocessing settings and their short hash (see PreprocessSettings.fingerprint)."""
        return dict(self.info["fingerprint"])

    @cached_property
    def manifest(self) -> pl.DataFrame:
        """One row per catalogue row, in catalogue order (column ``row`` = 0-based index)."""
        path = self.path / "manifest.parquet"
        try:
            with open(path, "rb"):  # Polars words a permission error as a corrupt file
                pass
            manifest = pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            if isinstance(exc, PermissionError):  # another user's store (mode 0600)
                raise StoreError(f"{path}: not readable by this user (permission denied)") from exc
            if isinstance(exc, OSError) and exc.errno not in (None, errno.ENOENT):
                raise  # the machine (I/O error), not the store
            raise StoreError(
                f"corrupt store {self.path}: manifest.parquet is missing or unreadable "
                f"({' '.join(str(exc).split())[:200]}); rerun rrnet-preprocess"
            ) from exc
        if manifest.height != self.n_rows:
            raise StoreError(
                f"manifest of {self.path} has {manifest.height} rows, store.json says {self.n_rows}"
            )
        return manifest

    def shard(self, shard: int, kind: str = "normalized") -> np.ndarray:
        """Read-only memory map of one shard, [rows in shard, 7200].

        float32, or float16 in a float16 store (where a shard of out-of-range values
        is float32); :meth:`read_flux` always returns float32.
        """
        self._check_kind(kind)
        key = (kind, shard)
        if key not in self._maps:
            if not 0 <= shard < self.n_shards:
                raise IndexError(f"shard {shard} out of range (store has {self.n_shards})")
            try:
                flux = np.load(self.path / shard_name(kind, shard), mmap_mode="r")
            except (OSError, ValueError, EOFError) as exc:
                if isinstance(exc, PermissionError):  # another user's shard (mode 0600)
                    raise StoreError(
                        f"{self.path / shard_name(kind, shard)}: not readable by this user "
                        "(permission denied)"
                    ) from exc
                if isinstance(exc, OSError) and exc.errno not in (None, errno.ENOENT):
                    raise  # the machine (I/O error), not the store
                raise StoreError(
                    f"corrupt store {self.path}: {shard_name(kind, shard)} is missing or "
                    f"truncated ({' '.join(str(exc).split())}); rerun rrnet-preprocess"
                ) from exc
            expected = (min(self.shard_size, self.n_rows - shard * self.shard_size), N_PIX)
            allowed = {np.dtype(np.float32), np.dtype(self.dtype)}
            if flux.shape != expected or flux.dtype not in allowed:
                raise StoreError(
                    f"{shard_name(kind, shard)} has shape {flux.shape} {flux.dtype}, "
                    f"expected {expected} {self.dtype}"
                )
            self._maps[key] = flux
        return self._maps[key]

    def release(self, shard: int, kind: str | None = None) -> None:
        """Close the cached memory map(s) of one shard.

        Mapped pages that were read count in the process's RSS; a long streaming pass
        releases each shard when done so memory stays flat however large the store.
        """
        for k in (kind,) if kind else self.kinds:
            self._maps.pop((k, shard), None)

    def read_flux(
        self, rows: Sequence[int] | np.ndarray | slice, kind: str = "normalized"
    ) -> np.ndarray:
        """Fluxes of manifest rows (catalogue indices), float32 [len(rows), 7200], in that order.

        Failed rows are all NaN; a float16 store's values are upcast (exactly).
        Raises IndexError for rows outside the store.
        """
        self._check_kind(kind)
        if isinstance(rows, slice):
            rows = range(*rows.indices(self.n_rows))
        rows = np.asarray(rows)
        if rows.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {rows.shape}")
        if rows.size and not np.issubdtype(rows.dtype, np.integer):
            raise TypeError(f"rows must be integers, got {rows.dtype}")
        rows = rows.astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise IndexError(f"rows must lie in [0, {self.n_rows}), got {rows.min()}..{rows.max()}")
        out = np.empty((rows.size, N_PIX), dtype=np.float32)
        shards, offsets = np.divmod(rows, self.shard_size)
        for shard in np.unique(shards):
            where = np.flatnonzero(shards == shard)
            out[where] = self.shard(int(shard), kind)[offsets[where]]
        return out

    def iter_shards(self, kind: str = "normalized") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, flux)`` per shard: catalogue indices and the shard's memory map
        (of the store's dtype, see :meth:`shard`)."""
        for shard in range(self.n_shards):
            flux = self.shard(shard, kind)
            start = shard * self.shard_size
            yield np.arange(start, start + flux.shape[0], dtype=np.int64), flux

    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if kind not in self.kinds:
            raise StoreError(
                f"store {self.path} has no {kind} flux (it was written without keep_resampled)"
            )


def open_store(path: str | os.PathLike[str]) -> Store:
    """Open a complete store written by :func:`rrnet.preprocess.pipeline.preprocess_catalog`."""
    return Store(path)


SPECTRUM_KEYS = ("filename", "extname_blue", "extname_red")
"""The columns that name a spectrum, in a store's manifest as in a catalogue."""

CONTENT_KEYS = ("status", "snr_blue", "snr_red", "n_outliers", "max_outlier_run", "rv_used")
"""Manifest columns read from each spectrum itself: with them the digest tells apart two
data sets whose files have the same names (rrnet-synth names its files by seed and visit,
whatever the S/N or RV jitter asked for)."""


def spectra_digest(table: pl.DataFrame) -> str | None:
    """SHA-256 (16 hex digits) of the spectra ``table`` names and what was read from each
    (its :data:`SPECTRUM_KEYS` and :data:`CONTENT_KEYS`, rows sorted); None without the
    names. The manifest file's own digest changes with the shard size and the layout, so
    the same spectra preprocessed again had been called another data set (quality bit
    SYNTHETIC_DOMAIN on every row of a synthetic checkpoint's own spectra). A catalogue
    read on the fly has no content columns: its digest never equals a store's."""
    if not set(SPECTRUM_KEYS) <= set(table.columns):
        return None
    names = [*SPECTRUM_KEYS, *(c for c in CONTENT_KEYS if c in table.columns)]
    keys = (
        table.select(
            pl.concat_str([pl.col(c).cast(pl.Utf8).fill_null("") for c in names], separator="\t")
        )
        .to_series()
        .sort()
    )
    digest = hashlib.sha256("\t".join(names).encode())
    for start in range(0, keys.len(), 1 << 16):
        digest.update(("\n".join(keys.slice(start, 1 << 16).to_list()) + "\n").encode())
    return digest.hexdigest()[:16]
