"""The planner's view of the variant registry: one table (VariantConfig), memory per sample included."""

import dataclasses

from samdg.models.backbones import get_variant, list_variants
from samdg.planning.planner import BATCH_SIZE_RANGE, _Log, choose_training
from samdg.planning.variants import registry_variants


def test_every_registered_variant_is_plannable_with_its_registry_numbers():
    variants = registry_variants()
    assert sorted(variants) == list_variants()
    for name, info in variants.items():
        config = get_variant(name)
        assert (info.input_size, info.intensity, info.checkpoint_filename, info.train_gib_per_sample) == (
            config.input_size, config.intensity, config.checkpoint, config.train_gib_per_sample)
    assert variants["vit_b"].train_gib_per_sample == 9.0 and variants["litemedsam"].train_gib_per_sample == 1.5


def test_the_batch_size_follows_the_variants_memory_and_a_variant_without_one_gets_the_smallest():
    vit_b = registry_variants()["vit_b"]
    log = _Log()
    assert choose_training(vit_b, 80.0, log).batch_size == int((0.9 * 80 - 2) // 9.0)
    unknown = dataclasses.replace(vit_b, name="my_vit", train_gib_per_sample=None)
    log = _Log()
    assert choose_training(unknown, 80.0, log).batch_size == BATCH_SIZE_RANGE[0]
    reason = next(d.reason for d in log.entries if d.key == "training.batch_size")
    assert "my_vit declares no train_gib_per_sample" in reason
