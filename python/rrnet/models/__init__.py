"""Networks (RRNet, StarNet and their recurrent variants) and the authors' weights.

Every network is built from a :class:`ModelConfig` alone, takes standardised flux
``[B, n_pixels]`` and returns ``(mu, var)`` in standardised label units; its
state_dict keys are the authors' ones, so their ``weight_best.pkl`` files load as is.
"""

from __future__ import annotations

from rrnet.models.config import MODES, NETS, ModelConfig
from rrnet.models.heads import GaussianNet, gaussian_nll
from rrnet.models.keys import StateDictMismatch, check_state_dict, expected_shapes
from rrnet.models.normalization import FLUX_CLIP, Normalization, standardize_flux
from rrnet.models.original import (
    ImportedGroup,
    infer_config,
    load_original,
    load_original_ensemble,
)
from rrnet.models.registry import build_model
from rrnet.models.rrnet import RRNet
from rrnet.models.starnet import StarNet

__all__ = [
    "FLUX_CLIP",
    "MODES",
    "NETS",
    "GaussianNet",
    "ImportedGroup",
    "ModelConfig",
    "Normalization",
    "RRNet",
    "StarNet",
    "StateDictMismatch",
    "build_model",
    "check_state_dict",
    "expected_shapes",
    "gaussian_nll",
    "infer_config",
    "load_original",
    "load_original_ensemble",
    "standardize_flux",
]
