"""Outputs of the methods for fixed weights and inputs, to prove that a refactoring changes no result.

Weights are set from each tensor's *name* (a generator seeded by the name's CRC32), so they do not depend on the
order in which modules are created: a refactoring that keeps the state_dict keys (the checkpoint format) gets the
same weights. ``python tests/models/reference_outputs.py`` (re)records ``data/method_outputs.pt``; only do that
when a change of outputs is intended, and say so in the commit.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import torch

RECORD = Path(__file__).with_name("data") / "method_outputs.pt"

# (case name, method, variant, settings): the configurations whose outputs are pinned.
CASES = [
    ("sam", "sam", "tiny_vit_test", {}),
    ("sam_lora", "sam", "tiny_tinyvit_test", {"lora_rank": 2}),
    ("desam_point", "desam", "tiny_vit_test", {"decoder_widths": [16, 8, 8], "grid_points_per_side": 3,
                                               "score_threshold": 0.0}),
    ("desam_box", "desam", "tiny_tinyvit_test", {"decoder_widths": [16, 8, 8], "prompt": "box"}),
    ("dapsam_vit", "dapsam", "tiny_vit_test", {"memory_slots": 8}),
    ("dapsam_tinyvit", "dapsam", "tiny_tinyvit_test", {"memory_slots": 8}),
]


def deterministic_init(module: torch.nn.Module) -> None:
    """Every floating tensor of the state_dict from a generator seeded by its name (variances kept positive)."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            values = torch.rand(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + values)
            else:
                tensor.copy_((values - 0.5) * 0.2)


def reference_batch(size: int, batch: int = 2) -> dict:
    generator = torch.Generator().manual_seed(7)
    target = torch.zeros(batch, size, size, dtype=torch.long)
    target[:, size // 8 : size // 2, size // 8 : size // 2] = 1
    target[0, size // 2 : size - size // 8, size // 2 : size - size // 8] = 2
    return {"image": torch.rand(batch, 3, size, size, generator=generator), "target": target,
            "domain": ["a"] * batch}


def run_case(method_name: str, variant: str, settings: dict) -> dict[str, torch.Tensor]:
    """Training-mode forward + loss and automatic prediction of one configuration, on CPU in fp32."""
    from samdg.labels import LabelSpec
    from samdg.models.backbones import build_sam
    from samdg.models.methods import build_method

    spec = LabelSpec.from_dataset_json({"background": 0, "organ": 1, "lesion": 2})
    torch.manual_seed(0)
    method = build_method(method_name, build_sam(variant, pretrained=False), settings, spec)
    deterministic_init(method)
    batch = reference_batch(method.image_encoder.config.input_size)
    torch.manual_seed(1)  # in-method randomness (DeSAM's training points)
    method.train()
    outputs = method(batch)
    loss, _ = method.loss(outputs, batch)
    method.eval()
    with torch.no_grad():
        predicted = method.predict(batch["image"])
    return {"train_logits": outputs["logits"].detach(), "loss": loss.detach(), "predict": predicted}


def record() -> dict:
    return {name: run_case(method, variant, settings) for name, method, variant, settings in CASES}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    torch.set_num_threads(1)
    RECORD.parent.mkdir(exist_ok=True)
    torch.save(record(), RECORD)
    print(f"recorded {len(CASES)} cases in {RECORD}")
