"""All members of an ensemble evaluated in one batched call (inference).

The M members' weights are stacked along a leading member axis, and every layer is
written as a batched matrix product (``torch.matmul``/``baddbmm``) over that axis, so
one call runs all members at once. Feature maps are kept channels-last,
``[M, B, T, C]``: a kernel-3 convolution becomes one matmul of the three shifted
copies (``[M, B*T, 3*C_in] @ [M, 3*C_in, C_out]``), which is far faster on CPU
than PyTorch's small-channel ``conv1d`` and maps onto tensor cores on a GPU.
``torch.func.vmap`` is not usable here: it has no batching rule for ``nn.RNN``.

The result equals running each member's :func:`rrnet.models.build_model` network in
eval mode (verified to 1e-5 by the tests); dropout is never applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rrnet.models.config import STARNET_POOL, ModelConfig

StateDict = Mapping[str, torch.Tensor]


def _stack(state_dicts: Sequence[StateDict], key: str) -> torch.Tensor:
    return torch.stack([sd[key].detach().to(torch.float32) for sd in state_dicts])


def _conv_weight(state_dicts: Sequence[StateDict], prefix: str) -> tuple[torch.Tensor, ...]:
    """Conv1d weights ``[M, C_out, C_in, k]`` as matmul operands ``[M, k*C_in, C_out]``."""
    w = _stack(state_dicts, f"{prefix}.weight")  # [M, out, in, k]
    m, c_out, c_in, k = w.shape
    w = w.permute(0, 3, 2, 1).reshape(m, k * c_in, c_out)  # rows: (shift, in channel)
    b = _stack(state_dicts, f"{prefix}.bias").unsqueeze(1)  # [M, 1, out]
    return w, b


def _im2col3(x: torch.Tensor) -> torch.Tensor:
    """``[G, B, T, C] -> [G, B*T, 3*C]``: the zero-padded k=3 neighbourhood of every sample."""
    g, b, t, c = x.shape
    xp = F.pad(x, (0, 0, 1, 1))
    cols = torch.cat((xp[:, :, :-2], xp[:, :, 1:-1], xp[:, :, 2:]), dim=-1)
    return cols.reshape(g, b * t, 3 * c)


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Per-member conv1d (padding k//2) on channels-last ``[G, B, T, C]``, G in {1, M}."""
    g, bsz, t, _ = x.shape
    cols = _im2col3(x) if k == 3 else x.reshape(g, bsz * t, -1)
    y = torch.matmul(cols, w) + b  # broadcasts a shared input (G = 1) over the M members
    return y.view(w.shape[0], bsz, t, w.shape[-1])


def _register_rnn(module: nn.Module, state_dicts: Sequence[StateDict]) -> None:
    """The members' sub-band RNN as buffers ``rnn_w_ih``, ``rnn_w_hh`` and ``rnn_b``
    (both biases summed, ``[M, 1, H]``)."""
    module.register_buffer("rnn_w_ih", _stack(state_dicts, "rnn.weight_ih_l0"))
    module.register_buffer("rnn_w_hh", _stack(state_dicts, "rnn.weight_hh_l0"))
    bias = _stack(state_dicts, "rnn.bias_ih_l0") + _stack(state_dicts, "rnn.bias_hh_l0")
    module.register_buffer("rnn_b", bias.unsqueeze(1))


def _register_head(
    module: nn.Module, state_dicts: Sequence[StateDict], fc1_weight: torch.Tensor
) -> None:
    """The members' head as batched-matmul buffers: fc1 (``fc1_weight`` ``[M, H1, F]``,
    its columns already in the module's feature order), fc2, and mu and sigma as one
    output layer."""
    sds = state_dicts
    module.register_buffer("fc1_w", fc1_weight.transpose(1, 2).contiguous())
    module.register_buffer("fc1_b", _stack(sds, "fc1.0.bias").unsqueeze(1))
    module.register_buffer("fc2_w", _stack(sds, "fc2.0.weight").transpose(1, 2).contiguous())
    module.register_buffer("fc2_b", _stack(sds, "fc2.0.bias").unsqueeze(1))
    out_w = torch.cat((_stack(sds, "mu.weight"), _stack(sds, "sigma.0.weight")), dim=1)
    out_b = torch.cat((_stack(sds, "mu.bias"), _stack(sds, "sigma.0.bias")), dim=1)
    module.register_buffer("out_w", out_w.transpose(1, 2).contiguous())
    module.register_buffer("out_b", out_b.unsqueeze(1))


