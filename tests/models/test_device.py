"""One device rule for training and inference (resolve_device), and the float32 mode."""

from __future__ import annotations

import pytest
import torch

from rrnet.models import ensemble
from rrnet.models.device import resolve_device, set_float32_mode, use_precision
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


@pytest.mark.parametrize("mode", ["fp32", "tf32"])
def test_float32_mode_sets_matmuls_and_cudnn_together(mode: str) -> None:
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    try:
        set_float32_mode(mode)
        assert torch.get_float32_matmul_precision() == ("highest" if mode == "fp32" else "high")
        assert torch.backends.cudnn.allow_tf32 is (mode == "tf32")  # torch's default: True
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def test_unknown_float32_mode_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="fp32"):
        set_float32_mode("bf16")


def test_precision_on_a_cpu_changes_nothing_but_asks_bf16_autocast() -> None:
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    cpu = torch.device("cpu")
    assert [use_precision(p, cpu) for p in ("fp32", "tf32", "bf16")] == [False, False, True]
    assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before
    with pytest.raises(ValueError, match="precision"):
        use_precision("fp16", cpu)
