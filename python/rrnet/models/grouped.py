"""All members of an ensemble as one network of grouped convolutions (CPU inference).

The M members' convolutional layers become one ``conv1d`` each, the members being
channel groups of a ``[B, M*C, T]`` feature map (``groups=M``); the first layer,
whose input is shared, is one ordinary convolution to ``M*C`` channels. oneDNN's
grouped kernels do much more work per call than M small per-member convolutions.
Each residual block's AvgPool1d(2) is folded into the convolutions before it (both
are linear): the second k=3 convolution followed by the pool is one stride-2
kernel-4 convolution, the 1x1 shortcut followed by the pool a stride-2 kernel-2 one.
This saves a third of the block's second convolution and a full pass over the map.
StarNet's ReLU is applied after its MaxPool1d (they commute), on a 4x smaller map.
The recurrent module and the head are batched matrix products over the member axis,
as in :mod:`rrnet.models.stacked` (the RNN input projection for all steps in one
product, then one ``baddbmm`` per step).

The result equals running each member's :func:`rrnet.models.build_model` network in
eval mode (verified to 1e-5 by the tests); dropout is never applied.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rrnet.models.config import STARNET_POOL, ModelConfig
from rrnet.models.stacked import StateDict, _head, _register_head, _register_rnn, _stack
from rrnet.models.stacked import _rnn as _rnn_out_of_place


def _grouped(state_dicts: Sequence[StateDict], prefix: str) -> torch.Tensor:
    """Conv1d weights ``[M, C_out, C_in, k]`` of all members as one ``[M*C_out, C_in, k]``."""
    w = _stack(state_dicts, f"{prefix}.weight")
    return w.reshape(-1, *w.shape[2:]).contiguous()


def _pool_folded_k3(w: torch.Tensor) -> torch.Tensor:
    """AvgPool1d(2) after a k=3, pad-1 conv == a stride-2, k=4, pad-1 conv with these taps."""
    w0, w1, w2 = w.unbind(-1)
    return 0.5 * torch.stack((w0, w0 + w1, w1 + w2, w2), dim=-1)


def _rnn(
    seq: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Single-layer tanh RNN, h0 = 0, on ``[G, B, N_s, S]``; returns ``[M, B, N_s, H]``.

    The input projection of all steps is one (batched) product; each step then adds
    ``h @ W_hh^T`` to its slice of it and applies tanh in place, so the projection
    buffer becomes the output (no per-step allocations, no final stack). Under
    autocast (mixed dtypes) the out-of-place loop of :mod:`rrnet.models.stacked` runs.
    """
    if torch.is_autocast_enabled(seq.device.type):
        return _rnn_out_of_place(seq, w_ih, w_hh, bias)
    g, bsz, n_steps, size = seq.shape
    m, hidden = w_ih.shape[0], w_ih.shape[1]
    flat = seq.reshape(g, bsz * n_steps, size)
    if g == m:
        proj = torch.baddbmm(bias, flat, w_ih.transpose(1, 2))
    else:  # shared input: broadcast over the members
        proj = torch.matmul(flat, w_ih.transpose(1, 2)).add_(bias)
    proj = proj.view(m, bsz, n_steps, hidden)
    w_hh_t = w_hh.transpose(1, 2)
    h = proj[:, :, 0].tanh_()
    for step in range(1, n_steps):
        h = proj[:, :, step].baddbmm_(h, w_hh_t).tanh_()
    return proj


@torch.compiler.assume_constant_result
def _conv_step() -> int:
    """Spectra per convolution chunk: smaller on one thread, where chunks fit the cache.

    A constant for ``torch.compile`` (the thread count is not traced: no graph break).
    """
    return 4 if torch.get_num_threads() == 1 else 16


