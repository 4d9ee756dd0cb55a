"""The one device resolver and autocast helper (samdg.utils.device)."""

import pytest
import torch

from samdg.errors import SamdgError
from samdg.utils.device import autocast, autocast_dtype, resolve_device


@pytest.fixture
def no_accelerator(monkeypatch):
    """This machine as one without CUDA or MPS, whatever it really has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_every_accepted_spelling_gives_a_torch_device(no_accelerator):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_prefers_cuda_and_cuda_n_is_checked_against_the_count(two_gpus):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(SamdgError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("choice, message", [
    ("cuda", "--device cuda: no CUDA GPU"),
    ("cuda:0", "--device cuda:0: no CUDA GPU"),
    (torch.device("cuda", 0), "--device cuda:0: no CUDA GPU"),
    ("mps", "--device mps: MPS is not available"),
    ("gpu", "--device 'gpu' is not a device"),
    ("meta", "--device meta: samdg runs on auto, cpu, cuda"),
])
def test_an_unavailable_or_unknown_device_is_a_one_line_error(no_accelerator, choice, message):
    with pytest.raises(SamdgError) as error:
        resolve_device(choice)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_autocast_takes_a_precision_word_or_a_dtype():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None  # full precision off CUDA
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    layer = torch.nn.Linear(4, 4)
    inputs = torch.randn(2, 4)
    with autocast(cpu, "fp32"):
        assert layer(inputs).dtype == torch.float32
    with autocast(cpu, None):
        assert layer(inputs).dtype == torch.float32
    with autocast(cpu, torch.bfloat16):
        assert layer(inputs).dtype == torch.bfloat16
    with autocast(cpu, "bf16"):
        assert layer(inputs).dtype == torch.bfloat16
    with pytest.raises(SamdgError, match="--precision 'half' is not one of auto, fp32, bf16, fp16"):
        autocast(cpu, "half")
