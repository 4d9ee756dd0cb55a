"""Run one function over many cases in worker processes, with a progress bar and clear failure messages.

Workers come from a ``forkserver`` context that pre-imports samdg's preprocessing modules once, so starting a
worker costs a fork rather than a fresh interpreter importing torch, and no worker inherits the parent's threads.
A worker that dies (almost always out of memory) becomes a SamdgError saying so instead of a hang.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm

from samdg.errors import SamdgError

_PRELOAD = ["samdg.preprocessing.pipeline", "samdg.planning.fingerprint", "samdg.imageio"]


def default_num_processes() -> int:
    """Half the CPU cores, at least 1: preprocessing workers hold whole volumes in memory."""
    return max(1, (os.cpu_count() or 2) // 2)


def _init_worker() -> None:
    # One intra-op thread per worker: the workers already use every core between them.
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _context():
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


def run_parallel(function: Callable[[Any], Any], jobs: Sequence[Any], num_processes: int, progress: bool = True,
                 description: str = "cases") -> Iterator[Any]:
    """Yield ``function(job)`` for every job as each finishes (in completion order).

    ``num_processes <= 1`` (or a single job) runs in this process. A SamdgError from a job is re-raised as is;
    pending jobs are cancelled.
    """
    if num_processes < 1:
        raise SamdgError(f"-np must be at least 1, got {num_processes}")
    bar = tqdm(total=len(jobs), desc=description, unit="case", disable=not progress or not jobs, leave=False)
    try:
        if num_processes == 1 or len(jobs) <= 1:
            for job in jobs:
                yield function(job)
                bar.update()
            return
        workers = min(num_processes, len(jobs))
        with ProcessPoolExecutor(workers, mp_context=_context(), initializer=_init_worker) as pool:
            pending = {pool.submit(function, job) for job in jobs}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in done:
                        yield future.result()
                        bar.update()
            except BrokenProcessPool:
                raise SamdgError(f"a worker process died while processing {description} (most likely out of "
                                 f"memory); rerun with a smaller -np (was {num_processes}); finished cases are kept") from None
            finally:
                for future in pending:
                    future.cancel()
    finally:
        bar.close()
