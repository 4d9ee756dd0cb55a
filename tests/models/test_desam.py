"""DeSAM on the tiny random variants (CPU): structure, PRIM/PDMM shapes, prompts, losses, options, inference.

Decoders here are narrow (``decoder_widths`` 16/8/8) so that a training step takes milliseconds; the structure at
the paper's widths is checked by parameter counts without a forward pass.
"""

from __future__ import annotations

import pytest
import torch

import samdg.models.methods.desam  # noqa: F401  (registers "desam")
from samdg.errors import SamdgError
from samdg.labels import LabelSpec
from samdg.models.backbones import build_sam
from samdg.models.layers.conv_decoder import TapPyramidDecoder
from samdg.models.layers.point_prompts import mask_nms, point_grid, sample_points
from samdg.models.layers.sam_decoding import point_prompts, run_two_way_transformer, sam_output_tokens
from samdg.models.methods import build_method, default_settings
from samdg.models.methods.desam import EMPTY_LOGIT, _level_scale
from samdg.models.params import count_parameters

TINY = ("tiny_vit_test", "tiny_tinyvit_test")
SPEC = LabelSpec.from_dataset_json({"background": 0, "organ": 1, "lesion": 2})
NARROW = {"decoder_widths": [16, 8, 8], "grid_points_per_side": 3}


def make_desam(variant: str = "tiny_tinyvit_test", seed: int = 0, spec: LabelSpec = SPEC, **settings):
    torch.manual_seed(seed)
    sam = build_sam(variant, pretrained=False)
    method = build_method("desam", sam, {**NARROW, **settings}, spec)
    method.requires_grad_(False)  # what the trainer does: train exactly what the method declares
    for parameter in method.trainable_parameters():
        parameter.requires_grad_(True)
    return method


