"""The training loop on in-memory (or memory-mapped) arrays: all members at once.

This module imports only torch, NumPy, safetensors and rrnet's model code, so that it
runs on a bare GPU machine (``benchmarks/gpu_train.py``); Polars and matplotlib are
imported only when a checkpoint directory is written.

Reproducibility: every random stream is derived from ``(seed, purpose, epoch,
member)``, never from RNG state carried across epochs: member initialisations, each
member's data order in each epoch, dropout masks (the global torch generator is
re-seeded at the start of every epoch) and augmentation draws. Resuming from the state
saved after epoch k therefore continues exactly as the uninterrupted run would
(bit for bit on CPU; on CUDA up to non-deterministic kernels).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from rrnet.models.checkpoint import SPLIT_FILE
from rrnet.models.config import ModelConfig
from rrnet.models.ensemble import ensemble_moments
from rrnet.models.heads import gaussian_nll
from rrnet.models.normalization import Normalization, standardize_flux
from rrnet.models.ood import ood_score, reference_dict
from rrnet.training import files
from rrnet.training.augment import add_pixel_noise, doppler_shift, random_velocities
from rrnet.training.settings import TrainSettings
from rrnet.training.split import Split
from rrnet.training.stats import flux_statistics, label_ranges, label_statistics
from rrnet.training.vectorize import MemberStack

STATE_FORMAT = "rrnet-train-state"
STATE_VERSION = 1

# Purposes of derived random streams (part of the reproducibility contract).
_INIT, _ORDER, _DROPOUT, _AUGMENT = 0, 1, 2, 3


class FluxRows(Protocol):
    """Row-indexable flux: ``flux[idx] -> float32 [len(idx), n_pixels]`` (ndarray, memmap,
    or a store adapter)."""

    shape: tuple[int, ...]

    def __getitem__(self, idx: np.ndarray) -> np.ndarray: ...


class CheckpointComplete(ValueError):
    """``resume`` was asked for a checkpoint whose training has already finished."""


@dataclass
class TrainResult:
    """What a training run produced (also written to ``out`` when given)."""

    label_names: list[str]
    normalization: Normalization
    state_dicts: list[dict[str, torch.Tensor]]
    best_epoch: list[int]
    best_valid_loss: list[float]
    history: list[dict[str, Any]]
    test_mean: np.ndarray
    test_std: np.ndarray
    ood: dict[str, Any]
    training: dict[str, Any]
    completed: bool = True
    out: Path | None = None
    timing: dict[str, float] = field(default_factory=dict)


def derive_seed(seed: int, *tags: int) -> int:
    """A 63-bit seed for one purpose (see module docstring), from the run's seed."""
    state = np.random.SeedSequence([seed, *tags]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; other strings as torch understands them."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def member_order(train_rows: np.ndarray, seed: int, epoch: int, members: int) -> np.ndarray:
    """``[M, n_train]``: each member's own shuffled order of the training rows in ``epoch``."""
    return np.stack(
        [
            np.random.default_rng(derive_seed(seed, _ORDER, epoch, m)).permutation(train_rows)
            for m in range(members)
        ]
    )


def split_digest(split: Split) -> str:
    """Short hash of the split's row indices (guards resuming on other data)."""
    h = hashlib.sha256()
    for part in (split.train, split.valid, split.test):
        h.update(np.asarray(part, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


class _Inputs:
    """Turns row indices into model input on the device: gather, clip, standardise."""

    def __init__(
        self, flux: FluxRows, norm: Normalization, device: torch.device, settings: TrainSettings
    ) -> None:
        self.device = device
        self.mean = torch.as_tensor(norm.flux_mean, device=device)
        self.std = torch.as_tensor(norm.flux_std, device=device)
        self.flux = flux
        self.table: torch.Tensor | None = None
        nbytes = int(np.prod(flux.shape)) * 4
        if isinstance(flux, np.ndarray) and nbytes <= settings.ram_limit_gb * 2**30:
            host = flux if type(flux) is np.ndarray else np.array(flux)  # memmap -> RAM
            table = torch.from_numpy(np.ascontiguousarray(host, dtype=np.float32))
            if device.type == "cuda" and nbytes < 0.4 * torch.cuda.mem_get_info(device)[0]:
                table = table.to(device)
            self.table = table

    def raw(self, idx: np.ndarray) -> torch.Tensor:
        """Normalised flux of rows ``idx`` (any shape), shape ``[*idx.shape, P]``, on device."""
        if self.table is not None:
            where = torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64).ravel())
            x = self.table[where.to(self.table.device)]
        else:
            flat = np.asarray(idx).ravel()
            order = np.argsort(flat, kind="stable")  # sorted reads from memory maps
            rows = np.empty((flat.size, self.flux.shape[1]), dtype=np.float32)
            rows[order] = np.asarray(self.flux[flat[order]], dtype=np.float32)
            x = torch.from_numpy(rows)
        x = x.to(self.device, non_blocking=True)
        return x.reshape(*np.shape(idx), x.shape[-1])

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """The model input transform: clip to [-0.5, 2.5], then per-pixel standardise."""
        return standardize_flux(x, self.mean, self.std)


def _progress(total: int, desc: str, enabled: bool):
    """tqdm bar on a terminal, nothing otherwise (plain per-epoch log lines instead)."""
    if enabled and sys.stderr.isatty():
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, unit="batch", leave=False)
        except ImportError:  # bare GPU boxes
            pass
    return None


