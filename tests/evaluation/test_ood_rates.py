"""OOD flag rate per S/N bin of the evaluation report (issue 17, item 2)."""

from __future__ import annotations

import numpy as np
import polars as pl

from rrnet.evaluation.metrics import OOD_BIT, ood_rates
from rrnet.inference import QualityBit


def test_rates_per_bin_count_bit_16_only() -> None:
    rng = np.random.default_rng(0)
    snr = rng.uniform(1, 200, 500)
    bits = rng.choice([0, 2, 16, 18, 32, 48], 500)
    score = rng.uniform(0, 3, 500)
    table = pl.DataFrame({"snr": snr, "quality_bits": bits, "ood_score": score})
    rates = ood_rates(table)
    assert rates is not None
    assert int(QualityBit.OUT_OF_DISTRIBUTION) == OOD_BIT
    for lo, hi, name in ((0, 10, "0-10"), (20, 40, "20-40"), (100, np.inf, ">=100")):
        m = (snr >= lo) & (snr < hi)
        row = rates.filter(pl.col("snr_bin") == name).row(0, named=True)
        assert row["n"] == m.sum()
        assert row["n_ood"] == np.isin(bits[m], [16, 18, 48]).sum()
        assert row["ood_rate"] == np.isin(bits[m], [16, 18, 48]).mean()
        assert row["ood_score_median"] == np.median(score[m])
    assert ood_rates(table.drop("quality_bits")) is None
