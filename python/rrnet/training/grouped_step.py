"""One training step of the grouped formulation, its members split over CPU threads.

Intra-op threading scales poorly on this network (small grouped convolutions, a
40-step recurrence of modest matrix products: ~1.45x from 2 threads). The members,
however, are independent until the optimizer: with T threads the step runs T groups
of members at once, each group's forward and backward on one thread (PyTorch kernels
release the GIL), and writes its gradients into its slice of the stacked ``.grad``.
Every member's numbers are those of a one-thread run, whatever T: the per-member
dropout generators make the masks independent of the split too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

import torch

from rrnet.models.config import ModelConfig
from rrnet.models.heads import gaussian_nll
from rrnet.training.augment import MemberNoise
from rrnet.training.grouped import grouped_forward

_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """This process's helper threads: a forked child inherits the parent's executor
    without its threads (work given to it never ran), so it starts its own."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1)))
    return _POOL[1]


def member_bounds(members: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(lo, hi)`` member ranges, sizes differing by at most one."""
    base, extra = divmod(members, parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + base + (i < extra)
        out.append((lo, hi))
        lo = hi
    return out


def _part_step(
    config: ModelConfig,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    seeds: Sequence[int],
    bounds: tuple[int, int],
    threads: int | None,
    noise: MemberNoise | None = None,
) -> torch.Tensor:
    """Losses of members ``lo:hi``; their gradients written to ``params[k].grad[lo:hi]``
    (or assigned, when the part is every member)."""
    if threads is not None:
        torch.set_num_threads(threads)
    lo, hi = bounds
    xs = x[lo:hi] if noise is None else noise.apply(x[lo:hi], lo)
    part = {k: v[lo:hi].detach().requires_grad_(v.requires_grad) for k, v in params.items()}
    gens = [torch.Generator(device=x.device).manual_seed(s) for s in seeds[lo:hi]]
    mu, var = grouped_forward(config, part, xs, dropout=config.dropout, generators=gens)
    mu, var = mu.float(), var.float()
    losses = torch.stack([gaussian_nll(mu[m], var[m], y[lo + m]) for m in range(hi - lo)])
    names = [k for k, v in part.items() if v.requires_grad]
    if names:
        grads = torch.autograd.grad(losses.sum(), [part[k] for k in names])
        whole = hi - lo == x.shape[0]
        for k, g in zip(names, grads, strict=True):
            if whole:  # laid out as its parameter: fused Adam reads the storage so
                # (the heads' gradients came non-contiguous, and with one thread member 1
                # was stepped with member 0's sigma gradient)
                params[k].grad = (
                    g if g.stride() == params[k].stride() else torch.empty_like(params[k]).copy_(g)
                )
            else:
                params[k].grad[lo:hi].copy_(g)  # type: ignore[index]
    return losses.detach()


def grouped_step(
    config: ModelConfig,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threads: int = 1,
    noise: MemberNoise | None = None,
) -> torch.Tensor:
    """Training losses ``[M]`` for member batches ``x`` ``[M, B, P]``, ``y`` ``[M, B, L]``,
    after setting every trainable parameter's ``.grad`` to the gradient of their sum.

    ``threads`` > 1 (CPU) splits the members into that many groups run concurrently,
    each on one intra-op thread (the caller's intra-op thread count is restored after).
    Dropout masks come from per-member generators seeded from the global one.
    ``noise`` (augmentation) is added to each member's batch on its thread (``x``
    itself is left as it is).
    """
    m = x.shape[0]
    seeds = torch.randint(2**62, (m,)).tolist()  # from the global generator: reproducible
    parts = max(1, min(threads, m)) if x.device.type == "cpu" else 1
    if parts == 1:
        return _part_step(config, params, x, y, seeds, (0, m), None, noise)
    for v in params.values():
        if v.requires_grad and (v.grad is None or v.grad.shape != v.shape):
            v.grad = torch.empty_like(v)
    bounds = member_bounds(m, parts)
    intra = torch.get_num_threads()
    futures = [
        _pool().submit(_part_step, config, params, x, y, seeds, b, 1, noise) for b in bounds[1:]
    ]
    try:
        first = _part_step(config, params, x, y, seeds, bounds[0], 1, noise)
        rest = [f.result() for f in futures]
    finally:
        wait(futures)
        torch.set_num_threads(intra)
    return torch.cat([first, *rest])