class GroupedMembers(nn.Module):
    """M networks of one :class:`ModelConfig` as one module: ``x -> (mu, var)`` ``[M, B, L]``.

    Parameters
    ----------
    config
        The members' common architecture.
    state_dicts
        One state_dict per member, with the authors' key names.
    conv_batch
        The convolutional layers run over chunks of at most this many spectra (their
        feature maps then stay in cache); the RNN and the head take the whole batch
        (fc1's weights are read once per call). ``None``: 4 with one intra-op thread,
        16 with more (fewer, larger parallel regions).
    """

    def __init__(
        self,
        config: ModelConfig,
        state_dicts: Sequence[StateDict],
        conv_batch: int | None = None,
    ) -> None:
        super().__init__()
        if not state_dicts:
            raise ValueError("an ensemble needs at least one member")
        self.config = config
        self.n_members = len(state_dicts)
        self.conv_batch = conv_batch
        sds = state_dicts
        if config.mode != "raw":
            _register_rnn(self, sds)
        if config.net == "rrnet":
            widths = (1, *config.channels)
            for i in range(len(config.channels)):
                base = f"ResBlock_list.{i}.0"
                self.register_buffer(f"b{i}a_w", _grouped(sds, f"{base}.ResBlock.0"))
                self.register_buffer(f"b{i}a_b", _stack(sds, f"{base}.ResBlock.0.bias").flatten())
                self.register_buffer(
                    f"b{i}b_w", _pool_folded_k3(_grouped(sds, f"{base}.ResBlock.2"))
                )
                bias = _stack(sds, f"{base}.ResBlock.2.bias")
                if widths[i] != widths[i + 1]:
                    ds = _grouped(sds, f"{base}.downsample.0")  # [M*C_out, C_in, 1]
                    self.register_buffer(f"b{i}s_w", 0.5 * torch.cat((ds, ds), dim=-1))
                    bias = bias + _stack(sds, f"{base}.downsample.0.bias")
                self.register_buffer(f"b{i}b_b", bias.flatten())
        else:
            self.register_buffer("conv1_w", _grouped(sds, "conv1.0"))
            self.register_buffer("conv1_b", _stack(sds, "conv1.0.bias").flatten())
            self.register_buffer("conv2_w", _grouped(sds, "conv2.0"))
            self.register_buffer("conv2_b", _stack(sds, "conv2.0.bias").flatten())
        # Features reach the head in the networks' own flatten order, [C, T] or [T, C].
        _register_head(self, sds, _stack(sds, "fc1.0.weight"))

    # Forward -------------------------------------------------------------------------
    def _recurrent(self, x: torch.Tensor) -> torch.Tensor:
        """``[G, B, N] -> [M, B, N]`` through the sub-band RNN (G = 1: shared input)."""
        g, bsz, n = x.shape
        seq = x.reshape(g, bsz, self.config.n_subbands, n // self.config.n_subbands)
        return _rnn(seq, self.rnn_w_ih, self.rnn_w_hh, self.rnn_b).reshape(-1, bsz, n)

    def _conv_stack(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, G, P]`` (G = 1: shared input, G = M: one map per member) -> ``[B, M*C, T]``."""
        cfg = self.config
        if cfg.net == "starnet":
            h = F.relu(F.conv1d(x, self.conv1_w, self.conv1_b, padding=1, groups=x.shape[1]))
            h = F.conv1d(h, self.conv2_w, self.conv2_b, padding=1, groups=self.n_members)
            return F.relu(F.max_pool1d(h, STARNET_POOL))
        widths = (1, *cfg.channels)
        for i, c_in in enumerate(widths[:-1]):
            groups = x.shape[1] // c_in  # 1 for the shared input, else M
            w, b = getattr(self, f"b{i}a_w"), getattr(self, f"b{i}a_b")
            r = F.relu(F.conv1d(x, w, b, padding=1, groups=groups))
            w, b = getattr(self, f"b{i}b_w"), getattr(self, f"b{i}b_b")
            h = F.conv1d(r, w, b, stride=2, padding=1, groups=self.n_members)
            if c_in != widths[i + 1]:
                shortcut = F.conv1d(x, getattr(self, f"b{i}s_w"), stride=2, groups=groups)
            else:
                shortcut = F.avg_pool1d(x, 2)
                if shortcut.shape[1] != h.shape[1]:  # identity shortcut of a shared input
                    shortcut = shortcut.repeat(1, self.n_members, 1)
            x = h.add_(shortcut)
        return F.relu(x)

    def _features_into(self, out: torch.Tensor, x: torch.Tensor) -> None:
        """Shared ``[b, P]`` or per-member ``[b, M, P]`` input -> ``out`` ``[M, b, F]``."""
        cfg = self.config
        maps = self._conv_stack(x.unsqueeze(1) if x.ndim == 2 else x)
        m, bsz, c, t = self.n_members, maps.shape[0], cfg.conv_channels, cfg.conv_length
        maps = maps.view(bsz, m, c, t)
        if cfg.mode == "post-RNN":  # the networks' permute(0, 2, 1): [T, C] order
            out.view(m, bsz, t, c).copy_(maps.permute(1, 0, 3, 2))
        else:
            out.view(m, bsz, c, t).copy_(maps.transpose(0, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised flux ``[B, n_pixels]`` -> ``(mu, var)``, each ``[M, B, L]``."""
        cfg = self.config
        if x.ndim != 2 or x.shape[1] != cfg.n_pixels:
            raise ValueError(f"expected input of shape [B, {cfg.n_pixels}], got {tuple(x.shape)}")
        h = x
        if cfg.mode == "pre-RNN":
            h = self._recurrent(x.unsqueeze(0)).transpose(0, 1)  # [B, M, P]
        step = self.conv_batch or _conv_step()
        flat = x.new_empty(self.n_members, x.shape[0], cfg.conv_features)
        for i in range(0, x.shape[0], step):
            self._features_into(flat[:, i : i + step], h[i : i + step])
        if cfg.mode == "post-RNN":
            flat = self._recurrent(flat)
        return _head(self, flat)
