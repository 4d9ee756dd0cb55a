"""Which generalisation lever helps: SAM methods trained on one site, tested on the unseen sites.

    python benchmarks/dg_levers.py --work-dir /tmp/dg_levers --out dg_levers.json          # the CPU table
    python benchmarks/dg_levers.py --work-dir /tmp/dg_levers --out /tmp/smoke.json --smoke  # checks the script

In ``--work-dir`` (its own SAMDG_* roots) it writes the synthetic multi-domain dataset (``samdg_make_synthetic``:
sites differ in contrast, gamma, bias field, noise, resolution and orientation), plans and preprocesses it for
LiteMedSAM, then runs ``samdg_benchmark --protocol single-source --sources siteA`` once per row, each into its own
results root (a model is never reused across rows), with the embedding cache on (the encoder is frozen, so on the
CPU each slice, or each augmented view, is encoded once). Rows, in this order:

- ``sam none``: no augmentation (the plain cache: each slice once);
- ``sam <preset> K=<views>`` for ``default``, ``dg_strong``, ``dg_gin``, ``dg_slaug``, ``dg_fourier``, ``dg_all``:
  that preset through the augmented cache with ``--views`` views per slice (default 8);
- ``sam <best> K=4/16``: the augmented cache with other K for ``--k-preset`` (``best``, the default: the augmented
  preset with the highest cross-domain Dice among the rows above);
- for every other method of ``--methods``: ``none`` and the best augmented preset (``--other-presets``). Only
  methods with a frozen encoder can use the cache (``sam``, ``desam``); ``dapsam``, ``dbsam`` and ``espmedsam``
  train their encoder and are refused.

Reported per row, from the benchmark's per-case evaluation: whole-volume Dice (mean over classes of each case) of
siteA's own test cases (in-domain) and of the other sites' test cases (cross-domain), as mean and standard
deviation over test cases; the paired difference to the same method's ``none`` row over the same cross-domain test
cases (mean, standard error, cases better / worse); HD95 (mm, mean over cases of the classes a case predicts);
the validation Dice of the last two epochs (slice level, mean over classes: whether training converged); the wall
time of the row's ``samdg_benchmark`` call (a row resumed after an interruption counts only the resumed part).
Rows already in ``--out`` are kept (a rerun resumes); a Markdown table is written next to it (``.md``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from samdg.utils.files import atomic_write_json, atomic_write_text

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


def row_name(method: str, preset: str, views: int) -> str:
    return f"{method} {preset}" if not views else f"{method} {preset} K={views}"


def best_augmented_preset(results: dict[str, dict], method: str, views: int) -> str | None:
    """The augmented preset of ``method`` with the highest cross-domain Dice at ``views`` views (None: none run)."""
    measured = [r for r in results.values() if r["method"] == method and r["preset"] != "none" and r["views"] == views]
    return max(measured, key=lambda r: r["dice_cross_domain"])["preset"] if measured else None


def planned_rows(args: argparse.Namespace, results: dict[str, dict]) -> list[tuple[str, str, int]]:
    """(method, preset, views K; 0 for the plain cache of ``none``), in run order. Rows that depend on the best
    preset appear once the preset rows they are chosen from are in ``results``."""
    lead = args.methods[0]
    table = [(lead, preset, 0 if preset == "none" else args.views) for preset in args.presets]
    done = all(row_name(*row) in results for row in table)
    k_preset = best_augmented_preset(results, lead, args.views) if args.k_preset == "best" else args.k_preset
    if k_preset and (done or args.k_preset != "best"):
        table += [(lead, k_preset, k) for k in args.k_values if k != args.views or k_preset not in args.presets]
    for method in args.methods[1:]:
        for preset in args.other_presets:
            preset = k_preset if preset == "best" else preset
            if preset:
                table.append((method, preset, 0 if preset == "none" else args.views))
    return table


def run_row(work: Path, method: str, preset: str, views: int, args: argparse.Namespace, log_file: Path) -> dict:
    name = row_name(method, preset, views)
    tag = name.replace(" ", "_").replace("=", "")
    env = _roots(work, f"results_{tag}")
    output = work / f"benchmark_{tag}"
    overrides = ["--override", f"training.augmentation={preset}"]
    if views:
        overrides += ["--override", f"training.embedding_cache_views={views}"]
    started = time.perf_counter()
    _run([str(BIN / "samdg_benchmark"), "-d", str(DATASET_ID), "-m", method, "--protocol", "single-source",
          "--sources", SOURCE, "--device", "cpu", "--epochs", str(args.epochs), "--iters-per-epoch", str(args.iters),
          "--embedding-cache", "memory", *overrides, "-o", str(output), "-b", "4", "-np", "1",
          "--disable-progress-bar"], env, log_file)
    seconds = time.perf_counter() - started
    per_case = pd.read_csv(output / "predictions" / f"src-{SOURCE}" / "evaluation_Ts" / "per_case.csv")
    metrics = sorted((work / f"results_{tag}").rglob("metrics.jsonl"))
    return {"row": name, "method": method, "preset": preset, "views": views, "seconds": round(seconds, 1),
            **summarise(per_case), **convergence(metrics[0] if metrics else None)}


def summarise(per_case: pd.DataFrame) -> dict:
    """Per test case, the mean over classes of Dice and of HD95 (mm; classes without a value left out), split into
    in-domain (the source's cases) and cross-domain (every other site's cases), with their mean and spread."""
    cases = per_case.groupby(["case", "domain"])[["dice", "hd95_mm"]].mean().reset_index()
    result: dict = {}
    for kind, chosen in (("in_domain", cases[cases["domain"] == SOURCE]),
                         ("cross_domain", cases[cases["domain"] != SOURCE])):
        result[f"dice_{kind}"] = round(float(chosen["dice"].mean()), 4)
        result[f"dice_{kind}_sd"] = round(float(chosen["dice"].std(ddof=1)), 4) if len(chosen) > 1 else 0.0
        result[f"hd95_mm_{kind}"] = round(float(chosen["hd95_mm"].mean()), 2)
        result[f"n_{kind}"] = int(len(chosen))
        result[f"cases_{kind}"] = {c: round(float(d), 4) for c, d in zip(chosen["case"], chosen["dice"])}
    for domain, chosen in cases.groupby("domain"):
        result[f"dice_{domain}"] = round(float(chosen["dice"].mean()), 4)
    return result


def convergence(metrics_file: Path | None) -> dict:
    """Slice-level validation Dice (mean over classes) of the last two epochs: a plateau means converged."""
    if metrics_file is None:
        return {}
    epochs = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    return {"val_dice_last": round(epochs[-1]["val_mean_dice"], 3),
            "val_dice_before_last": round(epochs[-2]["val_mean_dice"], 3) if len(epochs) > 1 else None}


def paired_to_none(result: dict, results: dict[str, dict]) -> dict:
    """Cross-domain Dice minus the same method's ``none`` row, case by case: mean, standard error, better/worse."""
    reference = results.get(row_name(result["method"], "none", 0))
    if reference is None or reference is result:
        return {}
    diffs = [result["cases_cross_domain"][c] - reference["cases_cross_domain"][c]
             for c in result["cases_cross_domain"] if c in reference["cases_cross_domain"]]
    if len(diffs) < 2:
        return {}
    mean = sum(diffs) / len(diffs)
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
    return {"diff": mean, "se": se, "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs)}


def markdown(results: dict[str, dict]) -> str:
    lines = ["| method | augmentation | cache views K | Dice siteA (in-domain) | Dice other sites (cross-domain) "
             "| vs none, paired (+/- SE; better/worse) | HD95 siteA (mm) | HD95 other sites (mm) "
             "| val Dice, last 2 epochs | wall time (min) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results.values():
        paired = paired_to_none(r, results)
        versus = (f"{paired['diff']:+.3f} +/- {paired['se']:.3f} ({paired['better']}/{paired['worse']})"
                  if paired else "")
        lines.append(
            f"| {r['method']} | {r['preset']} | {r['views'] or 'plain cache'} "
            f"| {r['dice_in_domain']:.3f} +/- {r['dice_in_domain_sd']:.3f} "
            f"| {r['dice_cross_domain']:.3f} +/- {r['dice_cross_domain_sd']:.3f} | {versus} "
            f"| {r['hd95_mm_in_domain']:.1f} | {r['hd95_mm_cross_domain']:.1f} "
            f"| {r.get('val_dice_before_last')}, {r.get('val_dice_last')} | {r['seconds'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="JSON with one entry per row (a Markdown table next "
                                                                 "to it)")
    parser.add_argument("--methods", default="sam", help="comma-separated; the first gets every preset row")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets (default: all)")
    parser.add_argument("--k-values", default="4,8,16", help="K of the augmented-cache rows ('' for none)")
    parser.add_argument("--k-preset", default="best", help="preset of the K rows (best: the best augmented one)")
    parser.add_argument("--other-presets", default="none,best", help="rows of the other methods")
    parser.add_argument("--views", type=int, default=8, help="K of the preset rows")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--iters", type=int, default=60, help="iterations per epoch (batch: the plan's CPU batch)")
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument("--cases-per-domain", type=int, default=3)
    parser.add_argument("--test-cases", type=int, default=6, help="test cases per site")
    parser.add_argument("--shape", default="64x64x5")
    parser.add_argument("--smoke", action="store_true", help="tiny random TinyViT and a few iterations")
    args = parser.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    args.presets = [p for p in args.presets.split(",") if p]
    args.other_presets = [p for p in args.other_presets.split(",") if p]
    args.k_values = [int(k) for k in args.k_values.split(",") if k]
    if args.smoke:
        args.epochs, args.iters, args.shape, args.cases_per_domain, args.test_cases = 1, 2, "32x32x6", 2, 2
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
    while True:
        pending = [row for row in planned_rows(args, results) if row_name(*row) not in results]
        if not pending:
            break
        print(f"[dg_levers] {row_name(*pending[0])} ...", flush=True)
        result = run_row(work, *pending[0], args, log_file)
        results[result["row"]] = result
        print(f"[dg_levers] {result['row']}: cross-domain Dice {result['dice_cross_domain']:.3f}, "
              f"{result['seconds']:.0f} s", flush=True)
        record["rows"] = list(results.values())
        atomic_write_json(args.out, record)  # the record the next run resumes from: never half-written
        atomic_write_text(args.out.with_suffix(".md"), markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
