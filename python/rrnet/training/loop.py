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
from typing import Any, Protocol, cast

import numpy as np
import torch

from rrnet.models.checkpoint import SPLIT_FILE
from rrnet.models.config import ModelConfig
from rrnet.models.device import resolve_device
from rrnet.models.ensemble import ensemble_moments
from rrnet.models.heads import gaussian_nll
from rrnet.models.normalization import Normalization, standardize_flux
from rrnet.models.ood import ood_score, reference_dict
from rrnet.training import files
from rrnet.training.augment import MemberNoise, doppler_shift, random_velocities
from rrnet.training.finetune import Initialization
from rrnet.training.grouped_step import grouped_step
from rrnet.training.memory import check_member_memory
from rrnet.training.settings import TrainSettings
from rrnet.training.split import Split
from rrnet.training.stats import flux_statistics, label_ranges, label_statistics
from rrnet.training.stream import streamed_order
from rrnet.training.vectorize import MemberStack
from rrnet.utils.heap import retain_heap
from rrnet.utils.progress import Progress

STATE_FORMAT = "rrnet-train-state"
STATE_VERSION = 1

# Purposes of derived random streams (part of the reproducibility contract).
_INIT, _ORDER, _DROPOUT, _AUGMENT = 0, 1, 2, 3


class FluxRows(Protocol):
    """Row-indexable flux: ``flux[idx] -> float32 [len(idx), n_pixels]`` (ndarray, memmap,
    or a store adapter)."""

    shape: tuple[int, ...]

    def __getitem__(self, idx: np.ndarray) -> np.ndarray: ...


class ShardedRows(FluxRows, Protocol):
    """Flux streamed from a store's shards: trained in a by-shard order."""

    buffer: int

    def shard_of(self, idx: np.ndarray) -> np.ndarray: ...


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


def labels_digest(labels: np.ndarray) -> str:
    """Short hash of the label values (missing ones as one NaN): a run resumed with a
    changed labels table would train on new values scaled by the old statistics."""
    values = np.array(labels, dtype=np.float64)
    values[np.isnan(values)] = np.nan  # one bit pattern for every missing value
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()[:16]


_ADDED_IDENTITY = frozenset({"label_values"})
"""Identity keys newer than some saved states: absent from a state, they are not checked."""


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


