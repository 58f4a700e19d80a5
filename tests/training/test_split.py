"""Split by star: never one star in two splits, seeded, independent of row order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrnet.training.split import split_by_star


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.integers(0, 40), min_size=1, max_size=200),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_row_in_exactly_one_split_and_stars_never_shared(ids: list[int], seed: int) -> None:
    star = np.array(ids)
    split = split_by_star(star, seed=seed)
    rows = np.concatenate([split.train, split.valid, split.test])
    assert np.array_equal(np.sort(rows), np.arange(star.size))
    sets = [set(star[part].tolist()) for part in (split.train, split.valid, split.test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_fractions_of_stars_are_7_1_2() -> None:
    rng = np.random.default_rng(0)
    star = np.repeat(np.array([f"star{i:05d}" for i in range(1000)]), rng.integers(1, 4, 1000))
    split = split_by_star(star, seed=7)
    n_stars = [np.unique(star[p]).size for p in (split.train, split.valid, split.test)]
    assert n_stars == [700, 100, 200]


def test_seeded_and_independent_of_row_order() -> None:
    star = np.arange(300) % 97
    a = split_by_star(star, seed=1)
    perm = np.random.default_rng(3).permutation(star.size)
    b = split_by_star(star[perm], seed=1)
    for part_a, part_b in zip((a.train, a.valid, a.test), (b.train, b.valid, b.test), strict=True):
        assert set(star[part_a].tolist()) == set(star[perm][part_b].tolist())
    c = split_by_star(star, seed=2)
    assert not np.array_equal(a.train, c.train)


@pytest.mark.parametrize("bad", [np.array([1.0, np.nan]), np.array(["a", None], dtype=object)])
def test_missing_star_ids_are_an_error(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="star ids"):
        split_by_star(bad)


def test_bad_fractions_are_an_error() -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_by_star(np.arange(10), fractions=(0.5, 0.5, 0.5))


def test_fixed_stars_keep_their_split_and_the_rest_are_cut_as_before() -> None:
    """``fixed``: an earlier checkpoint's stars stay where they were (a training star never
    becomes a test star); the other stars are cut 7:1:2; without it nothing changes."""
    ids = np.repeat([f"S{i:03d}" for i in range(200)], 2)  # two spectra per star
    plain = split_by_star(ids, seed=3)
    unfixed = split_by_star(ids, seed=3, fixed={})
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(unfixed, name), getattr(plain, name))
    before = plain.labels(ids.size)
    fixed = {ids[i]: before[i] for i in range(200)}  # stars S000-S099
    later = np.concatenate([ids[100:], [f"N{i:03d}" for i in range(60)]])
    got = split_by_star(later, seed=9, fixed=fixed).labels(later.size)
    assert all(name == fixed[s] for s, name in zip(later, got, strict=True) if s in fixed)
    new = {s: name for s, name in zip(later, got, strict=True) if s not in fixed}
    assert len(new) == 160  # S100-S199 and N000-N059
    counts = {n: sum(v == n for v in new.values()) for n in ("train", "valid", "test")}
    assert counts == {"train": 112, "valid": 16, "test": 32}


def test_checkpoint_tables_read_in_astropy_without_a_warning(tmp_path) -> None:
    """split.parquet and test_predictions.parquet had no text widths: astropy warned
    "No table::len::star_id found in metadata" (warnings are errors in this suite)."""
    from astropy.table import Table

    from rrnet.training import files

    path = tmp_path / "split.parquet"
    files.write_parquet(path, {"row": np.arange(3), "star_id": ["a", "bb", None],
                               "split": np.array(["train", "valid", "test"])})  # fmt: skip
    table = Table.read(path, format="parquet")
    assert list(table["split"]) == ["train", "valid", "test"]
