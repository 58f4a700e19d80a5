"""Fine-tuning: start every member from an existing checkpoint (``rrnet-train --init``).

Member m starts from the checkpoint's member ``m mod K``. The convolutions and the RNN
saw flux standardised with the checkpoint's per-pixel statistics, so those statistics
are kept. Labels: with the checkpoint's own label set the whole head is kept, and the
label normalisation is, by choice, the checkpoint's ("checkpoint": the head's outputs
keep their meaning) or recomputed from the new training split ("data": the mu layer is
rescaled exactly into the new units; the variance layer is kept as is). With another
label set the output layers (mu, sigma) are new (the fresh initialisation of the run)
and the normalisation is the new data's. Frozen parameter groups get no gradient
and no optimizer state. All of this is recorded under ``training.init`` in config.json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rrnet.models.config import ModelConfig
from rrnet.models.normalization import Normalization

FREEZE_GROUPS: dict[str, tuple[str, ...]] = {
    "conv": ("ResBlock_list.", "conv1.", "conv2."),
    "rnn": ("rnn.",),
    "head": ("fc1.", "fc2."),
    "out": ("mu.", "sigma."),
}
"""``--freeze`` group names -> parameter-name prefixes (the authors' key names)."""

LABEL_NORMS = ("auto", "checkpoint", "data")
_OUT_PREFIXES = FREEZE_GROUPS["out"]


@dataclass
class Initialization:
    """What a fine-tuning run starts from (see the module docstring)."""

    state_dicts: list[dict[str, torch.Tensor]]
    labels: tuple[str, ...]
    normalization: Normalization
    new_head: bool
    label_norm: str
    freeze: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)

    def frozen(self, name: str) -> bool:
        """Whether parameter ``name`` is frozen."""
        return any(name.startswith(p) for g in self.freeze for p in FREEZE_GROUPS[g])

    def normalization_for(self, fresh: Normalization) -> Normalization:
        """The run's normalisation: the checkpoint's flux statistics, and the label
        statistics chosen by ``label_norm`` (``fresh``: from the new training split)."""
        labels = self.normalization if self.label_norm == "checkpoint" else fresh
        return Normalization(
            self.normalization.flux_mean, self.normalization.flux_std,
            labels.label_mean, labels.label_std,
        )  # fmt: skip

    def member_state(
        self, member: int, fresh: dict[str, torch.Tensor], norm: Normalization
    ) -> dict[str, torch.Tensor]:
        """Start of member ``member``: the checkpoint's weights (``fresh``: this run's own
        initialisation, used for a new output layer), in the units of ``norm``."""
        sd = {
            k: v.detach().clone().float()
            for k, v in self.state_dicts[member % len(self.state_dicts)].items()
        }
        if self.new_head:
            sd.update({k: fresh[k] for k in fresh if k.startswith(_OUT_PREFIXES)})
        elif self.label_norm == "data":  # mu_new = (mu_old * s_old + m_old - m_new) / s_new
            old = self.normalization
            scale = torch.as_tensor(old.label_std / norm.label_std, dtype=torch.float32)
            shift = torch.as_tensor(
                (old.label_mean - norm.label_mean) / norm.label_std, dtype=torch.float32
            )
            sd["mu.weight"] = sd["mu.weight"] * scale[:, None]
            sd["mu.bias"] = sd["mu.bias"] * scale + shift
        return sd


def load_initialization(
    path: str | Path,
    label_names: Sequence[str],
    *,
    freeze: Sequence[str] = (),
    label_norm: str = "auto",
) -> tuple[Initialization, ModelConfig]:
    """The :class:`Initialization` from checkpoint ``path`` for a run fitting
    ``label_names``, and the ModelConfig of that run (the checkpoint's, with as many
    outputs as labels)."""
    from rrnet.models.checkpoint import checkpoint_hash, load_checkpoint

    unknown = sorted(set(freeze) - set(FREEZE_GROUPS))
    if unknown:
        raise ValueError(
            f"unknown --freeze group(s) {', '.join(unknown)}; expected {', '.join(FREEZE_GROUPS)}"
        )
    if label_norm not in LABEL_NORMS:
        raise ValueError(
            f"label normalisation must be one of {', '.join(LABEL_NORMS)}, got {label_norm!r}"
        )
    ckpt = load_checkpoint(path)
    names = tuple(label_names)
    state_dicts, norm, kept = _label_subset(ckpt, names)  # CA from an all-label checkpoint
    new_head = names != tuple(ckpt.labels) and kept is None
    if new_head and label_norm == "checkpoint":
        raise ValueError(
            f"the checkpoint fits {', '.join(ckpt.labels)}, not {', '.join(names)}: its label "
            "normalisation cannot be kept (use data)"
        )
    if new_head and "out" in freeze:
        raise ValueError("a new label set needs a new output layer: it cannot be frozen")
    resolved = ("data" if new_head else "checkpoint") if label_norm == "auto" else label_norm
    config = dataclasses.replace(ckpt.model_config, num_labels=len(names))
    provenance = {
        "checkpoint": str(Path(path).resolve()),
        "checkpoint_hash": checkpoint_hash(path),
        "checkpoint_labels": list(ckpt.labels),
        "checkpoint_members": ckpt.n_members,
        "new_head": new_head,
        "output_rows_kept": kept,
        "freeze": sorted(set(freeze)),
        "flux_normalization": "checkpoint",
        "label_normalization": resolved,
        "checkpoint_label_mean": np.asarray(ckpt.normalization.label_mean).tolist(),
        "checkpoint_label_std": np.asarray(ckpt.normalization.label_std).tolist(),
    }
    init = Initialization(
        state_dicts=state_dicts, labels=names if kept is not None else tuple(ckpt.labels),
        normalization=norm, new_head=new_head, label_norm=resolved,
        freeze=tuple(sorted(set(freeze))), provenance=provenance,
    )  # fmt: skip
    return init, config


def _label_subset(
    ckpt: Any, names: tuple[str, ...]
) -> tuple[list[dict[str, torch.Tensor]], Normalization, list[int] | None]:
    """The checkpoint's members and normalisation for ``names``: when every wanted label
    is one of the checkpoint's (in any order, e.g. CA of an all-label checkpoint), only
    their output rows and label statistics (and the row indices); else all of it, None."""
    labels = tuple(ckpt.labels)
    if names == labels or not set(names) <= set(labels):
        return list(ckpt.member_state_dicts), ckpt.normalization, None
    rows = [labels.index(n) for n in names]
    index = torch.as_tensor(rows)
    members = [
        {k: (v[index] if k.startswith(_OUT_PREFIXES) else v) for k, v in sd.items()}
        for sd in ckpt.member_state_dicts
    ]
    old = ckpt.normalization
    norm = Normalization(
        old.flux_mean, old.flux_std,
        np.asarray(old.label_mean)[rows], np.asarray(old.label_std)[rows],
    )  # fmt: skip
    return members, norm, rows
