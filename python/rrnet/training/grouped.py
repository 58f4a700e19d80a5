"""Training forward of M stacked members as grouped convolutions (the CPU formulation).

The same layout as inference's :mod:`rrnet.models.grouped`, written on the stacked
*parameters* (``[M, ...]`` tensors with the networks' own key names) so that autograd
differentiates through it: each convolution is one ``conv1d`` with ``groups=M`` over a
``[B, M*C, T]`` map (the first one, on a shared input, an ordinary one), every residual
block's AvgPool1d(2) is folded into the convolutions before it (a linear identity, so
gradients are those of the plain network), the RNN and the head are batched matrix
products over the member axis, and dropout draws an independent mask per member.
oneDNN's grouped convolution kernels, forward and backward, do far more work per call
than M small convolutions or vmap's matmul rewrite, which is what makes training M
members together faster than one after another on a CPU.
On CPU (float32) the convolutions go through the Rust kernel of
:mod:`rrnet.training.conv` (faster still, ReLUs and each block's shortcut sum fused).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from rrnet.models.config import STARNET_POOL, ModelConfig
from rrnet.models.grouped import _pool_folded_k3
from rrnet.models.stacked import _rnn
from rrnet.training.conv import conv1d, conv1d_sum

Params = Mapping[str, torch.Tensor]


def _gw(params: Params, prefix: str) -> torch.Tensor:
    """Stacked conv weight ``[M, C_out, C_in, k]`` as a grouped one ``[M*C_out, C_in, k]``."""
    w = params[f"{prefix}.weight"]
    return w.reshape(-1, *w.shape[2:])


def _gb(params: Params, prefix: str) -> torch.Tensor:
    return params[f"{prefix}.bias"].reshape(-1)


class _BatchedLinear(torch.autograd.Function):
    """``x @ W^T + b`` per member (``x`` ``[M, B, F]``, ``W`` ``[M, H, F]``, ``b`` ``[M, 1, H]``)
    whose weight gradient is computed as ``g^T x``, directly in W's ``[H, F]`` layout.

    Autograd of ``baddbmm(b, x, W^T)`` computes it as ``[F, H]`` and then copies its
    transpose into the parameter's layout: for fc1 a strided copy of 88 MB per step.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w)
        return torch.baddbmm(b, x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        gx = torch.bmm(g, w) if need_x else None
        gw = torch.bmm(g.transpose(1, 2), x) if need_w else None
        gb = g.sum(dim=1, keepdim=True) if need_b else None
        return gx, gw, gb


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-member ``x @ W^T + b`` (``b`` ``[M, 1, H]``); :class:`_BatchedLinear` unless
    autocast is on (mixed dtypes: plain autograd) or the input is shared (``[1, B, F]``)."""
    if x.shape[0] != w.shape[0] or torch.is_autocast_enabled(x.device.type):
        return torch.matmul(x, w.transpose(1, 2)) + b
    return _BatchedLinear.apply(x, w, b)


class _TanhRecurrence(torch.autograd.Function):
    """``h_t = tanh(a_t + h_{t-1} W^T)`` (h_0 = tanh(a_0)) over pre-activations ``a``
    ``[M, B, N, H]``, with a hand-written backward (back-propagation through time).

    Autograd through a Python loop of N steps records 3 nodes per step, and each
    step's slice of ``a`` gets a full-size zero gradient filled and summed in backward
    (N passes over ``[M, B, N, H]``). Here the forward writes into ``a`` in place and
    the backward runs one loop writing each step's gradient slice once, with the
    ``W_hh`` gradient as one batched product over all steps at the end.
    """

    @staticmethod
    def forward(ctx, pre: torch.Tensor, w_hh: torch.Tensor, bsz: int) -> torch.Tensor:  # type: ignore[override]
        """``pre`` ``[M, B*N, H]`` (not a view: it is overwritten with the output)."""
        seq = pre.view(pre.shape[0], bsz, -1, pre.shape[2])
        w_t = w_hh.transpose(1, 2)
        h = seq[:, :, 0].tanh_()
        for step in range(1, seq.shape[2]):
            h = seq[:, :, step].baddbmm_(h, w_t).tanh_()
        ctx.mark_dirty(pre)
        ctx.save_for_backward(pre, w_hh)
        ctx.bsz = bsz
        return pre

    @staticmethod
    def backward(ctx, grad_flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:  # type: ignore[override]
        flat, w_hh = ctx.saved_tensors
        m, hidden = flat.shape[0], flat.shape[2]
        out = flat.view(m, ctx.bsz, -1, hidden)
        # grad_pre starts as a copy of the output gradient; step t then adds the carry
        # d_{t+1} W_hh in place (baddbmm_ into the strided slice) and multiplies by
        # 1 - h_t^2 (h_t^2 into one reused buffer): no temporaries allocated per step
        grad_pre = torch.empty_like(out).copy_(grad_flat.reshape(out.shape))
        h_sq = out.new_empty(out[:, :, 0].shape)
        for step in range(out.shape[2] - 1, -1, -1):
            d = grad_pre[:, :, step]
            if step < out.shape[2] - 1:
                d.baddbmm_(grad_pre[:, :, step + 1], w_hh)
            h = out[:, :, step]
            d.addcmul_(d, torch.mul(h, h, out=h_sq), value=-1.0)  # g * (1 - h^2)
        # W_hh gradient: sum over steps t >= 1 of d_t^T h_{t-1}, as one product over the
        # flat rows shifted by one (views, no copies), minus the pairs that straddle two
        # spectra (step 0 of spectrum b with the last step of spectrum b-1)
        d_flat, h_flat = grad_pre.view(flat.shape), flat
        g_hh = torch.bmm(d_flat[:, 1:].transpose(1, 2), h_flat[:, :-1])
        g_hh.sub_(torch.bmm(grad_pre[:, 1:, 0].transpose(1, 2), out[:, :-1, -1]))
        return d_flat, g_hh, None


def _rnn_train(
    seq: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Single-layer tanh RNN, h0 = 0, on ``[G, B, N_s, S]`` -> ``[M, B, N_s, H]``: the input
    projection of all steps as one batched product, then :class:`_TanhRecurrence`."""
    if torch.is_autocast_enabled(seq.device.type):  # mixed dtypes: the autograd loop
        return _rnn(seq, w_ih, w_hh, bias)
    g, bsz, n_steps, size = seq.shape
    m, hidden = w_ih.shape[0], w_ih.shape[1]
    pre = _linear(seq.reshape(g, bsz * n_steps, size), w_ih, bias)  # a new tensor, not a view
    out = _TanhRecurrence.apply(pre, w_hh, bsz)
    return out.view(m, bsz, n_steps, hidden)


def _recurrent(config: ModelConfig, params: Params, x: torch.Tensor) -> torch.Tensor:
    """``[G, B, N] -> [M, B, N]`` through each member's sub-band tanh RNN."""
    g, bsz, n = x.shape
    seq = x.reshape(g, bsz, config.n_subbands, n // config.n_subbands)
    bias = (params["rnn.bias_ih_l0"] + params["rnn.bias_hh_l0"]).unsqueeze(1)
    out = _rnn_train(seq, params["rnn.weight_ih_l0"], params["rnn.weight_hh_l0"], bias)
    return out.reshape(-1, bsz, n)


def _rrnet_maps(config: ModelConfig, params: Params, x: torch.Tensor, m: int) -> torch.Tensor:
    """Residual blocks (pool folded) on ``[B, G, P]`` -> ``[B, M*C, T]``."""
    widths = (1, *config.channels)
    for i, c_in in enumerate(widths[:-1]):
        base = f"ResBlock_list.{i}.0"
        groups = x.shape[1] // c_in  # 1 for a shared input, else M
        r = conv1d(x, _gw(params, f"{base}.ResBlock.0"), _gb(params, f"{base}.ResBlock.0"),
                   padding=1, groups=groups, relu=True)  # fmt: skip
        w2 = _pool_folded_k3(_gw(params, f"{base}.ResBlock.2"))
        bias = params[f"{base}.ResBlock.2.bias"]
        last = i == len(widths) - 2  # the maps' final ReLU fused into the last block
        if c_in != widths[i + 1]:
            ds = _gw(params, f"{base}.downsample.0")
            bias = bias + params[f"{base}.downsample.0.bias"]
            x = conv1d_sum(r, w2, bias.reshape(-1), x, 0.5 * torch.cat((ds, ds), dim=-1),
                           conf_a=(2, 1, m), conf_x=(2, 0, groups), relu=last)  # fmt: skip
            continue
        shortcut = F.avg_pool1d(x, 2)
        if shortcut.shape[1] != w2.shape[0]:
            shortcut = shortcut.repeat(1, m, 1)
        x = conv1d(r, w2, bias.reshape(-1), stride=2, padding=1, groups=m) + shortcut
        x = F.relu(x) if last else x
    return x


def _starnet_maps(params: Params, x: torch.Tensor, m: int) -> torch.Tensor:
    h = conv1d(x, _gw(params, "conv1.0"), _gb(params, "conv1.0"), padding=1,
               groups=x.shape[1], relu=True)  # fmt: skip
    h = conv1d(h, _gw(params, "conv2.0"), _gb(params, "conv2.0"), padding=1, groups=m)
    return F.relu(F.max_pool1d(h, STARNET_POOL))


def _dropout(h: torch.Tensor, p: float, gens: Sequence[torch.Generator] | None) -> torch.Tensor:
    """Dropout on ``[M, B, H]``: from the global generator, or member m's mask from
    ``gens[m]`` (masks independent of how the members are split over threads)."""
    if p <= 0 or gens is None:
        return F.dropout(h, p, training=p > 0)
    keep = torch.stack([h.new_empty(h.shape[1:]).bernoulli_(1 - p, generator=g) for g in gens])
    return h * keep.div_(1 - p)


def _head(
    config: ModelConfig,
    params: Params,
    flat: torch.Tensor,
    dropout: float,
    generators: Sequence[torch.Generator] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``[M, B, F]`` -> ``(mu, var)`` ``[M, B, L]``; dropout after fc1 and fc2."""
    h = _linear(flat, params["fc1.0.weight"], params["fc1.0.bias"].unsqueeze(1))
    h = _dropout(F.relu(h), dropout, generators)
    h = _linear(h, params["fc2.0.weight"], params["fc2.0.bias"].unsqueeze(1))
    h = _dropout(F.relu(h), dropout, generators)
    w = torch.cat((params["mu.weight"], params["sigma.0.weight"]), dim=1)
    b = torch.cat((params["mu.bias"], params["sigma.0.bias"]), dim=1)
    out = _linear(h, w, b.unsqueeze(1))
    n = config.num_labels
    return out[..., :n], F.softplus(out[..., n:])


CONV_BATCH = 16
"""Spectra per call of the convolutional layers: a chunk's feature maps (and their
gradients in backward) stay in cache, which makes oneDNN's grouped kernels ~2-3x
faster per spectrum than over a whole training batch (the RNN and the head, big
matrix products, take the whole batch)."""


def _conv_features(config: ModelConfig, params: Params, h: torch.Tensor, m: int) -> torch.Tensor:
    """``[B, G, P]`` -> features ``[M, B, F]`` in the networks' flatten order ([T, C] before
    a post-RNN, else [C, T]), the convolutions run over chunks of :data:`CONV_BATCH`."""
    c, t = config.conv_channels, config.conv_length
    chunks = []
    for i in range(0, h.shape[0], CONV_BATCH):
        part = h[i : i + CONV_BATCH]
        if config.net == "rrnet":
            maps = _rrnet_maps(config, params, part, m)
        else:
            maps = _starnet_maps(params, part, m)
        maps = maps.view(part.shape[0], m, c, t)
        if config.mode == "post-RNN":  # the networks' permute(0, 2, 1): [T, C] order
            chunks.append(maps.permute(1, 0, 3, 2))
        else:
            chunks.append(maps.transpose(0, 1))
    return torch.cat(chunks, dim=1).reshape(m, h.shape[0], c * t)


def grouped_forward(
    config: ModelConfig,
    params: Params,
    x: torch.Tensor,
    *,
    dropout: float = 0.0,
    generators: Sequence[torch.Generator] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mu, var)`` ``[M, B, L]`` of the stacked members ``params`` for standardised flux
    ``[M, B, P]`` (each member its own batch) or ``[B, P]`` (shared); ``dropout`` is the
    probability applied in the head (0 = eval mode), its masks drawn from the global
    generator or, given one per member, from ``generators``."""
    m = next(iter(params.values())).shape[0]
    h = x if x.ndim == 3 else x.unsqueeze(0)  # [G, B, P]
    if config.mode == "pre-RNN":
        h = _recurrent(config, params, h)
    flat = _conv_features(config, params, h.transpose(0, 1), m)  # members as channels
    if config.mode == "post-RNN":
        flat = _recurrent(config, params, flat)
    return _head(config, params, flat, dropout, generators)
