"""Worker processes of samdg_plan_and_preprocess (-np > 1) never outlive the command nor print on Ctrl-C.

The command runs its fingerprint and preprocessing jobs on samdg.utils.pool; these tests drive that pool from a
small script whose jobs block (sleep), so the main process can be interrupted or killed while workers are busy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process checks read /proc")

SCRIPT = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path
    from samdg.utils.pool import run_parallel

    def job(task):
        marker, blocks = task
        Path(marker).write_text(str(os.getpid()))
        if blocks:
            time.sleep(600)
        return marker

    if __name__ == "__main__":
        tasks = [(marker, blocks == "block") for marker, blocks in zip(sys.argv[1::2], sys.argv[2::2])]
        try:
            for _ in run_parallel(job, tasks, num_processes=len(tasks), progress=False):
                pass
        except KeyboardInterrupt:  # as samdg's commands do: exit 130 without a traceback
            sys.exit(130)
''')


def _alive(pid: int) -> bool:
    """Running (a zombie, waiting for a reaper that a container may not have, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_until(condition, limit_s: float = 60.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def _descendants(pid: int) -> set[int]:
    children = {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    return children | {d for child in children for d in _descendants(child) if _alive(child)}


def _start_workers(tmp_path, second_job_blocks: bool) -> tuple[subprocess.Popen, list[int], set[int]]:
    """Start the script with two jobs on two workers, the first blocking; -> (main process, worker pids, every
    process it started). When the second job does not block, its worker is idle (waiting for work) on return."""
    script = tmp_path / "busy.py"
    script.write_text(SCRIPT)
    markers = [tmp_path / "worker0", tmp_path / "worker1"]
    arguments = [str(markers[0]), "block", str(markers[1]), "block" if second_job_blocks else "return"]
    main = subprocess.Popen([sys.executable, str(script), *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert _wait_until(lambda: all(m.is_file() and m.read_text() for m in markers))
    if not second_job_blocks:
        time.sleep(0.5)  # let the worker of the returning job get back to waiting for work
    return main, [int(m.read_text()) for m in markers], _descendants(main.pid)


def test_workers_and_forkserver_die_with_a_killed_main_process(tmp_path):
    main, workers, started = _start_workers(tmp_path, second_job_blocks=True)
    assert set(workers) <= started
    os.kill(main.pid, signal.SIGKILL)
    main.wait()
    assert _wait_until(lambda: not any(_alive(pid) for pid in started)), [p for p in started if _alive(p)]


@pytest.mark.parametrize("second_job_blocks", [False, True], ids=["one-worker-idle", "both-workers-busy"])
def test_ctrl_c_ends_the_run_without_a_worker_traceback(tmp_path, second_job_blocks):
    main, workers, _ = _start_workers(tmp_path, second_job_blocks)
    os.killpg(main.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group gets it
    _, err = main.communicate(timeout=60)
    assert main.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert _wait_until(lambda: not any(_alive(pid) for pid in workers))
