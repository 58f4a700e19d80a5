"""The ensemble on a CUDA GPU: fp32 equals the CPU, TF32/bf16/compile stay within tolerance.

Skipped without a GPU. Runs on a bare GPU machine that has torch but neither polars nor
fitsio, so it imports nothing from ``helpers`` and needs no conftest:
``RRNET_SHARED=... pytest --noconftest -W default tests/models/test_cuda.py``.

Tolerances (documented in docs/models.md, "Precision on a GPU"): fp32 on CUDA equals
the authors' outputs and the CPU to 1e-5 (standardised units); ``torch.compile`` in fp32
to 1e-4; TF32 (matmuls and cuDNN convolutions) and bf16 autocast move the mean by at
most ``TF32_SIGMA`` and ``BF16_SIGMA`` of the member's own predicted sigma.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rrnet.models import ModelConfig, Normalization
from rrnet.models.device import set_float32_mode
from rrnet.models.ensemble import Ensemble

SHARED = Path(os.environ.get("RRNET_SHARED") or Path(__file__).parents[3] / "shared")
FIXTURES = SHARED / "fixtures" / "original_rrnet"
WEIGHTS = FIXTURES / "RRNet_post-RNN_3.weight_best.pkl"
TF32_SIGMA = 0.01
BF16_SIGMA = 0.05

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not WEIGHTS.exists(), reason=f"needs {FIXTURES}"),
    # torch's advice when it compiles exact fp32 on a GPU, and a deprecation inside
    # torch seen on the H200 image: not failures of ours (the suite turns warnings
    # into errors).
    pytest.mark.filterwarnings("ignore:TensorFloat32 tensor cores:UserWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated"),
]


def _ensemble(device: str, *, amp: bool = False, compile: bool = False) -> Ensemble:
    members = [torch.load(WEIGHTS, weights_only=True)]
    norm = Normalization(np.ones(7200), np.ones(7200), np.zeros(3), np.ones(3))
    return Ensemble.from_members(
        ModelConfig(), members, norm, device=device, amp=amp, compile=compile
    )


@pytest.fixture(scope="module")
def spectra() -> torch.Tensor:
    """The authors' 5 standardised inputs plus 251 noisy copies of them (256 in all)."""
    x = torch.from_numpy(np.load(FIXTURES / "input.npy"))
    gen = torch.Generator().manual_seed(0)
    copies = x[torch.arange(251) % 5] + 0.05 * torch.randn(251, x.shape[1], generator=gen)
    return torch.cat((x, copies))


@pytest.fixture(scope="module")
def fp32_cuda(spectra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    set_float32_mode("fp32")
    mu, var = _ensemble("cuda").predict_standardized(spectra.cuda(), batch_size=128)
    return mu[0].cpu(), var[0].cpu()


def test_fp32_on_cuda_gives_the_authors_outputs(fp32_cuda) -> None:
    mu, var = fp32_cuda
    expected_mu = np.load(FIXTURES / "RRNet_post-RNN_3.mu.npy")
    expected_var = np.load(FIXTURES / "RRNet_post-RNN_3.var.npy")
    np.testing.assert_allclose(mu[:5].numpy(), expected_mu, atol=1e-5, rtol=0)
    np.testing.assert_allclose(var[:5].numpy(), expected_var, atol=1e-5, rtol=0)


def test_fp32_on_cuda_equals_the_cpu(spectra, fp32_cuda) -> None:
    mu, var = _ensemble("cpu").predict_standardized(spectra, batch_size=128)
    torch.testing.assert_close(fp32_cuda[0], mu[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(fp32_cuda[1], var[0], atol=1e-5, rtol=0)


def _shift_in_sigma(spectra, fp32_cuda, ensemble: Ensemble) -> float:
    mu, _ = ensemble.predict_standardized(spectra.cuda(), batch_size=128)
    return float(((mu[0].cpu() - fp32_cuda[0]).abs() / fp32_cuda[1].sqrt()).max())


def test_tf32_moves_the_mean_by_under_tf32_sigma(spectra, fp32_cuda) -> None:
    set_float32_mode("tf32")
    try:
        shift = _shift_in_sigma(spectra, fp32_cuda, _ensemble("cuda"))
    finally:
        set_float32_mode("fp32")
    print(f"TF32: max |shift| = {shift:.2e} sigma")
    assert shift <= TF32_SIGMA


def test_bf16_autocast_moves_the_mean_by_under_bf16_sigma(spectra, fp32_cuda) -> None:
    shift = _shift_in_sigma(spectra, fp32_cuda, _ensemble("cuda", amp=True))
    print(f"bf16: max |shift| = {shift:.2e} sigma")
    assert shift <= BF16_SIGMA


def test_compiled_fp32_equals_eager_and_compiles_once(spectra, fp32_cuda) -> None:
    """rrnet-infer's path (host flux, padded last chunk) compiles one graph, then none."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    flux = spectra.numpy()
    eager = _ensemble("cuda").predict(flux, batch_size=128)
    compiled = _ensemble("cuda", compile=True)
    full = compiled.predict(flux, batch_size=128)  # two full chunks
    tail = compiled.predict(flux[:200], batch_size=128)  # a padded tail
    assert counters["stats"]["unique_graphs"] == 1
    assert sum(counters["graph_break"].values()) == 0
    np.testing.assert_allclose(full.mean, eager.mean, atol=1e-4, rtol=0)
    np.testing.assert_allclose(tail.mean, eager.mean[:200], atol=1e-4, rtol=0)
    # Device-resident input (the training path): also within 1e-4, and steady once warm.
    x = spectra.cuda()
    compiled.predict_standardized(x, batch_size=128)
    compiled.predict_standardized(x[:200], batch_size=128)
    graphs = counters["stats"]["unique_graphs"]
    mu, _ = compiled.predict_standardized(x[:201], batch_size=128)
    torch.testing.assert_close(mu[0].cpu(), fp32_cuda[0][:201], atol=1e-4, rtol=0)
    assert counters["stats"]["unique_graphs"] == graphs
