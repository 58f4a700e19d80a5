"""Training settings: the paper's recipe as defaults, stored in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Settings that change how a run executes but not its result (on one device).
RUNTIME_FIELDS: frozenset[str] = frozenset({"device", "eval_batch_size", "ram_limit_gb"})


@dataclass(frozen=True)
class TrainSettings:
    """How an ensemble is trained (SPEC section 4).

    Epochs are numbered from 1, as in the paper: with ``augment_from=6`` the noise
    augmentation is applied in epochs 6, 7, ... (the first five epochs are clean).
    ``lr_step`` is counted in epochs: the learning rate is multiplied by ``lr_gamma``
    after epochs 10, 20, ... (``StepLR`` stepped once per epoch).

    Parameters
    ----------
    members
        M, the number of ensemble members trained together.
    epochs, batch_size, lr, lr_step, lr_gamma
        Adam with ``StepLR(lr_step, lr_gamma)``.
    augment_from
        First (1-based) epoch with noise augmentation; 0 disables it.
    noise_fraction, noise_sigma
        Each input pixel independently gets N(0, noise_sigma) added, in standardised
        flux space, with probability ``noise_fraction``.
    rv_shift_kms
        RRNet-cp: from ``augment_from`` on, every training spectrum is Doppler-shifted
        by a velocity drawn uniformly from [-rv_shift_kms, rv_shift_kms] km/s
        (0 disables it).
    seed
        Seeds everything: member initialisations, data orders, dropout, augmentation.
    device
        "auto" (CUDA if present), "cpu", "cuda", "cuda:1", ...
    amp, compile
        bfloat16 autocast and ``torch.compile``; used only on CUDA.
    eval_batch_size
        Batch size of validation/test evaluation.
    ram_limit_gb
        Training flux is read into memory if it fits in this many GiB, else it is read
        from the store batch by batch.
    """

    members: int = 6
    epochs: int = 30
    batch_size: int = 256
    lr: float = 5e-4
    lr_step: int = 10
    lr_gamma: float = 0.1
    augment_from: int = 6
    noise_fraction: float = 0.25
    noise_sigma: float = 1.0
    rv_shift_kms: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    compile: bool = True
    eval_batch_size: int = 1024
    ram_limit_gb: float = 8.0

    def __post_init__(self) -> None:
        positive = ("members", "epochs", "batch_size", "lr_step", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must lie in (0, 1], got {self.lr_gamma}")
        if self.augment_from < 0:
            raise ValueError(f"augment_from must be >= 0 (0 = off), got {self.augment_from}")
        if not 0 <= self.noise_fraction <= 1:
            raise ValueError(f"noise_fraction must lie in [0, 1], got {self.noise_fraction}")
        if self.noise_sigma < 0 or self.rv_shift_kms < 0:
            raise ValueError("noise_sigma and rv_shift_kms must be >= 0")
        if self.ram_limit_gb < 0:
            raise ValueError(f"ram_limit_gb must be >= 0, got {self.ram_limit_gb}")

    def augments(self, epoch: int) -> bool:
        """Whether the (1-based) ``epoch`` uses augmentation."""
        return self.augment_from > 0 and epoch >= self.augment_from

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainSettings fields: {', '.join(unknown)}")
        return cls(**data)

    def result_dict(self) -> dict[str, Any]:
        """The settings that determine the result (compared when resuming)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
