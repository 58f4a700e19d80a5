"""Networks (RRNet, StarNet and their recurrent variants) and the authors' weights.

Every network is built from a :class:`ModelConfig` alone, takes standardised flux
``[B, n_pixels]`` and returns ``(mu, var)`` in standardised label units; its
state_dict keys are the authors' ones, so their ``weight_best.pkl`` files load as is.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from rrnet.models.config import MODES, NETS, ModelConfig

if TYPE_CHECKING:
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

# Everything but the config imports torch: loaded on first use, so that reading a
# ModelConfig (and every command's --help) does not pay for torch.
_LAZY: dict[str, str] = {
    "GaussianNet": "heads",
    "gaussian_nll": "heads",
    "StateDictMismatch": "keys",
    "check_state_dict": "keys",
    "expected_shapes": "keys",
    "FLUX_CLIP": "normalization",
    "Normalization": "normalization",
    "standardize_flux": "normalization",
    "ImportedGroup": "original",
    "infer_config": "original",
    "load_original": "original",
    "load_original_ensemble": "original",
    "build_model": "registry",
    "RRNet": "rrnet",
    "StarNet": "starnet",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"rrnet.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'rrnet.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


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
