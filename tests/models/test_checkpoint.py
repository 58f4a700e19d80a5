"""The pickle-free checkpoint directory: round trip, atomic overwrite, validation, hash."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from rrnet.models import ModelConfig, StateDictMismatch, build_model
from rrnet.models.checkpoint import (
    CheckpointError,
    checkpoint_hash,
    load_checkpoint,
    member_file,
    save_checkpoint,
)

CONFIG = ModelConfig(channels=(2, 4), n_pixels=160, n_subbands=4, hidden=(8, 8), num_labels=2)


def _members(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    return [build_model(CONFIG).state_dict() for _ in range(n)]


def _save(path, members, **extra):
    rng = np.random.default_rng(0)
    kwargs = {
        "model_config": CONFIG,
        "labels": ["Teff[K]", "Logg"],
        "member_state_dicts": members,
        "flux_mean": rng.normal(size=160).astype(np.float32),
        "flux_std": rng.uniform(0.5, 1, 160).astype(np.float32),
        "label_mean": np.array([5000.0, 3.0]),
        "label_std": np.array([500.0, 1.0]),
    }
    kwargs.update(extra)
    return save_checkpoint(path, **kwargs), kwargs


def test_roundtrip(tmp_path) -> None:
    members = _members(3)
    path, kwargs = _save(tmp_path / "ck", members, training={"epochs": 30})
    ckpt = load_checkpoint(path)
    assert ckpt.model_config == CONFIG
    assert ckpt.labels == ("Teff[K]", "Logg")
    assert ckpt.n_members == 3
    assert ckpt.training == {"epochs": 30}
    assert ckpt.preprocessing is None
    for key in ("flux_mean", "flux_std", "label_mean", "label_std"):
        np.testing.assert_array_equal(getattr(ckpt.normalization, key), kwargs[key])
    for got, want in zip(ckpt.member_state_dicts, members, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
    config = json.loads((path / "config.json").read_text())
    assert config["format"] == "rrnet-checkpoint" and config["format_version"] == 1
    assert config["n_members"] == 3 and config["model"] == CONFIG.to_dict()
    assert {"rrnet", "torch"} <= set(config["versions"])
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["config.json", "normalization.safetensors"] + [member_file(i) for i in range(3)]
    )


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path) -> None:
    path, _ = _save(tmp_path / "ck", _members(2, seed=1))
    new = _members(1, seed=2)
    _save(path, new)
    ckpt = load_checkpoint(path)
    assert ckpt.n_members == 1
    torch.testing.assert_close(ckpt.member_state_dicts[0]["mu.weight"], new[0]["mu.weight"])
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_failed_save_keeps_the_old_checkpoint(tmp_path) -> None:
    path, _ = _save(tmp_path / "ck", _members(2))
    before = checkpoint_hash(path)
    bad = _members(1)
    bad[0]["fc2.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(StateDictMismatch, match=r"fc2\.0\.weight"):
        _save(path, bad)
    assert checkpoint_hash(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_refuses_to_overwrite_other_directories(tmp_path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "thesis.tex").write_text("precious")
    with pytest.raises(CheckpointError, match="not an rrnet checkpoint"):
        _save(tmp_path / "data", _members(1))
    assert (tmp_path / "data" / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"labels": ["Teff[K]"]}, "1 labels"),
        ({"labels": ["a", "a"]}, "duplicate"),
        ({"label_mean": np.zeros(3), "label_std": np.ones(3)}, "label_mean"),
        ({"flux_mean": np.zeros(10), "flux_std": np.ones(10)}, "flux_mean"),
        ({"member_state_dicts": []}, "at least one member"),
    ],
)
def test_inconsistent_inputs_rejected(tmp_path, extra, match) -> None:
    with pytest.raises(CheckpointError, match=match):
        _save(tmp_path / "ck", _members(1), **extra)


def test_hash_identifies_content(tmp_path) -> None:
    members = _members(2)
    a, _ = _save(tmp_path / "a", members)
    b, _ = _save(tmp_path / "b", members)
    assert checkpoint_hash(a) == checkpoint_hash(b)
    assert len(checkpoint_hash(a)) == 64
    members[1] = {k: v.clone() for k, v in members[1].items()}
    members[1]["mu.bias"][0] += 1e-3
    c, _ = _save(tmp_path / "c", members)
    assert checkpoint_hash(c) != checkpoint_hash(a)


def test_load_errors_are_clear(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_checkpoint(tmp_path)
    path, _ = _save(tmp_path / "ck", _members(2))
    (path / member_file(1)).unlink()
    with pytest.raises(CheckpointError, match=r"member-1\.safetensors"):
        load_checkpoint(path)
    path, _ = _save(tmp_path / "ck2", _members(1))
    state = _members(1)[0]
    state["rnn.weight_hh_l0"] = torch.zeros(2, 2)
    safetensors.torch.save_file(state, str(path / member_file(0)))
    with pytest.raises(StateDictMismatch, match=r"rnn\.weight_hh_l0"):
        load_checkpoint(path)
    config = json.loads((path / "config.json").read_text())
    config["format_version"] = 99
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(path)


def test_checkpoint_files_are_readable_as_the_umask_allows(tmp_path) -> None:
    """Every file of a checkpoint gets 0666 less the umask (safetensors wrote the weights
    0600: other users of a cluster could not read a shared checkpoint)."""
    import os
    import stat

    from rrnet.utils.atomic import umask

    previous = os.umask(0o022)
    try:
        assert umask() == 0o022
        path, _ = _save(tmp_path / "ckpt", _members(2))
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir() if p.is_file()}
    assert any(name.endswith(".safetensors") for name in modes)
    assert set(modes.values()) == {0o644}, modes


def test_a_member_file_this_user_cannot_read_is_named_so(tmp_path, monkeypatch) -> None:
    """safetensors reports a permission problem as "No such file or directory"; the load
    names it (checked through os.access, which root passes, hence the patch)."""
    path, _ = _save(tmp_path / "ckpt", _members(1))
    real = os.access
    denied = path / member_file(0)
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != denied and real(p, mode))
    with pytest.raises(CheckpointError, match="not readable by this user"):
        load_checkpoint(path)


@pytest.mark.parametrize("code", [errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EMFILE])
def test_a_fault_of_the_disk_is_not_called_a_damaged_checkpoint(tmp_path, monkeypatch, code):
    """A stale network handle or an I/O error while reading a member is the machine's:
    it propagates (the run stops, resumable) instead of "not a readable safetensors file"."""
    path, _ = _save(tmp_path / "ckpt", _members(1))
    real = safetensors.torch.load_file

    def failing(file, *args, **kwargs):
        if Path(file).name == member_file(0):
            raise OSError(code, os.strerror(code))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "load_file", failing)
    with pytest.raises(OSError) as caught:
        load_checkpoint(path)
    assert not isinstance(caught.value, CheckpointError) and caught.value.errno == code


def test_the_hash_is_of_what_a_checkpoint_computes_not_when_or_where_it_was_trained(
    tmp_path,
) -> None:
    """The same training repeated elsewhere and later (other wall time, store path,
    library versions; a safetensors header whose metadata came out in another order) has
    the same hash; any change of what it computes (a label range) changes it."""
    import json
    import shutil

    from rrnet.models.checkpoint import checkpoint_hash

    training = {
        "wall_time_s": 12.5,
        "label_ranges": {"Logg": {"min": 1.0, "max": 5.0}},
        "data": {"store": "a/store", "labels": "a/l.csv"},
        "domain": {"store": "/a"},
    }
    path, _ = _save(tmp_path / "a", _members(2), training=training)
    other = tmp_path / "b"
    shutil.copytree(path, other)
    config = json.loads((other / "config.json").read_text())
    config["training"] |= {"wall_time_s": 99.0, "data": {"store": "/b/store", "labels": "/b/l"}}
    config["training"]["domain"]["store"] = "/b"
    config["versions"] = {"torch": "9.9"}
    (other / "config.json").write_text(json.dumps(dict(reversed(list(config.items())))))
    from safetensors.numpy import save_file

    meta = {f"key{i}": str(i) for i in range(8)}
    save_file({"mean": np.arange(4.0)}, str(path / "ood_subspace.safetensors"), meta)
    raw = (path / "ood_subspace.safetensors").read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    header["__metadata__"] = dict(reversed(list(header["__metadata__"].items())))
    text = json.dumps(dict(reversed(list(header.items()))), separators=(",", ":")).encode()
    assert len(text) <= size  # the same data offsets: only the header's order differs
    text += b" " * (size - len(text))
    (other / "ood_subspace.safetensors").write_bytes(raw[:8] + text + raw[8 + size :])
    assert (other / "ood_subspace.safetensors").read_bytes() != raw
    assert checkpoint_hash(other) == checkpoint_hash(path)
    config["training"]["label_ranges"]["Logg"]["max"] = 5.5
    (other / "config.json").write_text(json.dumps(config))
    assert checkpoint_hash(other) != checkpoint_hash(path)
