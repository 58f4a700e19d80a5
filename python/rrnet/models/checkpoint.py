"""The ensemble checkpoint: a directory of JSON and safetensors, no pickle anywhere.

Layout (``format_version`` 1)::

    config.json                {"format": "rrnet-checkpoint", "format_version": 1,
                                "model": ModelConfig, "labels": [...], "n_members": M,
                                "preprocessing": {...} | null, "training": {...},
                                "versions": {...}}
    normalization.safetensors  flux_mean [P], flux_std [P], label_mean [L], label_std [L]
    member-{i}.safetensors     one state_dict per member (the authors' key names)

A checkpoint holds M members of one architecture and one label set; the config alone
rebuilds the networks (:func:`rrnet.models.build_model`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from rrnet.models.calibration import CALIBRATION_FILE
from rrnet.models.config import ModelConfig
from rrnet.models.keys import StateDictMismatch, check_state_dict
from rrnet.models.normalization import Normalization
from rrnet.models.ood_subspace import SUBSPACE_FILE
from rrnet.utils.atomic import as_created
from rrnet.utils.faults import is_machine_fault

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "StateDictMismatch",
    "checkpoint_hash",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
    "split_keys",
    "star_column",
]

FORMAT = "rrnet-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
NORMALIZATION_FILE = "normalization.safetensors"
HISTORY_FILE = "history.parquet"
"""Per-epoch losses of every member, written by training."""
SPLIT_FILE = "split.parquet"
"""Training's split by star: columns ``row``, the star column, ``split``."""
TRAINING_STATE_FILE = "train_state.pt"
"""rrnet-train's resumable state, present until the checkpoint is finished (or kept)."""
DEFAULT_STAR_COLUMN = "star_id"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete or inconsistent."""


def member_file(index: int) -> str:
    """File name of member ``index`` (0-based)."""
    return f"member-{index}.safetensors"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: everything needed to rebuild and run the ensemble."""

    path: Path
    model_config: ModelConfig
    labels: tuple[str, ...]
    normalization: Normalization
    member_state_dicts: list[dict[str, torch.Tensor]] = field(repr=False)
    preprocessing: dict[str, Any] | None
    training: dict[str, Any]
    versions: dict[str, str]

    @property
    def n_members(self) -> int:
        return len(self.member_state_dicts)


