"""Shared helpers of the model/ensemble/checkpoint tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "original_rrnet"
LABEL_CONFIG = SHARED / "data" / "label_config.pkl"


def authors_forward(
    sd: dict[str, torch.Tensor], net: str, mode: str, x: torch.Tensor, pre_steps: int = 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """Literal functional transcription of the authors' RRNet.py / StarNet.py forward (eval).

    An independent oracle: plain F.conv1d / nn.RNN on the raw state_dict, with the
    authors' hard-coded reshapes (pre-RNN ``view(-1, 20, 360)``, post-RNN
    ``permute(0, 2, 1).reshape(B, -1, 360)``).
    """

    def rnn(seq: torch.Tensor) -> torch.Tensor:
        size = sd["rnn.weight_ih_l0"].shape[1]
        layer = torch.nn.RNN(size, size, batch_first=True)
        layer.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("rnn.")})
        return layer(seq)[0]

    b = x.shape[0]
    if mode == "pre-RNN":
        x = rnn(x.view(-1, pre_steps, 7200 // pre_steps))
    h = x.reshape(-1, 1, 7200)
    if net == "RRNet":
        i = 0
        while f"ResBlock_list.{i}.0.ResBlock.0.weight" in sd:
            p = f"ResBlock_list.{i}.0."
            y = F.conv1d(h, sd[p + "ResBlock.0.weight"], sd[p + "ResBlock.0.bias"], padding=1)
            y = F.conv1d(
                y.relu(), sd[p + "ResBlock.2.weight"], sd[p + "ResBlock.2.bias"], padding=1
            )
            if p + "downsample.0.weight" in sd:
                y = y + F.conv1d(h, sd[p + "downsample.0.weight"], sd[p + "downsample.0.bias"])
            else:
                y = y + h
            h = F.avg_pool1d(y, 2)
            i += 1
        h = h.relu()
    else:
        h = F.conv1d(h, sd["conv1.0.weight"], sd["conv1.0.bias"], padding=1).relu()
        h = F.conv1d(h, sd["conv2.0.weight"], sd["conv2.0.bias"], padding=1).relu()
        h = F.max_pool1d(h, 4)
    if mode == "post-RNN":
        h = rnn(h.permute(0, 2, 1).reshape(b, -1, 360))
    h = F.linear(h.flatten(1), sd["fc1.0.weight"], sd["fc1.0.bias"]).relu()
    h = F.linear(h, sd["fc2.0.weight"], sd["fc2.0.bias"]).relu()
    mu = F.linear(h, sd["mu.weight"], sd["mu.bias"])
    var = F.softplus(F.linear(h, sd["sigma.0.weight"], sd["sigma.0.bias"]))
    return mu, var
