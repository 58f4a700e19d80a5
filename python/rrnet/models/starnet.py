"""StarNet (Fabbro et al. 2018, as used by the RRNet authors) and StarNet-R."""

from __future__ import annotations

import torch
from torch import nn

from rrnet.models.config import STARNET_CHANNELS, STARNET_POOL, ModelConfig
from rrnet.models.heads import GaussianNet
from rrnet.models.recurrent import SubbandRNN


class StarNet(GaussianNet):
    """conv(1->4, k3)+ReLU, conv(4->16, k3)+ReLU, MaxPool1d(4), then the Gaussian head.

    ``mode="post-RNN"`` / ``"pre-RNN"`` give StarNet-R, with the recurrent module
    placed exactly as in :class:`rrnet.models.rrnet.RRNet`.
    """

    def __init__(self, config: ModelConfig) -> None:
        if config.net != "starnet":
            raise ValueError(f"StarNet needs net='starnet', got {config.net!r}")
        super().__init__(config)
        c1, c2 = STARNET_CHANNELS
        if config.mode == "pre-RNN":
            self.rnn = SubbandRNN(config.n_subbands, config.subband_size)
        self.conv1 = nn.Sequential(nn.Conv1d(1, c1, kernel_size=3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(
            nn.Conv1d(c1, c2, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool1d(STARNET_POOL)
        )
        if config.mode == "post-RNN":
            self.rnn = SubbandRNN(config.n_subbands, config.subband_size)
        self.build_head(config.conv_features)

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))