def software_versions() -> dict[str, str]:
    """Versions recorded in every checkpoint (provenance of the weights): with the git
    commit of rrnet's source when it runs from its repository (:mod:`rrnet.utils.revision`)."""
    from rrnet import __version__
    from rrnet.utils.revision import source_commit

    commit = source_commit()
    return {
        "rrnet": __version__,
        **({"rrnet_commit": commit} if commit else {}),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def _is_checkpoint_dir(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def save_checkpoint(
    path: str | Path,
    *,
    model_config: ModelConfig,
    labels: Sequence[str],
    member_state_dicts: Sequence[Mapping[str, torch.Tensor]],
    flux_mean: np.ndarray,
    flux_std: np.ndarray,
    label_mean: np.ndarray,
    label_std: np.ndarray,
    preprocessing: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically and return its path.

    The files are written to a temporary sibling directory which then replaces
    ``path``; an existing checkpoint there is swapped out and removed only after the
    new one is in place. A directory that is not an rrnet checkpoint (and not empty)
    is never overwritten.

    Raises
    ------
    CheckpointError
        If labels, statistics and configuration disagree, or ``path`` holds other data.
    rrnet.models.keys.StateDictMismatch
        If a member's state_dict does not fit ``model_config`` (names the keys).
    """
    path = Path(path)
    labels = [str(name) for name in labels]
    norm = _checked_contents(
        model_config, labels, member_state_dicts, (flux_mean, flux_std, label_mean, label_std)
    )
    if path.exists() and not (
        path.is_dir() and (_is_checkpoint_dir(path) or not any(path.iterdir()))
    ):
        raise CheckpointError(f"{path} exists and is not an rrnet checkpoint; not overwriting it")

    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_config.to_dict(),
        "labels": labels,
        "n_members": len(member_state_dicts),
        "preprocessing": preprocessing,
        "training": training or {},
        "versions": software_versions(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_files(tmp, config, norm, member_state_dicts)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _checked_contents(
    model_config: ModelConfig,
    labels: list[str],
    member_state_dicts: Sequence[Mapping[str, torch.Tensor]],
    statistics: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> Normalization:
    """The normalisation of ``statistics``; refuses a checkpoint whose labels, statistics
    and members disagree with the config."""
    if len(labels) != model_config.num_labels:
        raise CheckpointError(
            f"{len(labels)} labels given but the model predicts {model_config.num_labels}"
        )
    if len(set(labels)) != len(labels):
        raise CheckpointError(f"duplicate label names: {labels}")
    if not member_state_dicts:
        raise CheckpointError("a checkpoint needs at least one member")
    norm = Normalization(*statistics)
    if norm.flux_mean.shape != (model_config.n_pixels,):
        raise CheckpointError(
            f"flux_mean has shape {norm.flux_mean.shape}, expected ({model_config.n_pixels},)"
        )
    if norm.label_mean.shape != (len(labels),):
        raise CheckpointError(
            f"label_mean has shape {norm.label_mean.shape}, expected ({len(labels)},)"
        )
    for i, sd in enumerate(member_state_dicts):
        check_state_dict(sd, model_config, source=f"member {i}")
    return norm


def _write_files(
    tmp: Path,
    config: dict[str, Any],
    norm: Normalization,
    member_state_dicts: Sequence[Mapping[str, torch.Tensor]],
) -> None:
    """config.json, the normalisation and one safetensors file per member, into ``tmp``."""
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    safetensors.torch.save_file(
        {
            "flux_mean": torch.from_numpy(norm.flux_mean),
            "flux_std": torch.from_numpy(norm.flux_std),
            "label_mean": torch.from_numpy(norm.label_mean),
            "label_std": torch.from_numpy(norm.label_std),
        },
        str(tmp / NORMALIZATION_FILE),
    )
    as_created(tmp / NORMALIZATION_FILE)
    for i, sd in enumerate(member_state_dicts):
        tensors = {key: value.detach().cpu().contiguous().clone() for key, value in sd.items()}
        safetensors.torch.save_file(tensors, str(tmp / member_file(i)))
        as_created(tmp / member_file(i))


def _check_readable(file: Path) -> None:
    """A file this user may not read is said so (safetensors reports it as "No such file
    or directory")."""
    if file.exists() and not os.access(file, os.R_OK):
        raise CheckpointError(f"{file}: not readable by this user (permission denied)")


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an old ``target`` is kept until the move succeeded."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint (cheap: no weights are read)."""
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(
            f"{path} is not an rrnet checkpoint (no {CONFIG_FILE}; the authors' released "
            "weights become one with rrnet-import-original)"
        )
    try:
        config = json.loads(config_path.read_text())
    except ValueError as err:
        raise CheckpointError(f"{config_path}: invalid JSON ({err})") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path}: not an rrnet checkpoint (format != {FORMAT!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: format_version {config.get('format_version')!r} is not supported "
            f"(this rrnet reads {FORMAT_VERSION})"
        )
    return config


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`; every member is validated."""
    path = Path(path)
    config = read_checkpoint_config(path)
    try:
        model_config = ModelConfig.from_dict(config["model"])
        labels = tuple(str(name) for name in config["labels"])
        n_members = int(config["n_members"])
        if not 0 < n_members <= 1000:
            raise ValueError(f"n_members {n_members} is not in 1..1000")
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as err:
        raise CheckpointError(f"{path / CONFIG_FILE}: malformed ({_one_line(err)})") from err
    _check_readable(path / NORMALIZATION_FILE)
    try:
        stats = safetensors.torch.load_file(str(path / NORMALIZATION_FILE))
        norm = Normalization(**{k: stats[k].numpy() for k in Normalization.__dataclass_fields__})
    except Exception as err:  # SafetensorError (damaged file) is a plain Exception
        if is_machine_fault(err):
            raise
        raise CheckpointError(
            f"{path / NORMALIZATION_FILE}: unreadable ({_one_line(err)})"
        ) from err
    if len(labels) != model_config.num_labels or norm.label_mean.shape != (len(labels),):
        raise CheckpointError(f"{path}: labels, label statistics and model disagree")
    members = []
    for i in range(n_members):
        file = path / member_file(i)
        if not file.is_file():
            raise CheckpointError(f"{path}: member file {file.name} is missing")
        _check_readable(file)
        try:
            sd = safetensors.torch.load_file(str(file), device=str(device))
        except Exception as err:  # damaged or not safetensors at all
            if is_machine_fault(err):
                raise
            raise CheckpointError(
                f"{file}: not a readable safetensors file ({_one_line(err)})"
            ) from err
        check_state_dict(sd, model_config, source=str(file))
        members.append(sd)
    return Checkpoint(
        path=path,
        model_config=model_config,
        labels=labels,
        normalization=norm,
        member_state_dicts=members,
        preprocessing=config.get("preprocessing"),
        training=config.get("training") or {},
        versions=config.get("versions") or {},
    )


CIRCUMSTANTIAL_CONFIG: tuple[tuple[str, ...], ...] = (
    ("training", "wall_time_s"),
    ("training", "data", "store"),
    ("training", "data", "labels"),
    ("training", "domain", "store"),
    ("versions",),
)
"""config.json entries that say when, where and with which library versions a checkpoint
was trained, not what it computes: left out of :func:`checkpoint_hash`, so that the same
training run repeated (elsewhere, later) has the same hash."""


def _content_digest(path: Path) -> bytes:
    """SHA-256 of what a file holds, not of how it was serialised: config.json without
    :data:`CIRCUMSTANTIAL_CONFIG`, canonical JSON; a safetensors header canonical JSON (its
    metadata came out in varying order); every other byte as written."""
    raw = path.read_bytes()
    if path.name == CONFIG_FILE:
        config = json.loads(raw)
        for keys in CIRCUMSTANTIAL_CONFIG:
            parent = config
            for key in keys[:-1]:
                parent = parent.get(key) if isinstance(parent, dict) else None
            if isinstance(parent, dict):
                parent.pop(keys[-1], None)
        raw = json.dumps(config, sort_keys=True).encode()
    elif path.suffix == ".safetensors" and len(raw) >= 8:
        size = int.from_bytes(raw[:8], "little")
        if 8 + size <= len(raw):
            with contextlib.suppress(ValueError):
                header = json.dumps(json.loads(raw[8 : 8 + size]), sort_keys=True).encode()
                raw = header + b"\0" + raw[8 + size :]
    return hashlib.sha256(raw).digest()


def checkpoint_hash(path: str | Path) -> str:
    """SHA-256 (hex) over the checkpoint's files, names included: identifies the weights,
    the error calibration and the OOD test (the content of each file, see
    :func:`_content_digest`: not when or where it was trained)."""
    path = Path(path)
    config = read_checkpoint_config(path)
    try:
        n_members = int(config["n_members"])
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise CheckpointError(f"{path / CONFIG_FILE}: malformed n_members ({err})") from err
    names = [CONFIG_FILE, NORMALIZATION_FILE] + [member_file(i) for i in range(n_members)]
    if (path / CALIBRATION_FILE).is_file():  # the errors it quotes are part of its identity
        names.append(CALIBRATION_FILE)
    if (path / SUBSPACE_FILE).is_file():  # so is the OOD test it flags rows with
        names.append(SUBSPACE_FILE)
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + _content_digest(path / name))
    return digest.hexdigest()


def star_column(checkpoint: str | os.PathLike[str]) -> str:
    """The column the checkpoint's split is keyed by."""
    config = Path(checkpoint) / "config.json"
    if not config.is_file():
        return DEFAULT_STAR_COLUMN
    try:
        training = json.loads(config.read_text(encoding="utf-8")).get("training") or {}
    except (ValueError, AttributeError) as exc:  # not JSON, or not an object
        raise ValueError(f"{config} is not a readable checkpoint config ({exc})") from None
    data, split = training.get("data") or {}, training.get("split") or {}
    return str(data.get("star_column") or split.get("by") or DEFAULT_STAR_COLUMN)


def split_keys(checkpoint: str | os.PathLike[str]) -> tuple[str, dict[str, list[object]]]:
    """``(star column, {"train": [...], "valid": [...], "test": [...]})`` of a checkpoint."""
    path = Path(checkpoint) / SPLIT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {SPLIT_FILE} in checkpoint {checkpoint}")
    import polars as pl  # here, not above: models and training import without it (bare GPU nodes)

    column = star_column(checkpoint)
    try:
        table = pl.read_parquet(path)
    except pl.exceptions.PolarsError as exc:  # cut short or not Parquet; a full disk is not
        if is_machine_fault(exc):
            raise
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path} is not a readable Parquet file ({why})") from None
    missing = [c for c in (column, "split") if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}")
    return column, {
        name: table.filter(pl.col("split") == name).get_column(column).unique().to_list()
        for name in ("train", "valid", "test")
    }
