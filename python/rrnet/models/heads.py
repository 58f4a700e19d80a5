"""Gaussian output head shared by every architecture, and its negative log-likelihood."""

from __future__ import annotations

import torch
from torch import nn

from rrnet.models.config import ModelConfig


class GaussianNet(nn.Module):
    """Base of all networks: ``features(x)`` then the authors' Gaussian head.

    The head layers are attributes of the network itself (``fc1``, ``fc2``, ``mu``,
    ``sigma``) rather than of a sub-module, so that state_dict keys are exactly the
    authors' ones (``fc1.0.weight``, ``sigma.0.bias``, ...) and their files load
    with ``strict=True``. ``sigma`` predicts a variance (Softplus keeps it > 0).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def build_head(self, in_features: int) -> None:
        """Create fc1, fc2, mu and sigma; call last in a subclass ``__init__``."""
        h1, h2 = self.config.hidden
        p = self.config.dropout
        n = self.config.num_labels
        self.fc1 = nn.Sequential(nn.Linear(in_features, h1), nn.ReLU(), nn.Dropout(p))
        self.fc2 = nn.Sequential(nn.Linear(h1, h2), nn.ReLU(), nn.Dropout(p))
        self.mu = nn.Linear(h2, n)
        self.sigma = nn.Sequential(nn.Linear(h2, n), nn.Softplus())

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional stack: ``[B, 1, L]`` -> ``[B, C, L']`` (after its last activation)."""
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features ``[B, F]`` from standardised flux ``[B, n_pixels]``.

        The recurrent module (``self.rnn``, method §3) runs on the flux before the
        convolutions in ``pre-RNN`` mode, on the channel-last features after them in
        ``post-RNN`` mode, and not at all in ``raw`` mode.
        """
        if self.config.mode == "pre-RNN":
            x = self.rnn(x)
        h = self.convolve(x.unsqueeze(1))
        if self.config.mode == "post-RNN":
            return self.rnn(h.permute(0, 2, 1).flatten(1))
        return h.flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, var)``, each ``[B, num_labels]``, in standardised label units."""
        if x.ndim != 2 or x.shape[1] != self.config.n_pixels:
            raise ValueError(
                f"expected input of shape [B, {self.config.n_pixels}], got {tuple(x.shape)}"
            )
        h = self.fc2(self.fc1(self.features(x)))
        return self.mu(h), self.sigma(h)


def gaussian_nll(
    mu: torch.Tensor,
    var: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood, ``log(var)/2 + (y - mu)^2 / (2 var)``.

    Missing labels (NaN in ``y``, or False in ``mask``) are left out, and the mean is
    taken over the present entries only, so that a star with a few missing abundances
    still trains the others. The authors' constant ``+5`` is omitted (it changes no
    gradient). Returns 0 (still attached to the graph) when no label is present.
    """
    present = ~torch.isnan(y)
    if mask is not None:
        present = present & mask.to(torch.bool)
    y_filled = torch.where(present, y, torch.zeros_like(y))
    term = 0.5 * torch.log(var) + (y_filled - mu) ** 2 / (2.0 * var)
    term = torch.where(present, term, torch.zeros_like(term))
    count = present.sum()
    return term.sum() / count.clamp(min=1)
