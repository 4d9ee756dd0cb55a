"""The one process pool (samdg.utils.pool): results, job errors, and workers that die mid-job."""

import os
import signal
from pathlib import Path

import pytest

from samdg.errors import SamdgError
from samdg.utils.pool import run_parallel


def square(job: int) -> int:
    return job * job


def refuse_three(job: int) -> int:
    if job == 3:
        raise SamdgError("case 3: bad input")
    return job


def killed_on(job: tuple[str, str]) -> str:
    """Kills its own worker process (as the kernel's OOM killer does) for case 'doomed'."""
    name, _ = job
    if name == "doomed":
        os.kill(os.getpid(), signal.SIGKILL)
    return name


def killed_once(job: tuple[str, str]) -> str:
    """Kills its worker the first time it runs case 'flaky' (memory pressure that a retry alone survives)."""
    name, marker = job
    if name == "flaky" and not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return name


def test_results_in_completion_or_input_order():
    jobs = list(range(7))
    assert sorted(run_parallel(square, jobs, 3, progress=False)) == [j * j for j in jobs]
    assert list(run_parallel(square, jobs, 3, progress=False, ordered=True)) == [j * j for j in jobs]
    assert list(run_parallel(square, jobs, 1, progress=False)) == [j * j for j in jobs]


def test_a_job_error_is_raised_as_is():
    with pytest.raises(SamdgError, match="case 3: bad input"):
        list(run_parallel(refuse_three, list(range(6)), 2, progress=False))


def test_a_worker_killed_mid_job_is_a_one_line_error_naming_the_case(tmp_path):
    names = ["case_a", "case_b", "doomed", "case_c"]
    jobs = [(name, str(tmp_path / name)) for name in names]
    results = []
    with pytest.raises(SamdgError) as error:
        for result in run_parallel(killed_on, jobs, 2, progress=False, description="evaluating", names=names):
            results.append(result)
    message = str(error.value)
    assert message.startswith("evaluating: doomed: the worker process died while processing it")
    assert "\n" not in message
    assert "doomed" not in results


def test_a_job_whose_worker_dies_once_is_retried_and_every_result_arrives(tmp_path):
    names = ["case_a", "flaky", "case_b", "case_c", "case_d"]
    jobs = [(name, str(tmp_path / "flaky.marker")) for name in names]
    assert list(run_parallel(killed_once, jobs, 2, progress=False, names=names, ordered=True)) == names
    assert (tmp_path / "flaky.marker").exists()  # the worker really died once
