"""The grouped training step split over threads: each member's gradients are its own
network's, and neither they nor the dropout masks depend on the thread count."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

from rrnet.models import ModelConfig, build_model, gaussian_nll
from rrnet.training.augment import MemberNoise, add_pixel_noise
from rrnet.training.grouped_step import grouped_step, member_bounds
from rrnet.training.vectorize import MemberStack

torch.set_num_threads(1)

CONFIG = ModelConfig(net="rrnet", mode="post-RNN", n_pixels=320, n_subbands=8)


def test_member_bounds_cover_every_member_once() -> None:
    assert member_bounds(6, 2) == [(0, 3), (3, 6)]
    assert member_bounds(5, 3) == [(0, 2), (2, 4), (4, 5)]
    assert member_bounds(2, 1) == [(0, 2)]


def _step(config: ModelConfig, seeds: list[int], x, y, threads: int):
    stack = MemberStack(config, seeds, formulation="grouped")
    torch.manual_seed(123)  # the per-member dropout seeds come from the global generator
    losses = grouped_step(config, stack.params, x, y, threads=threads)
    return losses, {k: v.grad.clone() for k, v in stack.params.items()}


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_step_gives_each_member_its_own_gradients(threads: int) -> None:
    config = dataclasses.replace(CONFIG, dropout=0.0)
    seeds = [4, 9, 17]
    x, y = torch.randn(3, 21, config.n_pixels), torch.randn(3, 21, 3)
    y[1, :4, 0] = float("nan")
    caller_threads = torch.get_num_threads()  # other test modules may set it on import
    losses, grads = _step(config, seeds, x, y, threads)
    assert torch.get_num_threads() == caller_threads  # the caller's setting is restored
    for m, s in enumerate(seeds):
        torch.manual_seed(s)
        model = build_model(config)
        loss = gaussian_nll(*model(x[m]), y[m])
        loss.backward()
        torch.testing.assert_close(losses[m], loss.detach(), atol=1e-6, rtol=1e-5)
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name][m], p.grad, atol=1e-5, rtol=1e-4)


def test_dropout_masks_do_not_depend_on_the_thread_count() -> None:
    config = dataclasses.replace(CONFIG, dropout=0.5)
    seeds = [1, 2, 3, 4]
    x, y = torch.randn(4, 9, config.n_pixels), torch.randn(4, 9, 3)
    loss1, grads1 = _step(config, seeds, x, y, threads=1)
    no_drop = _step(dataclasses.replace(config, dropout=0.0), seeds, x, y, threads=1)[0]
    assert not torch.allclose(loss1, no_drop)  # dropout is on
    for threads in (2, 4):
        loss_t, grads_t = _step(config, seeds, x, y, threads=threads)
        torch.testing.assert_close(loss_t, loss1, atol=1e-6, rtol=1e-6)
        for k, g in grads1.items():
            torch.testing.assert_close(grads_t[k], g, atol=1e-6, rtol=1e-5)


def test_frozen_parameters_get_no_gradient() -> None:
    stack = MemberStack(CONFIG, [1, 2], formulation="grouped")
    frozen = "fc1.0.weight"
    stack.params[frozen].requires_grad_(False)
    x, y = torch.randn(2, 5, CONFIG.n_pixels), torch.randn(2, 5, 3)
    grouped_step(CONFIG, stack.params, x, y, threads=2)
    assert stack.params[frozen].grad is None
    assert all(v.grad is not None for k, v in stack.params.items() if k != frozen)


def test_noise_is_each_members_own_stream_whatever_the_thread_count() -> None:
    """The augmentation drawn on the step's threads equals add_pixel_noise with each
    member's generator alone, and the step equals one on the pre-noised batch."""
    # MemberNoise.apply for members 1:3 uses their generators (and not 0:2's)
    config = dataclasses.replace(CONFIG, dropout=0.0)
    seeds = [3, 5, 8, 13]
    x, y = torch.randn(4, 7, config.n_pixels), torch.randn(4, 7, 3)
    want = torch.stack(
        [add_pixel_noise(x[m], 0.25, 1.0, torch.Generator().manual_seed(40 + m)) for m in range(4)]
    )
    loss_want, grads_want = _step(config, seeds, want.clone(), y, threads=1)
    for threads in (1, 2, 3):
        gens = [torch.Generator().manual_seed(40 + m) for m in range(4)]
        assert torch.equal(MemberNoise(0.25, 1.0, gens).apply(x[1:3], 1), want[1:3])
        gens = [torch.Generator().manual_seed(40 + m) for m in range(4)]
        given = x.clone()
        stack = MemberStack(config, seeds, formulation="grouped")
        losses = grouped_step(
            config, stack.params, given, y, threads=threads, noise=MemberNoise(0.25, 1.0, gens)
        )
        assert torch.equal(given, x)  # never written: other threads' graphs may view it
        torch.testing.assert_close(losses, loss_want, atol=1e-6, rtol=1e-6)
        for k, g in grads_want.items():
            torch.testing.assert_close(stack.params[k].grad, g, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_adam_steps_each_member_by_its_own_gradient(threads: int) -> None:
    """With one thread the heads' gradients were handed to the optimiser non-contiguous,
    and fused Adam (which reads the storage as laid out like the parameter) stepped member
    1's mu with member 0's sigma gradient: trained weights depended on the thread count
    (found by a user). Oracle: Adam's first step, -lr * g / (|g| + eps), per element."""
    torch.manual_seed(0)
    x, y = torch.randn(2, 16, CONFIG.n_pixels), torch.randn(2, 16, 3)
    stack = MemberStack(CONFIG, [1, 2], formulation="grouped")
    before = {k: v.detach().clone() for k, v in stack.params.items()}
    torch.manual_seed(1)
    grouped_step(CONFIG, stack.params, x, y, threads=threads)
    lr = 5e-4
    torch.optim.Adam(list(stack.params.values()), lr=lr, fused=True).step()
    for k, v in stack.params.items():
        g = v.grad.double()
        exact = before[k].double() - lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(v.detach().double(), exact, atol=1e-7, rtol=0, msg=k)


def _helper_thread_answers(_: int) -> int:
    from rrnet.training.grouped_step import _pool

    return _pool().submit(lambda: 7).result(timeout=30)


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method is Linux's")
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")  # fork, 3.12+
def test_a_forked_child_gets_its_own_helper_threads():
    """The step's helper-thread executor is made once per process: a child forked after
    the parent trained inherited it without its thread, and its step waited forever."""
    import multiprocessing

    assert _helper_thread_answers(0) == 7  # the parent's executor exists before the fork
    with multiprocessing.get_context("fork").Pool(1) as child:
        assert child.map_async(_helper_thread_answers, [0]).get(timeout=120) == [7]
