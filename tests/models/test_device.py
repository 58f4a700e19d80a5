"""One device rule for training and inference (rrnet.models.device.resolve_device)."""

from __future__ import annotations

import pytest
import torch

from rrnet.models import ensemble
from rrnet.models.device import resolve_device
from rrnet.training import loop


@pytest.mark.parametrize("gpu", [False, True])
def test_auto_picks_cuda_only_when_there_is_one(monkeypatch, gpu: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert resolve_device("auto") == torch.device("cuda" if gpu else "cpu")
    assert resolve_device() == resolve_device("auto")


@pytest.mark.parametrize("name", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_asking_for_cuda_without_a_gpu_is_a_value_error(monkeypatch, name) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device(name)


def test_explicit_devices_pass_through(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_training_and_inference_share_the_rule() -> None:
    assert ensemble.resolve_device is resolve_device
    assert loop.resolve_device is resolve_device
