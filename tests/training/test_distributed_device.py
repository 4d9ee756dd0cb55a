"""Training resolves --device with the shared resolver; torchrun refuses a device its processes cannot share."""

import pytest
import torch

from samdg.errors import SamdgError
from samdg.training.distributed import DistributedContext, init_distributed


def test_one_process_trains_on_the_resolved_device(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert init_distributed("auto") == DistributedContext(device=torch.device("cpu"))
    with pytest.raises(SamdgError, match="--device 'tpu' is not a device; use auto, cpu, cuda, cuda:N or mps"):
        init_distributed("tpu")
    with pytest.raises(SamdgError, match="--device cuda: no CUDA GPU is visible"):
        init_distributed("cuda")


def test_torchrun_on_a_device_its_processes_cannot_share_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    with pytest.raises(SamdgError, match=r"--device mps: training under torchrun runs on cuda \(NCCL\) or cpu"):
        init_distributed("mps")
