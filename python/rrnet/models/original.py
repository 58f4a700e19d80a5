"""Import of the authors' published weights (``weight_best.pkl`` files, method §3).

Their files are ``torch.save(state_dict)`` pickles; they are read with
``torch.load(weights_only=True)`` only, and converted once into this project's
pickle-free checkpoint format (:mod:`rrnet.models.checkpoint`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rrnet.labels import GROUPS, label_indices, read_label_config
from rrnet.models.config import ModelConfig, canonical_net
from rrnet.models.heads import GaussianNet
from rrnet.models.keys import StateDictMismatch, check_state_dict
from rrnet.models.normalization import Normalization

WEIGHT_FILE = "weight_best.pkl"
_MEMBER_DIR = re.compile(r"^(SP|CA)(\d+)$")
_RESBLOCK_KEY = re.compile(r"^ResBlock_list\.(\d+)\.0\.ResBlock\.0\.weight$")


def read_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an authors' ``weight_best.pkl`` with ``torch.load(weights_only=True)``."""
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError ...
        raise ValueError(f"{path}: not a loadable PyTorch state_dict ({err})") from err
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(f"{path}: expected a state_dict (str -> tensor), got {type(obj).__name__}")
    return dict(obj)


def infer_config(
    state_dict: Mapping[str, torch.Tensor],
    net: str = "RRNet",
    mode: str = "post-RNN",
    num_labels: int = 3,
    *,
    channels: Sequence[int] | None = None,
    n_subbands: int | None = None,
) -> ModelConfig:
    """The :class:`ModelConfig` an authors' state_dict was made with.

    ``net``, ``mode`` and ``num_labels`` are the caller's claim (checked afterwards);
    RRNet channel widths and the sub-band count are read from the file when not given.
    The authors' pre-RNN code cuts the input into 20 sub-bands of 360 pixels, while
    method §3 describes 40 of 180; reading the RNN size from the file loads either.
    """
    net = canonical_net(net)
    if net == "rrnet" and channels is None:
        found = {
            int(m.group(1)): int(v.shape[0])
            for k, v in state_dict.items()
            if (m := _RESBLOCK_KEY.match(k)) and v.ndim == 3
        }
        if found and sorted(found) == list(range(len(found))):
            channels = [found[i] for i in range(len(found))]
    kwargs: dict[str, Any] = {"net": net, "mode": mode, "num_labels": num_labels}
    if channels is not None:
        kwargs["channels"] = tuple(channels)
    config = ModelConfig(**kwargs)
    w_ih = state_dict.get("rnn.weight_ih_l0")
    if n_subbands is None and mode != "raw" and w_ih is not None and w_ih.ndim == 2:
        total = config.n_pixels if mode == "pre-RNN" else config.conv_features
        size = int(w_ih.shape[1])
        if size > 0 and total % size == 0:
            n_subbands = total // size
    if n_subbands is not None:
        config = ModelConfig(**kwargs, n_subbands=n_subbands)
    return config


def load_original(
    path: str | Path,
    net: str = "RRNet",
    mode: str = "post-RNN",
    num_labels: int = 3,
    *,
    channels: Sequence[int] | None = None,
    n_subbands: int | None = None,
) -> GaussianNet:
    """Load an authors' ``weight_best.pkl`` into the equivalent network, in eval mode.

    Parameters
    ----------
    path
        The ``torch.save``d state_dict (authors' key names, method §3).
    net, mode, num_labels
        Architecture ("RRNet"/"StarNet"; "post-RNN", "pre-RNN" or "raw") and label count
        (3 for SP, 14 for CA).
    channels, n_subbands
        Override what is otherwise read from the file (RRNet widths, N_s).

    Returns
    -------
    GaussianNet
        ``forward(x)`` on standardised float32 ``[B, 7200]`` returns ``(mu, var)``.

    Raises
    ------
    rrnet.models.keys.StateDictMismatch
        Naming every missing, unexpected or mis-shaped key.
    """
    from rrnet.models.registry import build_model

    state_dict = read_original_state_dict(path)
    config = infer_config(
        state_dict, net, mode, num_labels, channels=channels, n_subbands=n_subbands
    )
    check_state_dict(state_dict, config, source=str(path))
    model = build_model(config)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


