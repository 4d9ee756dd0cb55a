"""Wall-clock time of samdg's plan-and-preprocess against nnU-Net v2's 2d configuration on the same synthetic data.

    python benchmarks/plan_preprocess_vs_nnunet.py                       # defaults below, 2 worker processes
    python benchmarks/plan_preprocess_vs_nnunet.py --cases-per-domain 4 --repeats 1   # a quick run

Both tools read one raw folder (written by ``dataset_conversion.synthetic``: nnU-Net v2 layout plus samdg's
``domains`` map, which nnU-Net ignores). Each timed run starts from an empty preprocessed folder and includes the
fingerprint, the planning and the preprocessing of every training case, plus interpreter start-up and imports:
what a user waits for. Runs are interleaved; the CPU time (user + system, of the command and the worker processes
it waited for) is reported too, since it is less sensitive to other load on the machine than the wall time.

    samdg:   samdg_plan_and_preprocess -d ID -np N --no_pbar              (integrity check always included)
    nnU-Net: nnUNetv2_plan_and_preprocess -d ID -c 2d -np N -npfp N --no_pbar
             (and again with --verify_dataset_integrity, the closer match to samdg's work)

nnU-Net is a benchmark-only dependency: install it in its own environment, never in samdg's
(``python3 -m venv /tmp/nnunet_venv && /tmp/nnunet_venv/bin/pip install torch nnunetv2``) and pass its command
with ``--nnunet`` if it is not at the default path. Results go to documentation/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _become_subreaper() -> None:
    """Adopt orphaned descendants (e.g. a multiprocessing forkserver outliving its parent), so that their CPU time
    can be collected with wait4 like everyone else's (Linux prctl PR_SET_CHILD_SUBREAPER)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed; CPU times would miss orphaned workers")


def _run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``command``; return (wall seconds, CPU seconds of it and of every descendant)."""
    start = time.perf_counter()
    with open(os.devnull, "w") as sink, \
            subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.PIPE, text=True) as process:
        errors = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    while True:  # orphans adopted from the command's process tree
        try:
            _, _, orphan = os.wait4(-1, 0)
        except ChildProcessError:
            break
        cpu += orphan.ru_utime + orphan.ru_stime
    if process.returncode != 0:
        raise SystemExit(f"command failed ({process.returncode}): {' '.join(command)}\n{errors[-3000:]}")
    return elapsed, cpu


def _samdg_command() -> list[str]:
    script = Path(sys.executable).with_name("samdg_plan_and_preprocess")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "samdg.cli.plan_and_preprocess"]


def _count(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.is_dir() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/samdg_bench_plan_preprocess"))
    parser.add_argument("--nnunet", default="/tmp/nnunet_venv/bin/nnUNetv2_plan_and_preprocess")
    parser.add_argument("-np", type=int, default=2, help="worker processes for both tools (default 2)")
    parser.add_argument("--dataset-id", type=int, default=950)
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument("--cases-per-domain", type=int, default=10)
    parser.add_argument("--shape", default="160x160x40", help="R x A x S voxels of the reference site")
    parser.add_argument("--modality", default="MR", choices=("MR", "CT"))
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per command (the median is reported)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args()

    from dataset_conversion.synthetic import make_synthetic_dataset

    workdir = args.workdir.resolve()
    raw, samdg_pp, nnunet_pp = workdir / "raw", workdir / "samdg_preprocessed", workdir / "nnunet_preprocessed"
    name = f"Dataset{args.dataset_id:03d}_SyntheticBench"
    shape = tuple(int(v) for v in args.shape.lower().split("x"))
    if not (raw / name / "dataset.json").is_file():
        print(f"writing the synthetic dataset to {raw / name} ...", flush=True)
        make_synthetic_dataset(raw / name, num_domains=args.domains, cases_per_domain=args.cases_per_domain,
                               test_cases_per_domain=0, shape=shape, modality=args.modality, overwrite=True,
                               num_processes=args.np)
    dataset_json = json.loads((raw / name / "dataset.json").read_text())
    num_cases = dataset_json["numTraining"]

    env = dict(os.environ)
    env.update({"SAMDG_raw": str(raw), "SAMDG_preprocessed": str(samdg_pp), "SAMDG_results": str(workdir / "results"),
                "SAMDG_weights": str(workdir / "weights"), "nnUNet_raw": str(raw),
                "nnUNet_preprocessed": str(nnunet_pp), "nnUNet_results": str(workdir / "results")})
    n = str(args.np)
    commands = {
        "samdg": _samdg_command() + ["-d", str(args.dataset_id), "-np", n, "--no_pbar"],
        "nnU-Net 2d": [args.nnunet, "-d", str(args.dataset_id), "-c", "2d", "-np", n, "-npfp", n, "--no_pbar"],
        "nnU-Net 2d + integrity check": [args.nnunet, "-d", str(args.dataset_id), "-c", "2d", "-np", n, "-npfp", n,
                                         "--no_pbar", "--verify_dataset_integrity"],
    }
    if not Path(args.nnunet).is_file() and shutil.which(args.nnunet) is None:
        raise SystemExit(f"nnU-Net command not found: {args.nnunet} (see the module docstring)")

    _become_subreaper()
    timings: dict[str, list[float]] = {k: [] for k in commands}
    cpu: dict[str, list[float]] = {k: [] for k in commands}
    for repeat in range(args.repeats):  # interleaved, so a change in machine load hits every tool alike
        for label, command in commands.items():
            for folder in (samdg_pp, nnunet_pp):
                shutil.rmtree(folder, ignore_errors=True)
            seconds, cpu_seconds = _run(command, env)
            timings[label].append(seconds)
            cpu[label].append(cpu_seconds)
            print(f"run {repeat + 1}/{args.repeats} {label}: {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU", flush=True)
            if label == "samdg":
                produced = _count(samdg_pp / name / "samdgPlans_2d", "*.json")
            else:
                produced = _count(nnunet_pp / name / "nnUNetPlans_2d", "*.pkl")
            if produced != num_cases:
                raise SystemExit(f"{label} produced {produced} preprocessed cases, expected {num_cases}")

    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}, "
                   f"Python {platform.python_version()}",
        "dataset": f"{name}: {num_cases} training cases, {args.domains} synthetic sites, reference shape "
                   f"{args.shape} (R x A x S), {args.modality}",
        "num_processes": args.np,
        "commands": {k: " ".join(Path(c).name if i == 0 else c for i, c in enumerate(v)) for k, v in commands.items()},
        "seconds": {k: [round(t, 2) for t in v] for k, v in timings.items()},
        "median_seconds": {k: round(statistics.median(v), 2) for k, v in timings.items()},
        "cpu_seconds": {k: [round(t, 2) for t in v] for k, v in cpu.items()},
        "median_cpu_seconds": {k: round(statistics.median(v), 2) for k, v in cpu.items()},
    }
    print()
    print("| tool | command | median wall time (s) | wall times (s) | median CPU time (s) |")
    print("| --- | --- | --- | --- | --- |")
    for label in commands:
        runs = ", ".join(f"{t:.1f}" for t in timings[label])
        print(f"| {label} | `{result['commands'][label]}` | {result['median_seconds'][label]:.1f} | {runs} | "
              f"{result['median_cpu_seconds'][label]:.1f} |")
    print(f"\n{result['date']}, {result['machine']}; {result['dataset']}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
