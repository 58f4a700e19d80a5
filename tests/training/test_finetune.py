"""Fine-tuning from a checkpoint: faster to a given validation loss than from scratch,
new heads, frozen groups, explicit label normalisation recorded in the provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rrnet.models import ModelConfig
from rrnet.training import TrainSettings, split_by_star, train_arrays
from rrnet.training.finetune import load_initialization
from rrnet.training.toy import TOY_LABELS, toy_spectra

torch.set_num_threads(1)

N_PIX = 320
CONFIG = ModelConfig(net="rrnet", mode="post-RNN", n_pixels=N_PIX, n_subbands=8)
SETTINGS = TrainSettings(members=2, epochs=4, batch_size=32, lr=1e-3, augment_from=0)


def _part(cool: bool, n: int, seed: int):
    """Toy spectra from one part of label space: Teff below or above 5250 K."""
    flux, labels = toy_spectra(3 * n, n_pixels=N_PIX, n_lines=25, snr=80, seed=seed)
    keep = np.flatnonzero((labels[:, 0] < 5250) == cool)[:n]
    return flux[keep], labels[keep], split_by_star(np.arange(keep.size), seed=0)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ensemble trained on cool stars only."""
    flux, labels, split = _part(True, 400, seed=3)
    out = tmp_path_factory.mktemp("ft") / "cool"
    settings = TrainSettings(members=2, epochs=6, batch_size=32, lr=1e-3, augment_from=0)
    train_arrays(flux, labels, split, label_names=TOY_LABELS, model_config=CONFIG,
                 settings=settings, out=out, progress=False)  # fmt: skip
    return out


def _curve(result) -> list[float]:
    return [
        float(np.mean([h["valid_loss"] for h in result.history if h["epoch"] == e]))
        for e in range(1, SETTINGS.epochs + 1)
    ]


def test_fine_tuning_reaches_the_loss_in_fewer_epochs(pretrained: Path, tmp_path: Path) -> None:
    flux, labels, split = _part(False, 250, seed=4)  # hot stars: another part of label space
    scratch = train_arrays(flux, labels, split, label_names=TOY_LABELS, model_config=CONFIG,
                           settings=SETTINGS, progress=False)  # fmt: skip
    init, config = load_initialization(pretrained, TOY_LABELS, label_norm="data")
    tuned = train_arrays(
        flux,
        labels,
        split,
        label_names=TOY_LABELS,
        model_config=config,
        settings=SETTINGS,
        out=tmp_path / "hot",
        progress=False,
        init=init,
    )
    target = _curve(scratch)[-1]  # what scratch training reaches in its last epoch
    first = next(e for e, loss in enumerate(_curve(tuned), start=1) if loss <= target)
    assert first < SETTINGS.epochs, (_curve(tuned), _curve(scratch))
    # the checkpoint's flux statistics are kept, the label ones recomputed; recorded
    assert np.array_equal(tuned.normalization.flux_mean, load_file(
        str(pretrained / "normalization.safetensors"))["flux_mean"].numpy())  # fmt: skip
    train_rows = labels[split.train]
    assert np.allclose(tuned.normalization.label_mean, train_rows.mean(0))
    prov = json.loads((tmp_path / "hot" / "config.json").read_text())["training"]["init"]
    assert prov["label_normalization"] == "data" and prov["flux_normalization"] == "checkpoint"
    assert prov["checkpoint"] == str(pretrained.resolve()) and prov["new_head"] is False


def test_data_label_norm_rescales_the_mu_layer_exactly(pretrained: Path) -> None:
    """Same labels, new normalisation: the starting network predicts the same physical
    values (mu in physical units unchanged)."""
    from rrnet.models.normalization import Normalization

    init, _ = load_initialization(pretrained, TOY_LABELS, label_norm="data")
    old = init.normalization
    fresh = Normalization(old.flux_mean, old.flux_std, old.label_mean + 300.0, old.label_std * 2)
    norm = init.normalization_for(fresh)
    sd = init.member_state(0, {}, norm)
    h = torch.randn(5, sd["mu.weight"].shape[1])
    old_sd = init.state_dicts[0]
    before = (h @ old_sd["mu.weight"].T + old_sd["mu.bias"]).double().numpy()
    after = (h @ sd["mu.weight"].T + sd["mu.bias"]).double().numpy()
    phys_before = before * old.label_std + old.label_mean
    phys_after = after * norm.label_std + norm.label_mean
    np.testing.assert_allclose(phys_after, phys_before, rtol=1e-5, atol=1e-3)


def test_new_label_set_and_frozen_groups(pretrained: Path, tmp_path: Path) -> None:
    flux, labels, split = _part(False, 120, seed=5)
    names = ["Logg", "MgH"]  # MgH is not one of the checkpoint's labels: a new head
    init, config = load_initialization(pretrained, names, freeze=["conv", "rnn"])
    assert init.new_head and config.num_labels == 2
    settings = TrainSettings(members=3, epochs=1, batch_size=32, lr=1e-3, augment_from=0)
    result = train_arrays(
        flux,
        labels[:, 1:],
        split,
        label_names=names,
        model_config=config,
        settings=settings,
        out=tmp_path / "new",
        progress=False,
        init=init,
    )
    for m, sd in enumerate(result.state_dicts):
        start = init.state_dicts[m % 2]
        for k, v in sd.items():
            if k.startswith(("ResBlock_list.", "rnn.")):  # frozen: exactly the checkpoint's
                torch.testing.assert_close(v, start[k], atol=0, rtol=0)
            elif k.startswith("fc1."):
                assert not torch.equal(v, start[k])
        assert sd["mu.weight"].shape == (2, config.hidden[1])
    prov = result.training["init"]
    assert prov["new_head"] and prov["freeze"] == ["conv", "rnn"]
    assert prov["label_normalization"] == "data"


