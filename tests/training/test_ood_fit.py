"""The OOD test fitted after training (issue 17, item 2): train/valid rows only."""

from __future__ import annotations

import numpy as np

from rrnet.models import ood_subspace as oos
from rrnet.training.ood_fit import fit_ood_checkpoint
from rrnet.training.split import Split
from rrnet.training.toy import toy_spectra


def _data(n: int = 240) -> tuple[np.ndarray, np.ndarray, np.ndarray, Split]:
    flux, _ = toy_spectra(n, n_pixels=7200, n_lines=40, seed=3)
    snr_b = np.random.default_rng(0).uniform(10, 200, n)
    rows = np.arange(n)
    return flux, snr_b, snr_b * 1.2, Split(rows[:150], rows[150:200], rows[200:])


def test_fit_writes_the_test_from_train_and_valid_rows_only(tmp_path) -> None:
    flux, snr_b, snr_r, split = _data()
    sub = fit_ood_checkpoint(tmp_path, flux, split.train, split.valid, snr_b, snr_r,
                             n_components=10)  # fmt: skip
    assert sub is not None
    back = oos.read(tmp_path)
    assert back is not None
    np.testing.assert_array_equal(back.components, sub.components)
    # the same numbers as fitting the library function on those rows directly
    direct = oos.fit(flux[split.train], (snr_b[split.train], snr_r[split.train]),
                     flux[split.valid], (snr_b[split.valid], snr_r[split.valid]), 10)  # fmt: skip
    np.testing.assert_allclose(sub.floor2, direct.floor2)
    np.testing.assert_allclose(sub.thresholds, direct.thresholds)
    # scrambling the test rows changes nothing
    flux2 = flux.copy()
    flux2[split.test] = 5.0
    (tmp_path / "b").mkdir()
    again = fit_ood_checkpoint(tmp_path / "b", flux2, split.train, split.valid, snr_b, snr_r,
                               n_components=10)  # fmt: skip
    assert again is not None
    np.testing.assert_array_equal(again.thresholds, sub.thresholds)


def test_no_snr_means_no_test_and_no_file(tmp_path) -> None:
    flux, snr_b, _, split = _data()
    nan = np.full(snr_b.size, np.nan)
    messages: list[str] = []
    assert fit_ood_checkpoint(tmp_path, flux, split.train, split.valid, nan, nan,
                              log=messages.append) is None  # fmt: skip
    assert oos.read(tmp_path) is None
    assert messages and "no OOD subspace test" in messages[0]


def test_a_large_split_gives_the_pca_its_cap_of_rows_above_the_snr_cut(
    tmp_path, monkeypatch
) -> None:
    """The cap applies to the training rows the PCA can use (S/N >= FIT_MIN_SNR), chosen
    before reading; a cap on all rows first would leave the PCA only those of the
    capped rows that pass the cut."""
    flux, snr_b, snr_r, split = _data()
    monkeypatch.setattr(oos, "MAX_FIT_SPECTRA", 40)
    read: list[np.ndarray] = []

    class Rows:
        def __getitem__(self, rows: np.ndarray) -> np.ndarray:
            read.append(np.asarray(rows))
            return flux[rows]

    sub = fit_ood_checkpoint(tmp_path, Rows(), split.train, split.valid, snr_b, snr_r,
                             n_components=5)  # fmt: skip
    assert sub is not None
    train_read = read[0]
    good = split.train[np.fmin(snr_b, snr_r)[split.train] >= oos.FIT_MIN_SNR]
    assert good.size > 60 and train_read.size == 40
    assert set(train_read) <= set(good)
    np.testing.assert_array_equal(train_read, good[np.linspace(0, good.size - 1, 40).astype(int)])
    direct = oos.fit(flux[train_read], (snr_b[train_read], snr_r[train_read]),
                     flux[split.valid], (snr_b[split.valid], snr_r[split.valid]), 5,
                     max_spectra=40)  # fmt: skip
    np.testing.assert_allclose(sub.components, direct.components)
