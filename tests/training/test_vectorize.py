"""The vectorised members equal M separate networks (forward, gradients, Adam steps)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rrnet.models import ModelConfig, build_model, gaussian_nll
from rrnet.training.vectorize import MemberStack

torch.set_num_threads(1)

CONFIGS = [
    ModelConfig(net="rrnet", mode="post-RNN", n_pixels=320, n_subbands=8),
    ModelConfig(net="rrnet", mode="pre-RNN", n_pixels=320, n_subbands=8),
    ModelConfig(net="rrnet", mode="raw", n_pixels=320),
    ModelConfig(net="starnet", mode="raw", n_pixels=320),
    ModelConfig(net="starnet", mode="post-RNN", n_pixels=320, n_subbands=8),
]


def _members(config: ModelConfig, seeds: list[int]) -> list[torch.nn.Module]:
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(build_model(config))
    return out


@pytest.mark.parametrize("formulation", ["vmap", "grouped"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.net}-{c.mode}")
def test_stacked_forward_equals_each_member(config: ModelConfig, formulation: str) -> None:
    seeds = [3, 11, 29]
    stack = MemberStack(config, seeds, formulation=formulation)
    models = [m.eval() for m in _members(config, seeds)]
    x = torch.randn(3, 5, config.n_pixels)
    with torch.no_grad():
        mu, var = stack.forward(x, train=False)
        shared_mu, _ = stack.forward(x[0], train=False)
        for m, model in enumerate(models):
            ref_mu, ref_var = model(x[m])
            torch.testing.assert_close(mu[m], ref_mu, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(var[m], ref_var, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(shared_mu[m], model(x[0])[0], atol=1e-5, rtol=1e-4)
    for m, model in enumerate(models):  # state dicts come back under the original keys
        sd = stack.state_dict(m)
        assert sd.keys() == model.state_dict().keys()
        for k, v in model.state_dict().items():
            torch.testing.assert_close(sd[k], v, atol=0, rtol=0)


@pytest.mark.parametrize("formulation", ["vmap", "grouped"])
@pytest.mark.parametrize("config", CONFIGS[:1], ids=lambda c: c.net)
def test_adam_steps_on_stack_equal_separate_adams(config: ModelConfig, formulation: str) -> None:
    """Sum of member losses + Adam on stacked tensors == M independent Adam runs (the
    grouped formulation folds the pooling into the convolutions: its gradients are the
    same function's, evaluated in another order)."""
    config = dataclasses.replace(config, dropout=0.0)
    seeds = [1, 2]
    stack = MemberStack(config, seeds, formulation=formulation)
    opt = torch.optim.Adam(stack.parameters(), lr=1e-3)
    models = _members(config, seeds)
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    loss_fn = stack.loss_fn()
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(2, 8, config.n_pixels, generator=gen)
        y = torch.randn(2, 8, 3, generator=gen)
        y[0, :3, 1] = float("nan")  # masked labels must behave identically too
        opt.zero_grad()
        loss_fn(x, y).sum().backward()
        opt.step()
        for m, (model, o) in enumerate(zip(models, opts, strict=True)):
            o.zero_grad()
            gaussian_nll(*model(x[m]), y[m]).backward()
            o.step()
    for m, model in enumerate(models):
        sd = stack.state_dict(m)
        for k, v in model.state_dict().items():
            # Adam divides by sqrt(v): where a gradient is ~0, round-off of the two
            # (equally valid) float evaluation orders is amplified; 2% of one step (lr).
            torch.testing.assert_close(sd[k], v, atol=2e-5, rtol=0)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.net}-{c.mode}")
def test_grouped_gradients_over_several_conv_chunks_equal_each_member(config: ModelConfig) -> None:
    """A batch of 37 spectra runs the grouped convolutions in 3 chunks (16, 16, 5) and
    the RNN through its hand-written backward: every parameter's gradient equals each
    plain network's own (autograd through nn.RNN and the unfolded pooling)."""
    from rrnet.training.grouped import CONV_BATCH

    assert 2 * CONV_BATCH < 37 < 3 * CONV_BATCH
    config = dataclasses.replace(config, dropout=0.0)
    seeds = [4, 9]
    stack = MemberStack(config, seeds, formulation="grouped")
    models = _members(config, seeds)
    x = torch.randn(2, 37, config.n_pixels)
    y = torch.randn(2, 37, 3)
    stack.loss_fn()(x, y).sum().backward()
    for m, model in enumerate(models):
        gaussian_nll(*model(x[m]), y[m]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(stack.params[name].grad[m], p.grad, atol=1e-5, rtol=1e-4)


def test_tanh_recurrence_backward_matches_finite_differences() -> None:
    from rrnet.training.grouped import _TanhRecurrence

    gen = torch.Generator().manual_seed(0)
    pre = torch.randn(2, 3 * 5, 4, dtype=torch.float64, generator=gen).requires_grad_()
    w_hh = (0.5 * torch.randn(2, 4, 4, dtype=torch.float64, generator=gen)).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, w: _TanhRecurrence.apply(a.clone(), w, 3), (pre, w_hh)
    )


@pytest.mark.parametrize("formulation", ["vmap", "grouped"])
def test_dropout_differs_between_members_in_training_mode(formulation: str) -> None:
    config = ModelConfig(net="rrnet", mode="raw", n_pixels=320, dropout=0.5)
    # identical weights: only dropout can differ
    stack = MemberStack(config, [5, 5], formulation=formulation)
    x = torch.randn(4, config.n_pixels)
    with torch.no_grad():
        mu_eval, _ = stack.forward(x, train=False)
        mu_train, _ = stack.forward(x, train=True)
    torch.testing.assert_close(mu_eval[0], mu_eval[1])
    assert not torch.allclose(mu_train[0], mu_train[1])


def test_grouped_is_the_cpu_default() -> None:
    from rrnet.training import TrainSettings

    assert TrainSettings().resolved_formulation("cpu") == "grouped"
    assert TrainSettings().resolved_formulation("cuda") == "vmap"
    assert TrainSettings(formulation="vmap").resolved_formulation("cpu") == "vmap"
    with pytest.raises(ValueError, match="formulation"):
        TrainSettings(formulation="loop")
