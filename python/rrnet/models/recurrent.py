"""The recurrent module: a tanh RNN run over N_s sub-bands of a spectrum or feature map."""

from __future__ import annotations

import torch
from torch import nn


class SubbandRNN(nn.RNN):
    """Single-layer tanh ``nn.RNN(S, S, batch_first=True)`` over N_s sub-bands of size S.

    Subclassing ``nn.RNN`` keeps the authors' key names (``rnn.weight_ih_l0`` ...).
    The input ``[B, N_s * S]`` is cut into N_s consecutive pieces (the time steps)
    and all N_s outputs are returned, flattened back to ``[B, N_s * S]``.
    """

    def __init__(self, n_subbands: int, subband_size: int) -> None:
        super().__init__(subband_size, subband_size, num_layers=1, batch_first=True)
        self.n_subbands = n_subbands
        self.subband_size = subband_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``[B, N_s * S] -> [B, N_s * S]``: outputs of every time step, concatenated."""
        seq = x.reshape(x.shape[0], self.n_subbands, self.subband_size)
        out, _ = super().forward(seq)
        return out.flatten(1)
