"""Networks: the authors' fixtures, every architecture/mode, configs, NLL, weight import."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from helpers import FIXTURES, authors_forward, needs_shared
from rrnet.models import (
    MODES,
    ModelConfig,
    StateDictMismatch,
    build_model,
    gaussian_nll,
    infer_config,
    load_original,
)

torch.set_num_threads(2)
CASES = json.loads((FIXTURES / "cases.json").read_text()) if FIXTURES.is_dir() else {}
ALL_ARCHS = [(net, mode) for net in ("RRNet", "StarNet") for mode in MODES]
# Every architecture once, SP (3) and CA (14) label counts alternating, to keep the suite fast.
ARCHS_LABELS = [(net, mode, (3, 14)[i % 2]) for i, (net, mode) in enumerate(ALL_ARCHS)]
ARCHS_LABELS_SWAPPED = [(net, mode, 17 - n) for net, mode, n in ARCHS_LABELS]


@pytest.fixture(scope="module")
def fixture_input() -> torch.Tensor:
    return torch.from_numpy(np.load(FIXTURES / "input.npy"))


@needs_shared
@pytest.mark.parametrize("case", sorted(CASES))
def test_load_original_reproduces_fixture(case: str, fixture_input: torch.Tensor) -> None:
    info = CASES[case]
    model = load_original(
        FIXTURES / f"{case}.weight_best.pkl", info["net"], info["mode"], info["num_labels"]
    )
    assert not model.training
    with torch.no_grad():
        mu, var = model(fixture_input)
    np.testing.assert_allclose(mu.numpy(), np.load(FIXTURES / f"{case}.mu.npy"), atol=1e-5)
    np.testing.assert_allclose(var.numpy(), np.load(FIXTURES / f"{case}.var.npy"), atol=1e-5)


@needs_shared
@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_layout_equals_authors(case: str) -> None:
    info = CASES[case]
    config = ModelConfig(net=info["net"], mode=info["mode"], num_labels=info["num_labels"])
    shapes = {k: list(v.shape) for k, v in build_model(config).state_dict().items()}
    assert shapes == info["keys"]


@pytest.mark.parametrize(("net", "mode", "num_labels"), ARCHS_LABELS)
def test_forward_backward_every_architecture(net: str, mode: str, num_labels: int) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(net=net, mode=mode, num_labels=num_labels)).train()
    x = torch.randn(2, 7200)
    mu, var = model(x)
    assert mu.shape == var.shape == (2, num_labels)
    assert bool((var > 0).all())
    y = torch.randn(2, num_labels)
    y[0, 0] = float("nan")
    gaussian_nll(mu, var, y).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert bool(torch.isfinite(param.grad).all()), name
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters())


@pytest.mark.parametrize(("net", "mode", "num_labels"), ARCHS_LABELS_SWAPPED)
def test_load_original_matches_authors_code_every_architecture(
    net: str, mode: str, num_labels: int, tmp_path
) -> None:
    """An authors'-style file for every architecture loads and equals their forward."""
    torch.manual_seed(1)
    # The authors' pre-RNN code uses 20 sub-bands of 360 pixels; make such a file.
    n_subbands = 20 if mode == "pre-RNN" else None
    config = ModelConfig(net=net, mode=mode, num_labels=num_labels, n_subbands=n_subbands)
    state = build_model(config).state_dict()
    torch.save(state, tmp_path / "weight_best.pkl")
    model = load_original(tmp_path / "weight_best.pkl", net, mode, num_labels)
    x = torch.randn(3, 7200)
    with torch.no_grad():
        mu, var = model(x)
        ref_mu, ref_var = authors_forward(state, net, mode, x)
    torch.testing.assert_close(mu, ref_mu, atol=1e-5, rtol=0)
    torch.testing.assert_close(var, ref_var, atol=1e-5, rtol=0)


