"""``espmedsam``: ESP-MedSAM / De-LightSAM, an efficient self-prompting SAM with modality controllers.

Paper: Q. Xu, J. Li, X. He, Z. Liu, Z. Chen, W. Duan, C. Li, M. M. He, F. B. Tesema, W. P. Cheah, Y. Wang, R. Qu,
J. M. Garibaldi, "ESP-MedSAM: Efficient Self-Prompting SAM for Universal Domain-Generalized Medical Image
Segmentation" (arXiv 2407.14153; v5 renamed De-LightSAM). Released code: github.com/xq141839/ESP-MedSAM (model)
and xq141839/De-LightSAM (the distillation script only). Method page: documentation/methods/espmedsam.md.

Reproduced:

- Modality aggregator: the variant's encoder (LiteMedSAM's TinyViT by default, MobileSAM's 1024-px TinyViT-5M as
  released), frozen. Modality controllers (:mod:`samdg.models.layers.esp_controller`): in every attention block one
  key/value token per head (one tensor for key and value) with a learnable logit bias, and an expert MLP
  (LN -> 4C -> GELU -> C) beside the block's MLP; controller k is chosen per image.
- SPPG (:mod:`samdg.models.layers.esp_sppg`): patch logits at half the embedding grid (1/32 of a stride-16
  input), hard threshold 0.5 of the detached sigmoid, nearest upsampling, dense prompt added to the embedding;
  BCE against the max-pooled ground truth, per class.
- QDMD (:mod:`samdg.models.layers.esp_qdmd`): SAM's two-way transformer on learnable queries per (controller,
  class), no IoU token, per-query hypernetworks (``shared_hypernetwork`` and ``attention_only_query`` give the
  released decoder).
- MMDKD and segmentation as stages of one ``samdg_train`` call (``stage: auto``; :meth:`ESPMedSAM.training_stages`):
  ``teacher`` (the medical teacher: the teacher encoder with its own controllers, SPPG and QDMD, trained on the
  segmentation; with ``medical_teacher``), ``distill`` (the released recipe: MSE between the student's embedding and
  the frozen teacher's, image i under controller k of both, only the controllers train, Adam 5e-4, ExponentialLR
  0.98 per epoch; the teacher's embeddings go through the embedding cache; with ``train_aggregator`` plus the
  paper's common-knowledge term, ``common_knowledge_weight`` x MSE between the aggregator run without controllers
  and the teacher encoder without controllers; ``checkpoint_best.pth`` by the lowest validation distillation loss,
  as released, and the segment stage starts from it) and ``segment`` (Dice + BCE +
  ``sppg_weight`` x SPPG BCE). A finished earlier stage of the same plan is reused; ``--stage`` trains one stage.
  The teacher (``teacher_variant``) is chosen by the planner (:mod:`samdg.planning.distillation`).

Choices where the paper and code say nothing (documented on the method page):

- What selects the controller (``controller_key``): ``domain`` (the dataset's domains; one controller per
  training domain), ``modality`` (the dataset's channel modality; samdg datasets have one, so one controller per
  dataset) or ``single`` (the released code: one controller). ``controllers`` lists the names in index order; the
  trainer fills it from the training data (:meth:`ESPMedSAM.settings_for_training`), and the checkpoint keeps it.
- An image with no trained controller (an unseen domain, or prediction, which passes no domain) gets
  ``unseen_controller``: ``mean`` (default; tokens, expert outputs and decoder masks averaged over all controllers)
  or ``first``.
- Segmentation stage: the aggregator frozen, everything else trains (AdamW, warm-up + poly: samdg's default).

Released-code bugs, as options defaulting to the fix: ``std_equals_mean`` (inputs divided by the mean instead of
the std), ``mask_only_flip`` (10 % of training masks flipped horizontally while the image is not),
``encoder_ignores_controller`` (the encoder ignores ``domain_seq``: one encoder controller, the decoder still picks
its queries by the index). Modality from file names is not reproduced (the index comes from the plan's domains or
modality). The released model's unused ImageNet head (321,640 parameters) is not built.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from samdg.errors import SamdgError
from samdg.labels import LabelSpec
from samdg.models.backbones.intensity import SAM_PIXEL_MEAN
from samdg.models.layers.esp_controller import WEIGHTS_KEY, install_controllers
from samdg.models.layers.esp_qdmd import QueryDecoupledDecoder
from samdg.models.layers.esp_sppg import SelfPatchPromptGenerator, patch_targets
from samdg.models.layers.esp_teacher import DistillationTeacher, controllers_detached
from samdg.models.methods.base import FrozenSamMethod, unique_parameters
from samdg.models.methods.losses import dice_bce_loss
from samdg.models.methods.optimization import OptimizerSetup
from samdg.models.methods.registry import register_method
from samdg.models.methods.settings import SamMethodSettings
from samdg.utils.schema import doc_field as _doc

ControllerKey = Literal["modality", "domain", "single"]
DISTILL_FOLDER = "distill"
TEACHER_FOLDER = "teacher"
PLAIN_TEACHER_KEY = "teacher_plain"  # cached embedding of the medical teacher without controllers
MASK_ONLY_FLIP_PROBABILITY = 0.1  # the released loader's horizontal flip probability


@dataclass
class ESPMedSAMSettings(SamMethodSettings):
    """`espmedsam`: stage, controllers, decoder layout, losses, distillation recipe and released-bug options."""

    stage: Literal["auto", "teacher", "distill", "segment"] = _doc(
        "`auto`: the stages before `segment` that the fold has not finished for this plan (`teacher` when "
        "`medical_teacher`, `distill`), then `segment`; `teacher`: the medical teacher's controllers and head learn "
        "the segmentation; `distill`: MMDKD, the controllers imitate the frozen teacher's embedding; `segment`: "
        "Dice + BCE + SPPG loss", default="auto")
    medical_teacher: bool = _doc(
        "the distillation teacher carries its own controllers, trained on the segmentation in the `teacher` stage "
        "(the paper's domain knowledge); false: the plain frozen teacher (the released script's loss)",
        default=True)
    controller_key: ControllerKey = _doc(
        "what chooses an image's controller: `domain` (dataset domains), `modality` (the dataset's channel "
        "modality: one controller per dataset) or `single` (one controller, the released code)", default="modality")
    controllers: list[str] = _doc("names owning a controller, in index order; empty = filled from the training "
                                  "data when training starts (one controller if still empty)", default_factory=list)
    unseen_controller: Literal["mean", "first"] = _doc(
        "controller of an image whose domain has none (unseen domains; prediction passes no domain): `mean` of all "
        "controllers or the `first`", default="mean")
    shared_hypernetwork: bool = _doc("one hypernetwork MLP for every query (released) instead of one per query "
                                     "(paper)", default=False)
    attention_only_query: bool = _doc("an extra query that only takes part in attention (the released 7th query)",
                                      default=False)
    sppg_weight: float = _doc("weight of the SPPG patch BCE in the segmentation loss", default=1.0, minimum=0)
    train_aggregator: bool = _doc("fine-tune the aggregator (the encoder's own weights) too", default=False)
    gradient_checkpointing: bool = _doc("recompute encoder blocks in the backward pass (the controllers' gradients "
                                        "flow through the whole encoder)", default=False)
    teacher_variant: str = _doc("distillation teacher: a registered variant with weights (the planner picks the "
                                "largest ViT whose checkpoint is in the weights folder); \"\" = the student's own "
                                "aggregator as built (the common-knowledge term is then a no-op)", default="")
    common_knowledge_weight: float = _doc(
        "distill stage: weight of MMDKD's common-knowledge term, MSE between the aggregator without controllers and "
        "the teacher encoder without controllers, added to the domain-knowledge MSE; it has trainable parameters "
        "only with `train_aggregator`, so only then is it computed (by default, a frozen aggregator, the loss is "
        "the domain-knowledge term alone)", default=1.0, minimum=0)
    distill_lr: float = _doc("Adam learning rate of the distillation stage", default=5e-4, exclusive_minimum=0)
    distill_gamma: float = _doc("ExponentialLR factor per epoch in the distillation stage", default=0.98,
                                exclusive_minimum=0, maximum=1)
    std_equals_mean: bool = _doc("released bug: encoder input `(255x - mean) / mean` instead of the variant's "
                                 "convention", default=False)
    mask_only_flip: bool = _doc("released bug: 10 % of training masks flipped horizontally, the image not",
                                default=False)
    encoder_ignores_controller: bool = _doc("released bug: one encoder controller whatever the index (the ignored "
                                            "`domain_seq`); the decoder still picks queries by it", default=False)


@register_method("espmedsam", settings=ESPMedSAMSettings)
class ESPMedSAM(FrozenSamMethod):
    """Aggregator + modality controllers, SPPG and QDMD (see the module docstring).

    Trainable: segment and teacher stages: controllers, SPPG, QDMD (and the aggregator with ``train_aggregator``);
    distill stage: controllers (and the aggregator with ``train_aggregator``). The teacher stage's model is built on
    the teacher variant's SAM (images resized to its input size).
    """

    def __init__(self, sam: nn.Module, settings: Any, label_spec: LabelSpec) -> None:
        super().__init__(sam, settings, label_spec)
        s = self.settings
        self.controller_names = list(s.controllers) if s.controller_key != "single" else []
        self.num_controllers = max(1, len(self.controller_names))
        self.teachers: dict[str, DistillationTeacher] = {}
        self.stage = "segment" if s.stage == "auto" else s.stage  # `auto` builds its last stage's model
        self.distilling = self.stage == "distill"
        self.medical_teacher_path: Path | None = None
        if self.distilling:
            grid = int(sam.image_encoder.config.embedding_size)
            self.teachers["teacher"] = DistillationTeacher(self._teacher_encoder(sam), grid)
        elif self.stage == "teacher":  # this stage's model is the medical teacher: the teacher's encoder in its SAM
            sam = self._teacher_sam(sam)
            self.image_encoder, self.prompt_encoder = sam.image_encoder, sam.prompt_encoder
        self.controller_modules = install_controllers(self.image_encoder, self.encoder_controllers)
        self.image_encoder.gradient_checkpointing = s.gradient_checkpointing
        if s.std_equals_mean:
            self.image_encoder.intensity = "unit_range"  # encode() applies the released normalisation itself
        self.sppg = SelfPatchPromptGenerator(self.num_classes, sam.mask_decoder.transformer_dim)
        self.decoder = QueryDecoupledDecoder(sam.mask_decoder, self.num_controllers, self.num_classes,
                                             s.shared_hypernetwork, s.attention_only_query)

    @classmethod
    def settings_for_training(cls, settings: Any, training_domains: list[str], plans: Any) -> Any:
        """Fill an empty ``controllers`` from the training data: the sorted training domains (``domain``) or the
        dataset's first channel modality (``modality``)."""
        if settings.controllers or settings.controller_key == "single":
            return settings
        names = sorted(training_domains) if settings.controller_key == "domain" else list(plans.modalities[:1])
        return dataclasses.replace(settings, controllers=names)

    @property
    def encoder_controllers(self) -> int:
        """Controllers inside the encoder: one with the released ``encoder_ignores_controller``."""
        return 1 if self.settings.encoder_ignores_controller else self.num_controllers

    @classmethod
    def training_stages(cls, settings: Any) -> list[tuple[str, Any]]:
        """``auto``: teacher (with ``medical_teacher``) and distill as prerequisites (reused when finished for
        this plan), then segment; else the one stage asked for."""
        if settings.stage != "auto":
            return [(settings.stage, settings)]
        stages = ("teacher", "distill", "segment") if settings.medical_teacher else ("distill", "segment")
        return [(stage, dataclasses.replace(settings, stage=stage)) for stage in stages]

    @classmethod
    def stage_folder(cls, settings: Any) -> str:
        """``fold_X/teacher`` (the medical teacher) and ``fold_X/distill`` keep the prerequisite stages' models; the
        segmentation model is the fold's."""
        return {"teacher": TEACHER_FOLDER, "distill": DISTILL_FOLDER}.get(settings.stage, "")

    def load_teachers(self, stage_dir: Path) -> list[str]:
        """Distill stage with ``medical_teacher``: the teacher gets the controllers of
        ``fold_X/teacher/checkpoint_final.pth`` when it exists (else it stays plain, which the log says)."""
        if not self.distilling:
            return []
        if not self.settings.medical_teacher:
            return [self._teacher_line()]
        path = Path(stage_dir).parent / TEACHER_FOLDER / "checkpoint_final.pth"
        if not path.is_file():
            return [self._teacher_line() + f"; no medical teacher ({path} absent; samdg_train ... --stage teacher "
                                           "trains it): common knowledge only"]
        encoder_state = _encoder_weights(_stage_checkpoint(path, self.settings.controllers, "the teacher"))
        prefix = len("image_encoder.")
        try:
            self.teachers["teacher"].make_medical(self.encoder_controllers,
                                                  {key[prefix:]: value for key, value in encoder_state.items()})
        except RuntimeError:
            raise SamdgError(f"{path}: the medical teacher does not fit this run (other teacher variant or "
                             "settings); train the teacher stage again with this run's plan") from None
        self.medical_teacher_path = path
        teacher, student = self.settings.teacher_variant, self.image_encoder.config.name
        own = not teacher or teacher == student
        common = (f"; its encoder is the student's own aggregator ({student}), so the common-knowledge term is a "
                  "no-op" if own else "")
        return [f"espmedsam distillation: controller k imitates the medical teacher ({teacher or student} with its "
                f"{self.encoder_controllers} controller(s) trained in the teacher stage, {path}){common}"]

    def validation_loss_selects_best(self) -> bool:
        """Distill stage: ``checkpoint_best.pth`` is the epoch with the lowest validation distillation loss (as
        released; the stage's Dice is that of the untrained decoder)."""
        return self.distilling

    def before_training(self, fold_dir: Path) -> list[str]:
        """Segment stage: start from the controllers (and the aggregator, when it trains) of the finished
        distillation in ``fold_dir/distill``: its ``checkpoint_best.pth`` (lowest validation distillation loss), or
        ``checkpoint_final.pth`` when the distillation kept no best by that loss."""
        if self.stage != "segment":
            return []
        folder = Path(fold_dir) / DISTILL_FOLDER
        path = folder / "checkpoint_final.pth"
        if not path.is_file():
            return [f"espmedsam: no distilled controllers ({path} absent; samdg_train ... --stage distill makes "
                    "them): the controllers start from their random initialisation"]
        best_path = folder / "checkpoint_best.pth"
        controllers = self.settings.controllers
        best = _stage_checkpoint(best_path, controllers, "the distillation") if best_path.is_file() else None
        if best is not None and math.isfinite(best.get("best_val_loss", math.inf)):
            path, state = best_path, best
            which = f"lowest validation loss {best['best_val_loss']:.6g}, epoch {best['epoch']}"
        else:  # a distillation from before the loss selection kept its best by the (meaningless) Dice
            state = _stage_checkpoint(path, controllers, "the distillation")
            which = "final"
        encoder_state = _encoder_weights(state)
        try:
            result = self.load_state_dict(encoder_state, strict=False)
        except RuntimeError:
            raise SamdgError(f"{path}: the distilled encoder does not fit this model (other variant or settings); "
                             "distill again with this run's plan") from None
        if result.unexpected_keys:
            raise SamdgError(f"{path}: unexpected distilled weights (e.g. {result.unexpected_keys[0]})")
        return [f"espmedsam: controllers{' and aggregator' if self.settings.train_aggregator else ''} start from the "
                f"distillation stage ({path}: {which})"]

    def _teacher_line(self) -> str:
        teacher, student = self.settings.teacher_variant, self.image_encoder.config.name
        if teacher and teacher != student:
            weights = self.teacher_checkpoint or "random initialisation: the variant has no weights"
            return f"espmedsam distillation: the controllers imitate the frozen teacher {teacher} ({weights})"
        return (f"espmedsam distillation: the teacher is the student's own aggregator ({student}): the "
                "common-knowledge term is a no-op; the controllers learn to keep its embedding")

    def _teacher_sam(self, sam: nn.Module) -> nn.Module:
        """The SAM whose encoder teaches: ``teacher_variant`` with its weights, or the student's own."""
        if not self.settings.teacher_variant:
            self.teacher_checkpoint = getattr(sam, "checkpoint_path", None)
            return sam
        from samdg.models.backbones import build_sam

        teacher_sam = build_sam(self.settings.teacher_variant)
        self.teacher_checkpoint = teacher_sam.checkpoint_path
        return teacher_sam

    def _teacher_encoder(self, sam: nn.Module) -> nn.Module:
        """The frozen teacher encoder, plain (before any controller goes in)."""
        teacher_sam = self._teacher_sam(sam)
        teacher = copy.deepcopy(sam.image_encoder) if teacher_sam is sam else teacher_sam.image_encoder
        if self.settings.std_equals_mean:
            teacher.intensity = "unit_range"  # it gets the released normalisation from encoder_input() as well
        return teacher

    # --- controller selection ------------------------------------------------------------------------------------

    def controller_weights(self, domains: list[str] | None, batch: int, device: torch.device) -> torch.Tensor:
        """(B,M) weights over the M controllers: one-hot for a domain that owns one (``controller_key: domain``),
        controller 0 with ``modality``/``single``, the ``unseen_controller`` rule otherwise (or with no domains)."""
        count = self.num_controllers
        weights = torch.zeros(batch, count, device=device)
        if self.settings.controller_key != "domain" or count == 1:
            weights[:, 0] = 1.0
            return weights
        index = {name: i for i, name in enumerate(self.controller_names)}
        for b in range(batch):
            known = index.get(domains[b]) if domains is not None else None
            if known is not None:
                weights[b, known] = 1.0
            elif self.settings.unseen_controller == "mean":
                weights[b] = 1.0 / count
            else:
                weights[b, 0] = 1.0
        return weights

    # --- encoder and decoder -------------------------------------------------------------------------------------

    @property
    def common_knowledge(self) -> bool:
        """Whether the distill stage computes MMDKD's common-knowledge term: a positive weight and a training
        aggregator (with a frozen one the term is a constant)."""
        return self.distilling and self.settings.train_aggregator and self.settings.common_knowledge_weight > 0

    @property
    def caches_plain_teacher(self) -> bool:
        """A medical teacher's plain embedding is cached beside its per-controller ones when the common-knowledge
        term needs it (a plain teacher's one embedding serves both terms)."""
        return self.common_knowledge and self.teachers["teacher"].is_medical

    def cacheable_features(self) -> tuple[str, ...] | None:
        """Distill stage: the frozen teacher's embeddings (see :meth:`encode_for_cache`); the other stages: nothing
        (the controllers inside the encoder train)."""
        if not self.distilling:
            return None
        return (PLAIN_TEACHER_KEY,) if self.caches_plain_teacher else ()

    def encode_for_cache(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Distill stage: {"embedding": the teacher's embeddings at the student's grid}, (B,256,E,E) from a plain
        teacher, (B,M*256,E,E) from a medical one (one per controller: a slice is cached once whichever controller
        picks it); plus {"teacher_plain": (B,256,E,E)}, the medical teacher without controllers, when the
        common-knowledge term needs it."""
        if not self.distilling:
            raise RuntimeError(f"espmedsam caches nothing in the {self.stage} stage")
        teacher, images = self.teachers["teacher"], self.encoder_input(images)
        features = {"embedding": teacher.per_controller(images)}
        if self.caches_plain_teacher:
            features[PLAIN_TEACHER_KEY] = teacher.plain(images)
        return features

    def cached_feature_shapes(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """Distill stage with a medical teacher: M embeddings per slice (one per controller), (M*256,E,E), and the
        plain one (256,E,E) when the common-knowledge term needs it."""
        teacher = self.teachers["teacher"] if self.distilling else None
        if teacher is None or not teacher.is_medical:
            return shapes
        channels, height, width = shapes["embedding"]
        shapes = {**shapes, "embedding": (teacher.num_controllers * channels, height, width)}
        if self.caches_plain_teacher:
            shapes[PLAIN_TEACHER_KEY] = (channels, height, width)
        return shapes

    def cache_identity(self) -> dict[str, Any]:
        """The teacher (variant and weights file, or the teacher stage's checkpoint), the encoder input convention
        and the student's grid: the cached teacher embeddings depend on all of them."""
        identity: dict[str, Any] = {"encoder": "espmedsam distillation teacher",
                                    "std_equals_mean": self.settings.std_equals_mean,
                                    "grid": self.teachers["teacher"].grid}
        if self.settings.teacher_variant:
            identity.update(variant=self.settings.teacher_variant, checkpoint=self.teacher_checkpoint)
        if self.medical_teacher_path is not None:
            identity.update(medical_teacher=True, checkpoint=str(self.medical_teacher_path))
        return identity

    def encoder_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0,1]; with ``std_equals_mean`` the released ``(255x - mean) / mean``."""
        if not self.settings.std_equals_mean:
            return images
        mean = images.new_tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1)
        return (images * 255.0 - mean) / mean

    def encode(self, images: torch.Tensor, domains: list[str] | None = None) -> dict[str, torch.Tensor]:
        """(B,3,S,S) in [0,1] -> {"embedding": (B,256,E,E), "controller_weights": (B,M)}; images are resized to
        the encoder's input size (another size only in the teacher stage, on the teacher variant)."""
        weights = self.controller_weights(domains, images.shape[0], images.device)
        size = int(self.image_encoder.config.input_size)
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        embedding, _ = self.image_encoder.forward_features(self.encoder_input(images),
                                                           context={WEIGHTS_KEY: self._encoder_weights(weights)})
        return {"embedding": embedding, WEIGHTS_KEY: weights}

    def _encoder_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """(B,M) controller weights -> those of the encoder's controllers (one with encoder_ignores_controller)."""
        return weights[:, :1].new_ones(weights.shape[0], 1) if self.settings.encoder_ignores_controller else weights

    def decode_all(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (per-class logits (B,K,4E,4E), patch logits (B,K,E/2,E/2))."""
        embedding = features["embedding"]
        patch_logits, dense = self.sppg(embedding)
        positional = self.prompt_encoder.pe_layer(tuple(embedding.shape[-2:])).unsqueeze(0).to(embedding.dtype)
        logits = self.decoder(embedding, dense, positional, features[WEIGHTS_KEY])
        return logits, patch_logits

    def decode(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.decode_all(features)[0]

    def predict(self, images: torch.Tensor, features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Automatic mode; the student always encodes (cached features are the distillation teacher's)."""
        return self.decode(self.encode(images))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        features = self.encode(batch["image"], batch.get("domain"))
        if self.distilling:
            with torch.no_grad():
                teacher = self.teacher_embedding(batch["image"], self._encoder_weights(features[WEIGHTS_KEY]),
                                                 batch.get("features"))
                logits = self.decode(features)
            outputs = {"logits": logits, "embedding": features["embedding"], "teacher_embedding": teacher}
            if self.common_knowledge:
                cached = batch.get("features")
                if cached is None and not self.teachers["teacher"].is_medical:
                    cached = {"embedding": teacher}  # a plain teacher's one embedding serves both terms: run it once
                outputs.update(self.common_knowledge_pair(batch["image"], cached))
            return outputs
        logits, patch_logits = self.decode_all(features)
        return {"logits": logits, "patch_logits": patch_logits}

    def teacher_embedding(self, images: torch.Tensor, weights: torch.Tensor,
                          cached: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The frozen teacher's embedding (B,256,E,E) of (B,3,S,S) images at the student's grid, under the
        controllers that ``weights`` (B,M) pick for a medical teacher; from the cache's entries when given."""
        teacher = self.teachers["teacher"]
        if cached is None:
            return teacher(self.encoder_input(images), weights)
        return teacher.pick(cached["embedding"], weights) if teacher.is_medical else cached["embedding"]

    def common_knowledge_pair(self, images: torch.Tensor,
                              cached: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The common-knowledge term's pair for (B,3,S,S) images: {"aggregator_embedding": the student's aggregator
        without controllers, "plain_teacher_embedding": the frozen teacher without controllers}, both (B,256,E,E)
        (the teacher's from the cache when given)."""
        teacher = self.teachers["teacher"]
        size = int(self.image_encoder.config.input_size)
        student_images = images
        if images.shape[-1] != size:
            student_images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        with controllers_detached(self.image_encoder):
            aggregator, _ = self.image_encoder.forward_features(self.encoder_input(student_images))
        with torch.no_grad():
            if cached is None:
                target = teacher.plain(self.encoder_input(images))
            else:
                target = cached[PLAIN_TEACHER_KEY] if teacher.is_medical else cached["embedding"]
        return {"aggregator_embedding": aggregator, "plain_teacher_embedding": target}

    # --- losses --------------------------------------------------------------------------------------------------

    def loss(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        if self.distilling:
            mse = F.mse_loss(outputs["embedding"].float(), outputs["teacher_embedding"].float())
            if "aggregator_embedding" not in outputs:
                return mse, {"distill_mse": float(mse.detach())}
            common = F.mse_loss(outputs["aggregator_embedding"].float(), outputs["plain_teacher_embedding"].float())
            total = mse + self.settings.common_knowledge_weight * common
            return total, {"distill_mse": float(mse.detach()), "common_mse": float(common.detach())}
        target = batch["target"]
        if self.settings.mask_only_flip and self.training:
            flip = torch.rand(target.shape[0], device=target.device) < MASK_ONLY_FLIP_PROBABILITY
            target = torch.where(flip[:, None, None], target.flip(-1), target)
        total, parts = dice_bce_loss(outputs["logits"], target, self.label_spec,
                                     dice_weight=self.settings.dice_weight, bce_weight=self.settings.bce_weight)
        patch_logits = outputs["patch_logits"].float()
        sppg = F.binary_cross_entropy_with_logits(
            patch_logits, patch_targets(target, self.label_spec, tuple(patch_logits.shape[-2:])))
        return total + self.settings.sppg_weight * sppg, {**parts, "sppg_bce": float(sppg.detach())}

    # --- what trains ---------------------------------------------------------------------------------------------

    def trainable_modules(self) -> list[nn.Module]:
        modules = list(self.controller_modules)
        if self.settings.train_aggregator:
            modules.append(self.image_encoder)
        if not self.distilling:
            modules += [self.sppg, self.decoder]
        return modules

    def frozen_modules(self) -> list[nn.Module]:
        frozen = [self.prompt_encoder]
        if not self.settings.train_aggregator:
            frozen.append(self.image_encoder)
        if self.distilling:
            frozen += [self.sppg, self.decoder]
        return frozen

    def teacher_modules(self) -> dict[str, nn.Module]:
        return self.teachers

    def configure_optimizers(self, total_steps: int) -> OptimizerSetup:
        """Segment stage: samdg's default (AdamW + warm-up + poly); distill stage: the released Adam +
        ExponentialLR stepped per epoch."""
        if not self.distilling:
            return super().configure_optimizers(total_steps)
        parameters = unique_parameters(self.trainable_modules())
        optimizer = torch.optim.Adam(parameters, lr=self.settings.distill_lr)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.settings.distill_gamma)
        return OptimizerSetup(optimizer, scheduler, interval="epoch", grad_clip=self.settings.grad_clip or None)


def _stage_checkpoint(path: Path, controllers: list[str], stage: str) -> dict[str, Any]:
    """An earlier stage's checkpoint, checked to hold this run's controllers."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch's many-line message does not help here
        state = None
    if not isinstance(state, dict) or not {"method_settings", "model_state"} <= set(state):
        raise SamdgError(f"{path}: not a readable samdg checkpoint (truncated or damaged); train {stage} stage "
                         "again")
    settings = state["method_settings"]
    if settings.get("controllers") != controllers:
        raise SamdgError(f"{path}: {stage} stage was trained for controllers {settings.get('controllers')}, this run "
                         f"has {controllers}; train it again on the same training domains")
    return state


def _encoder_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The encoder weights (``image_encoder.*``) of a checkpoint."""
    return {key: value for key, value in state["model_state"].items() if key.startswith("image_encoder.")}
