"""The planner's ESP-MedSAM distillation teacher: the largest ViT whose checkpoint is in the weights folder, else the
student's own aggregator, with the common-knowledge term said to be a no-op. Checkpoint presence is faked with empty
files (the choice looks at names only; nothing is loaded)."""

from __future__ import annotations

import pytest

from samdg.planning.api import load_plans
from samdg.planning.distillation import choose_distillation_teacher

FILES = {"vit_h": "sam_vit_h_4b8939.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_b": "sam_vit_b_01ec64.pth",
         "medsam_vit_b": "medsam_vit_b.pth"}


def choose(weights, student="litemedsam", present=()):
    for name in present:
        (weights / FILES[name]).write_bytes(b"")
    decisions = []
    methods = {"espmedsam": {"teacher_variant": "unset"}}
    choose_distillation_teacher(methods, student, weights,
                                lambda key, value, reason: decisions.append((key, value, reason)) or value)
    assert [key for key, _, _ in decisions] == ["methods.espmedsam.teacher_variant"]
    return methods["espmedsam"]["teacher_variant"], decisions[0][2]


@pytest.mark.parametrize("present, teacher", [
    (("vit_b", "vit_h", "vit_l", "medsam_vit_b"), "vit_h"),
    (("vit_b", "vit_l"), "vit_l"),
    (("medsam_vit_b", "vit_b"), "vit_b"),
    (("medsam_vit_b",), "medsam_vit_b"),
])
def test_the_largest_vit_present_teaches(tmp_path, present, teacher):
    chosen, reason = choose(tmp_path, present=present)
    assert chosen == teacher
    assert FILES[teacher] in reason and "no-op" not in reason


def test_without_a_vit_the_student_teaches_itself_and_the_plan_says_the_term_is_a_no_op(tmp_path):
    chosen, reason = choose(tmp_path)
    assert chosen == ""
    assert "litemedsam itself" in reason and "common-knowledge term of the distillation is then a no-op" in reason


def test_a_vit_student_that_is_the_largest_present_is_its_own_teacher(tmp_path):
    chosen, reason = choose(tmp_path, student="vit_b", present=("vit_b",))
    assert chosen == "vit_b" and "no-op" in reason


def test_the_plan_records_the_teacher_as_a_decision(synthetic_dataset):
    plans = load_plans(synthetic_dataset)  # planned with an empty weights folder
    assert plans.methods["espmedsam"]["teacher_variant"] == ""
    decision = next(d for d in plans.decisions if d.key == "methods.espmedsam.teacher_variant")
    assert "no-op" in decision.reason
