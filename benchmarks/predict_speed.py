"""Prediction speed in volumes/s: slices in batches (samdg_predict) against one slice at a time.

    python benchmarks/predict_speed.py --out predict_speed.json            # on a CUDA GPU: litemedsam and vit_b
    python benchmarks/predict_speed.py --out /tmp/smoke.json --smoke       # CPU, tiny random variant: checks the script

What is timed is what ``samdg_predict`` does for a folder (:meth:`samdg.inference.Predictor.predict_cases`): read
the NIfTI file, preprocess, build the SAM inputs, run the model, invert the preprocessing and write the label file,
with the next case preprocessed in a background thread. Volumes come from ``dataset_conversion.synthetic`` (one
site, ``--shape`` voxels R x A x S at 1 x 1 x 3 mm, so S slices of R x A pixels per volume). Models are the ``sam``
method on randomly initialised encoders of the real sizes (weights do not change the speed): litemedsam (TinyViT,
256 px input) and vit_b (ViT-B, 1024 px input). Each (variant, batch size) runs once on a warm-up volume, then on
``--volumes`` volumes; volumes/s = volumes / wall time. "one slice at a time" is the same predictor with batch size
1, i.e. what a per-slice loop (nnU-Net's 2D path, MedSAM's inference scripts) does.

Writes JSON to --out and a Markdown table next to it (same name, .md) for documentation/benchmarks.md
("Prediction").
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from samdg.utils.files import save_report  # noqa: E402

DATASET = "Dataset999_PredictSpeed"


def _prepare_data(workdir: Path, shape: tuple[int, int, int], volumes: int) -> Path:
    from dataset_conversion.synthetic import make_synthetic_dataset

    for kind in ("raw", "preprocessed", "results", "weights"):
        (workdir / kind).mkdir(parents=True, exist_ok=True)
        os.environ[f"SAMDG_{kind}"] = str(workdir / kind)
    raw = workdir / "raw" / DATASET
    if not (raw / "dataset.json").is_file():
        make_synthetic_dataset(raw, num_domains=1, cases_per_domain=2, test_cases_per_domain=volumes + 1, shape=shape,
                               num_processes=min(8, os.cpu_count() or 1))
    return raw


def _predictor(variant: str, batch_size: int | None, device: str, precision: str):
    from samdg.inference import Predictor
    from samdg.labels import LabelSpec
    from samdg.preprocessing.api import plan_and_preprocess
    from samdg.training.checkpoint import build_untrained

    plans = plan_and_preprocess(DATASET, variant=variant, preprocess=False, progress=False, log=lambda message: None)
    spec = LabelSpec.from_dataset_json(plans.labels, plans.regions_class_order)
    method = build_untrained("sam", variant, plans.sam.input_size, plans.methods["sam"], spec, pretrained=False)
    return Predictor([method], plans, spec, device=device, batch_size=batch_size, precision=precision, progress=False)


def measure(raw: Path, variant: str, batch_size: int | None, device: str, precision: str, out: Path) -> dict:
    """Warm up on one volume, then time the others; returns the figures of one row."""
    from samdg.dataset.raw import load_raw_dataset

    cases = {c.case_id: c.image_paths for c in load_raw_dataset(raw).test_cases.values()}
    names = sorted(cases)
    predictor = _predictor(variant, batch_size, device, precision)
    predictor.predict_cases({names[0]: cases[names[0]]}, out, overwrite=True)  # warm-up: kernels, allocator
    timed = {name: cases[name] for name in names[1:]}
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    report = predictor.predict_cases(timed, out, overwrite=True)
    seconds = time.perf_counter() - started
    if report.failed:
        raise RuntimeError(f"prediction failed: {report.failed}")
    slices = sum(predictor.preprocess(paths)[0].shape[1] for paths in list(timed.values())[:1]) * len(timed)
    return {
        "variant": variant, "input_size": predictor.plans.sam.input_size, "batch_size": predictor.batch_size,
        "volumes": len(timed), "slices_per_volume": slices // len(timed), "seconds": seconds,
        "volumes_per_s": len(timed) / seconds, "slices_per_s": slices / seconds,
        "peak_gpu_memory_gib": (torch.cuda.max_memory_allocated() / 2**30) if predictor.device.type == "cuda" else None,
        "precision": str(predictor.slice_predictor.autocast_dtype or "fp32"), "device": str(predictor.device),
    }


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"Measured {meta['date']} on {meta['device_name']} ({meta['torch']}); volumes of {meta['shape']} voxels "
             f"(R x A x S), {rows[0]['slices_per_volume'] if rows else '?'} slices each.", "",
             "| model | input | batch | volumes/s | slices/s | one slice at a time, volumes/s | speed-up |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    by_variant: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], {})["single" if row["batch_size"] == 1 else "batched"] = row
    for variant, pair in by_variant.items():
        batched, single = pair.get("batched"), pair.get("single")
        if batched is None or single is None:
            continue
        lines.append(f"| {variant} (random init) | {batched['input_size']} px | {batched['batch_size']} | "
                     f"{batched['volumes_per_s']:.3f} | {batched['slices_per_s']:.1f} | "
                     f"{single['volumes_per_s']:.3f} | "
                     f"{batched['volumes_per_s'] / single['volumes_per_s']:.1f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON output (a .md table is written next to it)")
    parser.add_argument("--variants", default="litemedsam,vit_b",
                        help="comma-separated variants (default litemedsam,vit_b)")
    parser.add_argument("--batch-size", type=int, help="batched run's slices per pass (default: the plan's batch size)")
    parser.add_argument("--volumes", type=int, default=8, help="timed volumes per run (default 8)")
    parser.add_argument("--shape", default="256x256x48", help="volume voxels R x A x S (default 256x256x48)")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--precision", default="auto", help="auto (bf16 on CUDA), fp32, bf16, fp16")
    parser.add_argument("--workdir", help="where the synthetic volumes go (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, tiny random variant, 2 small volumes: checks the script")
    args = parser.parse_args(argv)
    if args.smoke:
        args.variants, args.volumes, args.shape, args.device, args.batch_size = "tiny_vit_test", 2, "48x48x8", "cpu", 8
    shape = tuple(int(v) for v in args.shape.lower().split("x"))
    torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory(prefix="samdg_predict_speed_") as temporary:
        workdir = Path(args.workdir or temporary)
        raw = _prepare_data(workdir, shape, args.volumes)
        rows = []
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            for batch_size in (args.batch_size, 1):
                row = measure(raw, variant, batch_size, args.device, args.precision, workdir / "out" / variant)
                print(json.dumps(row), flush=True)
                rows.append(row)
    on_gpu = bool(rows) and rows[0]["device"].startswith("cuda")
    device_name = torch.cuda.get_device_name() if on_gpu else platform.processor() or "CPU"
    meta = {"date": datetime.date.today().isoformat(), "device_name": device_name,
            "torch": f"PyTorch {torch.__version__}",
            "shape": "x".join(map(str, shape)), "smoke": args.smoke}
    save_report(args.out, {"meta": meta, "rows": rows}, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