def test_bad_fine_tuning_requests_are_refused(pretrained: Path) -> None:
    with pytest.raises(ValueError, match="freeze"):
        load_initialization(pretrained, TOY_LABELS, freeze=["everything"])
    with pytest.raises(ValueError, match="normalisation cannot be kept"):
        load_initialization(pretrained, ["Logg", "MgH"], label_norm="checkpoint")
    with pytest.raises(ValueError, match="output layer"):
        load_initialization(pretrained, ["MgH"], freeze=["out"])


def test_a_subset_of_the_checkpoints_labels_keeps_their_output_rows(pretrained: Path) -> None:
    """CA from an all-label checkpoint, here [Fe/H] and Teff of (Teff, log g, [Fe/H]): the
    output rows of those labels and their statistics are kept (it built a new head), so
    the starting network predicts what the checkpoint predicts for them."""
    init, config = load_initialization(pretrained, ["FeH", "Teff[K]"])
    assert not init.new_head and config.num_labels == 2
    assert init.label_norm == "checkpoint" and init.provenance["output_rows_kept"] == [2, 0]
    full, _ = load_initialization(pretrained, TOY_LABELS)
    sd, old = init.member_state(0, {}, init.normalization), full.state_dicts[0]
    h = torch.randn(5, old["mu.weight"].shape[1])
    for name in ("mu", "sigma.0"):  # the sigma head is a Sequential(Linear, Softplus)
        got = (h @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]).numpy()
        want = (h @ old[f"{name}.weight"].T + old[f"{name}.bias"]).numpy()[:, [2, 0]]
        np.testing.assert_array_equal(got, want)
    norm = init.normalization
    np.testing.assert_array_equal(norm.label_mean, full.normalization.label_mean[[2, 0]])
    init, _ = load_initialization(pretrained, ["Logg"], freeze=["out"])  # kept: may freeze
    assert init.freeze == ("out",)


def test_cli_refuses_bad_freeze_requests(capsys: pytest.CaptureFixture[str]) -> None:
    from rrnet.cli.train import main

    base = ["--store", "s", "--labels", "l", "--out", "o"]
    assert main([*base, "--freeze", "conv"]) == 2
    assert "--freeze needs --init" in capsys.readouterr().err
    assert main([*base, "--init", "ckpt", "--freeze", "conv,gills"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gills" in err[0]


def test_labels_far_from_the_init_checkpoints_normalisation_are_warned_of(caplog) -> None:
    """Fine-tuning keeps the checkpoint's label normalisation by default: a table whose
    [Fe/H] sits 4 of its standard deviations off (another zero point) is named, with the
    option that recomputes it; labels within 3 are not."""
    from types import SimpleNamespace

    from rrnet.training.api import _warn_shifted_labels

    norm = SimpleNamespace(label_mean=np.array([5000.0, 0.0]), label_std=np.array([500.0, 0.3]))
    rng = np.random.default_rng(0)
    labels = np.column_stack([rng.normal(5200, 400, 200), rng.normal(-1.2, 0.2, 200)])
    labels[::7, 1] = np.nan  # missing values do not count
    with caplog.at_level("WARNING"):
        _warn_shifted_labels(labels, ["Teff[K]", "FeH"], norm)
    (message,) = [r.getMessage() for r in caplog.records]
    shift = (np.nanmean(labels[:, 1]) - 0.0) / 0.3
    assert f"FeH mean {np.nanmean(labels[:, 1]):g} ({shift:+.1f} of its std" in message
    assert "Teff" not in message and "--label-norm data" in message
    caplog.clear()
    with caplog.at_level("WARNING"):
        _warn_shifted_labels(labels[:, :1], ["Teff[K]"], SimpleNamespace(
            label_mean=norm.label_mean[:1], label_std=norm.label_std[:1]))  # fmt: skip
    assert not caplog.records


def test_labels_given_as_a_table_on_synthesised_spectra_are_synthetic(tmp_path, monkeypatch):
    """A notebook's train_ensemble(store, a labels DataFrame) recorded "observed": applied
    to real files, nothing warned (SYNTHETIC_DOMAIN). The store's spectra folder, an
    rrnet-synth one, says what the labels are, as the labels file's folder did."""
    from types import SimpleNamespace

    import numpy as np

    from rrnet.training import api

    synth = tmp_path / "synth"
    (synth / "data").mkdir(parents=True)
    (synth / "synth.json").write_text("{}")
    observed = tmp_path / "lamost"
    observed.mkdir()
    monkeypatch.setattr(api, "_snr", lambda store, rows: np.array([20.0, 40.0]))
    selected = SimpleNamespace(rows=np.arange(2))

    def store(data_dir):  # the fields _domain reads
        info = {"data_dir": str(data_dir)} if data_dir else {}
        return SimpleNamespace(path=tmp_path / "s", info=info, manifest_digest="m",
                               spectra_digest="d")  # fmt: skip

    assert api._domain(store(synth / "data"), None, selected)["labels"] == "synthetic"
    assert api._domain(store(synth / "data"), None, selected)["source"] == "rrnet-synth"
    assert api._domain(store(observed), None, selected)["labels"] == "observed"
    assert api._domain(store(None), str(synth / "labels.csv"), selected)["labels"] == "synthetic"
    assert api._domain(store(None), str(observed / "l.csv"), selected)["labels"] == "observed"