@dataclass
class ImportedGroup:
    """One model group (SP or CA) of the authors' release, converted."""

    name: str
    model_config: ModelConfig
    labels: tuple[str, ...]
    normalization: Normalization
    member_state_dicts: list[dict[str, torch.Tensor]] = field(repr=False)
    sources: list[Path]
    checkpoint: Path | None = None


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_original_members(model_dir: str | Path) -> dict[str, list[Path]]:
    """``{"SP": [SP0/weight_best.pkl, ...], "CA": [...]}`` of an authors' model directory.

    Member folders must be numbered contiguously from 0; a group may be absent, but
    not both.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    found: dict[str, dict[int, Path]] = {}
    for sub in model_dir.iterdir():
        match = _MEMBER_DIR.match(sub.name)
        if match and sub.is_dir():
            found.setdefault(match.group(1), {})[int(match.group(2))] = sub
    if not found:
        raise FileNotFoundError(f"{model_dir}: no SP<i>/ or CA<i>/ member folders")
    groups: dict[str, list[Path]] = {}
    for group in ("SP", "CA"):
        if group not in found:
            continue
        indices = sorted(found[group])
        if indices != list(range(len(indices))):
            raise FileNotFoundError(
                f"{model_dir}: {group} members must be numbered 0..n-1, found "
                + ", ".join(f"{group}{i}" for i in indices)
            )
        files = [found[group][i] / WEIGHT_FILE for i in indices]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise FileNotFoundError(f"missing weight file(s): {', '.join(absent)}")
        groups[group] = files
    return groups


def load_original_ensemble(
    model_dir: str | Path,
    label_config: str | Path | Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    *,
    net: str = "RRNet",
    mode: str = "post-RNN",
) -> dict[str, ImportedGroup]:
    """Import the authors' release layout and (with ``out``) write checkpoints.

    Parameters
    ----------
    model_dir
        Folder with ``SP0..SPn/weight_best.pkl`` and/or ``CA0..CAn/weight_best.pkl``.
    label_config
        ``label_config.pkl`` (read with a restricted unpickler) or its loaded dict;
        default ``model_dir/label_config.pkl``.
    out
        If given, ``out/SP`` and ``out/CA`` are written as rrnet checkpoints, usable
        as ``rrnet-infer --model out/SP --model out/CA``.
    net, mode
        The release's architecture (the authors' catalogue: RRNet, post-RNN).

    Returns
    -------
    dict
        Group name -> :class:`ImportedGroup` (with ``checkpoint`` set when written).
    """
    from rrnet.models.checkpoint import save_checkpoint

    model_dir = Path(model_dir)
    if label_config is None:
        label_config = model_dir / "label_config.pkl"
    config_dict = (
        dict(label_config)
        if isinstance(label_config, Mapping)
        else read_label_config(Path(label_config))
    )
    result: dict[str, ImportedGroup] = {}
    for group, files in find_original_members(model_dir).items():
        labels = GROUPS[group]
        idx = label_indices(config_dict["label_list"], labels)
        norm = Normalization(
            flux_mean=config_dict["flux_mean"],
            flux_std=config_dict["flux_std"],
            label_mean=config_dict["label_mean"][idx],
            label_std=config_dict["label_std"][idx],
        )
        state_dicts = [read_original_state_dict(f) for f in files]
        config = infer_config(state_dicts[0], net, mode, len(labels))
        for f, sd in zip(files, state_dicts, strict=True):
            check_state_dict(sd, config, source=str(f))
        imported = ImportedGroup(group, config, labels, norm, state_dicts, files)
        if out is not None:
            imported.checkpoint = save_checkpoint(
                Path(out) / group,
                model_config=config,
                labels=labels,
                member_state_dicts=state_dicts,
                flux_mean=norm.flux_mean,
                flux_std=norm.flux_std,
                label_mean=norm.label_mean,
                label_std=norm.label_std,
                preprocessing=None,
                training={
                    "source": "authors' release (imported)",
                    "imported_from": str(model_dir.resolve()),
                    "member_files": [str(f.relative_to(model_dir)) for f in files],
                    "member_sha256": [_file_sha256(f) for f in files],
                },
            )
        result[group] = imported
    return result


__all__ = [
    "ImportedGroup",
    "StateDictMismatch",
    "find_original_members",
    "infer_config",
    "load_original",
    "load_original_ensemble",
    "read_original_state_dict",
]
