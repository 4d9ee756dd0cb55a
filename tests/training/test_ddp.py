"""DDP under torchrun: two gloo processes produce the gradients of one process on the same global batch."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import torch

from samdg.training.config import resolve_run
from samdg.training.distributed import DistributedContext, init_distributed
from samdg.training.trainer import Trainer

WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from samdg.training.config import TrainingArgs, resolve_run
    from samdg.training.distributed import init_distributed, shutdown
    from samdg.training.trainer import Trainer

    context = init_distributed("cpu")  # RANK / WORLD_SIZE / MASTER_* come from torchrun
    run = resolve_run(TrainingArgs(**json.loads(sys.argv[2])), "cpu", context.world_size)
    trainer = Trainer(run, context, None)
    batch = trainer.train_loader.dataset[(0, 0)]
    parts = trainer.forward_backward(trainer.prepare(batch))
    gradients = {n: p.grad for n, p in trainer.method.named_parameters() if p.requires_grad}
    torch.save({"gradients": gradients, "keys": batch["keys"], "loss": parts["loss"], "world": context.world_size},
               Path(sys.argv[1]) / f"rank{context.rank}.pt")
    shutdown(context)
    """
)


def test_two_gloo_processes_match_one_process(synthetic_dataset, quick_args, tmp_path):
    args = quick_args(batch_size=4, overrides={"training.augmentation": "default"})
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(tmp_path), json.dumps(dataclasses.asdict(args))]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]

    assert "WORLD_SIZE" not in os.environ
    context = init_distributed("cpu")
    assert context == DistributedContext()
    single = Trainer(resolve_run(args, "cpu"), context, None)
    batch = single.train_loader.dataset[(0, 0)]
    assert batch["keys"] == ranks[0]["keys"] + ranks[1]["keys"]  # each rank got its half of the global batch
    parts = single.forward_backward(single.prepare(batch))
    assert abs(parts["loss"] - (ranks[0]["loss"] + ranks[1]["loss"]) / 2) < 1e-5
    gradients = {n: p.grad for n, p in single.method.named_parameters() if p.requires_grad}
    assert set(gradients) == set(ranks[0]["gradients"])
    for name, gradient in gradients.items():
        for rank in ranks:
            torch.testing.assert_close(rank["gradients"][name], gradient, rtol=1e-4, atol=1e-6, msg=name)
    assert max(float(g.abs().max()) for g in gradients.values()) > 0
