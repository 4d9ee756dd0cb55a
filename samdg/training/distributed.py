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
from samdg.utils.device import resolve_device


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


def init_distributed(device_choice: str | torch.device = "auto") -> DistributedContext:
    """Resolve ``--device`` and start the process group when launched by torchrun (``WORLD_SIZE`` > 1).

    One process runs on the resolved device (``auto``: CUDA, else MPS, else CPU). Under torchrun, process i uses
    GPU ``LOCAL_RANK`` (NCCL) on CUDA, or the CPU (gloo); other devices cannot be shared by processes.
    """
    device = resolve_device(device_choice)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        device = torch.device("cuda", index)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return DistributedContext(device=device)
    if device.type not in ("cuda", "cpu"):
        raise SamdgError(f"--device {device_choice}: training under torchrun runs on cuda (NCCL) or cpu (gloo), "
                         f"not {device.type}")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
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
