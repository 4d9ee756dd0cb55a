"""The planner's choice of ESP-MedSAM's distillation teacher (``methods.espmedsam.teacher_variant``).

The paper's common knowledge comes from a frozen SAM ViT teacher; the larger the teacher, the more there is to
distil. The planner takes the largest registered ViT whose official checkpoint is in the weights folder; without
one, the teacher is the student's own aggregator (LiteMedSAM itself with the default variant), and the
common-knowledge term of the distillation is then a no-op, which the plan says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from samdg.planning.variants import registry_variants

METHOD = "espmedsam"
# Largest first; at equal size SAM's natural-image weights (SA-1B, the paper's common knowledge) before MedSAM's.
TEACHER_PREFERENCE = ("vit_h", "vit_l", "vit_b", "medsam_vit_b")
NO_OP = "the common-knowledge term of the distillation is then a no-op (the stage only teaches the controllers to " \
        "keep the aggregator's embedding)"


def choose_distillation_teacher(methods: dict[str, dict[str, Any]], student: str, weights: Path,
                                log: Callable[[str, Any, str], Any]) -> None:
    """Set ``methods["espmedsam"]["teacher_variant"]`` (when espmedsam is registered) and log the decision."""
    if METHOD not in methods:
        return
    variants = registry_variants()
    candidates = [name for name in TEACHER_PREFERENCE if name in variants and variants[name].checkpoint_filename]
    present = [name for name in candidates if (weights / variants[name].checkpoint_filename).is_file()]
    key = f"methods.{METHOD}.teacher_variant"
    if not present:
        missing = ", ".join(variants[name].checkpoint_filename for name in candidates)
        methods[METHOD]["teacher_variant"] = log(
            key, "", f"no SAM ViT checkpoint ({missing}) in {weights}: the teacher is the student's own aggregator "
                     f"({student} itself); {NO_OP}")
        return
    teacher = present[0]
    reason = f"the largest ViT whose checkpoint is in {weights} ({variants[teacher].checkpoint_filename})"
    if teacher == student:
        reason += f"; it is the student's variant too, so {NO_OP}"
    methods[METHOD]["teacher_variant"] = log(key, teacher, reason)
