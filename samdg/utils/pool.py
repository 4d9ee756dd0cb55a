"""Run one function over many jobs (cases) in worker processes, with a progress bar and clear failure messages.

    for case_id, record in run_parallel(fingerprint_case, jobs, num_processes=4, names=case_ids): ...

Workers come from a ``forkserver`` context that pre-imports the function's module once, so starting a worker
costs a fork rather than a fresh interpreter importing numpy and torch, and no worker inherits the parent's
threads.

A worker that dies mid-job (almost always killed for memory; sometimes a crash inside a native library) does not
hang the run or end it with a traceback: the job it was running is retried alone in a fresh worker (the others
carry on in a fresh pool afterwards), and a job whose worker dies again, alone, ends the run with a SamdgError that
names it. Results already yielded are kept by the caller.

Workers never outlive the command: they ignore Ctrl-C (the main process handles it and stops them, so no worker
prints a traceback), and each one exits as soon as the main process is gone, even after a SIGKILL that gives the
main process no chance to clean up (their parent is the forkserver, which itself only exits once they have).
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm

from samdg.errors import SamdgError

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_started = None  # in a worker: the shared per-job "started" flags of the run (set by the initializer)


def default_num_processes() -> int:
    """Half the CPU cores, at least 1: workers hold whole volumes in memory."""
    return max(1, (os.cpu_count() or 2) // 2)


class _WorkerDied(Exception):
    """A pool pass ended because a worker process died; ``unfinished`` are the job indices without a result."""

    def __init__(self, unfinished: list[int]) -> None:
        super().__init__(unfinished)
        self.unfinished = unfinished


# ------------------------------------------------------------------------------------------ worker side

def _die_with_parent_process() -> None:
    """Linux: the kernel kills this process when its parent (the forkserver, or the main process under spawn) dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the watchdog below still covers it


def _wait_for_exit(pid: int) -> None:
    """Block until process ``pid`` has exited (a pidfd where the OS has one, else polling once a second)."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (not Linux >= 5.3), or the process is already gone
        pidfd = None
    if pidfd is not None:
        select.select([pidfd], [], [])
        return
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass  # it exists, owned by someone else
        time.sleep(1.0)


def _exit_when_gone(main_pid: int) -> None:
    _wait_for_exit(main_pid)
    os._exit(1)


def _init_worker(main_pid: int, started) -> None:
    global _started
    _started = started
    # Ctrl-C reaches the whole process group; only the main process acts on it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent_process()
    threading.Thread(target=_exit_when_gone, args=(main_pid,), daemon=True, name="samdg-watchdog").start()
    # One intra-op thread per worker: the workers already use every core between them. Only where the job's
    # module (preloaded by the forkserver) brought torch in: a job without torch need not pay its import.
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _run_job(function: Callable[[Any], Any], index: int, job: Any) -> Any:
    _started[index] = 1  # read by the main process if this worker dies
    return function(job)


# ------------------------------------------------------------------------------------------ main side

def _context(function: Callable) -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # Takes effect when this process starts its forkserver (first use); later pools fork from that one.
    if function.__module__ != "__main__":
        context.set_forkserver_preload([function.__module__])
    return context


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate running jobs and cancel queued ones, so an interrupted or failed run ends now, not after them.

    The executor's manager thread is joined here (it ends once it sees the workers gone): left running, it would
    write to its closed wake-up pipe at interpreter exit and print a traceback after Ctrl-C.
    """
    for process in list((getattr(pool, "_processes", None) or {}).values()):  # the executor has no public handle
        process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _pool_pass(function: Callable[[Any], Any], jobs: Sequence[Any], indices: list[int], workers: int,
               context, started) -> Iterator[tuple[int, Any]]:
    """``(index, function(jobs[index]))`` for ``indices`` from one fresh pool, in completion order.

    Raises :class:`_WorkerDied` with the indices left without a result when a worker process dies.
    """
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                               initargs=(os.getpid(), started))
    finished: set[int] = set()
    clean_exit = False
    try:
        futures = {pool.submit(_run_job, function, index, jobs[index]): index for index in indices}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()
                finished.add(futures[future])
                yield futures[future], result
        clean_exit = True
    except BrokenProcessPool:
        raise _WorkerDied([index for index in indices if index not in finished]) from None
    finally:
        if clean_exit:
            pool.shutdown(wait=True)
        else:  # a dead worker, an error, Ctrl-C, or the caller stopped iterating
            _stop_workers(pool)


def _in_order(results: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    """Re-emit ``(index, result)`` pairs of indices 0..n-1 in index order, each as soon as its turn comes."""
    waiting: dict[int, Any] = {}
    next_index = 0
    for index, result in results:
        waiting[index] = result
        while next_index in waiting:
            yield next_index, waiting.pop(next_index)
            next_index += 1


def _parallel_results(function: Callable[[Any], Any], jobs: Sequence[Any], num_processes: int,
                      names: Sequence[str], description: str) -> Iterator[tuple[int, Any]]:
    context = _context(function)
    started = context.Array("b", len(jobs), lock=False)  # one flag per job, set by the worker that takes it
    remaining = list(range(len(jobs)))
    while remaining:
        try:
            yield from _pool_pass(function, jobs, remaining, min(num_processes, len(remaining)), context, started)
            return
        except _WorkerDied as died:
            suspects = [index for index in died.unfinished if started[index]]
            remaining = [index for index in died.unfinished if not started[index]]
        if not suspects:
            raise SamdgError(f"{description}: a worker process died before taking a job (most likely out of "
                             "memory); finished cases are kept, rerun to do the rest")
        for index in suspects:  # alone, so that a job which kills its worker again is the one named
            try:
                yield from _pool_pass(function, jobs, [index], 1, context, started)
            except _WorkerDied:
                raise SamdgError(f"{description}: {names[index]}: the worker process died while processing it, also "
                                 "when retried alone (killed, most likely for lack of memory, or a crash in a "
                                 f"library); finished cases are kept (-np was {num_processes})") from None


def run_parallel(function: Callable[[Any], Any], jobs: Sequence[Any], num_processes: int, progress: bool = True,
                 description: str = "cases", names: Sequence[str] | None = None,
                 ordered: bool = False) -> Iterator[Any]:
    """Yield ``function(job)`` for every job: as each finishes, or in the order of ``jobs`` when ``ordered``.

    ``num_processes <= 1`` (or a single job) runs in this process. ``function`` must be a module-level function
    (it is sent to the workers by name). An exception raised by a job is re-raised as is (a SamdgError stays one
    line) and the other jobs are stopped. ``names`` (one per job, default ``str(job)``) name a job whose worker
    process dies.
    """
    if num_processes < 1:
        raise SamdgError(f"-np must be at least 1, got {num_processes}")
    names = [str(job) for job in jobs] if names is None else list(names)
    bar = tqdm(total=len(jobs), desc=description, unit="case", disable=not progress or not jobs, leave=False,
               file=sys.stderr)
    try:
        if num_processes == 1 or len(jobs) <= 1:
            for job in jobs:
                yield function(job)
                bar.update()
            return
        results = _parallel_results(function, jobs, num_processes, names, description)
        for _, result in (_in_order(results) if ordered else results):
            yield result
            bar.update()
    finally:
        bar.close()
