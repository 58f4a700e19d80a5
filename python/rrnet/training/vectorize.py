"""M ensemble members trained as one: stacked parameters and ``torch.func.vmap``.

The members' parameters are stacked along a leading member axis
(``torch.func.stack_module_state``) and one functional copy of the network is
``vmap``-ed over that axis (``randomness="different"``: each member draws its own
dropout masks). The total loss is the sum of the member losses, so the gradient with
respect to member m's slice is exactly member m's own gradient, and Adam, being
elementwise, updates each slice exactly as M separate Adams would.

``vmap`` has no batching rule for ``nn.RNN`` and is slow for small-channel
``conv1d`` on CPU, so the functional copy swaps those layers (and the pooling layers)
for equivalent ones written with matmuls and reshapes. The swap keeps every parameter
name, so the stacked parameters are the members' own state_dict entries, unchanged;
``tests/test_train_vectorize.py`` checks the equivalence against the plain networks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from rrnet.models.config import ModelConfig
from rrnet.models.heads import gaussian_nll
from rrnet.models.recurrent import SubbandRNN
from rrnet.models.registry import build_model
from rrnet.training.grouped import grouped_forward

FORMULATIONS = ("vmap", "grouped")
"""How the members run together: ``vmap`` over one functional network (fastest on a
GPU), or ``grouped`` convolutions with members as channel groups (fastest on a CPU)."""


class _UnrolledRNN(SubbandRNN):
    """The sub-band tanh RNN as an explicit loop (``vmap`` cannot batch ``rnn_tanh``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        seq = x.reshape(x.shape[0], self.n_subbands, self.subband_size)
        proj = seq @ self.weight_ih_l0.T + (self.bias_ih_l0 + self.bias_hh_l0)
        h = torch.tanh(proj[:, 0])
        outs = [h]
        for step in range(1, self.n_subbands):
            h = torch.tanh(proj[:, step] + h @ self.weight_hh_l0.T)
            outs.append(h)
        return torch.stack(outs, dim=1).flatten(1)


class _MatmulConv1d(nn.Conv1d):
    """Conv1d (stride 1, 'same' zero padding) as one matmul over the k shifted copies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, pad = self.kernel_size[0], self.padding[0]
        bsz, c_in, length = x.shape
        if k == 1:
            cols = x
        else:
            xp = F.pad(x, (pad, pad))
            cols = torch.stack([xp[..., i : i + length] for i in range(k)], dim=2)
            cols = cols.reshape(bsz, c_in * k, length)  # rows: (in channel, shift)
        w = self.weight.reshape(self.out_channels, c_in * k)
        return torch.matmul(w, cols) + self.bias[:, None]


class _ReshapeAvgPool1d(nn.AvgPool1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size[0]
        return x.reshape(*x.shape[:-1], x.shape[-1] // k, k).mean(dim=-1)


class _ReshapeMaxPool1d(nn.MaxPool1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = int(self.kernel_size)
        return x.reshape(*x.shape[:-1], x.shape[-1] // k, k).amax(dim=-1)


def _vmap_friendly(module: nn.Module) -> None:
    """Replace, in place, the layers vmap handles badly by equivalent ones (same names)."""
    for name, child in module.named_children():
        if isinstance(child, SubbandRNN):
            new: nn.Module = _UnrolledRNN(child.n_subbands, child.subband_size)
        elif isinstance(child, nn.Conv1d):
            if child.stride != (1,) or child.dilation != (1,) or child.groups != 1:
                raise NotImplementedError(f"cannot vectorise {child}")
            if child.padding[0] * 2 != child.kernel_size[0] - 1:
                raise NotImplementedError(f"cannot vectorise {child} (not 'same' padding)")
            new = _MatmulConv1d(
                child.in_channels, child.out_channels, child.kernel_size, padding=child.padding
            )
        elif isinstance(child, nn.AvgPool1d) and child.kernel_size == child.stride:
            new = _ReshapeAvgPool1d(child.kernel_size)
        elif isinstance(child, nn.MaxPool1d) and child.kernel_size == child.stride:
            new = _ReshapeMaxPool1d(child.kernel_size)
        else:
            _vmap_friendly(child)
            continue
        setattr(module, name, new)


class MemberStack:
    """The parameters of M networks stacked on a leading axis, and their joint forward.

    Member ``m`` is initialised exactly as ``torch.manual_seed(init_seeds[m]);
    build_model(config)`` would be. ``formulation`` (see :data:`FORMULATIONS`) changes
    only the speed and the dropout masks drawn, never the function computed.
    """

    def __init__(
        self,
        config: ModelConfig,
        init_seeds: list[int],
        device: torch.device | str = "cpu",
        formulation: str = "vmap",
    ) -> None:
        if not init_seeds:
            raise ValueError("an ensemble needs at least one member")
        if formulation not in FORMULATIONS:
            raise ValueError(f"unknown formulation {formulation!r}; expected one of {FORMULATIONS}")
        self.config = config
        self.formulation = formulation
        self.n_members = len(init_seeds)
        models = []
        for s in init_seeds:
            torch.manual_seed(s)
            models.append(build_model(config))
        params, buffers = stack_module_state(models)
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        base = copy.deepcopy(models[0])
        _vmap_friendly(base)
        self._base = base.to("meta")

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return functional_call(self._base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor, *, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, var)`` ``[M, B, L]`` for input ``[M, B, P]`` (own batch per member) or
        ``[B, P]`` (one batch shared by all members). ``train`` switches dropout on."""
        if self.formulation == "grouped":
            dropout = self.config.dropout if train else 0.0
            return grouped_forward(self.config, self.params, x, dropout=dropout)
        self._base.train(train)
        x_dim = 0 if x.ndim == 3 else None
        fn = vmap(self._call, in_dims=(0, 0, x_dim), randomness="different")
        return fn(self.params, self.buffers, x)

    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``f(x [M,B,P], y [M,B,L]) -> [M]`` member training losses (Gaussian NLL,
        NaN labels masked), in train mode; wrap it in ``torch.compile`` if wanted."""
        if self.formulation == "grouped":

            def grouped_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                mu, var = grouped_forward(self.config, self.params, x, dropout=self.config.dropout)
                mu, var = mu.float(), var.float()
                return torch.stack([gaussian_nll(mu[m], var[m], y[m]) for m in range(len(y))])

            return grouped_loss

        def member_loss(params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor):
            mu, var = self._call(params, buffers, x)
            return gaussian_nll(mu.float(), var.float(), y)

        batched = vmap(member_loss, in_dims=(0, 0, 0, 0), randomness="different")

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            self._base.train(True)
            return batched(self.params, self.buffers, x, y)

        return loss

    def parameters(self) -> list[torch.Tensor]:
        """The stacked parameter tensors (what the optimizer updates)."""
        return list(self.params.values())

    def state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """Member ``member``'s state_dict (original key names), detached CPU copies."""
        out = {k: v[member].detach().cpu().clone() for k, v in self.params.items()}
        out.update({k: v[member].detach().cpu().clone() for k, v in self.buffers.items()})
        return out

    def stacked_state(self) -> dict[str, torch.Tensor]:
        """All stacked parameters (detached clones), e.g. for a resume file."""
        return {k: v.detach().clone() for k, v in self.params.items()}

    @torch.no_grad()
    def load_stacked_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`stacked_state` (in place, so the optimizer keeps its tensors)."""
        for k, v in self.params.items():
            v.copy_(state[k])