def _progress(total: int, epoch: str, enabled: bool) -> Progress | None:
    """The epoch's batches: a bar on a terminal, a log line every 10 s otherwise (a batch
    log had one line per epoch, and an epoch of a survey-sized set is hours on a CPU)."""
    if not enabled:
        return None
    return Progress(total, prefix=f"rrnet-train: epoch {epoch}", unit="batches", leave=False)


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
    init: Initialization | None = None,
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
    init
        Fine-tuning: start every member from a checkpoint (see
        :func:`rrnet.training.finetune.load_initialization`); recorded in config.json.
    """
    t_start = time.perf_counter()
    if init is not None:
        extra_training = {**(extra_training or {}), "init": init.provenance}
    run = _start_run(
        flux,
        np.asarray(labels, dtype=np.float64),
        split,
        names=list(label_names),
        model_config=model_config,
        settings=settings or TrainSettings(),
        out_dir=Path(out) if out is not None else None,
        resume=resume,
        init=init,
        progress=progress,
        log=log or _log_default(progress),
        extra_training=extra_training,
        preprocessing=preprocessing,
    )
    run.t_start = t_start
    step_fn = run.stack.loss_fn()
    if run.settings.compile and run.device.type == "cuda":
        step_fn = torch.compile(step_fn)
    if run.device.type == "cpu":  # steps reuse freed memory, no page faults (utils.heap)
        retain_heap()
    for epoch in range(run.done + 1, run.settings.epochs + 1):
        t0 = time.perf_counter()
        lr = run.scheduler.get_last_lr()[0]
        train_loss = _train_epoch(run, epoch, step_fn)
        train_time = time.perf_counter() - t0
        valid_loss, mae = _validate_keep_best(run, epoch)
        _record_epoch(run, epoch, lr, train_loss, valid_loss, mae, train_time, t0)
        run.training_info = _training_dict(run, epoch)
        if run.out_dir is not None:
            _save_epoch(run, epoch)
        if stop_after_epoch is not None and stop_after_epoch <= epoch < run.settings.epochs:
            return _result(run, None, completed=False)
    return _finish(run, keep_state, test_columns)


@dataclass
class _Run:
    """Everything one training run carries from epoch to epoch (resumable state and
    what is fixed for the run), so that its steps are small functions of it."""

    flux: FluxRows
    labels: np.ndarray
    split: Split
    names: list[str]
    model_config: ModelConfig
    settings: TrainSettings
    out_dir: Path | None
    progress: bool
    log: Callable[[str], None]
    extra_training: Mapping[str, Any] | None
    preprocessing: Mapping[str, Any] | None
    device: torch.device
    amp: bool
    identity: dict[str, Any]
    norm: Normalization
    ood: dict[str, Any]
    ranges: dict[str, Any]
    inputs: _Inputs
    y_all: torch.Tensor
    init_seeds: list[int]
    stack: MemberStack
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.StepLR
    best_params: dict[str, torch.Tensor]
    best_loss: torch.Tensor
    best_epoch: torch.Tensor
    history: list[dict[str, Any]] = field(default_factory=list)
    done: int = 0
    training_info: dict[str, Any] = field(default_factory=dict)
    t_start: float = 0.0
    elapsed_before: float = 0.0
    """Seconds the run had trained before this process resumed it (0: a fresh run)."""

    @property
    def members(self) -> int:
        return self.settings.members


def _start_run(
    flux: FluxRows,
    labels: np.ndarray,
    split: Split,
    *,
    names: list[str],
    model_config: ModelConfig,
    settings: TrainSettings,
    out_dir: Path | None,
    resume: bool,
    init: Initialization | None = None,
    **rest: Any,
) -> _Run:
    """Check the inputs, then start a fresh run or restore the one saved in ``out_dir``
    (``rest``: progress, log, extra_training, preprocessing, kept on the run)."""
    _check_inputs(flux, labels, split, names)
    if model_config.num_labels != len(names):
        raise ValueError(f"model has {model_config.num_labels} outputs for {len(names)} labels")
    if flux.shape[1] != model_config.n_pixels:
        raise ValueError(f"flux has {flux.shape[1]} pixels, model expects {model_config.n_pixels}")
    device = resolve_device(settings.device)
    check_member_memory(
        model_config, settings.members, device, init.frozen if init is not None else None
    )
    identity = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "settings": settings.result_dict(),
        "model": model_config.to_dict(),
        "labels": names,
        "split": split_digest(split),
        "label_values": labels_digest(labels),
        "init": init.provenance if init is not None else None,
        "order": _order_kind(flux),
    }
    state = _resume_state(out_dir, identity) if resume else None
    if state is None and out_dir is not None:
        _prepare_new(out_dir)
    if state is None:
        norm, ood = _fresh_statistics(flux, labels, split, names, model_config.n_pixels, init)
    else:
        norm = Normalization(**{k: v.numpy() for k, v in state["normalization"].items()})
        ood = state["ood"]
    inputs = _Inputs(flux, norm, device, settings)
    y_all = torch.as_tensor((labels - norm.label_mean) / norm.label_std, dtype=torch.float32)
    y_all = y_all.to(device)
    init_seeds = [derive_seed(settings.seed, _INIT, m) for m in range(settings.members)]
    formulation = settings.resolved_formulation(device.type)
    stack = MemberStack(model_config, init_seeds, device, formulation)
    if init is not None:
        _start_from(stack, init, norm, fresh=state is None)
    # fused: one pass per tensor instead of ~10 (~10x faster on CPU; equal to round-off)
    trainable = [p for p in stack.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=settings.lr, fused=True)
    run = _Run(
        flux=flux,
        labels=labels,
        split=split,
        names=names,
        model_config=model_config,
        settings=settings,
        out_dir=out_dir,
        device=device,
        amp=settings.amp and device.type == "cuda",
        identity=identity,
        norm=norm,
        ood=ood,
        ranges=label_ranges(labels[split.train], names),
        inputs=inputs,
        y_all=y_all,
        init_seeds=init_seeds,
        stack=stack,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=settings.lr_step, gamma=settings.lr_gamma
        ),
        best_params=stack.stacked_state(),
        best_loss=torch.full((settings.members,), math.inf, dtype=torch.float64),
        best_epoch=torch.zeros(settings.members, dtype=torch.int64),
        **rest,
    )
    if state is not None:
        _restore(run, state)
    return run


def _fresh_statistics(
    flux: FluxRows,
    labels: np.ndarray,
    split: Split,
    names: list[str],
    n_pixels: int,
    init: Initialization | None = None,
) -> tuple[Normalization, dict[str, Any]]:
    """Normalisation and OOD reference from the training split only (fine-tuning keeps
    the checkpoint's flux statistics, and its label ones if so chosen)."""
    reader = flux.__getitem__
    flux_mean, flux_std = flux_statistics(reader, split.train, n_pixels)
    label_mean, label_std = label_statistics(labels[split.train], names)
    norm = Normalization(flux_mean, flux_std, label_mean, label_std)
    if init is not None:
        norm = init.normalization_for(norm)
        flux_mean, flux_std = norm.flux_mean, norm.flux_std
    ood = reference_dict(
        np.concatenate(
            [
                ood_score(reader(split.train[s : s + 4096]), flux_mean, flux_std)
                for s in range(0, split.train.size, 4096)
            ]
        )
    )
    return norm, ood


def _start_from(stack: MemberStack, init: Initialization, norm: Normalization, fresh: bool) -> None:
    """Fine-tuning: load the checkpoint's members into ``stack`` (``fresh`` run only; a
    resumed one restores its own parameters) and freeze the chosen groups."""
    if fresh:
        starts = [init.member_state(m, stack.state_dict(m), norm) for m in range(stack.n_members)]
        stack.load_stacked_state({k: torch.stack([sd[k] for sd in starts]) for k in stack.params})
    for name, value in stack.params.items():
        if init.frozen(name):
            value.requires_grad_(False)


def _restore(run: _Run, state: dict[str, Any]) -> None:
    """Load the parameters, optimizer and bookkeeping saved after epoch ``state["epoch"]``."""
    run.stack.load_stacked_state(state["params"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.best_params = {k: v.to(run.device) for k, v in state["best_params"].items()}
    run.best_loss, run.best_epoch = state["best_loss"], state["best_epoch"]
    run.history, run.done = list(state["history"]), int(state["epoch"])
    run.elapsed_before = float(state.get("elapsed_s", 0.0))  # states before 2026-12-05: 0
    run.log(f"resuming after epoch {run.done} of {run.settings.epochs}")


def _train_epoch(run: _Run, epoch: int, step_fn: Callable[..., torch.Tensor]) -> torch.Tensor:
    """One pass of every member over its own order of the training rows; returns each
    member's mean training loss (float64, CPU). Steps the learning-rate schedule."""
    settings, device, inputs = run.settings, run.device, run.inputs
    torch.manual_seed(derive_seed(settings.seed, _DROPOUT, epoch))
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(settings.seed, _AUGMENT, epoch))
    augment = settings.augments(epoch)
    noise = None
    if augment:  # each member its own stream (MemberNoise), drawn on its step thread
        seeds = [derive_seed(settings.seed, _AUGMENT, epoch, m) for m in range(run.members)]
        gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        noise = MemberNoise(settings.noise_fraction, settings.noise_sigma, gens)
    order = _epoch_order(run, epoch)
    loss_sum = torch.zeros(run.members, dtype=torch.float64, device=device)
    n_train = run.split.train.size
    n_batches = math.ceil(n_train / settings.batch_size)
    bar = _progress(n_batches, f"{epoch}/{settings.epochs}", run.progress)
    threads = torch.get_num_threads()
    for b in range(n_batches):
        idx = order[:, b * settings.batch_size : (b + 1) * settings.batch_size]
        x = inputs.raw(idx)
        if augment and settings.rv_shift_kms > 0:
            v = random_velocities(idx.shape, settings.rv_shift_kms, gen, device)
            x = doppler_shift(x, v)
        x = inputs.standardise(x)
        y = run.y_all[torch.from_numpy(idx).to(device)]
        if run.stack.formulation == "grouped" and device.type == "cpu":
            # members split over the intra-op threads (grouped_step's docstring)
            losses = grouped_step(
                run.model_config, run.stack.params, x, y, threads=threads, noise=noise
            )
        else:
            if noise is not None:
                x = noise.apply(x)
            with _autocast(device, run.amp):
                losses = step_fn(x, y)
            run.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
        run.optimizer.step()
        loss_sum += losses.detach().double() * idx.shape[1]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    run.scheduler.step()
    train_loss = (loss_sum / n_train).cpu()
    if not torch.isfinite(train_loss).all():
        bad = torch.nonzero(~torch.isfinite(train_loss)).flatten().tolist()
        raise FloatingPointError(
            f"non-finite training loss in epoch {epoch} for member(s) {bad}; "
            "lower the learning rate or check the labels for extreme values"
        )
    return train_loss


def _order_kind(flux: FluxRows) -> str:
    """ "shards" for flux streamed from a store (by-shard order), "rows" for arrays (in
    memory or memory-mapped: a full permutation). Part of a resumable run's identity:
    the two orders differ, and ``--ram-limit-gb`` picks between them."""
    return "shards" if hasattr(flux, "shard_of") and not isinstance(flux, np.ndarray) else "rows"


def _epoch_order(run: _Run, epoch: int) -> np.ndarray:
    """``[M, n_train]`` orders: :func:`member_order` for in-memory flux, the by-shard
    :func:`~rrnet.training.stream.streamed_order` for flux streamed from a store."""
    flux, train, seed = run.flux, run.split.train, run.settings.seed
    if _order_kind(flux) == "rows":
        return member_order(train, seed, epoch, run.members)
    streamed = cast(ShardedRows, flux)
    shards = streamed.shard_of(train)
    return np.stack(
        [
            streamed_order(
                train,
                shards,
                np.random.default_rng(derive_seed(seed, _ORDER, epoch, m)),
                streamed.buffer,
            )
            for m in range(run.members)
        ]
    )


def _validate_keep_best(run: _Run, epoch: int) -> tuple[torch.Tensor, np.ndarray]:
    """Validation loss and MAE of every member; members that improved keep these
    parameters as their best."""
    y_valid = run.y_all[run.split.valid].cpu()
    mu, var = _predict(
        run.stack, run.inputs, run.split.valid, run.settings.eval_batch_size, run.amp
    )
    valid_loss = torch.stack(
        [gaussian_nll(mu[m], var[m], y_valid).double() for m in range(run.members)]
    )
    mae = _mae(mu, y_valid, run.norm)
    improved = valid_loss < run.best_loss
    run.best_loss = torch.where(improved, valid_loss, run.best_loss)
    run.best_epoch = torch.where(improved, torch.full_like(run.best_epoch, epoch), run.best_epoch)
    sel = improved.to(run.device)
    for k, v in run.stack.params.items():
        keep = sel.view(-1, *([1] * (v.ndim - 1)))
        run.best_params[k] = torch.where(keep, v.detach(), run.best_params[k])
    return valid_loss, mae


def _record_epoch(
    run: _Run,
    epoch: int,
    lr: float,
    train_loss: torch.Tensor,
    valid_loss: torch.Tensor,
    mae: np.ndarray,
    train_time: float,
    t0: float,
) -> None:
    """Append the epoch's per-member history rows and log one line."""
    epoch_time = time.perf_counter() - t0
    m_count, n_train = run.members, run.split.train.size
    for m in range(m_count):
        row = {
            "epoch": epoch,
            "member": m,
            "train_loss": float(train_loss[m]),
            "valid_loss": float(valid_loss[m]),
            "lr": float(lr),
            "augmented": bool(run.settings.augments(epoch)),
            "train_time_s": train_time,
            "epoch_time_s": epoch_time,
            "spectra_per_s": m_count * n_train / train_time,
        }
        row.update({f"mae_{name}": float(mae[m, j]) for j, name in enumerate(run.names)})
        run.history.append(row)
    run.log(
        f"epoch {epoch}/{run.settings.epochs}: train loss {train_loss.mean():.4f}"
        f" ± {train_loss.std(correction=0):.4f}, valid loss {valid_loss.mean():.4f}"
        f" ± {valid_loss.std(correction=0):.4f}, lr {lr:.2g}, {epoch_time:.1f} s"
        f" ({m_count * n_train / train_time:.0f} spectra/s)"
    )


def _write_best(run: _Run) -> None:
    """The checkpoint directory's model files: the best members so far."""
    assert run.out_dir is not None
    files.write_checkpoint(
        run.out_dir,
        model_config=run.model_config,
        labels=run.names,
        member_state_dicts=_member_states(run.best_params, run.stack),
        normalization=run.norm,
        preprocessing=dict(run.preprocessing) if run.preprocessing else None,
        training=run.training_info,
    )


def _save_epoch(run: _Run, epoch: int) -> None:
    """The resumable state after ``epoch``, then the checkpoint and history: the state
    first, so that a run stopped between the writes can always be resumed."""
    assert run.out_dir is not None
    files.save_state(
        run.out_dir,
        {
            **run.identity,
            "epoch": epoch,
            "params": {k: v.cpu() for k, v in run.stack.stacked_state().items()},
            "best_params": {k: v.cpu() for k, v in run.best_params.items()},
            "best_loss": run.best_loss,
            "best_epoch": run.best_epoch,
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "history": run.history,
            "elapsed_s": run.elapsed_before + time.perf_counter() - run.t_start,
            "normalization": _norm_tensors(run.norm),
            "ood": run.ood,
        },
    )
    _write_best(run)
    files.write_history(run.out_dir, run.history)


def _finish(
    run: _Run, keep_state: bool, test_columns: Mapping[str, np.ndarray] | None
) -> TrainResult:
    """Test-split predictions of the best members; the final checkpoint."""
    run.stack.load_stacked_state(run.best_params)
    if not run.training_info:  # resumed a run whose epochs were all done
        run.training_info = _training_dict(run, run.settings.epochs)
    mu, var = _predict(run.stack, run.inputs, run.split.test, run.settings.eval_batch_size, run.amp)
    mean, total = ensemble_moments(mu.double(), var.double())
    test_mean = mean.numpy() * run.norm.label_std + run.norm.label_mean
    test_std = np.sqrt(total.numpy()) * run.norm.label_std
    run.training_info["status"] = "complete"
    # over every process of a resumed run (it had held only the last one's seconds)
    run.training_info["wall_time_s"] = run.elapsed_before + time.perf_counter() - run.t_start
    if run.out_dir is not None:
        _write_best(run)
        _write_test_predictions(
            run.out_dir, run.split, run.labels, run.names, test_mean, test_std, test_columns
        )
        if not keep_state:
            (run.out_dir / files.STATE_FILE).unlink(missing_ok=True)
    result = _result(run, (test_mean, test_std), completed=True)
    result.timing["wall_s"] = time.perf_counter() - run.t_start
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


def _training_dict(run: _Run, epoch: int) -> dict[str, Any]:
    """The ``training`` entry of config.json."""
    split, extra = run.split, run.extra_training
    return {
        "status": "running",
        "epochs_done": epoch,
        "settings": run.settings.to_dict(),
        "init_seeds": run.init_seeds,
        "best_epoch": [int(e) for e in run.best_epoch],
        "best_valid_loss": [float(v) for v in run.best_loss],
        "label_ranges": run.ranges,
        "ood": run.ood,
        "split_counts": {
            "train": int(split.train.size),
            "valid": int(split.valid.size),
            "test": int(split.test.size),
        },
        "split_digest": split_digest(split),
        # which label values trained it (the table's path alone does not say)
        "label_values_digest": labels_digest(run.labels),
        **(dict(extra) if extra else {}),
    }


def _result(
    run: _Run, test: tuple[np.ndarray, np.ndarray] | None, *, completed: bool
) -> TrainResult:
    """The run's :class:`TrainResult` (empty test predictions when stopped early)."""
    n_labels = len(run.names)
    test_mean, test_std = test if test is not None else (np.empty((0, n_labels)),) * 2
    return TrainResult(
        label_names=run.names,
        normalization=run.norm,
        state_dicts=_member_states(run.best_params, run.stack),
        best_epoch=[int(e) for e in run.best_epoch],
        best_valid_loss=[float(v) for v in run.best_loss],
        history=run.history,
        test_mean=test_mean,
        test_std=test_std,
        ood=run.ood,
        training=run.training_info,
        completed=completed,
        out=run.out_dir,
    )


def _resume_state(out_dir: Path | None, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state to continue from, or None to start afresh (no state yet)."""
    if out_dir is None:
        raise ValueError("resume needs a checkpoint directory (out)")
    if not (out_dir / files.STATE_FILE).is_file():
        config = files.read_config(out_dir)
        training = (config or {}).get("training") or {}
        if training.get("status") == "complete":
            _check_same_recipe(out_dir, training.get("settings") or {}, identity["settings"])
            raise CheckpointComplete(f"checkpoint {out_dir} is already complete; nothing to do")
        if config:
            raise ValueError(
                f"{out_dir} has a checkpoint but no {files.STATE_FILE} to resume (a run stopped "
                "before its first resumable save by an older rrnet): remove the folder and "
                "train again"
            )
        return None
    state = files.load_state(out_dir)
    saved_order = state.get("order", identity["order"])  # states older than the key
    if saved_order != identity["order"]:
        how = {"rows": "read into memory", "shards": "streamed from the store"}
        raise ValueError(
            f"cannot resume {out_dir}: its training flux was {how[saved_order]} and this "
            f"run's is {how[identity['order']]} (another sample order); resume with the "
            "--ram-limit-gb (TrainSettings.ram_limit_gb) the run started with"
        )
    for key, value in identity.items():
        if key == "order" or (key in _ADDED_IDENTITY and key not in state):
            continue
        if key == "label_values" and state[key] != value:
            raise ValueError(
                f"cannot resume {out_dir}: the labels differ from those it was started with "
                "(the labels table changed); train it anew (another --out) with the new table"
            )
        if state.get(key) != value:
            raise ValueError(
                f"cannot resume {out_dir}: its {key!r} differs from this run's "
                f"({state.get(key)!r} != {value!r})"
            )
    return state


def _check_same_recipe(out_dir: Path, saved: Mapping[str, Any], asked: Mapping[str, Any]) -> None:
    """ValueError when resuming a finished checkpoint asks for another recipe (more
    ``epochs``, say): "nothing to do" and exit 0 read as if it had been trained so."""
    differ = sorted(k for k in asked if k in saved and saved[k] != asked[k])
    if differ:
        key = differ[0]
        raise ValueError(
            f"checkpoint {out_dir} is complete with {key} {saved[key]!r}, not {asked[key]!r}: "
            "a finished checkpoint is not trained further; train anew (another --out) or "
            "fine-tune it (--init)"
        )


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
