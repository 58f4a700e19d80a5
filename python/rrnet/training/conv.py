"""Grouped ``conv1d`` of the training path: the Rust kernel on CPU, ``F.conv1d`` elsewhere.

Training members as channel groups runs convolutions of 1-16 channels per group
(stride 1 k=3, the pool-folded stride 2 k=4, the pooled stride 2 k=2 shortcut), for
which oneDNN picks slow paths (~8 GFLOP/s, every stride-2 backward-data among them).
``rrnet._core.conv1d_*`` (``crates/rrnet-core/src/conv1d``) computes the forward and
both backward parts of exactly these shapes register-tiled (AVX2 + FMA where the CPU
has them), one thread per call with the GIL released, which is what the member split
over threads of :mod:`rrnet.training.grouped_step` needs. Inputs and outputs cross
as numpy views of the tensors (no copies). Results equal ``F.conv1d``'s to float32
roundoff (the order of the sums differs).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from rrnet import _core

MAX_TAPS = 4
"""The kernel's limit on ``ceil(kernel_size / stride)``."""

KERNEL = os.environ.get("RRNET_CONV", "rust")
"""``"rust"`` (default): the Rust kernel where it applies; ``"torch"``: always
``F.conv1d`` (the reference, e.g. for the tests; env ``RRNET_CONV``)."""


def _rust_applies(x: torch.Tensor, w: torch.Tensor, stride: int) -> bool:
    """CPU float32 tensors with the kernel's tap limit, autocast off: the measured-faster
    cases (forward + backward 1.9-3.5x faster than oneDNN for every convolution of the
    grouped RRNet at its training shapes, ``benchmarks/RESULTS.md``)."""
    return (
        KERNEL == "rust"
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and w.dtype == torch.float32
        and x.ndim == 3
        and -(-w.shape[2] // stride) <= MAX_TAPS
        and not torch.is_autocast_enabled("cpu")
    )


Conf = tuple[int, int, int]
"""``(stride, padding, groups)`` of one convolution."""


def _empty_output(x: torch.Tensor, w: torch.Tensor, conf: Conf) -> torch.Tensor:
    """The uninitialised ``[B, C_out, L_out]`` output of ``conv1d(x, w, *conf)``."""
    stride, padding, _ = conf
    l_out = (x.shape[2] + 2 * padding - w.shape[2]) // stride + 1
    return x.new_empty(x.shape[0], w.shape[0], l_out)


class _RustConv1d(torch.autograd.Function):
    """``conv1d(x, w, b, stride, padding, groups)``, optionally followed by a ReLU, with
    the Rust kernel's backward (the ReLU's mask applied as the gradient is read)."""

    @staticmethod
    def forward(ctx, x, w, b, stride: int, padding: int, groups: int, relu: bool):  # type: ignore[override]
        x, w = x.contiguous(), w.contiguous()
        b = None if b is None else b.contiguous()
        conf = (stride, padding, groups)
        out = _empty_output(x, w, conf)
        bias = None if b is None else b.numpy()
        _core.conv1d_forward(x.numpy(), w.numpy(), bias, out.numpy(), *conf, relu, False)
        ctx.save_for_backward(x, w, out if relu else None)
        ctx.conf = conf
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):  # type: ignore[override]
        x, w, out = ctx.saved_tensors
        gy = gy.contiguous().numpy()
        mask = None if out is None else out.numpy()
        grads = _grads(gy, mask, x, w, ctx.conf, *ctx.needs_input_grad[:3])
        return (*grads, None, None, None, None)


class _RustConvSum(torch.autograd.Function):
    """``conv1d(a, wa, b, *conf_a) + conv1d(x, wx, None, *conf_x)``, optionally followed
    by a ReLU: a residual block's output (the second convolution accumulates onto the
    shortcut's output in the kernel, no separate sum pass), with the kernel's backward."""

    @staticmethod
    def forward(ctx, a, wa, b, x, wx, conf_a: Conf, conf_x: Conf, relu: bool):  # type: ignore[override]
        a, wa, x, wx = a.contiguous(), wa.contiguous(), x.contiguous(), wx.contiguous()
        out = _empty_output(a, wa, conf_a)
        bias = None if b is None else b.contiguous().numpy()
        _core.conv1d_forward(x.numpy(), wx.numpy(), None, out.numpy(), *conf_x, False, False)
        _core.conv1d_forward(a.numpy(), wa.numpy(), bias, out.numpy(), *conf_a, relu, True)
        ctx.save_for_backward(a, wa, x, wx, out if relu else None)
        ctx.confs = (conf_a, conf_x)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):  # type: ignore[override]
        a, wa, x, wx, out = ctx.saved_tensors
        gy = gy.contiguous().numpy()
        mask = None if out is None else out.numpy()
        need = ctx.needs_input_grad
        conf_a, conf_x = ctx.confs
        ga, gwa, gb = _grads(gy, mask, a, wa, conf_a, need[0], need[1], need[2])
        gx, gwx, _ = _grads(gy, mask, x, wx, conf_x, need[3], need[4], False)
        return ga, gwa, gb, gx, gwx, None, None, None


def _grads(
    gy: np.ndarray,
    mask: np.ndarray | None,
    x: torch.Tensor,
    w: torch.Tensor,
    conf: Conf,
    need_x: bool,
    need_w: bool,
    need_b: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(gx, gw, gb)`` of one convolution for output gradient ``gy`` (numpy; ``mask``
    the fused ReLU's output or None), None where not needed; the weight gradient is
    computed whenever the bias's is (one kernel pass gives both)."""
    gx = gw = gb = None
    if need_x:
        gx = torch.empty_like(x)
        _core.conv1d_grad_input(gy, mask, w.numpy(), gx.numpy(), *conf)
    if need_w or need_b:
        gw = torch.empty_like(w)
        gb = w.new_empty(w.shape[0]) if need_b else None
        gb_np = None if gb is None else gb.numpy()
        _core.conv1d_grad_weight(x.numpy(), gy, mask, gw.numpy(), gb_np, *conf)
    return gx, gw if need_w else None, gb


def conv1d_sum(
    a: torch.Tensor,
    wa: torch.Tensor,
    b: torch.Tensor | None,
    x: torch.Tensor,
    wx: torch.Tensor,
    *,
    conf_a: Conf,
    conf_x: Conf,
    relu: bool = False,
) -> torch.Tensor:
    """``conv1d(a, wa, b, *conf_a) + conv1d(x, wx, *conf_x)`` (each conf ``(stride,
    padding, groups)``), then ``F.relu`` if ``relu``; one kernel pass on CPU float32."""
    if _rust_applies(a, wa, conf_a[0]) and _rust_applies(x, wx, conf_x[0]):
        return _RustConvSum.apply(a, wa, b, x, wx, conf_a, conf_x, relu)
    out = conv1d(a, wa, b, stride=conf_a[0], padding=conf_a[1], groups=conf_a[2])
    out = out + conv1d(x, wx, None, stride=conf_x[0], padding=conf_x[1], groups=conf_x[2])
    return F.relu(out) if relu else out


def conv1d(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    *,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    relu: bool = False,
) -> torch.Tensor:
    """``F.conv1d(x, w, b, stride=, padding=, groups=)``, then ``F.relu`` if ``relu``;
    the Rust kernel (ReLU fused) on CPU float32."""
    if _rust_applies(x, w, stride):
        return _RustConv1d.apply(x, w, b, stride, padding, groups, relu)
    out = F.conv1d(x, w, b, stride=stride, padding=padding, groups=groups)
    return F.relu(out) if relu else out
