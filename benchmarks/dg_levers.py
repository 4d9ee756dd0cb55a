"""Which generalisation lever helps: the ``sam`` baseline trained on one site, tested on the unseen sites.

    python benchmarks/dg_levers.py --work-dir /tmp/dg_levers --out dg_levers.json          # the CPU table
    python benchmarks/dg_levers.py --work-dir /tmp/dg_levers --out /tmp/smoke.json --smoke  # checks the script

In ``--work-dir`` (its own SAMDG_* roots) it writes the synthetic multi-domain dataset (``samdg_make_synthetic``:
sites differ in contrast, gamma, bias field, noise, resolution and orientation), plans and preprocesses it for
LiteMedSAM, then runs ``samdg_benchmark --protocol single-source --sources siteA`` once per row, each into its own
results root (a model is never reused across rows), with the embedding cache on (the encoder is frozen, so on the
CPU each slice, or each augmented view, is encoded once):

- ``none``: no augmentation (what the cache allowed before the augmented cache);
- ``default``, ``dg_strong``, ``dg_gin``, ``dg_slaug``, ``dg_fourier``, ``dg_all``: that preset through the
  augmented cache with ``--views`` views per slice (default 8);
- ``dg_all K=4/8/16``: the augmented cache with K views of ``dg_all`` (``--k-preset`` to use another preset).

Reported per row: whole-volume Dice and HD95 (mm) of siteA's own test cases (in-domain) and the mean over the other
sites' test cases (cross-domain), from the benchmark's ``cells.csv``, and the wall time. Rows already in ``--out``
are kept (a rerun resumes); a Markdown table is written next to it (same name, ``.md``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATASET_ID = 941
SOURCE = "siteA"
PRESETS = ("none", "default", "dg_strong", "dg_gin", "dg_slaug", "dg_fourier", "dg_all")


def _run(command: list[str], env: dict[str, str], log_file: Path) -> None:
    with open(log_file, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}; see {log_file}")


def _roots(work: Path, results: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SAMDG_raw=str(work / "raw"), SAMDG_preprocessed=str(work / "preprocessed"),
               SAMDG_results=str(work / results), SAMDG_weights=str(work / "weights"))
    return env


def prepare_dataset(work: Path, args: argparse.Namespace, log_file: Path) -> None:
    """Synthetic dataset + plan + preprocessing, once per work folder."""
    env = _roots(work, "results")
    if not (work / "preprocessed").is_dir():
        _run([str(BIN / "samdg_make_synthetic"), "-d", str(DATASET_ID), "--domains", str(args.domains),
              "--cases-per-domain", str(args.cases_per_domain), "--test-cases-per-domain", str(args.test_cases),
              "--shape", args.shape], env, log_file)
        variant = ["--variant", "tiny_tinyvit_test"] if args.smoke else []
        _run([str(BIN / "samdg_plan_and_preprocess"), "-d", str(DATASET_ID), "-np", "1", *variant], env, log_file)


def rows(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(row name, preset, views K; 0 for the plain cache of ``none``)."""
    table = [(preset, preset, 0 if preset == "none" else args.views) for preset in args.presets]
    table += [(f"{args.k_preset} K={k}", args.k_preset, k) for k in args.k_values]
    return table


def run_row(work: Path, name: str, preset: str, views: int, args: argparse.Namespace, log_file: Path) -> dict:
    tag = name.replace(" ", "_").replace("=", "")
    env = _roots(work, f"results_{tag}")
    output = work / f"benchmark_{tag}"
    overrides = ["--override", f"training.augmentation={preset}"]
    if views:
        overrides += ["--override", f"training.embedding_cache_views={views}"]
    started = time.perf_counter()
    _run([str(BIN / "samdg_benchmark"), "-d", str(DATASET_ID), "-m", "sam", "--protocol", "single-source",
          "--sources", SOURCE, "--device", "cpu", "--epochs", str(args.epochs), "--iters-per-epoch", str(args.iters),
          "--embedding-cache", "memory", *overrides, "-o", str(output), "-b", "4", "-np", "1",
          "--disable-progress-bar"], env, log_file)
    seconds = time.perf_counter() - started
    cells = pd.read_csv(output / "cells.csv")
    return {"row": name, "preset": preset, "views": views, "seconds": round(seconds, 1), **summarise(cells)}


def summarise(cells: pd.DataFrame) -> dict:
    """In-domain (siteA) and cross-domain (mean over the other sites) Dice and HD95 from ``cells.csv`` (one value
    per source, target and metric: the mean over classes of the target's test cases)."""
    result = {}
    for metric in ("dice", "hd95_mm"):
        chosen = cells[cells["metric"] == metric]
        for kind in ("in-domain", "cross-domain"):
            value = chosen[chosen["kind"] == kind]["value"].mean()
            result[f"{metric}_{kind.replace('-', '_')}"] = round(float(value), 4)
    return result


def markdown(results: list[dict]) -> str:
    lines = ["| lever | cache views | Dice siteA (in-domain) | Dice other sites | HD95 siteA (mm) "
             "| HD95 other sites (mm) | wall time (s) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['row']} | {r['views'] or 'plain cache'} | {r['dice_in_domain']:.3f} | "
                     f"{r['dice_cross_domain']:.3f} | {r['hd95_mm_in_domain']:.1f} | {r['hd95_mm_cross_domain']:.1f} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="JSON with one entry per row (a Markdown table next "
                                                                 "to it)")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets (default: all)")
    parser.add_argument("--k-values", default="4,8,16", help="K of the augmented-cache rows ('' for none)")
    parser.add_argument("--k-preset", default="dg_all", help="preset of the augmented-cache rows")
    parser.add_argument("--views", type=int, default=8, help="K of the preset rows")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iters", type=int, default=40, help="iterations per epoch (batch: the plan's CPU batch)")
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument("--cases-per-domain", type=int, default=3)
    parser.add_argument("--test-cases", type=int, default=1)
    parser.add_argument("--shape", default="96x96x16")
    parser.add_argument("--smoke", action="store_true", help="tiny random TinyViT and a few iterations")
    args = parser.parse_args(argv)
    args.presets = [p for p in args.presets.split(",") if p]
    args.k_values = [int(k) for k in args.k_values.split(",") if k]
    if args.smoke:
        args.epochs, args.iters, args.shape, args.cases_per_domain = 1, 2, "32x32x6", 2
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log_file = work / "dg_levers.log"
    prepare_dataset(work, args, log_file)

    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    record.update(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
                  machine=f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs".strip(),
                  command=" ".join(["python", "benchmarks/dg_levers.py", *(argv or sys.argv[1:])]),
                  setting={"epochs": args.epochs, "iters_per_epoch": args.iters, "shape": args.shape,
                           "domains": args.domains, "cases_per_domain": args.cases_per_domain,
                           "test_cases_per_domain": args.test_cases, "source": SOURCE})
    results = {r["row"]: r for r in record.get("rows", [])}
    for name, preset, views in rows(args):
        if name in results:
            continue
        print(f"[dg_levers] {name} ...", flush=True)
        results[name] = run_row(work, name, preset, views, args, log_file)
        print(f"[dg_levers] {json.dumps(results[name])}", flush=True)
        record["rows"] = list(results.values())
        args.out.write_text(json.dumps(record, indent=2))
        args.out.with_suffix(".md").write_text(markdown(record["rows"]))
    print(markdown(list(results.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
