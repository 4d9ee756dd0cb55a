"""Training-step throughput and peak memory of one method on one variant, input size and batch size.

    python benchmarks/method_step_speed.py --method dapsam --variant vit_b --input-size 384 --batch-size 8 \
        --out dapsam_vit_b_384.json
    python benchmarks/method_step_speed.py --method dapsam --out /tmp/smoke.json --smoke      # CPU check of the script
    python benchmarks/method_step_speed.py --method espmedsam --variant mobilesam --setting stage=distill \
        --batch-size 4 --out esp_distill.json                                             # with a frozen teacher

The method is built around a randomly initialised SAM of the real size (weights do not change the speed), with the
trainable set the trainer would use (``method.trainable_parameters()``), and trained on random images and label maps
of ``--classes`` foreground classes: forward, ``method.loss``, backward, AdamW step with the method's optimiser
settings; bf16 autocast on CUDA, fp32 on the CPU. After ``--warmup`` steps, ``--steps`` steps are timed (CUDA
synchronised). Reported: steps/s, images/s, peak GPU memory of the timed steps (``torch.cuda.max_memory_allocated``,
reset after the warm-up), trainable and total parameter counts. No data loading: this is the model's cost alone.
Writes JSON to ``--out`` and a Markdown row next to it (same name, ``.md``) for documentation/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON output file (a .md row is written next to it)")
    parser.add_argument("--method", default="dapsam", help="registered method (default dapsam)")
    parser.add_argument("--variant", default="vit_b")
    parser.add_argument("--input-size", type=int, help="input side in pixels (default: the variant's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--classes", type=int, default=1, help="foreground classes (default 1, as prostate)")
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                        help="method setting (JSON value), e.g. gradient_checkpointing=true; repeatable")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--smoke", action="store_true", help="tiny variant on the CPU, 2 + 2 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.variant, args.input_size, args.device = "tiny_vit_test", None, "cpu"
        args.batch_size, args.warmup, args.steps = 2, 2, 2
    return args


def parse_settings(texts: list[str]) -> dict:
    settings = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep:
            raise SystemExit(f"--setting {text}: expected key=value")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def run(args: argparse.Namespace) -> dict:
    import torch

    from samdg.labels import LabelSpec
    from samdg.models.backbones import build_sam
    from samdg.models.methods import build_method
    from samdg.models.params import count_parameters
    from samdg.utils.device import autocast, resolve_device

    device = resolve_device(args.device)
    labels = {"background": 0, **{f"class{k + 1}": k + 1 for k in range(args.classes)}}
    spec = LabelSpec.from_dataset_json(labels)
    torch.manual_seed(0)
    sam = build_sam(args.variant, input_size=args.input_size, pretrained=False)
    method = build_method(args.method, sam, parse_settings(args.setting), spec).to(device)
    for teacher in method.teacher_modules().values():  # e.g. espmedsam's distillation teacher, as the trainer does
        teacher.to(device)
    trainable = method.freeze_all_but_trainable()
    optimizer = method.configure_optimizers(total_steps=args.warmup + args.steps).optimizer
    method.train()

    size = sam.config.input_size
    images = torch.rand(args.batch_size, 3, size, size, device=device)
    target = torch.randint(0, args.classes + 1, (args.batch_size, size, size), device=device)
    batch = {"image": images, "target": target, "domain": ["bench"] * args.batch_size}
    precision = torch.bfloat16 if device.type == "cuda" else None  # as the trainer does

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss, _ = method.loss(method(batch), batch)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "date": datetime.date.today().isoformat(),
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or platform.machine()),
        "torch": torch.__version__,
        "method": args.method,
        "settings": parse_settings(args.setting),
        "variant": args.variant,
        "input_size": size,
        "batch_size": args.batch_size,
        "classes": args.classes,
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "steps_per_second": round(args.steps / seconds, 3),
        "images_per_second": round(args.steps * args.batch_size / seconds, 2),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "total_parameters": count_parameters(method),
    }


def markdown(result: dict) -> str:
    memory = "n/a (CPU)" if result["peak_memory_gib"] is None else f"{result['peak_memory_gib']:.2f} GiB"
    settings = ", ".join(f"{k}={v}" for k, v in result["settings"].items()) or "defaults"
    return ("| device | method (settings) | variant | input | batch | steps/s | images/s | peak memory | trainable |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
            f"| {result['device']} ({result['precision']}) | {result['method']} ({settings}) | {result['variant']} | "
            f"{result['input_size']} | {result['batch_size']} | {result['steps_per_second']:.2f} | "
            f"{result['images_per_second']:.1f} | {memory} | {result['trainable_parameters'] / 1e6:.2f} M |\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    from samdg.utils.files import save_report

    result = run(args)
    print(json.dumps(result, indent=2))
    save_report(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