def test_spec_pre_rnn_layout_also_loads(tmp_path) -> None:
    """Method §3's pre-RNN reading (40 x 180) is inferred from the file as well."""
    state = build_model(ModelConfig(mode="pre-RNN")).state_dict()
    assert tuple(state["rnn.weight_ih_l0"].shape) == (180, 180)
    torch.save(state, tmp_path / "w.pkl")
    model = load_original(tmp_path / "w.pkl", "RRNet", "pre-RNN", 3)
    assert model.config.n_subbands == 40
    x = torch.randn(2, 7200)
    with torch.no_grad():
        torch.testing.assert_close(
            model(x)[0], authors_forward(state, "RRNet", "pre-RNN", x, 40)[0]
        )


def test_infer_config_reads_channels() -> None:
    state = build_model(ModelConfig(channels=(4, 8, 16, 32), mode="raw")).state_dict()
    assert infer_config(state, "RRNet", "raw", 3).channels == (4, 8, 16, 32)


def test_mismatched_keys_are_named(tmp_path) -> None:
    state = dict(build_model(ModelConfig()).state_dict())
    del state["fc2.0.bias"]
    state["mu.weight"] = torch.zeros(5, 128)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pkl")
    with pytest.raises(StateDictMismatch) as err:
        load_original(tmp_path / "bad.pkl", "RRNet", "post-RNN", 3)
    message = str(err.value)
    for key in ("fc2.0.bias", "mu.weight", "extra.weight", "(5, 128)", "(3, 128)"):
        assert key in message


@needs_shared
def test_wrong_label_count_is_named() -> None:
    with pytest.raises(StateDictMismatch, match=r"mu\.weight"):
        load_original(FIXTURES / "RRNet_post-RNN_3.weight_best.pkl", "RRNet", "post-RNN", 14)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch rrnet-pwned-marker",))


def test_load_original_refuses_arbitrary_pickles(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"fc1.0.weight": _Exploit()}))
    with pytest.raises(ValueError, match="not a loadable"):
        load_original(tmp_path / "evil.pkl")
    assert not (tmp_path / "rrnet-pwned-marker").exists()


def test_config_json_roundtrip() -> None:
    for net, mode in ALL_ARCHS:
        config = ModelConfig(net=net, mode=mode, num_labels=14, channels=(2, 4), dropout=0.1)
        again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
        assert again == config
        assert build_model(again).state_dict().keys() == build_model(config).state_dict().keys()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"net": "resnet"},
        {"mode": "mid-RNN"},
        {"num_labels": 0},
        {"n_subbands": 7},
        {"mode": "pre-RNN", "n_subbands": 7},
        {"n_pixels": 7201},
        {"dropout": 1.0},
    ],
)
def test_invalid_configs_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ModelConfig(**kwargs)


def test_unknown_config_field_rejected() -> None:
    with pytest.raises(ValueError, match="wings"):
        ModelConfig.from_dict({"net": "rrnet", "wings": 2})


def test_gaussian_nll_matches_numpy_and_masks_nan() -> None:
    rng = np.random.default_rng(0)
    mu, y = rng.normal(size=(2, 6, 4))
    var = rng.uniform(0.1, 2.0, size=(6, 4))
    y[1, 2] = y[4, 0] = np.nan
    mask = np.ones((6, 4), bool)
    mask[0, 3] = False
    present = ~np.isnan(y) & mask
    terms = 0.5 * np.log(var) + (y - mu) ** 2 / (2 * var)
    expected = terms[present].mean()
    mu_t = torch.tensor(mu, requires_grad=True)
    got = gaussian_nll(mu_t, torch.tensor(var), torch.tensor(y), torch.tensor(mask))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    got.backward()
    assert bool(torch.isfinite(mu_t.grad).all())
    assert float(mu_t.grad[1, 2]) == 0.0
    y_full = np.nan_to_num(y)
    full = gaussian_nll(torch.tensor(mu), torch.tensor(var), torch.tensor(y_full))
    expected_full = np.mean(0.5 * np.log(var) + (y_full - mu) ** 2 / (2 * var))
    assert full.item() == pytest.approx(expected_full, rel=1e-12)
