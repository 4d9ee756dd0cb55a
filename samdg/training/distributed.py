"""Multi-GPU / multi-node training with torchrun (DistributedDataParallel).

``torchrun --nproc_per_node N [--nnodes M ...] $(which samdg_train) 5 sam 0`` runs the same command in N x M
processes; torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, which
are detected here. Backend: NCCL on CUDA (process i uses GPU ``LOCAL_RANK``), gloo on the CPU.

The plan's batch size is the *global* batch: each of the W processes gets ``batch_size / W`` samples (the batch
size must divide by W), so a run on 8 GPUs sees the same samples per iteration as a run on 1 GPU, only faster;
per-epoch iterations stay as planned. Gradients are averaged by DDP; the loss is a per-sample mean, so they equal
those of one process on the whole batch. Validation counts (TP/FP/FN) are summed over processes; checkpoints,
logs and plots are written by rank 0 only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from samdg.errors import SamdgError


@dataclass
class DistributedContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(choice: str) -> str:
    """``cpu`` | ``cuda`` | ``auto`` -> ``cpu`` or ``cuda`` (``cuda`` without a GPU is an error)."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SamdgError("--device cuda: no CUDA GPU is visible to PyTorch (use --device cpu)")
    if choice not in ("cpu", "cuda"):
        raise SamdgError(f"--device {choice}: choose cpu, cuda or auto")
    return choice


def init_distributed(device_type: str) -> DistributedContext:
    """Start the process group when launched by torchrun (``WORLD_SIZE`` > 1); otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        device = torch.device("cuda", torch.cuda.current_device()) if device_type == "cuda" else torch.device("cpu")
        return DistributedContext(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistributedContext(rank, local_rank, world_size, device)


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum over processes (in place; returns the tensor)."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any, context: DistributedContext) -> list[Any]:
    """Every process's ``obj``, in rank order (a one-element list without DDP)."""
    if not context.enabled:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, context: DistributedContext) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not context.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()
