"""Training settings: the paper's recipe as defaults, stored in every checkpoint."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from rrnet.grid import C_KMS
from rrnet.models.config import ModelConfig, reject_unknown_fields
from rrnet.training.split import DEFAULT_FRACTIONS

# Settings that change how a run executes but not its result (on one device).
RUNTIME_FIELDS: frozenset[str] = frozenset({"device", "eval_batch_size", "ram_limit_gb"})


@dataclass(frozen=True)
class TrainSettings:
    """How an ensemble is trained (method §4).

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
    formulation
        How the members train together: "auto" ("grouped" convolutions on a CPU,
        "vmap" on a GPU, the faster one on each), "grouped" or "vmap". They compute the
        same function; only the dropout masks drawn (hence the bits) differ.
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
    formulation: str = "auto"

    def __post_init__(self) -> None:
        positive = ("members", "epochs", "batch_size", "lr_step", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must lie in (0, 1], got {self.lr_gamma}")
        if self.augment_from < 0:
            raise ValueError(f"augment_from must be >= 0 (0 = off), got {self.augment_from}")
        if not 0 <= self.noise_fraction <= 1:
            raise ValueError(f"noise_fraction must lie in [0, 1], got {self.noise_fraction}")
        if not 0 <= self.noise_sigma < math.inf:
            raise ValueError(f"noise_sigma must be a finite number >= 0, got {self.noise_sigma}")
        if not 0 <= self.rv_shift_kms < C_KMS:
            raise ValueError(
                f"rv_shift_kms must lie in [0, {C_KMS:g}) km/s (the speed of light), "
                f"got {self.rv_shift_kms}"
            )
        if self.formulation not in ("auto", "grouped", "vmap"):
            raise ValueError(f"formulation must be auto, grouped or vmap, got {self.formulation!r}")
        if not 0 <= self.ram_limit_gb < math.inf:
            raise ValueError(f"ram_limit_gb must be a finite number >= 0, got {self.ram_limit_gb}")

    def resolved_formulation(self, device_type: str) -> str:
        """The formulation used on a device of this type ("cpu", "cuda", ...)."""
        if self.formulation != "auto":
            return self.formulation
        return "grouped" if device_type == "cpu" else "vmap"

    def augments(self, epoch: int) -> bool:
        """Whether the (1-based) ``epoch`` uses augmentation."""
        return self.augment_from > 0 and epoch >= self.augment_from

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        reject_unknown_fields(cls, data)
        return cls(**data)

    def result_dict(self) -> dict[str, Any]:
        """The settings that determine the result (compared when resuming)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}


@dataclass(frozen=True)
class TrainOptions:
    """What :func:`rrnet.training.api.train_ensemble` trains, on which rows, and how the
    run is driven. The rule between the two dataclasses here: :class:`TrainSettings` is
    the recipe (stored in the checkpoint, compared on resume); everything else a caller
    chooses (labels, network, data selection, split, run control) is a TrainOptions field.

    Parameters
    ----------
    labels_to_fit
        "SP", "CA", "all", or label column names.
    arch, mode, model_config
        A paper model name and RNN placement, or an explicit ModelConfig (wins).
    settings
        The training recipe.
    key, star_column, include_flagged, predict_rv
        Join column(s) of the labels table, the column the split groups by, whether to
        keep rows failing the quality cuts, and RRNet-ur's extra rv label.
    split_seed, split_fractions, split_from
        Seed (default ``settings.seed``) and train/valid/test fractions of the split;
        a checkpoint whose stars keep their split (default: ``init``'s, when it has one;
        ``"none"``: split anew),
        so that no star it trained on becomes a test star here (an SP and a CA
        checkpoint trained from one labels table agree the same way).
    resume, keep_state, progress, stop_after_epoch
        Run control (see :func:`rrnet.training.train_arrays`).
    init, freeze, label_norm
        Fine-tuning: the checkpoint every member starts from (its architecture wins over
        ``arch``/``mode``), the parameter groups kept fixed (conv, rnn, head, out), and
        the label normalisation (auto, checkpoint, data); see
        :mod:`rrnet.training.finetune`.
    calibration_form
        The error calibration's form (:func:`rrnet.models.calibration.resolve_form`;
        "auto": "balanced-scale" on >= 500 validation spectra, else "const").
    """

    labels_to_fit: str | tuple[str, ...] = "SP"
    arch: str = "rrnet"
    mode: str | None = None
    model_config: ModelConfig | None = None
    settings: TrainSettings = field(default_factory=TrainSettings)
    key: tuple[str, ...] = ("star_id",)
    star_column: str = "star_id"
    include_flagged: bool = False
    predict_rv: bool = False
    split_seed: int | None = None
    split_fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    split_from: str | None = None
    resume: bool = False
    keep_state: bool = False
    progress: bool = True
    stop_after_epoch: int | None = None
    init: str | None = None
    freeze: tuple[str, ...] = ()
    label_norm: str = "auto"
    calibration_form: str = "auto"

    def __post_init__(self) -> None:
        from rrnet.io.catalog import key_columns  # polars: not at import (fast --help)

        object.__setattr__(self, "freeze", tuple(self.freeze))
        # Sequences given as lists are stored as tuples (the dataclass is frozen).
        if not isinstance(self.labels_to_fit, str):
            object.__setattr__(self, "labels_to_fit", tuple(self.labels_to_fit))
        object.__setattr__(self, "key", key_columns(self.key))  # "obsid" is one column
        if not self.key:  # a join on nothing (it failed deep inside polars)
            raise ValueError("key names no column (say star_id, or obsid)")
        object.__setattr__(self, "split_fractions", tuple(self.split_fractions))
