"""Train/validation/test split by star (never by spectrum), seeded and reproducible.

Repeat observations of one star are nearly identical spectra with identical labels;
if they landed in both the training and the test split, the test error would be that
of memorisation. So stars, not spectra, are shuffled and cut 7:1:2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

SPLIT_NAMES: tuple[str, ...] = ("train", "valid", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.1, 0.2)


@dataclass(frozen=True)
class Split:
    """Row indices (into the arrays being trained on) of each split, each sorted."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    def labels(self, n_rows: int) -> np.ndarray:
        """Per-row split name ("train"/"valid"/"test", "" for rows in no split)."""
        out = np.full(n_rows, "", dtype=object)
        for name in SPLIT_NAMES:
            out[getattr(self, name)] = name
        return out


def split_by_star(
    star_ids: np.ndarray,
    *,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    fixed: Mapping[str, str] | None = None,
) -> Split:
    """Assign every row to train/valid/test so that all rows of a star share a split.

    The distinct star ids are sorted, shuffled with ``numpy.random.default_rng(seed)``
    and cut at ``round(cumsum(fractions) * n_stars)``; the result therefore depends
    only on the set of star ids and the seed, not on the row order. The fractions are
    fractions of stars (of spectra only on average, if stars have repeat spectra).

    ``fixed`` (star id as text -> "train"/"valid"/"test", e.g. an earlier checkpoint's
    split) keeps those stars where they were; only the other stars are shuffled and cut
    (without ``fixed`` the result is as before: all stars are).
    """
    ids = np.asarray(star_ids)
    if ids.ndim != 1:
        raise ValueError(f"star ids must be 1-D, got shape {ids.shape}")
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (3,) or np.any(frac < 0) or not np.isclose(frac.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    if ids.dtype.kind == "f" and np.isnan(ids).any():
        raise ValueError("star ids contain NaN")
    if ids.dtype == object and any(v is None for v in ids):
        raise ValueError("star ids contain missing values")
    stars, inverse = np.unique(ids, return_inverse=True)
    which = np.full(stars.size, -1, dtype=np.int8)
    for i, star in enumerate(stars):
        known = (fixed or {}).get(str(star))
        if known is not None:
            which[i] = SPLIT_NAMES.index(known)
    free = np.flatnonzero(which < 0)
    order = free[np.random.default_rng(seed).permutation(free.size)]
    cuts = np.rint(np.cumsum(frac)[:2] * free.size).astype(np.int64)
    which[order[: cuts[0]]] = 0
    which[order[cuts[0] : cuts[1]]] = 1
    which[order[cuts[1] :]] = 2
    row_split = which[inverse.ravel()]
    return Split(*(np.flatnonzero(row_split == k) for k in range(3)))


def checkpoint_assignment(checkpoint: str) -> dict[str, str]:
    """Star id (as text) -> split of a checkpoint's ``split.parquet`` (empty without one:
    an imported release, or a checkpoint trained before splits were saved)."""
    from rrnet.models.checkpoint import split_keys

    try:
        _, splits = split_keys(checkpoint)
    except FileNotFoundError:  # a damaged split is said (ValueError), not taken for none
        return {}
    return {str(star): name for name, stars in splits.items() for star in stars}