def _log_default(progress: bool) -> Callable[[str], None]:
    if not progress:
        return lambda _msg: None
    return lambda msg: print(f"rrnet-train: {msg}", file=sys.stderr, flush=True)


@torch.no_grad()
def _predict(
    stack: MemberStack,
    inputs: _Inputs,
    rows: np.ndarray,
    batch_size: int,
    amp: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode ``(mu, var)`` of every member, ``[M, len(rows), L]`` on CPU (float32)."""
    mus, vars_ = [], []
    for start in range(0, rows.size, batch_size):
        x = inputs.standardise(inputs.raw(rows[start : start + batch_size]))
        with _autocast(inputs.device, amp):
            mu, var = stack.forward(x, train=False)
        mus.append(mu.float().cpu())
        vars_.append(var.float().cpu())
    if not mus:
        n, lab = stack.n_members, stack.config.num_labels
        return torch.zeros(n, 0, lab), torch.ones(n, 0, lab)
    return torch.cat(mus, dim=1), torch.cat(vars_, dim=1)


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check_inputs(flux: FluxRows, labels: np.ndarray, split: Split, names: Sequence[str]) -> None:
    if len(flux.shape) != 2:
        raise ValueError(f"flux must be [N, n_pixels], got shape {tuple(flux.shape)}")
    if labels.ndim != 2 or labels.shape[0] != flux.shape[0]:
        raise ValueError(f"labels {labels.shape} do not match flux {tuple(flux.shape)}")
    if labels.shape[1] != len(names):
        raise ValueError(f"{labels.shape[1]} label columns but {len(names)} label names")
    for name in ("train", "valid"):
        if getattr(split, name).size == 0:
            raise ValueError(f"the {name} split is empty (too few stars?)")
    every = np.concatenate([split.train, split.valid, split.test])
    if np.unique(every).size != every.size:
        raise ValueError("a row is in more than one split")
    if every.size and (every.min() < 0 or every.max() >= flux.shape[0]):
        raise ValueError("split row index out of range")


def train_arrays(
    flux: FluxRows,
    labels: np.ndarray,
    split: Split,
    *,
    label_names: Sequence[str],
    model_config: ModelConfig,
    settings: TrainSettings | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    keep_state: bool = False,
    progress: bool = True,
    extra_training: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    test_columns: Mapping[str, np.ndarray] | None = None,
    stop_after_epoch: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``settings.members`` networks together on ``flux``/``labels``.

    Parameters
    ----------
    flux
        Continuum-normalised flux ``[N, n_pixels]`` (ndarray, memmap or row adapter).
    labels
        Physical label values ``[N, L]``; NaN = missing (masked out of the loss).
    split
        Row indices of the train/valid/test splits (see :func:`split_by_star`).
    label_names, model_config, settings
        What to fit, with which network (``num_labels`` must equal L) and recipe.
    out
        Checkpoint directory, rewritten atomically after every epoch; None keeps
        everything in memory (benchmarks).
    resume
        Continue from ``out/train_state.pt`` (same data and settings required).
    keep_state
        Keep train_state.pt after the last epoch (it holds optimizer state; large).
    extra_training, preprocessing, test_columns
        Additional ``config.json`` "training" entries, the store fingerprint, and
        per-row columns (e.g. obsid, star_id) copied into test_predictions.parquet.
    stop_after_epoch
        Return after this epoch as if killed (tests of ``resume``).
    """
    settings = settings or TrainSettings()
    names = list(label_names)
    labels = np.asarray(labels, dtype=np.float64)
    _check_inputs(flux, labels, split, names)
    if model_config.num_labels != len(names):
        raise ValueError(f"model has {model_config.num_labels} outputs for {len(names)} labels")
    if flux.shape[1] != model_config.n_pixels:
        raise ValueError(f"flux has {flux.shape[1]} pixels, model expects {model_config.n_pixels}")
    out_dir = Path(out) if out is not None else None
    log = log or _log_default(progress)
    device = resolve_device(settings.device)
    amp = settings.amp and device.type == "cuda"
    m_count = settings.members
    t_start = time.perf_counter()

    identity = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "settings": settings.result_dict(),
        "model": model_config.to_dict(),
        "labels": names,
        "split": split_digest(split),
    }
    state = _resume_state(out_dir, identity) if resume else None
    if state is None and out_dir is not None:
        _prepare_new(out_dir)

    # Statistics on the training split only (or as saved, when resuming).
    if state is None:
        reader = flux.__getitem__
        flux_mean, flux_std = flux_statistics(reader, split.train, model_config.n_pixels)
        label_mean, label_std = label_statistics(labels[split.train], names)
        norm = Normalization(flux_mean, flux_std, label_mean, label_std)
        ood = reference_dict(
            np.concatenate(
                [
                    ood_score(reader(split.train[s : s + 4096]), flux_mean, flux_std)
                    for s in range(0, split.train.size, 4096)
                ]
            )
        )
    else:
        norm = Normalization(**{k: v.numpy() for k, v in state["normalization"].items()})
        ood = state["ood"]
    ranges = label_ranges(labels[split.train], names)

    inputs = _Inputs(flux, norm, device, settings)
    y_all = torch.as_tensor((labels - norm.label_mean) / norm.label_std, dtype=torch.float32)
    y_all = y_all.to(device)
    init_seeds = [derive_seed(settings.seed, _INIT, m) for m in range(m_count)]
    stack = MemberStack(model_config, init_seeds, device)
    optimizer = torch.optim.Adam(stack.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=settings.lr_step, gamma=settings.lr_gamma
    )
    best_params = stack.stacked_state()
    best_loss = torch.full((m_count,), math.inf, dtype=torch.float64)
    best_epoch = torch.zeros(m_count, dtype=torch.int64)
    history: list[dict[str, Any]] = []
    done = 0
    if state is not None:
        stack.load_stacked_state(state["params"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best_params = {k: v.to(device) for k, v in state["best_params"].items()}
        best_loss, best_epoch = state["best_loss"], state["best_epoch"]
        history, done = list(state["history"]), int(state["epoch"])
        log(f"resuming after epoch {done} of {settings.epochs}")

    loss_fn = stack.loss_fn()
    step_fn = loss_fn
    if settings.compile and device.type == "cuda":
        step_fn = torch.compile(loss_fn)
    y_valid = y_all[split.valid].cpu()
    n_train = split.train.size
    n_batches = math.ceil(n_train / settings.batch_size)
    training_info: dict[str, Any] = {}

    for epoch in range(done + 1, settings.epochs + 1):
        t0 = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        torch.manual_seed(derive_seed(settings.seed, _DROPOUT, epoch))
        gen = torch.Generator(device=device)
        gen.manual_seed(derive_seed(settings.seed, _AUGMENT, epoch))
        augment = settings.augments(epoch)
        order = member_order(split.train, settings.seed, epoch, m_count)
        loss_sum = torch.zeros(m_count, dtype=torch.float64, device=device)
        bar = _progress(n_batches, f"epoch {epoch}/{settings.epochs}", progress)
        for b in range(n_batches):
            idx = order[:, b * settings.batch_size : (b + 1) * settings.batch_size]
            x = inputs.raw(idx)
            if augment and settings.rv_shift_kms > 0:
                v = random_velocities(idx.shape, settings.rv_shift_kms, gen, device)
                x = doppler_shift(x, v)
            x = inputs.standardise(x)
            if augment:
                x = add_pixel_noise(x, settings.noise_fraction, settings.noise_sigma, gen)
            y = y_all[torch.from_numpy(idx).to(device)]
            with _autocast(device, amp):
                losses = step_fn(x, y)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            loss_sum += losses.detach().double() * idx.shape[1]
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        scheduler.step()
        train_loss = (loss_sum / n_train).cpu()
        if not torch.isfinite(train_loss).all():
            bad = torch.flatnonzero(~torch.isfinite(train_loss)).tolist()
            raise FloatingPointError(
                f"non-finite training loss in epoch {epoch} for member(s) {bad}; "
                "lower the learning rate or check the labels for extreme values"
            )
        train_time = time.perf_counter() - t0

        mu, var = _predict(stack, inputs, split.valid, settings.eval_batch_size, amp)
        valid_loss = torch.stack(
            [gaussian_nll(mu[m], var[m], y_valid).double() for m in range(m_count)]
        )
        mae = _mae(mu, y_valid, norm)
        improved = valid_loss < best_loss
        best_loss = torch.where(improved, valid_loss, best_loss)
        best_epoch = torch.where(improved, torch.full_like(best_epoch, epoch), best_epoch)
        sel = improved.to(device)
        for k, v in stack.params.items():
            keep = sel.view(-1, *([1] * (v.ndim - 1)))
            best_params[k] = torch.where(keep, v.detach(), best_params[k])
        epoch_time = time.perf_counter() - t0
        for m in range(m_count):
            row = {
                "epoch": epoch,
                "member": m,
                "train_loss": float(train_loss[m]),
                "valid_loss": float(valid_loss[m]),
                "lr": float(lr),
                "augmented": bool(augment),
                "train_time_s": train_time,
                "epoch_time_s": epoch_time,
                "spectra_per_s": m_count * n_train / train_time,
            }
            row.update({f"mae_{name}": float(mae[m, j]) for j, name in enumerate(names)})
            history.append(row)
        log(
            f"epoch {epoch}/{settings.epochs}: train loss {train_loss.mean():.4f}"
            f" ± {train_loss.std(correction=0):.4f}, valid loss {valid_loss.mean():.4f}"
            f" ± {valid_loss.std(correction=0):.4f}, lr {lr:.2g}, {epoch_time:.1f} s"
            f" ({m_count * n_train / train_time:.0f} spectra/s)"
        )
        training_info = _training_dict(
            settings, init_seeds, epoch, best_epoch, best_loss, ranges, ood, split, extra_training
        )
        if out_dir is not None:
            best_states = _member_states(best_params, stack)
            files.write_checkpoint(
                out_dir,
                model_config=model_config,
                labels=names,
                member_state_dicts=best_states,
                normalization=norm,
                preprocessing=dict(preprocessing) if preprocessing else None,
                training=training_info,
            )
            files.write_history(out_dir, history)
            files.save_state(
                out_dir,
                {
                    **identity,
                    "epoch": epoch,
                    "params": {k: v.cpu() for k, v in stack.stacked_state().items()},
                    "best_params": {k: v.cpu() for k, v in best_params.items()},
                    "best_loss": best_loss,
                    "best_epoch": best_epoch,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": history,
                    "normalization": _norm_tensors(norm),
                    "ood": ood,
                },
            )
        if stop_after_epoch is not None and stop_after_epoch <= epoch < settings.epochs:
            return _result(
                names,
                norm,
                best_params,
                stack,
                best_epoch,
                best_loss,
                history,
                None,
                ood,
                training_info,
                False,
                out_dir,
            )

    # Test-split predictions of the best members.
    stack.load_stacked_state(best_params)
    if not training_info:  # resumed a run whose epochs were all done
        training_info = _training_dict(
            settings,
            init_seeds,
            settings.epochs,
            best_epoch,
            best_loss,
            ranges,
            ood,
            split,
            extra_training,
        )
    mu, var = _predict(stack, inputs, split.test, settings.eval_batch_size, amp)
    mean, total = ensemble_moments(mu.double(), var.double())
    test_mean = mean.numpy() * norm.label_std + norm.label_mean
    test_std = np.sqrt(total.numpy()) * norm.label_std
    training_info["status"] = "complete"
    training_info["wall_time_s"] = time.perf_counter() - t_start
    if out_dir is not None:
        files.write_checkpoint(
            out_dir,
            model_config=model_config,
            labels=names,
            member_state_dicts=_member_states(best_params, stack),
            normalization=norm,
            preprocessing=dict(preprocessing) if preprocessing else None,
            training=training_info,
        )
        _write_test_predictions(out_dir, split, labels, names, test_mean, test_std, test_columns)
        if not keep_state:
            (out_dir / files.STATE_FILE).unlink(missing_ok=True)
    result = _result(
        names,
        norm,
        best_params,
        stack,
        best_epoch,
        best_loss,
        history,
        (test_mean, test_std),
        ood,
        training_info,
        True,
        out_dir,
    )
    result.timing["wall_s"] = time.perf_counter() - t_start
    return result


def _norm_tensors(norm: Normalization) -> dict[str, torch.Tensor]:
    names = ("flux_mean", "flux_std", "label_mean", "label_std")
    return {k: torch.from_numpy(np.asarray(getattr(norm, k))) for k in names}


def _mae(mu: torch.Tensor, y: torch.Tensor, norm: Normalization) -> np.ndarray:
    """Mean absolute error per member and label in physical units, NaN labels skipped."""
    diff = (mu.double() - y.double()).abs().numpy() * norm.label_std
    present = ~np.isnan(y.numpy())
    diff = np.where(present[None], diff, 0.0)
    return diff.sum(axis=1) / np.maximum(present.sum(axis=0), 1)[None]


def _member_states(
    stacked: Mapping[str, torch.Tensor], stack: MemberStack
) -> list[dict[str, torch.Tensor]]:
    out = []
    for m in range(stack.n_members):
        sd = {k: v[m].detach().cpu().clone() for k, v in stacked.items()}
        sd.update({k: v[m].detach().cpu().clone() for k, v in stack.buffers.items()})
        out.append(sd)
    return out


def _training_dict(
    settings: TrainSettings,
    init_seeds: list[int],
    epoch: int,
    best_epoch: torch.Tensor,
    best_loss: torch.Tensor,
    ranges: dict[str, Any],
    ood: dict[str, Any],
    split: Split,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The ``training`` entry of config.json."""
    return {
        "status": "running",
        "epochs_done": epoch,
        "settings": settings.to_dict(),
        "init_seeds": init_seeds,
        "best_epoch": [int(e) for e in best_epoch],
        "best_valid_loss": [float(v) for v in best_loss],
        "label_ranges": ranges,
        "ood": ood,
        "split_counts": {
            "train": int(split.train.size),
            "valid": int(split.valid.size),
            "test": int(split.test.size),
        },
        "split_digest": split_digest(split),
        **(dict(extra) if extra else {}),
    }


def _result(
    names,
    norm,
    best_params,
    stack,
    best_epoch,
    best_loss,
    history,
    test,
    ood,
    training,
    completed,
    out_dir,
) -> TrainResult:
    n_labels = len(names)
    test_mean, test_std = test if test is not None else (np.empty((0, n_labels)),) * 2
    return TrainResult(
        label_names=names,
        normalization=norm,
        state_dicts=_member_states(best_params, stack),
        best_epoch=[int(e) for e in best_epoch],
        best_valid_loss=[float(v) for v in best_loss],
        history=history,
        test_mean=test_mean,
        test_std=test_std,
        ood=ood,
        training=training,
        completed=completed,
        out=out_dir,
    )


def _resume_state(out_dir: Path | None, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state to continue from, or None to start afresh (no state yet)."""
    if out_dir is None:
        raise ValueError("resume needs a checkpoint directory (out)")
    if not (out_dir / files.STATE_FILE).is_file():
        config = files.read_config(out_dir)
        if config and (config.get("training") or {}).get("status") == "complete":
            raise CheckpointComplete(f"checkpoint {out_dir} is already complete; nothing to do")
        if config:
            raise ValueError(f"{out_dir} has a checkpoint but no {files.STATE_FILE} to resume")
        return None
    state = files.load_state(out_dir)
    for key, value in identity.items():
        if state.get(key) != value:
            raise ValueError(
                f"cannot resume {out_dir}: its {key!r} differs from this run's "
                f"({state.get(key)!r} != {value!r})"
            )
    return state


def _prepare_new(out_dir: Path) -> None:
    """Refuse to train into a directory that already holds a checkpoint or other files
    (the split file that :func:`rrnet.training.api.train_ensemble` writes first aside)."""
    if out_dir.exists() and any(p.name != SPLIT_FILE for p in out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} exists and is not empty; use resume to continue it or choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)


def _write_test_predictions(
    out_dir: Path,
    split: Split,
    labels: np.ndarray,
    names: list[str],
    mean: np.ndarray,
    std: np.ndarray,
    extra: Mapping[str, np.ndarray] | None,
) -> None:
    columns: dict[str, Any] = {"row": split.test.astype(np.int64)}
    for key, values in (extra or {}).items():
        columns[key] = np.asarray(values)[split.test]
    for j, name in enumerate(names):
        columns[f"{name}_true"] = labels[split.test, j]
        columns[name] = mean[:, j]
        columns[f"{name}_err"] = std[:, j]
    files.write_parquet(out_dir / files.TEST_PREDICTIONS_FILE, columns)
