"""What the vit_b encoder costs, ours against stock, predicted without a GPU: forward FLOPs and the peak memory
of a full fine-tuning step.

    python benchmarks/backbone_cost_model.py --out backbone_cost_model.json   # vit_b at 1024 px (2-core CPU: ~10 min)
    python benchmarks/backbone_cost_model.py --out /tmp/smoke.json --smoke    # tiny variant: checks the script

FLOPs: one forward of one image on the meta device (shapes only, nothing computed) under PyTorch's FlopCounterMode.
The throughput target (issue 3: ours >= 4x the stock 52.4 img/s) needs the FLOP rate that this count implies.

The memory of a training step is, to first order,
- the model state: fp32 weights, fp32 gradients and AdamW's two fp32 moments, 16 bytes per parameter;
- the bf16 weight copies that autocast makes and keeps for the backward pass (independent of the batch);
- the activations autograd saves for the backward pass, linear in the batch size.
The last two are measured here exactly: one forward of batch 1 in bf16 autocast under ``saved_tensors_hooks``,
counting each saved storage once, attributed to the stem, each ViT block and the neck. The prediction for batch B
is state + weight copies + B x activations; with gradient checkpointing the saved activations are the unit inputs
and one unit is recomputed at a time, so the largest unit's activations (times B) come on top.
On the CPU, softmax is upcast to fp32 as CUDA's autocast does (``CudaSoftmaxPolicy``); the other ops of these
encoders run in the same precision under both devices' autocast. Not counted: backward transients (the gradients
of one block's activations while they are alive, kernel
workspaces) and allocator slack. The GPU measurement in ``backbone_speed.py`` is the figure of record; this
prediction shows, without a GPU, which side of the 24 GiB target (issue 3) each implementation falls on and why.

On a CPU, PyTorch's fused attention is the flash kernel only when q, k and v have the same width, so ours runs with
padded values here (``RelPosSdpaAttention.pad_values``); the unpadded default saves a narrower output, so this is
an upper bound for it. Writes JSON to --out and a Markdown table next to it (.md).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from backbone_speed import ours_like, stock_vit  # noqa: E402
from torch import nn  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

from samdg.models.backbones import get_variant  # noqa: E402
from samdg.utils.device import autocast  # noqa: E402
from samdg.utils.files import save_report  # noqa: E402

GIB = 1024**3


def _is_weight_copy(tensor: torch.Tensor) -> bool:
    """A dtype cast of a parameter (autocast's bf16 weight copy), or a view of one (a linear layer saves W^T)."""
    node = (tensor._base if tensor._is_view() else tensor).grad_fn
    if node is None or type(node).__name__ != "ToCopyBackward0":
        return False
    return any(type(parent).__name__ == "AccumulateGrad" for parent, _ in node.next_functions if parent is not None)


class CudaSoftmaxPolicy(TorchFunctionMode):
    """CUDA's autocast runs softmax in fp32 (the stock attention then keeps an fp32 probability map and its bf16
    copy for ``attn @ v``); the CPU's keeps bf16. Upcasting softmax here makes the CPU account like the GPU."""

    SOFTMAX = {torch.softmax, torch.Tensor.softmax, torch.nn.functional.softmax}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.SOFTMAX and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            args = (args[0].float(), *args[1:])
            kwargs.pop("dtype", None)
        return func(*args, **kwargs)


def _units(encoder: nn.Module) -> dict[str, nn.Module]:
    """The parts activations are attributed to: the stock encoder's or ours, stem -> blocks -> neck."""
    inner = getattr(encoder, "encoder", encoder)  # the stock encoder sits behind a normalisation wrapper
    parts = {"stem": inner.patch_embed}
    parts.update({f"block{i}": block for i, block in enumerate(inner.blocks)})
    parts["neck"] = inner.neck
    return parts


def saved_memory(encoder: nn.Module, images: torch.Tensor, checkpointing: bool = False) -> dict:
    """Bytes autograd keeps after one bf16-autocast forward of ``images``, split by part; weight copies apart."""
    encoder.train()
    for parameter in encoder.parameters():
        parameter.requires_grad_(True)
    if hasattr(encoder, "gradient_checkpointing"):
        encoder.gradient_checkpointing = checkpointing
    parameter_storages = {p.untyped_storage().data_ptr() for p in encoder.parameters()}
    storages: dict[int, tuple[str, int]] = {}
    current = ["other"]

    def record(tensor: torch.Tensor, part: str) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in parameter_storages and key not in storages:
            storages[key] = ("weight_copies" if _is_weight_copy(tensor) else part, storage.nbytes())

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        record(tensor, current[0])
        return tensor

    def enter(name: str, inputs: tuple) -> None:
        current[0] = name
        # A checkpointed block keeps its input (outside autograd's saved tensors) and nothing else.
        if checkpointing and name.startswith("block") and isinstance(inputs[0], torch.Tensor):
            record(inputs[0], name)

    handles = []
    for name, module in _units(encoder).items():
        handles.append(module.register_forward_pre_hook(lambda _m, inputs, name=name: enter(name, inputs)))
        handles.append(module.register_forward_hook(lambda _m, _a, _o: current.__setitem__(0, "other")))
    start = time.perf_counter()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), \
                autocast(images.device, torch.bfloat16), CudaSoftmaxPolicy():
            encoder(images)
    finally:
        for handle in handles:
            handle.remove()
    by_part: dict[str, int] = {}
    for part, nbytes in storages.values():
        by_part[part] = by_part.get(part, 0) + nbytes
    weight_copies = by_part.pop("weight_copies", 0)
    batch = images.shape[0]
    return {
        "forward_s": time.perf_counter() - start,
        "weight_copies_gib": weight_copies / GIB,
        "activations_per_image_gib": sum(by_part.values()) / batch / GIB,
        "per_image_gib_by_part": {part: nbytes / batch / GIB for part, nbytes in by_part.items()},
    }


