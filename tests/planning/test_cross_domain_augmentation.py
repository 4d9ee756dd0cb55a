"""The planner's augmentation for cross-domain training: the measured best preset, recorded as a decision with
the measurement; overrides win."""

from __future__ import annotations

from raw_builders import fingerprint_stub, stub_dataset_json

from samdg.planning.planner import CROSS_DOMAIN_AUGMENTATION, choose_cross_domain_augmentation, plan_experiment


def _plans():
    return plan_experiment(fingerprint_stub([(2.5, 0.8, 0.8)], [(12, 64, 64)]), stub_dataset_json(), gpu_memory_gb=24)


def test_training_on_every_domain_keeps_the_default_and_says_what_cross_domain_runs_get():
    plans = choose_cross_domain_augmentation(_plans(), None, {})
    assert plans.training.augmentation == "default"
    assert f"uses {CROSS_DOMAIN_AUGMENTATION} instead" in plans.decision("training.augmentation").reason


def test_cross_domain_run_gets_the_measured_preset_with_its_reason():
    plans = choose_cross_domain_augmentation(_plans(), ["siteA"], {})
    assert plans.training.augmentation == CROSS_DOMAIN_AUGMENTATION
    decision = plans.decision("training.augmentation")
    assert decision.value == CROSS_DOMAIN_AUGMENTATION
    assert "cross-domain training run (source domains siteA)" in decision.reason
    assert "best preset on unseen sites" in decision.reason and "cross-domain Dice" in decision.reason
    assert "provisional" not in decision.reason


def test_the_cross_domain_reason_is_recorded_even_when_the_plan_already_has_that_preset():
    plans = _plans()
    plans.training.augmentation = CROSS_DOMAIN_AUGMENTATION
    decision = choose_cross_domain_augmentation(plans, ["siteB"], {}).decision("training.augmentation")
    assert "cross-domain training run (source domains siteB)" in decision.reason


def test_an_augmentation_override_wins_over_the_cross_domain_choice():
    plans = choose_cross_domain_augmentation(_plans(), ["siteA", "siteB"], {"training.augmentation": "none"})
    assert plans.training.augmentation == "default"  # the override itself is applied afterwards, by the caller
    assert not any("cross-domain training run" in d.reason for d in plans.decisions)
