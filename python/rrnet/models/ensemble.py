"""Deep-ensemble inference: all members in one batched call, method §4, paper eq. 3 combination.

>>> ens = Ensemble.from_checkpoint("models/SP")            # doctest: +SKIP
>>> pred = ens.predict(flux)   # continuum-normalised flux, float32 [B, 7200]
>>> pred.mean, pred.std        # [B, 3] in K / dex, ensemble mean and 1-sigma
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from rrnet.models.config import ModelConfig
from rrnet.models.device import resolve_device
from rrnet.models.grouped import GroupedMembers
from rrnet.models.keys import check_state_dict
from rrnet.models.normalization import FLUX_CLIP, Normalization, standardize_flux
from rrnet.models.registry import build_model
from rrnet.models.stacked import StackedMembers

__all__ = [
    "FLUX_CLIP",
    "Ensemble",
    "EnsemblePrediction",
    "batched_members",
    "default_batch_size",
    "ensemble_moments",
    "resolve_device",
    "standardize_flux",
]

T = TypeVar("T", np.ndarray, torch.Tensor)


def ensemble_moments(mu: T, var: T) -> tuple[T, T]:
    """Mean and variance of the equal-weight Gaussian mixture (method §4, paper eq. 3).

    ``mean = mean_i mu_i``, ``var = mean_i (var_i + mu_i^2) - mean^2`` over the member
    axis 0, clamped at 0 against round-off. Works on NumPy arrays and tensors.
    """
    mean = mu.mean(0)
    second = (var + mu * mu).mean(0)
    total = second - mean * mean
    if isinstance(total, torch.Tensor):
        return mean, total.clamp(min=0.0)
    return mean, np.maximum(total, 0.0)


def _float32_rows(flux: np.ndarray | torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` as a float32 tensor. NumPy rows are copied one batch at a time,
    native byte order: a big-endian FITS column or a read-only memory map is taken as it
    is (torch refuses the one and warns about the other), and a map is never read whole."""
    if isinstance(flux, torch.Tensor):
        return flux[start:stop].to(torch.float32)
    return torch.from_numpy(np.array(flux[start:stop], dtype=np.float32))


@dataclass(frozen=True)
class EnsemblePrediction:
    """Ensemble output in physical units (K, dex), float64.

    Attributes
    ----------
    labels
        Label names, one per column.
    mean, std
        ``[B, L]`` ensemble mean and 1-sigma (square root of method §4, paper eq. 3).
    members_mu, members_var
        ``[M, B, L]`` per-member means and variances, when requested.
    """

    labels: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    members_mu: np.ndarray | None = None
    members_var: np.ndarray | None = None

    @property
    def var(self) -> np.ndarray:
        return self.std**2


def default_batch_size(device: torch.device) -> int:
    """Spectra per forward call: 64 on CPU (the convolutions run 4 at a time), 4096 on GPU."""
    return 4096 if device.type == "cuda" else 64


def batched_members(
    config: ModelConfig, state_dicts: Sequence[Mapping[str, torch.Tensor]], device: torch.device
) -> nn.Module:
    """The network that runs all members in one call, for ``device``, in eval mode.

    CPU: :class:`rrnet.models.grouped.GroupedMembers` (members as channel groups of
    oneDNN convolutions). GPU: :class:`rrnet.models.stacked.StackedMembers` (members
    as the batch axis of matmuls, tensor-core friendly).
    """
    if device.type == "cpu":
        return GroupedMembers(config, state_dicts).eval()
    return StackedMembers(config, state_dicts).to(device).eval()


