"""Batched ensemble inference: vs a member loop, method §4, paper eq. 3, input handling, AMP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import FIXTURES
from rrnet.models import MODES, ModelConfig, Normalization, build_model
from rrnet.models.ensemble import Ensemble, ensemble_moments, standardize_flux
from rrnet.models.grouped import GroupedMembers
from rrnet.models.stacked import StackedMembers

torch.set_num_threads(2)
SMALL = {"channels": (2, 4), "n_pixels": 160, "hidden": (8, 8)}


def _norm(n_pixels: int, n_labels: int, seed: int = 0) -> Normalization:
    rng = np.random.default_rng(seed)
    return Normalization(
        flux_mean=rng.uniform(0.9, 1.1, n_pixels),
        flux_std=rng.uniform(0.05, 0.2, n_pixels),
        label_mean=rng.normal(size=n_labels) * 10,
        label_std=rng.uniform(0.5, 3.0, n_labels),
    )


def _flux(n: int, n_pixels: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1.0 + 0.1 * rng.standard_normal((n, n_pixels))).astype(np.float32)


def _loop(ens: Ensemble, flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The authors' way: each member separately on the standardised flux, in float64 out."""
    x = torch.from_numpy(ens.normalization.standardize_flux(flux))
    with torch.no_grad():
        outs = [model(x) for model in ens.member_models()]
    mu = np.stack([o[0].numpy() for o in outs]).astype(np.float64)
    var = np.stack([o[1].numpy() for o in outs]).astype(np.float64)
    return mu, var


@pytest.fixture(scope="module")
def fixture_ensemble() -> Ensemble:
    """The authors' fixture member plus three fresh RRNet members (the tests that use
    it need the shared data; the others here need none)."""
    if not FIXTURES.is_dir():
        pytest.skip(f"needs the authors' fixtures, not found at {FIXTURES}")
    torch.manual_seed(0)
    fixture = torch.load(FIXTURES / "RRNet_post-RNN_3.weight_best.pkl", weights_only=True)
    members = [fixture] + [build_model(ModelConfig()).state_dict() for _ in range(3)]
    return Ensemble.from_members(ModelConfig(), members, _norm(7200, 3), device="cpu")


def test_batched_members_equal_loop_on_fixture(fixture_ensemble: Ensemble) -> None:
    x = torch.from_numpy(np.load(FIXTURES / "input.npy"))
    mu, var = fixture_ensemble.predict_standardized(x)
    assert mu.shape == (4, 5, 3)
    np.testing.assert_allclose(
        mu[0].numpy(), np.load(FIXTURES / "RRNet_post-RNN_3.mu.npy"), atol=1e-5
    )
    np.testing.assert_allclose(
        var[0].numpy(), np.load(FIXTURES / "RRNet_post-RNN_3.var.npy"), atol=1e-5
    )
    with torch.no_grad():
        for i, model in enumerate(fixture_ensemble.member_models()):
            ref_mu, ref_var = model(x)
            torch.testing.assert_close(mu[i], ref_mu, atol=1e-5, rtol=0)
            torch.testing.assert_close(var[i], ref_var, atol=1e-5, rtol=0)


def test_predict_is_eq3_of_the_loop_in_physical_units(fixture_ensemble: Ensemble) -> None:
    flux = _flux(6, 7200)
    flux[0, :10] = 3.7  # beyond the clip range
    flux[1, 10:20] = -2.0
    pred = fixture_ensemble.predict(flux, batch_size=4, return_members=True)
    mu, var = _loop(fixture_ensemble, flux)
    norm = fixture_ensemble.normalization
    # Method §4, paper eq. 3 written out in NumPy, then de-standardised.
    mean = mu.mean(0)
    total = (var + mu**2).mean(0) - mean**2
    np.testing.assert_allclose(pred.mean, mean * norm.label_std + norm.label_mean, atol=1e-4)
    np.testing.assert_allclose(pred.std, np.sqrt(total) * norm.label_std, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred.members_mu, mu * norm.label_std + norm.label_mean, atol=1e-4)
    np.testing.assert_allclose(pred.members_var, var * norm.label_std**2, rtol=1e-4)
    assert pred.labels == fixture_ensemble.labels