def forward_tflop(encoder: nn.Module, size: int) -> float:
    """FLOPs of one image's forward, counted from shapes on the meta device (the encoder is left untouched)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(encoder).to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(1, 3, size, size, device="meta"))
    return counter.get_total_flops() / 1e12


def predict(state_gib: float, measured: dict, batch: int, recompute_gib: float = 0.0) -> float:
    return state_gib + measured["weight_copies_gib"] + batch * (measured["activations_per_image_gib"] + recompute_gib)


def run(args: argparse.Namespace) -> dict:
    variant = "tiny_vit_test" if args.smoke else "vit_b"
    size = get_variant(variant).input_size
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    stock = stock_vit(variant)
    parameters = sum(p.numel() for p in stock.parameters())
    state_gib = 16 * parameters / GIB
    flops = {"ours": forward_tflop(ours_like(variant, stock), size),
             "ours_padded_values": forward_tflop(ours_like(variant, stock, pad_values=True), size),
             "stock": forward_tflop(stock, size)}
    print("forward TFLOP per image", flops, flush=True)
    measured = {}
    for label, build, checkpointing in (
        ("ours", lambda: ours_like(variant, stock, pad_values=True), False),
        ("ours_gradient_checkpointing", lambda: ours_like(variant, stock, pad_values=True), True),
        ("stock", lambda: stock, False),
    ):
        measured[label] = saved_memory(build(), images, checkpointing)
        print(label, {k: v for k, v in measured[label].items() if k != "per_image_gib_by_part"}, flush=True)
    largest_unit = max(gib for part, gib in measured["ours"]["per_image_gib_by_part"].items()
                       if part.startswith("block"))
    predictions = {
        "ours": predict(state_gib, measured["ours"], args.batch),
        "ours_gradient_checkpointing": predict(state_gib, measured["ours_gradient_checkpointing"], args.batch,
                                               largest_unit),
        "stock": predict(state_gib, measured["stock"], args.batch),
    }
    return {
        "date": datetime.date.today().isoformat(), "device": platform.processor() or "cpu", "torch": torch.__version__,
        "smoke": args.smoke, "variant": variant, "input": size, "batch": args.batch, "parameters": parameters,
        "model_state_gib": state_gib, "largest_block_per_image_gib": largest_unit, "forward_tflop_per_image": flops,
        "measured": measured, "predicted_peak_gib": predictions,
    }


def markdown(result: dict) -> str:
    lines = [
        f"{result['date']}, {result['device']}, torch {result['torch']}; {result['variant']} at {result['input']} px, "
        f"{result['parameters'] / 1e6:.1f} M parameters; model state (weights, gradients, AdamW) "
        f"{result['model_state_gib']:.2f} GiB" + (" (smoke run: figures meaningless)" if result["smoke"] else ""),
    ]
    lines += ["", "| forward, one image | TFLOP |", "| --- | --- |"]
    lines += [f"| {label} | {tflop:.3f} |" for label, tflop in result["forward_tflop_per_image"].items()]
    lines += ["", f"| implementation | saved activations per image | of which global-attention blocks | "
              f"bf16 weight copies | predicted step peak at batch {result['batch']} |",
              "| --- | --- | --- | --- | --- |"]
    global_blocks = {f"block{i}" for i in get_variant(result["variant"]).encoder.global_attn_indexes}
    for label, measured in result["measured"].items():
        in_global = sum(gib for part, gib in measured["per_image_gib_by_part"].items() if part in global_blocks)
        lines.append(f"| {label} | {measured['activations_per_image_gib']:.3f} GiB | {in_global:.3f} GiB | "
                     f"{measured['weight_copies_gib']:.3f} GiB | {result['predicted_peak_gib'][label]:.1f} GiB |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON output path (the Markdown table goes next to it)")
    parser.add_argument("--batch", type=int, default=8, help="batch size of the predicted step (default 8)")
    parser.add_argument("--smoke", action="store_true", help="tiny variant: checks the script, figures meaningless")
    args = parser.parse_args(argv)
    result = run(args)
    save_report(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