class Ensemble:
    """M members of one architecture, evaluated together.

    Parameters
    ----------
    config
        The members' architecture.
    state_dicts
        One state_dict per member (authors' key names).
    normalization
        Flux and label statistics of the training set.
    labels
        Label names (``config.num_labels`` of them).
    device
        ``"auto"`` (GPU if available), ``"cpu"``, ``"cuda:0"`` ...
    compile
        Wrap the batched forward in ``torch.compile`` (``True`` or a compile mode
        such as ``"max-autotune"``). Pays off on GPUs; on CPU the first call
        compiles for about a minute.
    amp
        Run under bf16 autocast (GPU, or a CPU with bf16 support); outputs are float32.
    """

    def __init__(
        self,
        config: ModelConfig,
        state_dicts: Sequence[Mapping[str, torch.Tensor]],
        normalization: Normalization,
        labels: Sequence[str],
        *,
        device: str | torch.device = "auto",
        compile: bool | str = False,
        amp: bool = False,
    ) -> None:
        labels = tuple(str(name) for name in labels)
        if len(labels) != config.num_labels:
            raise ValueError(f"{len(labels)} labels for a model with {config.num_labels} outputs")
        if normalization.label_mean.shape != (len(labels),):
            raise ValueError("label statistics do not match the labels")
        if normalization.flux_mean.shape != (config.n_pixels,):
            raise ValueError("flux statistics do not match the model input length")
        for i, sd in enumerate(state_dicts):
            check_state_dict(sd, config, source=f"member {i}")
        self.config = config
        self.labels = labels
        self.normalization = normalization
        self.device = resolve_device(device)
        self.amp = bool(amp)
        self._state_dicts = [dict(sd) for sd in state_dicts]
        self._stacked = batched_members(config, state_dicts, self.device)
        self._flux_mean = torch.as_tensor(normalization.flux_mean, device=self.device)
        self._flux_std = torch.as_tensor(normalization.flux_std, device=self.device)
        self.compiled = bool(compile)
        self._forward: Any = self._stacked
        if compile:
            mode = compile if isinstance(compile, str) else None
            self._forward = torch.compile(self._stacked, mode=mode, dynamic=False)

    def __repr__(self) -> str:
        """What a notebook shows: the network, its members, labels and where it runs."""
        labels = ", ".join(self.labels[:4]) + (", ..." if len(self.labels) > 4 else "")
        extras = "".join(
            f", {k}" for k, on in (("compiled", self.compiled), ("amp", self.amp)) if on
        )
        return (
            f"Ensemble({self.config.net} {self.config.mode}, {len(self._state_dicts)} members, "
            f"{len(self.labels)} labels [{labels}], device={self.device}{extras})"
        )

    # Construction ----------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        compile: bool | str = False,
        amp: bool = False,
    ) -> Ensemble:
        """Load an rrnet checkpoint directory (see :mod:`rrnet.models.checkpoint`)."""
        from rrnet.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        return cls(
            ckpt.model_config,
            ckpt.member_state_dicts,
            ckpt.normalization,
            ckpt.labels,
            device=device,
            compile=compile,
            amp=amp,
        )

    @classmethod
    def from_members(
        cls,
        config: ModelConfig,
        state_dicts: Sequence[Mapping[str, torch.Tensor]],
        normalization: Normalization,
        labels: Sequence[str] | None = None,
        *,
        device: str | torch.device = "auto",
        compile: bool | str = False,
        amp: bool = False,
    ) -> Ensemble:
        """Build from in-memory members (training code); labels default to ``y0..``."""
        names = labels if labels is not None else [f"y{i}" for i in range(config.num_labels)]
        return cls(
            config, state_dicts, normalization, names, device=device, compile=compile, amp=amp
        )

    # Properties ------------------------------------------------------------------------
    @property
    def n_members(self) -> int:
        return self._stacked.n_members

    def member_models(self) -> list[nn.Module]:
        """Each member as its own eager network in eval mode (CPU), e.g. as a reference."""
        models = []
        for sd in self._state_dicts:
            model = build_model(self.config)
            model.load_state_dict(sd, strict=True)
            models.append(model.eval())
        return models

    # Inference -------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised ``[b, P]`` on the device -> float32 ``(mu, var)`` ``[M, b, L]``."""
        with self._autocast():
            mu, var = self._forward(x)
        return mu.float(), var.float()

    def predict_standardized(
        self, x: torch.Tensor, batch_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Model-unit ``(mu, var)`` ``[M, B, L]`` for standardised input ``[B, P]``.

        The path for training and validation: no clipping, no label scaling. Results
        stay on the ensemble's device. Gradients are not tracked.
        """
        batch = batch_size or default_batch_size(self.device)
        mus, variances = [], []
        with torch.inference_mode():
            for start in range(0, x.shape[0], batch):
                chunk = x[start : start + batch].to(self.device, torch.float32)
                mu, var = self._run_padded(chunk, batch)
                mus.append(mu)
                variances.append(var)
        if not mus:
            empty = torch.empty(self.n_members, 0, len(self.labels), device=self.device)
            return empty, empty.clone()
        return torch.cat(mus, 1), torch.cat(variances, 1)

    def _run_padded(self, chunk: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A compiled forward is specialised to one batch size: pad the last chunk to it."""
        n = chunk.shape[0]
        if self.compiled and n < batch:
            pad = chunk.new_zeros(batch - n, chunk.shape[1])
            mu, var = self._run(torch.cat((chunk, pad)))
            return mu[:, :n].clone(), var[:, :n].clone()
        mu, var = self._run(chunk)
        return mu.clone(), var.clone()  # detach from CUDA-graph / compiled output buffers

    def predict(
        self,
        flux: np.ndarray | torch.Tensor,
        batch_size: int | None = None,
        return_members: bool = False,
    ) -> EnsemblePrediction:
        """Labels for continuum-normalised flux ``[B, n_pixels]``, in physical units.

        The flux is clipped to [-0.5, 2.5] and standardised with the training
        statistics (as the authors' code), run through all members at once, combined
        with method §4, paper eq. 3 and de-standardised (variances scale by ``label_std**2``).
        Rows containing NaN give NaN outputs.
        """
        source = flux if isinstance(flux, torch.Tensor) else np.asarray(flux)
        if source.ndim != 2 or source.shape[1] != self.config.n_pixels:
            raise ValueError(
                f"expected flux of shape [B, {self.config.n_pixels}], got {tuple(source.shape)}"
            )
        batch = batch_size or default_batch_size(self.device)
        mus, variances = [], []
        with torch.inference_mode():
            for start in range(0, source.shape[0], batch):
                chunk = _float32_rows(source, start, start + batch).to(self.device)
                x = standardize_flux(chunk, self._flux_mean, self._flux_std)
                mu, var = self._run_padded(x, batch)
                mus.append(mu.cpu().numpy().astype(np.float64))
                variances.append(var.cpu().numpy().astype(np.float64))
        shape = (self.n_members, 0, len(self.labels))
        members_mu = np.concatenate(mus, 1) if mus else np.empty(shape)
        members_var = np.concatenate(variances, 1) if variances else np.empty(shape)
        mean, var = ensemble_moments(members_mu, members_var)
        mean, var = self.normalization.destandardize(mean, var)
        result_mu = result_var = None
        if return_members:
            result_mu, result_var = self.normalization.destandardize(members_mu, members_var)
        return EnsemblePrediction(self.labels, mean, np.sqrt(var), result_mu, result_var)
