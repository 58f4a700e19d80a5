"""Streaming training data from the store shards: order and peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from rrnet.grid import N_PIX
from rrnet.store import STORE_FORMAT, STORE_FORMAT_VERSION, open_store, shard_name
from rrnet.training.stream import StreamedRows, streamed_order

SHARD = 256


def _write_store(root: Path, n_rows: int) -> Path:
    """A minimal complete store of ``n_rows`` random fluxes (shards only, no manifest)."""
    (root / "shards").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for shard in range(-(-n_rows // SHARD)):
        rows = min(SHARD, n_rows - shard * SHARD)
        flux = (1 + 0.05 * rng.standard_normal((rows, N_PIX))).astype(np.float32)
        np.save(root / shard_name("normalized", shard), flux)
    info = {
        "format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION, "complete": True,
        "n_rows": n_rows, "shard_size": SHARD, "kinds": ["normalized"], "fingerprint": {},
    }  # fmt: skip
    (root / "store.json").write_text(json.dumps(info))
    return root


def test_streamed_order_is_a_reproducible_shard_local_permutation(tmp_path: Path) -> None:
    store = open_store(_write_store(tmp_path / "s", 1000))
    rows = np.arange(1000)[::-1].copy()
    view = StreamedRows(store, rows, buffer=64)
    train = np.arange(0, 1000, 3)
    shards = view.shard_of(train)
    a = streamed_order(train, shards, np.random.default_rng(5), 64)
    b = streamed_order(train, shards, np.random.default_rng(5), 64)
    c = streamed_order(train, shards, np.random.default_rng(6), 64)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.sort(a), train)
    # every window of 64 rows spans at most two shards (shards stay contiguous)
    for start in range(0, a.size, 64):
        assert np.unique(view.shard_of(a[start : start + 64])).size <= 2
    got = view[a[:5]]
    assert not store._maps  # every shard map was released after the read
    np.testing.assert_array_equal(got, store.read_flux(rows[a[:5]]))


_MEASURE = """
import resource, sys
import numpy as np
from rrnet.store import open_store
from rrnet.training.stats import flux_statistics
from rrnet.training.stream import StreamedRows, streamed_order
store = open_store(sys.argv[1])
view = StreamedRows(store, np.arange(store.n_rows), buffer=512)
train = np.arange(store.n_rows)
flux_statistics(view.__getitem__, train, view.shape[1], chunk=512)
orders = [streamed_order(train, view.shard_of(train), np.random.default_rng(m), 512)
          for m in range(3)]
order = np.stack(orders)
for b in range(0, train.size, 64):  # one epoch of 3 members' batches, as the loop reads
    idx = order[:, b : b + 64]
    view[idx.ravel()]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_rss_kb(store: Path) -> int:
    env_path = str(Path(__file__).resolve().parents[2] / "python")
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(store)], capture_output=True, text=True,
        check=True, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return int(out.stdout.strip().splitlines()[-1])


def test_peak_rss_does_not_grow_with_the_store(tmp_path: Path) -> None:
    """One epoch (statistics + 3 members' batches) over a 4x larger store: peak RSS
    within 20% (the fluxes differ by 265 MB; with the shard maps kept, peak RSS grows
    by about that)."""
    small = _peak_rss_kb(_write_store(tmp_path / "small", 3072))
    large = _peak_rss_kb(_write_store(tmp_path / "large", 12288))
    assert large <= 1.2 * small, (small, large)
