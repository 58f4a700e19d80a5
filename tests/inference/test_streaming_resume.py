"""Resume: a run interrupted at any point (an exception, kill -9) then resumed writes the
same catalogue as an uninterrupted run, without recomputing finished parts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

import rrnet.inference.streaming as run_module
from helpers import REAL_FILE, build_world, input_catalogue, needs_shared
from rrnet.inference import InferError, read_catalogue, run_inference
from rrnet.inference.streaming import parts_dir

pytestmark = needs_shared


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_world(tmp_path_factory.mktemp("resume"))


def test_resume_after_crash_equals_uninterrupted(
    world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = [world["sp"], world["ca"]]
    full = run_inference(models=models, store=world["store"], out=tmp_path / "full.parquet")
    out = tmp_path / "cut.parquet"
    real_write = run_module.write_part
    written: list[Path] = []

    def crash_after_two(frame: pl.DataFrame, path: Path) -> None:
        if len(written) == 2:
            raise KeyboardInterrupt
        real_write(frame, path)
        written.append(Path(path))

    monkeypatch.setattr(run_module, "write_part", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_inference(models=models, store=world["store"], out=out)
    assert not out.exists()
    assert sorted(p.name for p in parts_dir(out).glob("part-*")) == [p.name for p in written]
    with pytest.raises(InferError, match="--resume"):
        run_inference(models=models, store=world["store"], out=out)

    redone: list[Path] = []

    def record(frame: pl.DataFrame, path: Path) -> None:
        real_write(frame, path)
        redone.append(Path(path))

    monkeypatch.setattr(run_module, "write_part", record)
    run_inference(models=models, store=world["store"], out=out, resume=True)
    assert not set(redone) & set(written)  # finished parts were not recomputed
    assert len(redone) + len(written) == 3  # 9 rows in shards of 3
    assert pl.read_parquet(out).equals(pl.read_parquet(full))
    assert not parts_dir(out).exists()
    # Resuming a finished catalogue does nothing.
    run_inference(models=models, store=world["store"], out=out, resume=True)
    assert pl.read_parquet(out).equals(pl.read_parquet(full))
    # Killed while its parts were being removed (run.json gone first, parts left): the
    # run is finished; resume completes the clean-up (it refused "other inputs")
    parts_dir(out).mkdir()
    (parts_dir(out) / "part-000002.parquet").write_bytes(b"left over")
    run_inference(models=models, store=world["store"], out=out, resume=True)
    assert not parts_dir(out).exists()
    assert pl.read_parquet(out).equals(pl.read_parquet(full))


def test_resume_refuses_other_models(world: dict, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "cat.parquet"
    monkeypatch.setattr(run_module, "write_part", _raise)
    with pytest.raises(KeyboardInterrupt):
        run_inference(models=[world["sp"]], store=world["store"], out=out)
    monkeypatch.undo()
    with pytest.raises(InferError, match="written by a run with other checkpoints "):
        run_inference(models=[world["ca"]], store=world["store"], out=out, resume=True)


def _raise(*_: object) -> None:
    raise KeyboardInterrupt


def _cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "rrnet.cli.infer", *map(str, args), "--device", "cpu"]


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(world: dict, tmp_path: Path) -> None:
    catalog = tmp_path / "input.csv"
    # 36 one-row parts: a wide window between the 3rd part and the end, so that a
    # loaded machine cannot let the child finish before the poll sees 3 parts.
    n_rows = 4 * input_catalogue().height
    pl.concat([input_catalogue()] * 4).write_csv(catalog)
    models = [world["sp"], world["ca"]]
    common = ["--catalog", catalog, "--data-dir", REAL_FILE.parent, "--chunk-rows", "1",
              "--workers", "0", "--model", models[0], "--model", models[1]]  # fmt: skip
    # The uninterrupted run as a command too: values depend on torch's thread count to
    # round-off (the provenance records it), and this process's count is whatever the
    # test modules imported so far set.
    full = tmp_path / "full.fits"
    subprocess.run(_cli(*common, "--out", full), check=True, capture_output=True, timeout=300)
    out = tmp_path / "cut.fits"
    parts = parts_dir(out)
    # Niced, so that under load the polling parent is not starved by the child.
    proc = subprocess.Popen(
        ["nice", "-n", "19", *_cli(*common, "--out", out)], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 3:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done = len(list(parts.glob("part-*.parquet")))
    assert not out.exists() and 3 <= n_done < n_rows, "the run was not interrupted mid-way"

    result = subprocess.run(
        _cli(*common, "--out", out, "--resume"), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    got, got_prov = read_catalogue(out)
    want, want_prov = read_catalogue(full)
    assert got.height == n_rows
    assert got.equals(want)
    for key in want_prov:
        if key != "rrnet.created":
            assert got_prov[key] == want_prov[key], key