def test_flux_is_clipped_like_the_original() -> None:
    norm = _norm(8, 1)
    flux = np.array([[-3.0, -0.5, 0.0, 1.0, 2.5, 9.0, np.nan, 1.2]], np.float32)
    expected = (np.clip(flux, -0.5, 2.5) - norm.flux_mean.astype(np.float32)) / norm.flux_std
    np.testing.assert_allclose(standardize_flux(flux, norm.flux_mean, norm.flux_std), expected)
    got = standardize_flux(torch.from_numpy(flux), norm.flux_mean, norm.flux_std)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("net", ["rrnet", "starnet"])
@pytest.mark.parametrize("mode", MODES)
def test_every_architecture_batched_equals_loop(net: str, mode: str) -> None:
    kwargs = SMALL if net == "rrnet" else {"n_pixels": 160, "hidden": (8, 8)}
    subbands = 4 if mode != "raw" else None
    config = ModelConfig(net=net, mode=mode, num_labels=3, n_subbands=subbands, **kwargs)
    torch.manual_seed(3)
    members = [build_model(config).state_dict() for _ in range(3)]
    ens = Ensemble.from_members(config, members, _norm(160, 3), device="cpu")
    flux = _flux(5, 160)
    pred = ens.predict(flux, batch_size=2, return_members=True)
    mu, var = _loop(ens, flux)
    norm = ens.normalization
    np.testing.assert_allclose(pred.members_mu, mu * norm.label_std + norm.label_mean, atol=1e-5)
    np.testing.assert_allclose(pred.members_var, var * norm.label_std**2, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", [GroupedMembers, StackedMembers])
@pytest.mark.parametrize(
    ("net", "mode", "kwargs"),
    [
        *(("rrnet", mode, SMALL) for mode in MODES),
        *(("starnet", mode, {"n_pixels": 160, "hidden": (8, 8)}) for mode in MODES),
        # identity shortcuts (equal widths), also on the shared input of block 0
        ("rrnet", "post-RNN", {**SMALL, "channels": (1, 2, 2)}),
        ("rrnet", "raw", {**SMALL, "channels": (2, 2, 4)}),
    ],
)
def test_batched_implementations_equal_each_member(
    impl: type, net: str, mode: str, kwargs: dict
) -> None:
    """Both batched networks (CPU: grouped convolutions; GPU: stacked matmuls) vs the loop."""
    subbands = 4 if mode != "raw" else None
    config = ModelConfig(net=net, mode=mode, num_labels=2, n_subbands=subbands, **kwargs)
    torch.manual_seed(7)
    models = [build_model(config).eval() for _ in range(3)]
    extra = {"conv_batch": 2} if impl is GroupedMembers else {}  # 5 spectra: 3 conv chunks
    batched = impl(config, [m.state_dict() for m in models], **extra).eval()
    x = torch.randn(5, config.n_pixels)
    with torch.no_grad():
        mu, var = batched(x)
        for i, model in enumerate(models):
            ref_mu, ref_var = model(x)
            torch.testing.assert_close(mu[i], ref_mu, atol=1e-5, rtol=0)
            torch.testing.assert_close(var[i], ref_var, atol=1e-5, rtol=0)


def test_ensemble_moments_analytic_and_numpy() -> None:
    # Two members with zero variance at -1 and +1: mixture variance 1, mean 0.
    mean, var = ensemble_moments(np.array([[-1.0], [1.0]]), np.zeros((2, 1)))
    assert mean[0] == 0.0 and var[0] == pytest.approx(1.0)
    # Identical members: the mixture is the member.
    mean, var = ensemble_moments(np.full((4, 1), 2.5), np.full((4, 1), 0.3))
    assert mean[0] == pytest.approx(2.5) and var[0] == pytest.approx(0.3)
    rng = np.random.default_rng(5)
    mu, v = rng.normal(size=(6, 7, 3)), rng.uniform(0.01, 1, (6, 7, 3))
    m_np, v_np = ensemble_moments(mu, v)
    m_t, v_t = ensemble_moments(torch.from_numpy(mu), torch.from_numpy(v))
    # Law of total variance: mean of variances + variance of means.
    np.testing.assert_allclose(v_np, v.mean(0) + mu.var(0), rtol=1e-10)
    np.testing.assert_allclose(v_t.numpy(), v_np, rtol=1e-12)
    np.testing.assert_allclose(m_t.numpy(), m_np)
    _, clamped = ensemble_moments(np.full((3, 1), 1e8), np.zeros((3, 1)))
    assert clamped[0] >= 0


def test_chunking_empty_input_and_nan_rows() -> None:
    config = ModelConfig(num_labels=2, **SMALL)
    torch.manual_seed(4)
    ens = Ensemble.from_members(
        config, [build_model(config).state_dict() for _ in range(2)], _norm(160, 2), device="cpu"
    )
    flux = _flux(7, 160)
    flux[3, 5] = np.nan
    whole = ens.predict(flux, batch_size=64)
    parts = ens.predict(flux, batch_size=3)
    np.testing.assert_allclose(parts.mean, whole.mean, atol=1e-5)
    assert np.isnan(whole.mean[3]).all()
    assert np.isfinite(np.delete(whole.mean, 3, axis=0)).all()
    empty = ens.predict(np.zeros((0, 160), np.float32), return_members=True)
    assert empty.mean.shape == (0, 2) and empty.members_mu.shape == (2, 0, 2)
    with pytest.raises(ValueError, match="shape"):
        ens.predict(np.zeros((2, 100), np.float32))


def test_flux_as_fits_and_memory_maps_give_it(tmp_path) -> None:
    """Big-endian float32 (a FITS column: torch refused it), a read-only memory map (torch
    warned, an error under -W error), float64 and a tensor all predict the same."""
    import warnings

    config = ModelConfig(num_labels=2, **SMALL)
    torch.manual_seed(4)
    ens = Ensemble.from_members(
        config, [build_model(config).state_dict() for _ in range(2)], _norm(160, 2), device="cpu"
    )
    flux = _flux(5, 160).astype(np.float32)
    want = ens.predict(flux, batch_size=2).mean  # the same batch shapes: the same bits
    np.save(tmp_path / "flux.npy", flux)
    mapped = np.load(tmp_path / "flux.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for given in (flux.astype(">f4"), mapped, flux.astype(np.float64), torch.from_numpy(flux)):
            np.testing.assert_array_equal(ens.predict(given, batch_size=2).mean, want)


def test_bf16_amp_stays_within_the_noise(fixture_ensemble: Ensemble) -> None:
    flux = _flux(4, 7200, seed=9)
    fp32 = fixture_ensemble.predict(flux)
    amp = Ensemble.from_members(
        fixture_ensemble.config,
        fixture_ensemble._state_dicts,
        fixture_ensemble.normalization,
        device="cpu",
        amp=True,
    ).predict(flux)
    assert not np.array_equal(amp.mean, fp32.mean)  # bf16 really ran
    # "Noise": the ensemble's own 1-sigma; AMP must move results by < 5 % of it.
    assert np.max(np.abs(amp.mean - fp32.mean) / fp32.std) < 0.05
    assert np.max(np.abs(amp.std - fp32.std) / fp32.std) < 0.05


@pytest.mark.slow
def test_torch_compile_matches_eager_in_one_graph() -> None:
    """Compiled equals eager; the whole forward is one graph (no break, e.g. on the
    thread count that sizes the CPU convolution chunks), reused for the padded tail."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    config = ModelConfig(num_labels=2, n_subbands=4, **SMALL)
    torch.manual_seed(6)
    members = [build_model(config).state_dict() for _ in range(2)]
    eager = Ensemble.from_members(config, members, _norm(160, 2), device="cpu")
    compiled = Ensemble.from_members(config, members, _norm(160, 2), device="cpu", compile=True)
    flux = _flux(5, 160)
    got = compiled.predict(flux, batch_size=4, return_members=True)  # last chunk padded
    want = eager.predict(flux, batch_size=4, return_members=True)
    np.testing.assert_allclose(got.members_mu, want.members_mu, atol=1e-5)
    np.testing.assert_allclose(got.std, want.std, rtol=1e-5)
    assert sum(counters["graph_break"].values()) == 0
    assert counters["stats"]["unique_graphs"] == 1


def test_an_ensemble_shows_what_it_is() -> None:
    """A notebook printed ``<rrnet.models.ensemble.Ensemble at 0x...>``."""
    config = ModelConfig(net="rrnet", mode="post-RNN", num_labels=5, n_subbands=4, **SMALL)
    members = [build_model(config).state_dict() for _ in range(2)]
    labels = ["Teff[K]", "Logg", "FeH", "MgH", "CH"]
    ens = Ensemble.from_members(config, members, _norm(160, 5), labels, device="cpu")
    assert repr(ens) == (
        "Ensemble(rrnet post-RNN, 2 members, 5 labels [Teff[K], Logg, FeH, MgH, ...], device=cpu)"
    )
