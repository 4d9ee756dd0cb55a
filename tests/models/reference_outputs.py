"""Outputs of the methods for fixed weights and inputs, to prove that a refactoring changes no result.

Weights are set from each tensor's *name* (a generator seeded by the name's CRC32), so they do not depend on the
order in which modules are created. The record keeps the state_dict keys of the time it was made; the test builds
that state (old keys) and loads it with ``load_state_dict``, so a refactoring that renames keys must also migrate
them, and checkpoints written by an earlier samdg keep loading. ``python tests/models/reference_outputs.py``
(re)records ``data/method_outputs.pt``; only do that when a change of outputs is intended, and say so in the commit.
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


def named_state(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state_dict with ``reference``'s keys, shapes and dtypes: every floating tensor from a generator seeded by
    its name (variances kept positive), other tensors (counters) copied."""
    state = {}
    for name, tensor in reference.items():
        if not tensor.is_floating_point():
            state[name] = tensor.clone()
            continue
        generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        values = torch.rand(tensor.shape, generator=generator)
        state[name] = (0.5 + values if name.endswith("running_var") else (values - 0.5) * 0.2).to(tensor.dtype)
    return state


def reference_batch(size: int, batch: int = 2) -> dict:
    generator = torch.Generator().manual_seed(7)
    target = torch.zeros(batch, size, size, dtype=torch.long)
    target[:, size // 8 : size // 2, size // 8 : size // 2] = 1
    target[0, size // 2 : size - size // 8, size // 2 : size - size // 8] = 2
    return {"image": torch.rand(batch, 3, size, size, generator=generator), "target": target,
            "domain": ["a"] * batch}


def run_case(method_name: str, variant: str, settings: dict,
             keys: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Training-mode forward + loss and automatic prediction of one configuration, on CPU in fp32.

    ``keys``: the recorded state_dict skeleton (meta tensors) whose named weights are loaded; None = the method's
    own current keys (when recording).
    """
    from samdg.labels import LabelSpec
    from samdg.models.backbones import build_sam
    from samdg.models.methods import build_method

    spec = LabelSpec.from_dataset_json({"background": 0, "organ": 1, "lesion": 2})
    torch.manual_seed(0)
    method = build_method(method_name, build_sam(variant, pretrained=False), settings, spec)
    skeleton = keys if keys is not None else {k: v.to("meta") if v.is_floating_point() else v
                                              for k, v in method.state_dict().items()}
    method.load_state_dict(named_state(skeleton))
    batch = reference_batch(method.image_encoder.config.input_size)
    torch.manual_seed(1)  # in-method randomness (DeSAM's training points)
    method.train()
    outputs = method(batch)
    loss, _ = method.loss(outputs, batch)
    method.eval()
    with torch.no_grad():
        predicted = method.predict(batch["image"])
    return {"train_logits": outputs["logits"].detach(), "loss": loss.detach(), "predict": predicted,
            "keys": skeleton}


def record() -> dict:
    return {name: run_case(method, variant, settings) for name, method, variant, settings in CASES}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    torch.set_num_threads(1)
    RECORD.parent.mkdir(exist_ok=True)
    torch.save(record(), RECORD)
    print(f"recorded {len(CASES)} cases in {RECORD}")
