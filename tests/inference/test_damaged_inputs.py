"""rrnet-infer on damaged checkpoints and stores: one line, exit status 2, never a
traceback, and no half-made output."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import build_world, needs_shared
from rrnet.cli.infer import main

pytestmark = needs_shared


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_world(tmp_path_factory.mktemp("damaged"))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:300])


def _config(**edits):
    def edit(path):
        config = json.loads(path.read_text())
        for key, value in edits.items():
            if value is None:
                config.pop(key)
            else:
                config[key] = value
        path.write_text(json.dumps(config))

    return edit


CHECKPOINTS = {
    "member garbage": ("member-0.safetensors", lambda p: p.write_bytes(b"\0garbage" * 50)),
    "member truncated": ("member-0.safetensors", _truncate),
    "member pickle": ("member-0.safetensors", lambda p: p.write_bytes(b"\x80\x04\x95" + bytes(64))),
    "member missing": ("member-0.safetensors", lambda p: p.unlink()),
    "normalization garbage": ("normalization.safetensors", lambda p: p.write_bytes(b"x" * 99)),
    "n_members text": ("config.json", _config(n_members="three")),
    "n_members 1e21": ("config.json", _config(n_members=10**21)),
    "labels int": ("config.json", _config(labels=5)),
    "model list": ("config.json", _config(model=[1, 2])),
    "no model": ("config.json", _config(model=None)),
    "not json": ("config.json", lambda p: p.write_text("{nope")),
    "calibration not json": ("calibration.json", lambda p: p.write_text("{nope")),
    "calibration labels int": ("calibration.json", _config(labels=5)),
    "ood test truncated": ("ood_subspace.safetensors", _truncate),
}
NAMED = {"calibration not json", "calibration labels int", "ood test truncated"}
"""Cases whose line named no file ("JSONDecodeError: Expecting property name")."""

STORES = {
    "shard missing": ("shards/normalized-000000.npy", lambda p: p.unlink()),
    "shard truncated": (
        "shards/normalized-000000.npy",
        lambda p: p.write_bytes(p.read_bytes()[:900]),
    ),
    "manifest broken": ("manifest.parquet", lambda p: p.write_bytes(b"PAR1 broken")),
    "manifest missing": ("manifest.parquet", lambda p: p.unlink()),
    "store.json broken": ("store.json", lambda p: p.write_text("{")),
}


def _run(world, tmp_path, capsys, *, store, model):
    out = tmp_path / "cat.parquet"
    args = ["--store", str(store), "--model", str(model), "--out", str(out)]
    rc = main([*args, "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rrnet-infer: error")]
    assert "Traceback" not in err
    return rc, lines, out


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_damaged_checkpoint(world, tmp_path, capsys, case):
    name, damage = CHECKPOINTS[case]
    model = tmp_path / "SP"
    shutil.copytree(world["sp"], model)
    if not (model / name).exists():  # the test world's checkpoint has no calibration
        valid = {"format": "rrnet-calibration", "version": 2, "labels": {}}
        (model / name).write_text(json.dumps(valid) if name.endswith(".json") else "x" * 999)
    damage(model / name)
    rc, lines, out = _run(world, tmp_path, capsys, store=world["store"], model=model)
    assert rc == 2 and len(lines) == 1
    assert case not in NAMED or str(model / name) in lines[0], lines
    assert not out.exists() and not out.with_name("cat.parquet.parts").exists()


@pytest.mark.parametrize("case", list(STORES))
def test_damaged_store(world, tmp_path, capsys, case):
    name, damage = STORES[case]
    store = tmp_path / "store"
    shutil.copytree(world["store"], store)
    damage(store / name)
    rc, lines, out = _run(world, tmp_path, capsys, store=store, model=world["sp"])
    assert rc == 2 and len(lines) == 1 and ("store" in lines[0] or "manifest" in lines[0])
    assert not out.exists() and not out.with_name("cat.parquet.parts").exists()


def test_preprocessing_notes_of_an_ok_row_reach_the_catalogue(world, tmp_path, capsys):
    """A header value recorded as null (OBSID 'abc') is explained in the store's reason;
    the catalogue's reason said only "ok" or "not recommended: ...", so its null obsid
    had no explanation. The note now follows the quality text."""
    import polars as pl

    store = tmp_path / "store"
    shutil.copytree(world["store"], store)
    manifest = pl.read_parquet(store / "manifest.parquet")
    first_ok = manifest["status"].to_list().index("ok")
    note = "header OBSID='abc' is not a number: recorded as null"
    manifest = manifest.with_columns(
        pl.when(pl.int_range(pl.len()) == first_ok).then(pl.lit(note)).otherwise("reason")
        .alias("reason")
    )  # fmt: skip
    manifest.write_parquet(store / "manifest.parquet")
    rc, lines, out = _run(world, tmp_path, capsys, store=store, model=world["sp"])
    assert rc == 0 and not lines
    reasons = pl.read_parquet(out)["reason"].to_list()
    assert reasons[first_ok].endswith("; " + note), reasons[first_ok]
    assert reasons[first_ok].split(";")[0] in ("ok",) or reasons[first_ok].startswith(
        "not recommended: "
    )
    others = [r for i, r in enumerate(reasons) if i != first_ok]
    assert not any(note in (r or "") for r in others)
