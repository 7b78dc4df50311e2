"""Device and dtype checks made before any model loads (pix2pix_zero.loading.device)."""
import pytest
import torch

from pix2pix_zero.loading import device
from pix2pix_zero.loading.device import device_problem


def test_fp16_on_a_cpu_is_warned_about_naming_the_alternatives():
    warning = device_problem("cpu", torch.float16)
    assert "fp16 on a CPU" in warning and "--dtype bf16" in warning and "--dtype fp32" in warning
    assert device_problem("cpu", torch.float32) is None


def test_bf16_on_a_cpu_without_bf16_units_is_warned_about(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    assert "--dtype fp32" in device_problem("cpu", torch.bfloat16)
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    assert device_problem("cpu", torch.bfloat16) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(ValueError, match="--device cuda.*--device cpu"):
        device_problem("cuda", torch.float32)