def batch_for(method, size: int | None = None, batch: int = 3, seed: int = 1) -> dict:
    """Images plus targets with two classes; the last image has no foreground at all."""
    s = size or method.input_size
    generator = torch.Generator().manual_seed(seed)
    target = torch.zeros(batch, s, s, dtype=torch.long)
    target[:, s // 8 : s // 2, s // 8 : s // 2] = 1
    target[:, s // 2 : 3 * s // 4, s // 2 : 7 * s // 8] = 2
    target[-1] = 0
    images = torch.rand(batch, 3, s, s, generator=generator) * 0.2 + 0.6 * (target > 0).float()[:, None]
    return {"image": images, "target": target, "domain": ["a"] * batch}


# --- structure ----------------------------------------------------------------------------------------------------

def test_pdmm_of_a_vit_b_port_matches_the_reference_count_minus_its_dead_parameters():
    # The released PIMMDecoder of a ViT-B port has 7,463,104 parameters, 24,576 of which are 1x1 shortcuts of
    # residual blocks that keep their width (never called) and 128 a deep-supervision head (switched off).
    pdmm = TapPyramidDecoder([768, 768, 768], [256, 128, 64], out_channels=1, guide_channels=256)
    assert count_parameters(pdmm) == 7_463_104 - 24_576 - 128


def test_vit_b_desam_trains_10_86_million_parameters():
    # Built without weights and never run. Reference (released code, ViT-B port): 11,521,444 trainable, of which
    # 633,184 (SAM's upscaling + hypernetworks), 24,576 and 128 (see above) never receive a gradient.
    sam = build_sam("vit_b", pretrained=False)
    method = build_method("desam", sam, {}, LabelSpec.from_dataset_json({"background": 0, "prostate": 1}))
    assert method.tap_names == ("block2", "block5", "block8")
    assert sum(p.numel() for p in method.trainable_parameters()) == 10_863_556 == 11_521_444 - 633_184 - 24_576 - 128


@pytest.mark.parametrize("variant", TINY)
def test_trainable_parts_are_prim_and_pdmm(variant):
    method = make_desam(variant)
    decoder = method.mask_decoder
    trainable = {id(p) for p in method.trainable_parameters()}
    expected = [decoder.transformer, decoder.iou_token, decoder.mask_tokens, decoder.iou_prediction_head, method.pdmm]
    assert trainable == {id(p) for module in expected for p in module.parameters()}
    for frozen in (method.image_encoder, method.prompt_encoder, decoder.output_upscaling,
                   decoder.output_hypernetworks_mlps):
        assert not any(id(p) in trainable or p.requires_grad for p in frozen.parameters())
    # PDMM: one branch per tap, K output channels, guided by the 256-channel mask embedding.
    assert len(method.pdmm.branches) == 3 and method.pdmm.head.out_channels == SPEC.num_classes
    assert method.pdmm.guide_fusion.conv1.in_channels == 256 + 16


def test_default_settings_carry_the_released_optimisation():
    settings = default_settings("desam")
    assert settings["lr"] == 1e-4 and settings["weight_decay"] == 0.0 and settings["poly_exponent"] == 0.9
    assert settings["batch_size"] == 8 and settings["num_epochs"] == 50 and settings["warmup_fraction"] == 0.0
    assert settings["prompt"] == "point" and settings["inference"] == "auto"
    assert settings["grid_points_per_side"] == 9 and settings["score_threshold"] == 0.5
    setup = make_desam().configure_optimizers(total_steps=10)
    group = setup.optimizer.param_groups[0]
    assert group["lr"] == 1e-4 and group["betas"] == (0.9, 0.999) and group["weight_decay"] == 0.0
    assert setup.grad_clip is None and setup.interval == "step"


@pytest.mark.parametrize("variant", TINY)
def test_prim_and_pdmm_shapes(variant):
    method = make_desam(variant)
    batch = batch_for(method, batch=2)
    features = method.encode(batch["image"])
    e = method.image_encoder.config.embedding_size
    assert set(features) == {"embedding", *method.tap_names} and features["embedding"].shape == (2, 256, e, e)
    assert method.cacheable_features() == method.image_encoder.default_taps
    sparse, dense = point_prompts(method.prompt_encoder, torch.tensor([[3.0, 5.0], [10.0, 2.0], [7.0, 7.0]]))
    mask_embedding, score = method.prim(features["embedding"][:1], sparse, dense)  # one image, three prompts
    assert mask_embedding.shape == (3, 256, e, e) and score.shape == (3,)
    logits = method.pdmm(method._taps_deepest_first(features), guide=mask_embedding[:2])
    assert logits.shape == (2, SPEC.num_classes, 4 * e, 4 * e)
    outputs = method(batch)
    assert outputs["logits"].shape == (2, SPEC.num_classes, 4 * e, 4 * e)
    assert outputs["score"].shape == (2,) and outputs["points"].shape == (2, 2)


def test_prim_reproduces_the_stock_mask_decoder_exactly():
    # run_two_way_transformer must be SAM's own token assembly: its IoU token and image tokens, fed through the
    # stock upscaling and hypernetworks, give the stock decoder's masks and IoU.
    method = make_desam("tiny_vit_test").eval()
    decoder = method.mask_decoder
    embedding = method.encode(batch_for(method, batch=1)["image"])["embedding"]
    sparse, dense = point_prompts(method.prompt_encoder, torch.tensor([[3.0, 5.0], [100.0, 20.0], [64.0, 64.0]]))
    positional = method.prompt_encoder.get_dense_pe()
    with torch.no_grad():
        masks, iou = decoder.predict_masks(embedding, positional, sparse, dense.expand(3, -1, -1, -1))
        tokens, image_tokens = run_two_way_transformer(decoder, embedding, positional, sam_output_tokens(decoder),
                                                       sparse, dense)
        upscaled = decoder.output_upscaling(image_tokens)
        hyper = torch.stack([mlp(tokens[:, 1 + i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1)
        rebuilt = (hyper @ upscaled.flatten(2)).view(masks.shape)
        _, score = method.prim(embedding, sparse, dense)
    torch.testing.assert_close(rebuilt, masks)
    torch.testing.assert_close(decoder.iou_prediction_head(tokens[:, 0]), iou)
    torch.testing.assert_close(score, iou[:, 0])


def test_mask_embedding_depends_on_the_prompt_and_pdmm_on_the_mask_embedding():
    method = make_desam().eval()
    features = method.encode(batch_for(method, batch=1)["image"])
    sparse, dense = point_prompts(method.prompt_encoder, torch.tensor([[5.0, 5.0], [50.0, 40.0]]))
    with torch.no_grad():
        mask_embedding, score = method.prim(features["embedding"], sparse, dense)
        logits = method.pdmm(method._taps_deepest_first(features), guide=mask_embedding)
    assert not torch.allclose(mask_embedding[0], mask_embedding[1]) and score[0] != score[1]
    assert not torch.allclose(logits[0], logits[1])


# --- prompts ------------------------------------------------------------------------------------------------------

def test_point_sampling_is_balanced_and_its_target_says_whether_the_point_is_on_the_object():
    torch.manual_seed(0)
    n, s = 4000, 16
    foreground = torch.zeros(n, s, s, dtype=torch.bool)
    foreground[:, 2:6, 3:9] = True
    valid = torch.ones(n, s, s, dtype=torch.bool)
    valid[:, 10:, :] = False  # ignore label: never a point there
    coords, on_foreground = sample_points(foreground, valid, 0.5)
    x, y = coords[:, 0].long(), coords[:, 1].long()
    rows = torch.arange(n)
    assert torch.equal(on_foreground, foreground[rows, y, x])
    assert bool(valid[rows, y, x].all())
    assert abs(on_foreground.float().mean().item() - 0.5) < 0.03
    # background points spread over every background pixel, not one spot
    assert len(set(zip(x[~on_foreground].tolist(), y[~on_foreground].tolist()))) > 100

    # an image with no foreground (or no background) gets a point from the side it has
    foreground[: n // 2] = False
    foreground[n // 2 :] = True
    _, on_foreground = sample_points(foreground, torch.ones_like(valid), 0.5)
    assert not on_foreground[: n // 2].any() and on_foreground[n // 2 :].all()


def test_training_prompts_target_the_union_of_classes_and_are_positive_points():
    method = make_desam()
    batch = batch_for(method, batch=3)
    outputs = method(batch)
    x, y = outputs["points"][:, 0].long(), outputs["points"][:, 1].long()
    on_object = (batch["target"][torch.arange(3), y, x] > 0).float()
    torch.testing.assert_close(outputs["score_target"], on_object)
    assert outputs["score_target"][-1] == 0  # the empty slice always gets a background point
    # encoded like the released code: label 1 whatever the location
    sparse, _ = point_prompts(method.prompt_encoder, outputs["points"])
    points = outputs["points"][:, None]
    positive, _ = method.prompt_encoder(points=(points, torch.ones(3, 1)), boxes=None, masks=None)
    negative, _ = method.prompt_encoder(points=(points, torch.zeros(3, 1)), boxes=None, masks=None)
    torch.testing.assert_close(sparse, positive)
    assert not torch.allclose(sparse, negative)


def test_point_grid_is_sams_cell_centre_grid():
    grid = point_grid(3, 96)
    assert grid.shape == (9, 2)
    torch.testing.assert_close(grid[:3], torch.tensor([[16.0, 16.0], [48.0, 16.0], [80.0, 16.0]]))


def test_mask_nms_drops_near_duplicates_keeping_the_best_first():
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True
    masks[1, :4, :4] = True
    masks[1, 4, 0] = True  # near-duplicate of 0
    masks[2, 5:, 5:] = True
    kept = mask_nms(masks, torch.tensor([0.6, 0.9, 0.7]), 0.7)
    assert kept.tolist() == [1, 2]


# --- training -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", TINY)
def test_losses_decrease_on_a_fixed_batch(variant):
    method = make_desam(variant).train()
    batch = batch_for(method, batch=4)
    s = method.input_size
    # fixed prompts (two on the object, two off it) so that the score head has a fixed target to fit
    batch["points"] = torch.tensor([[0.3 * s, 0.3 * s], [0.1 * s, 0.9 * s], [0.7 * s, 0.6 * s], [0.5 * s, 0.5 * s]])
    batch["features"] = method.encode(batch["image"])
    optimizer = torch.optim.Adam(method.trainable_parameters(), lr=3e-4)
    history = []
    for _ in range(30):
        outputs = method(batch)
        loss, parts = method.loss(outputs, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(parts)
    assert outputs["score_target"].tolist() == [1.0, 0.0, 1.0, 0.0]
    mean = lambda rows, part: sum(r[part] for r in rows) / len(rows)  # noqa: E731
    for part in ("dice_loss", "bce"):
        assert mean(history[-5:], part) < 0.97 * mean(history[:5], part), part
    assert mean(history[-5:], "score") < 0.5 * mean(history[:5], "score")


def test_frozen_parts_get_no_gradient_and_cached_fp16_features_are_used():
    method = make_desam().train()
    batch = batch_for(method)
    batch["features"] = {name: t.half() for name, t in method.encode(batch["image"]).items()}

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder ran although features were cached")

    method.image_encoder.forward_features = no_encoder
    loss, _ = method.loss(method(batch), batch)
    loss.backward()
    decoder = method.mask_decoder
    for frozen in (method.image_encoder, method.prompt_encoder, decoder.output_upscaling,
                   decoder.output_hypernetworks_mlps):
        assert all(p.grad is None for p in frozen.parameters())
    for trained in (decoder.transformer, decoder.iou_prediction_head, decoder.iou_token, method.pdmm):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.parameters())


@pytest.mark.parametrize("prompt", ["point", "box"])
def test_every_trainable_parameter_gets_a_gradient(prompt):
    # DDP's precondition: no unused parameter (a gradient that is not None). Values may be exactly zero: the SE
    # gates after affine-free instance norms are dead by design (see the module docstring), everything else learns.
    method = make_desam(prompt=prompt).train()
    batch = batch_for(method)
    loss, _ = method.loss(method(batch), batch)
    loss.backward()
    named = {id(p): name for name, p in method.named_parameters()}
    unused = [named[id(p)] for p in method.trainable_parameters() if p.grad is None]
    assert unused == []
    zero = {named[id(p)] for p in method.trainable_parameters() if not p.grad.abs().sum() > 0}
    assert all(".se." in name for name in zero)  # only the dead SE gates
    assert not method.ddp_find_unused_parameters()
    assert make_desam(train_unused_decoder_parts=True).ddp_find_unused_parameters()


def test_frozen_batch_norms_stay_in_eval_mode_when_training():
    method = make_desam("tiny_tinyvit_test").train()
    norms = [m for m in method.image_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms) and method.pdmm.training


# --- options ------------------------------------------------------------------------------------------------------

def test_train_on_empty_slices_option():
    corrected, released = make_desam(), make_desam(train_on_empty_slices=False)
    empty = batch_for(corrected)
    empty["target"].zero_()
    loss, _ = corrected.loss(corrected(empty), empty)
    assert loss.item() > 0  # the corrected default learns to predict nothing on empty slices
    loss, parts = released.loss(released(empty), empty)
    assert loss.item() == 0 and parts["dice_loss"] == 0  # the released pipeline never sees them
    loss.backward()  # still a valid graph (DDP needs every rank to call backward)

    mixed = batch_for(corrected)  # the last image is empty
    torch.manual_seed(3)
    outputs = corrected(mixed)
    full, _ = corrected.loss(outputs, mixed)
    without_empty, _ = released.loss(outputs, mixed)
    assert full.item() != pytest.approx(without_empty.item())


def test_train_unused_decoder_parts_option_adds_exactly_sams_upscaling_and_hypernetworks():
    corrected, released = make_desam(), make_desam(train_unused_decoder_parts=True)
    unused = corrected.mask_decoder.output_upscaling, corrected.mask_decoder.output_hypernetworks_mlps
    extra = sum(count_parameters(m) for m in unused)
    count = lambda m: sum(p.numel() for p in m.trainable_parameters())  # noqa: E731
    assert count(released) - count(corrected) == extra > 0


def test_whole_box_variant_has_no_score_loss_and_predicts_with_the_box():
    method = make_desam(prompt="box")
    assert method.inference_mode == "box"
    assert not any(p.requires_grad for p in method.mask_decoder.iou_prediction_head.parameters())
    batch = batch_for(method)
    outputs = method(batch)
    loss, parts = method.loss(outputs, batch)
    assert "score" not in parts and "points" not in outputs
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(method.predict(batch["image"]), method(batch)["logits"])


def test_settings_are_checked():
    with pytest.raises(SamdgError, match="prompt"):
        make_desam(prompt="scribble")
    with pytest.raises(SamdgError, match="decoder width per tap"):
        make_desam(decoder_widths=[16, 8])
    with pytest.raises(SamdgError, match="unknown encoder taps"):
        make_desam(taps=["stage0", "stage1", "block99"])
    with pytest.raises(SamdgError, match="power-of-two"):
        _level_scale(16, 24, 0, "stage9")  # a tap whose resolution no up/down-sampling by 2 can reach


def test_taps_at_any_resolution_are_brought_to_their_level():
    # TinyViT taps stem (64 px), stage0 (32 px), stage2 (16 px) for levels of 16, 32 and 64 px: the stem goes
    # down by 4 (strided block) to level 0... here listed shallow to deep, so stage2 feeds level 0.
    method = make_desam("tiny_tinyvit_test", taps=["stem", "stage0", "stage2"])
    assert [b.project.conv1.stride[0] for b in method.pdmm.branches] == [1, 1, 1]
    assert [len(b.upsample) for b in method.pdmm.branches] == [0, 0, 0]  # 16->16, 32->32, 64->64
    reversed_taps = make_desam("tiny_tinyvit_test", taps=["stage2", "stage0", "stem"])  # deepest = stem (64 px)
    assert [b.project.conv1.stride[0] for b in reversed_taps.pdmm.branches] == [4, 1, 1]
    assert [len(b.upsample) for b in reversed_taps.pdmm.branches] == [0, 0, 2]
    batch = batch_for(reversed_taps, batch=2)
    assert reversed_taps(batch)["logits"].shape == (2, SPEC.num_classes, 64, 64)


# --- automatic inference ------------------------------------------------------------------------------------------

def scripted_scores(method, scores: torch.Tensor):
    """Make PRIM return ``scores[i]`` for grid point i (recognised by its prompt token), with its real mask
    embedding. Returns the real PRIM."""
    real_prim = method.prim
    grid_tokens = point_prompts(method.prompt_encoder, point_grid(3, method.input_size))[0][:, 0]  # (9,256)

    def prim(embedding, sparse, dense):
        mask_embedding, _ = real_prim(embedding, sparse, dense)
        index = (sparse[:, 0, None, :] == grid_tokens[None]).all(dim=-1).float().argmax(dim=1)
        return mask_embedding, scores[index]

    method.prim = prim
    return real_prim


@pytest.mark.parametrize("variant", TINY)
def test_grid_inference_decodes_the_best_kept_point_and_is_empty_when_none_is_kept(variant):
    method = make_desam(variant).eval()
    images = batch_for(method, batch=1)["image"]
    features = method.encode(images)
    grid = point_grid(3, method.input_size)
    scores = torch.tensor([0.1, 0.7, 0.2, 0.9, 0.3, 0.6, 0.0, 0.4, 0.2])
    real_prim = scripted_scores(method, scores)
    with torch.no_grad():
        logits = method.predict(images)
        sparse, dense = point_prompts(method.prompt_encoder, grid[3:4])
        guide, _ = real_prim(features["embedding"], sparse, dense)
        expected = method.pdmm(method._taps_deepest_first(features), guide=guide)
    e = method.image_encoder.config.embedding_size
    assert logits.shape == (1, SPEC.num_classes, 4 * e, 4 * e)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)

    scripted_scores(method, torch.full((9,), 0.2))  # nothing above the 0.5 threshold
    with torch.no_grad():
        empty = method.predict(images)
    assert torch.all(empty == EMPTY_LOGIT)


def test_grid_inference_of_a_batch_handles_images_with_and_without_a_kept_point():
    method = make_desam().eval()
    images = batch_for(method, batch=3)["image"]
    features = method.encode(images)
    real_prim = method.prim
    grid = point_grid(3, method.input_size)

    def prim(embedding, sparse, dense):  # image 1 gets low scores everywhere, the others their point's x / S
        mask_embedding, _ = real_prim(embedding, sparse, dense)
        x = torch.stack([grid[(grid_tokens == token).all(dim=-1)][0, 0] for token in sparse[:, 0]]) / method.input_size
        is_image_1 = torch.tensor([torch.equal(e, features["embedding"][1]) for e in embedding])
        return mask_embedding, torch.where(is_image_1, torch.zeros_like(x), x)

    grid_tokens = point_prompts(method.prompt_encoder, grid)[0][:, 0]
    method.prim = prim
    with torch.no_grad():
        logits = method.predict(images, features)
        # the right-most grid column scores highest; argmax takes its first point, grid index 2
        sparse, dense = point_prompts(method.prompt_encoder, grid[[2, 2]])
        guides, _ = real_prim(features["embedding"][[0, 2]], sparse, dense)
        expected = method.pdmm([t[[0, 2]] for t in method._taps_deepest_first(features)], guide=guides)
    assert torch.all(logits[1] == EMPTY_LOGIT)
    torch.testing.assert_close(logits[[0, 2]], expected, rtol=1e-4, atol=1e-4)


def test_grid_mean_merge_averages_the_kept_points_and_chunking_changes_nothing():
    method = make_desam(grid_merge="mean").eval()
    images = batch_for(method, batch=2)["image"]
    with torch.no_grad():
        one_pass = method.predict(images)
        method.settings.prompts_per_pass = 2
        chunked = method.predict(images)
    torch.testing.assert_close(one_pass, chunked, rtol=1e-4, atol=1e-4)
    assert one_pass.shape == (2, SPEC.num_classes, 64, 64) and torch.isfinite(one_pass).all()

    method.settings.grid_merge = "top"
    scripted_scores(method, torch.tensor([0.1, 0.7, 0.2, 0.9, 0.3, 0.6, 0.0, 0.4, 0.2]))
    with torch.no_grad():
        top = method.predict(images[:1])
        method.settings.grid_merge = "mean"
        mean = method.predict(images[:1])
    assert not torch.allclose(top, mean)  # three kept points (0.7, 0.9, 0.6) with different masks


@pytest.mark.parametrize("variant", TINY)
def test_predict_runs_in_both_modes_and_returns_k_logits(variant):
    method = make_desam(variant).eval()
    images = batch_for(method, batch=2)["image"]
    e = method.image_encoder.config.embedding_size
    for mode in ("grid", "box"):
        method.settings.inference = mode
        with torch.no_grad():
            logits = method.predict(images)
        assert logits.shape == (2, SPEC.num_classes, 4 * e, 4 * e) and torch.isfinite(logits).all()


# --- through the trainer and the predictor ------------------------------------------------------------------------

def test_train_with_the_embedding_cache_then_predict_a_raw_case(samdg_roots):
    """``samdg_train <id> desam all`` in miniature: planned synthetic data, the real trainer with the in-memory
    embedding cache (taps included), then the predictor on a raw case read back from the results folder."""
    from dataset_conversion.synthetic import make_synthetic_dataset
    from samdg.inference.predictor import Predictor
    from samdg.preprocessing.api import plan_and_preprocess
    from samdg.training import TrainingArgs, results_fold_dir, train
    from samdg.training.checkpoint import load_checkpoint

    dataset = "Dataset951_DesamSynth"
    raw = samdg_roots["raw"] / dataset
    make_synthetic_dataset(raw, num_domains=2, cases_per_domain=2, test_cases_per_domain=1, shape=(32, 32, 4))
    plan_and_preprocess(dataset, variant="tiny_tinyvit_test", progress=False, log=lambda message: None)
    overrides = {"training.augmentation": "none", "methods.desam.decoder_widths": [16, 8, 8],
                 "methods.desam.grid_points_per_side": 3}
    train(TrainingArgs(dataset=dataset, method="desam", fold="all", epochs=1, iters_per_epoch=2, batch_size=2,
                       device="cpu", source_domains=["siteA"], num_workers=0, progress_bar=False,
                       embedding_cache="memory", final_validation=False, overrides=overrides))
    fold_dir = results_fold_dir(dataset, "desam", "all", ["siteA"])
    state = load_checkpoint(fold_dir / "checkpoint_final.pth")
    assert state["method"] == "desam" and state["method_settings"]["decoder_widths"] == [16, 8, 8]
    assert any(key.startswith("pdmm.") for key in state["model_state"])

    predictor = Predictor.from_model_dir(fold_dir.parent, device="cpu", progress=False)
    case = sorted((raw / "imagesTs").iterdir())[0]
    label_map, probabilities, _ = predictor.predict_case([str(case)], return_probabilities=True)
    assert probabilities.shape[0] == 3  # liver, kidney, spleen
    assert label_map.shape == probabilities.shape[1:] and set(label_map.ravel().tolist()) <= {0, 1, 2, 3}
