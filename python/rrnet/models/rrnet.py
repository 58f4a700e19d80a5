"""RRNet: residual convolution blocks plus the recurrent module (Xiong, Li & Liao 2022)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from rrnet.models.config import ModelConfig
from rrnet.models.heads import GaussianNet
from rrnet.models.recurrent import SubbandRNN


class ResBlock(nn.Module):
    """conv(k3) -> ReLU -> conv(k3), plus a 1x1-conv shortcut when channels change.

    Attribute names (``ResBlock``, ``downsample``) are the authors' state_dict keys.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.ResBlock = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv1d(out_channels, out_channels, kernel_size=3, padding=1),
        )
        self.downsample = nn.Sequential()
        if in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv1d(in_channels, out_channels, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ResBlock(x) + self.downsample(x)


class RRNet(GaussianNet):
    """RRNet (``mode="post-RNN"``), its pre-RNN variant, or the plain ResNet (``"raw"``).

    Each residual block is followed by AvgPool1d(2); after the last block a ReLU.
    post-RNN: the ``[B, C, T]`` feature map is permuted to ``[B, T, C]`` (so a sub-band
    holds all channels of neighbouring samples) before it is cut into N_s sub-bands.
    pre-RNN: the flux itself is cut into N_s sub-bands, and the RNN output (same
    length) feeds the residual blocks.
    """

    def __init__(self, config: ModelConfig) -> None:
        if config.net != "rrnet":
            raise ValueError(f"RRNet needs net='rrnet', got {config.net!r}")
        super().__init__(config)
        if config.mode == "pre-RNN":
            self.rnn = SubbandRNN(config.n_subbands, config.subband_size)
        widths = (1, *config.channels)
        self.ResBlock_list = nn.Sequential(
            *(
                nn.Sequential(ResBlock(c_in, c_out), nn.AvgPool1d(2))
                for c_in, c_out in itertools.pairwise(widths)
            )
        )
        if config.mode == "post-RNN":
            self.rnn = SubbandRNN(config.n_subbands, config.subband_size)
        self.build_head(config.conv_features)

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.ResBlock_list(x))
