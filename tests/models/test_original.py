"""Import of the authors' release layout (SPn/, CAn/, label_config.pkl) and its CLI."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from helpers import FIXTURES, LABEL_CONFIG, needs_shared
from rrnet.cli.import_original import main
from rrnet.labels import CA_LABELS, SP_LABELS
from rrnet.models import ModelConfig, build_model, load_original, load_original_ensemble
from rrnet.models.ensemble import Ensemble

pytestmark = needs_shared

torch.set_num_threads(2)
FIXTURE_SP = FIXTURES / "RRNet_post-RNN_3.weight_best.pkl"


def _release(root, n_sp: int, n_ca: int):
    """Fabricate the authors' layout: SP0 is the fixture, the rest freshly built."""
    torch.manual_seed(n_sp * 10 + n_ca)
    root.mkdir()
    shutil.copy(LABEL_CONFIG, root / "label_config.pkl")
    for i in range(n_sp):
        (root / f"SP{i}").mkdir()
        if i == 0:
            shutil.copy(FIXTURE_SP, root / "SP0" / "weight_best.pkl")
        else:
            state = build_model(ModelConfig(num_labels=3)).state_dict()
            torch.save(state, root / f"SP{i}" / "weight_best.pkl")
    for i in range(n_ca):
        (root / f"CA{i}").mkdir()
        state = build_model(ModelConfig(num_labels=14)).state_dict()
        torch.save(state, root / f"CA{i}" / "weight_best.pkl")
    return root


def _authors_predict(files, labels, flux):
    """The authors' predict.py, transcribed: clip, standardise, each model, eq. 3, rescale."""
    with open(LABEL_CONFIG, "rb") as fh:  # trusted shared file
        config = pickle.load(fh)
    idx = [config["label_list"].index(name) for name in labels]
    x = np.clip(flux, -0.5, 2.5)
    x = torch.tensor((x - config["flux_mean"]) / config["flux_std"], dtype=torch.float32)
    mus, sigmas = [], []
    for file in files:
        model = load_original(file, "RRNet", "post-RNN", len(labels))
        with torch.no_grad():
            mu, var = model(x)
        mus.append(mu.numpy())
        sigmas.append(np.sqrt(var.numpy()))
    mus, sigmas = np.array(mus), np.array(sigmas)
    out_mu = mus.mean(0)
    out_sigma = np.sqrt((mus**2 + sigmas**2).mean(0) - out_mu**2)
    std = config["label_std"][idx]
    return out_mu * std + config["label_mean"][idx], out_sigma * std


def test_import_release_and_predict_like_the_authors(tmp_path) -> None:
    release = _release(tmp_path / "release", n_sp=2, n_ca=2)
    groups = load_original_ensemble(release, release / "label_config.pkl", tmp_path / "out")
    assert set(groups) == {"SP", "CA"}
    flux = (1 + 0.05 * np.random.default_rng(0).standard_normal((4, 7200))).astype(np.float32)
    for name, labels in (("SP", SP_LABELS), ("CA", CA_LABELS)):
        assert groups[name].checkpoint == tmp_path / "out" / name
        ens = Ensemble.from_checkpoint(tmp_path / "out" / name, device="cpu")
        assert ens.labels == labels and ens.n_members == 2
        pred = ens.predict(flux)
        files = sorted(release.glob(f"{name}*/weight_best.pkl"))
        mean, std = _authors_predict(files, labels, flux)
        scale = ens.normalization.label_std
        np.testing.assert_allclose(pred.mean / scale, mean / scale, atol=1e-5)
        np.testing.assert_allclose(pred.std / scale, std / scale, atol=1e-5)


@pytest.mark.parametrize(("n_sp", "n_ca"), [(1, 0), (7, 1)])
def test_any_number_of_members_and_absent_groups(tmp_path, n_sp: int, n_ca: int) -> None:
    release = _release(tmp_path / "release", n_sp, n_ca)
    groups = load_original_ensemble(release, out=tmp_path / "out")
    assert {k: len(g.member_state_dicts) for k, g in groups.items()} == (
        {"SP": n_sp} | ({"CA": n_ca} if n_ca else {})
    )
    assert (tmp_path / "out" / "CA").exists() == bool(n_ca)
    assert Ensemble.from_checkpoint(tmp_path / "out" / "SP", device="cpu").n_members == n_sp


