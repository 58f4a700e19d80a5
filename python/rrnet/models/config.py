"""Model configuration: a small JSON-serialisable dataclass from which a model is built."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Net = Literal["rrnet", "starnet"]
Mode = Literal["post-RNN", "pre-RNN", "raw"]

NETS: tuple[str, ...] = ("rrnet", "starnet")
MODES: tuple[str, ...] = ("post-RNN", "pre-RNN", "raw")

#: StarNet's fixed layout (Fabbro et al. 2018 as used by the RRNet authors).
STARNET_CHANNELS: tuple[int, int] = (4, 16)
STARNET_POOL: int = 4


def canonical_net(net: str) -> str:
    """Map "RRNet"/"StarNet" (the authors' spelling) to "rrnet"/"starnet"."""
    name = net.strip().lower()
    if name not in NETS:
        raise ValueError(f"unknown net {net!r}; expected one of {', '.join(NETS)}")
    return name


def _default_subbands(net: str, mode: str) -> int:
    """Sub-band count N_s used when the configuration leaves it open (method §3)."""
    if net == "starnet":
        return 20 if mode == "pre-RNN" else 80
    return 40


PRECISIONS = ("fp32", "tf32", "bf16")
"""Arithmetic the networks run in: exact fp32 (the default), TF32 products, bf16 autocast
(:func:`rrnet.models.device.use_precision`)."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network; stored in every checkpoint.

    Parameters
    ----------
    net
        ``"rrnet"`` (residual blocks) or ``"starnet"`` (two plain convolutions).
    mode
        Where the recurrent module sits: ``"post-RNN"`` (after the convolutions, the
        paper's RRNet), ``"pre-RNN"`` (on the raw input) or ``"raw"`` (no RNN; RRNet
        then is the paper's ResNet).
    num_labels
        Number of predicted labels (3 for SP, 14 for CA).
    channels
        RRNet residual-block output channels; one block per entry (N_r = len).
        Ignored for StarNet.
    n_subbands
        N_s: number of sub-bands (RNN time steps). ``None`` picks the method §3 default
        (RRNet 40; StarNet-R 80 post, 20 pre).
    hidden
        Widths of the two fully connected layers of the Gaussian head.
    dropout
        Dropout after each hidden layer (training only).
    n_pixels
        Input length (7200 for LAMOST MRS blue + red).
    """

    net: Net = "rrnet"
    mode: Mode = "post-RNN"
    num_labels: int = 3
    channels: tuple[int, ...] = (4, 8, 16)
    n_subbands: int | None = None
    hidden: tuple[int, int] = (256, 128)
    dropout: float = 0.3
    n_pixels: int = 7200

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "net", canonical_net(self.net))
        set_(self, "channels", tuple(int(c) for c in self.channels))
        set_(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.n_subbands is None:
            set_(self, "n_subbands", _default_subbands(self.net, self.mode))
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")
        if self.net == "rrnet" and (not self.channels or min(self.channels) < 1):
            raise ValueError(f"channels must be a non-empty list of positive ints: {self.channels}")
        if len(self.hidden) != 2 or min(self.hidden) < 1:
            raise ValueError(f"hidden must be two positive widths, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.net == "rrnet" and self.n_pixels % (2 ** len(self.channels)):
            raise ValueError(
                f"n_pixels={self.n_pixels} is not divisible by 2**{len(self.channels)} "
                "(one AvgPool1d(2) per residual block)"
            )
        if self.net == "starnet" and self.n_pixels % STARNET_POOL:
            raise ValueError(f"n_pixels={self.n_pixels} is not divisible by {STARNET_POOL}")
        if self.mode == "pre-RNN" and self.n_pixels % self.n_subbands:
            raise ValueError(
                f"pre-RNN: n_pixels={self.n_pixels} is not divisible by "
                f"n_subbands={self.n_subbands}"
            )
        if self.mode == "post-RNN" and self.conv_features % self.n_subbands:
            raise ValueError(
                f"post-RNN: {self.conv_features} features are not divisible by "
                f"n_subbands={self.n_subbands}"
            )

    # Derived sizes -------------------------------------------------------------------
    @property
    def conv_channels(self) -> int:
        """Channels leaving the convolutional stack."""
        return self.channels[-1] if self.net == "rrnet" else STARNET_CHANNELS[-1]

    @property
    def conv_length(self) -> int:
        """Samples per channel leaving the convolutional stack."""
        if self.net == "rrnet":
            return self.n_pixels // 2 ** len(self.channels)
        return self.n_pixels // STARNET_POOL

    @property
    def conv_features(self) -> int:
        """Flattened size of the convolutional output (= RNN output size in post-RNN)."""
        return self.conv_channels * self.conv_length

    @property
    def subband_size(self) -> int | None:
        """RNN input (= hidden) size, or None without a recurrent module."""
        if self.mode == "raw":
            return None
        total = self.n_pixels if self.mode == "pre-RNN" else self.conv_features
        return total // self.n_subbands

    # Serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists instead of tuples)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["channels"] = list(self.channels)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they mean a newer format)."""
        reject_unknown_fields(cls, data)
        kwargs = dict(data)
        for key in ("channels", "hidden"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def reject_unknown_fields(cls: type, data: Mapping[str, Any]) -> None:
    """ValueError naming the keys of ``data`` that are not fields of dataclass ``cls``
    (stored configs with unknown keys come from a newer format)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