def _head(module: nn.Module, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``[M, B, F]`` -> ``(mu, var)``, each ``[M, B, L]``, through the buffers of
    :func:`_register_head`."""
    h1 = torch.relu(torch.baddbmm(module.fc1_b, flat, module.fc1_w))
    h2 = torch.relu(torch.baddbmm(module.fc2_b, h1, module.fc2_w))
    out = torch.baddbmm(module.out_b, h2, module.out_w)
    n = module.config.num_labels
    return out[..., :n], F.softplus(out[..., n:])


def _rnn(
    seq: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Single-layer tanh RNN, h0 = 0, on ``[G, B, N_s, S]``; returns ``[M, B, N_s, H]``."""
    g, bsz, n_steps, size = seq.shape
    m, hidden = w_ih.shape[0], w_ih.shape[1]
    proj = torch.matmul(seq.reshape(g, bsz * n_steps, size), w_ih.transpose(1, 2)) + bias
    proj = proj.view(m, bsz, n_steps, hidden)
    w_hh_t = w_hh.transpose(1, 2)
    h = torch.tanh(proj[:, :, 0])
    outs = [h]
    for step in range(1, n_steps):
        h = torch.tanh(torch.baddbmm(proj[:, :, step], h, w_hh_t))
        outs.append(h)
    return torch.stack(outs, dim=2)


class StackedMembers(nn.Module):
    """M networks of one :class:`ModelConfig` as one module: ``x -> (mu, var)`` ``[M, B, L]``.

    Parameters
    ----------
    config
        The members' common architecture.
    state_dicts
        One state_dict per member, with the authors' key names.
    """

    def __init__(self, config: ModelConfig, state_dicts: Sequence[StateDict]) -> None:
        super().__init__()
        if not state_dicts:
            raise ValueError("an ensemble needs at least one member")
        self.config = config
        self.n_members = len(state_dicts)
        self._convs: list[tuple[str, int]] = []  # (buffer prefix, kernel size)
        sds = state_dicts
        if config.mode != "raw":
            _register_rnn(self, sds)
        if config.net == "rrnet":
            widths = (1, *config.channels)
            for i in range(len(config.channels)):
                base = f"ResBlock_list.{i}.0"
                self._add_conv(f"b{i}c0", sds, f"{base}.ResBlock.0")
                self._add_conv(f"b{i}c2", sds, f"{base}.ResBlock.2")
                if widths[i] != widths[i + 1]:
                    self._add_conv(f"b{i}ds", sds, f"{base}.downsample.0")
        else:
            self._add_conv("conv1", sds, "conv1.0")
            self._add_conv("conv2", sds, "conv2.0")
        self._add_head(sds)

    # Construction ----------------------------------------------------------------------
    def _add_conv(self, name: str, sds: Sequence[StateDict], prefix: str) -> None:
        w, b = _conv_weight(sds, prefix)
        self.register_buffer(f"{name}_w", w)
        self.register_buffer(f"{name}_b", b)

    def _add_head(self, sds: Sequence[StateDict]) -> None:
        cfg = self.config
        w1 = _stack(sds, "fc1.0.weight")  # [M, H1, F]
        if cfg.mode != "post-RNN":
            # The networks flatten [C, T]; here features are [T, C]: reorder fc1's columns.
            m, h1, _ = w1.shape
            w1 = w1.view(m, h1, cfg.conv_channels, cfg.conv_length).transpose(2, 3)
            w1 = w1.reshape(m, h1, cfg.conv_features)
        _register_head(self, sds, w1)

    # Forward -------------------------------------------------------------------------
    def _c(self, name: str, x: torch.Tensor, k: int = 3) -> torch.Tensor:
        return _conv(x, getattr(self, f"{name}_w"), getattr(self, f"{name}_b"), k)

    def _recurrent(self, x: torch.Tensor) -> torch.Tensor:
        """``[G, B, N] -> [M, B, N]`` through the sub-band RNN."""
        g, bsz, n = x.shape
        seq = x.view(g, bsz, self.config.n_subbands, n // self.config.n_subbands)
        return _rnn(seq, self.rnn_w_ih, self.rnn_w_hh, self.rnn_b).reshape(-1, bsz, n)

    def _conv_stack(self, x: torch.Tensor) -> torch.Tensor:
        """``[G, B, P, 1] -> [M, B, T, C]`` (channels-last convolutional features)."""
        cfg = self.config
        if cfg.net == "rrnet":
            widths = (1, *cfg.channels)
            for i in range(len(cfg.channels)):
                h = self._c(f"b{i}c2", torch.relu(self._c(f"b{i}c0", x)))
                h = h + (self._c(f"b{i}ds", x, k=1) if widths[i] != widths[i + 1] else x)
                m, bsz, t, c = h.shape
                x = h.view(m, bsz, t // 2, 2, c).mean(dim=3)
            return torch.relu(x)
        h = torch.relu(self._c("conv2", torch.relu(self._c("conv1", x))))
        m, bsz, t, c = h.shape
        return h.view(m, bsz, t // STARNET_POOL, STARNET_POOL, c).amax(dim=3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised flux ``[B, n_pixels]`` -> ``(mu, var)``, each ``[M, B, L]``."""
        cfg = self.config
        if x.ndim != 2 or x.shape[1] != cfg.n_pixels:
            raise ValueError(f"expected input of shape [B, {cfg.n_pixels}], got {tuple(x.shape)}")
        h = x.unsqueeze(0)  # [1, B, P]: the input is shared by all members
        if cfg.mode == "pre-RNN":
            h = self._recurrent(h)
        feats = self._conv_stack(h.unsqueeze(-1))
        m, bsz = feats.shape[:2]
        flat = feats.reshape(m, bsz, -1)  # [T, C] order == the networks' permute(0, 2, 1)
        if cfg.mode == "post-RNN":
            flat = self._recurrent(flat)
        return _head(self, flat)