def test_checkpoints_load_without_any_pickle(tmp_path, monkeypatch) -> None:
    release = _release(tmp_path / "release", 1, 1)
    load_original_ensemble(release, out=tmp_path / "out")

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    ens = Ensemble.from_checkpoint(tmp_path / "out" / "CA", device="cpu")
    assert ens.predict(np.ones((1, 7200), np.float32)).mean.shape == (1, 14)


def test_gaps_and_missing_files_are_errors(tmp_path) -> None:
    release = _release(tmp_path / "release", 3, 0)
    shutil.rmtree(release / "SP1")
    with pytest.raises(FileNotFoundError, match="SP0, SP2"):
        load_original_ensemble(release)
    (release / "SP2" / "weight_best.pkl").rename(release / "SP2" / "other.pkl")
    (release / "SP2").rename(release / "SP1")
    with pytest.raises(FileNotFoundError, match="SP1"):
        load_original_ensemble(release)


def test_cli_writes_checkpoints(tmp_path, capsys) -> None:
    release = _release(tmp_path / "release", 1, 1)
    out = tmp_path / "models"
    code = main([str(release), "--label-config", str(LABEL_CONFIG), "--out", str(out)])
    assert code == 0
    assert (out / "SP" / "config.json").is_file() and (
        out / "CA" / "member-0.safetensors"
    ).is_file()
    said = capsys.readouterr()
    assert "rrnet-import-original: SP: 1 member(s)" in said.err and said.out == ""


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["{missing}", "--out", "{tmp}/o"],
        ["{release}", "--out", "{tmp}/o", "--label-config", "{missing}"],
        ["{release}", "--out", "{tmp}/o", "--mode", "sideways"],
    ],
)
def test_cli_unusable_arguments(tmp_path, capsys, argv) -> None:
    release = _release(tmp_path / "release", 1, 0)
    fill = {"missing": str(tmp_path / "nope"), "tmp": str(tmp_path), "release": str(release)}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rrnet-import-original: error: ")
    assert not (tmp_path / "o").exists()


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch rrnet-pwned-marker",))


def test_cli_bad_inputs_fail_with_one_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    release = _release(tmp_path / "release", 1, 0)
    (release / "label_config.pkl").write_bytes(pickle.dumps({"label_list": _Exploit()}))
    assert main([str(release), "--out", str(tmp_path / "o")]) == 2  # unusable input
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to load global" in err[0]
    assert not (tmp_path / "rrnet-pwned-marker").exists()
    shutil.copy(LABEL_CONFIG, release / "label_config.pkl")
    state = torch.load(release / "SP0" / "weight_best.pkl", weights_only=True)
    state["fc1.0.weight"] = state["fc1.0.weight"][:, :100]
    torch.save(state, release / "SP0" / "weight_best.pkl")
    assert main([str(release), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fc1.0.weight" in err[0]
    assert not (tmp_path / "o").exists()


def test_cli_never_replaces_a_checkpoint_unasked(tmp_path, capsys) -> None:
    """A second import into the same --out (a trained checkpoint there, say) is refused
    with one line and leaves it as it was; --overwrite replaces it whole."""
    release = _release(tmp_path / "release", 1, 0)
    out = tmp_path / "o"
    assert main([str(release), "--out", str(out)]) == 0
    (out / "SP" / "calibration.json").write_text("{}")  # as a trained checkpoint has
    before = {p.name: p.read_bytes() for p in (out / "SP").iterdir()}
    capsys.readouterr()
    assert main([str(release), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and str(out / "SP") in err[0]
    assert {p.name: p.read_bytes() for p in (out / "SP").iterdir()} == before
    assert main([str(release), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "SP" / "calibration.json").exists()  # no stale file kept
    assert (out / "SP" / "config.json").is_file()


def test_cli_full_disk_is_said_as_the_machines_fault(tmp_path, capsys, monkeypatch) -> None:
    """A disk that fills while writing is the machine's fault, said so (not blamed on the
    release); nothing half-written is left at --out."""
    import errno

    import rrnet.models.checkpoint as checkpoint

    release = _release(tmp_path / "release", 1, 0)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "SP"))

    monkeypatch.setattr(checkpoint, "save_checkpoint", full)
    assert main([str(release), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "run it again" in err[0]
    assert not (tmp_path / "o").exists()
