"""The training loop. Generic: everything method-specific lives in the method (``samdg.models.methods``).

One epoch = ``iters_per_epoch`` optimiser steps on batches from :mod:`samdg.training.loader`, then slice-level
validation; at the end of every epoch ``checkpoint_latest.pth`` is written (so a killed run loses at most the
running epoch) and ``checkpoint_best.pth`` when the EMA of the validation Dice improves (or, for a method stage that
asks for it, :meth:`SegmentationMethod.validation_loss_selects_best`, when the validation loss falls). After the last
epoch: ``checkpoint_final.pth`` and whole-volume validation of the fold's validation cases.

Precision: bf16 autocast on CUDA, fp32 on the CPU. The loop calls, per iteration::

    outputs = model(batch)                      # DDP-wrapped method.forward
    loss, parts = method.loss(outputs, batch)
    loss.backward(); clip; optimizer.step(); scheduler.step()

The optimiser, its parameter groups and scheduler come from ``method.configure_optimizers(total_steps)`` (see
:mod:`samdg.training.optim`); a per-epoch scheduler is stepped after each epoch instead.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from samdg.errors import SamdgError
from samdg.models.methods import get_method, resolve_settings
from samdg.models.params import count_parameters, count_trainable
from samdg.planning.plans import Plans, apply_overrides
from samdg.training import checkpoint as ckpt
from samdg.training.config import TrainingArgs, TrainingRun, model_defining_plan, plan_differences, resolve_run
from samdg.training.distributed import (
    DistributedContext,
    all_reduce_sum,
    barrier,
    broadcast_object,
    gather_objects,
    init_distributed,
    shutdown,
)
from samdg.training.embedding_cache import AugmentedViewCache, EmbeddingCache, cache_key
from samdg.training.loader import SliceBatches, make_loader
from samdg.training.optim import configure_optimization, end_of_epoch, optimizer_step, prepare_for_training
from samdg.training.progress import TrainingRecord
from samdg.training.results import fold_folder_in_use, results_fold_dir, run_length_note
from samdg.training.sampler import TRAIN_STREAM, VALIDATION_STREAM, SliceSampler
from samdg.training.splits import fold_note
from samdg.training.validation import (
    dice_per_class,
    evaluating,
    predict_volume,
    slice_confusion,
    volume_dice,
)
from samdg.utils.device import autocast
from samdg.utils.files import atomic_write_json, load_json, make_folder
from samdg.utils.nan import nan_mean, nan_to_none
from samdg.utils.schema import to_plain

EMA_MOMENTUM = 0.9  # nnU-Net: ema = 0.9 * ema + 0.1 * current


def _file_identity(path: str | None) -> str | None:
    """Path, size and modification time of a weights file, so a file replaced in place invalidates the cache."""
    if not path or not Path(path).is_file():
        return path
    stat = Path(path).stat()
    return f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Owns the method, optimiser, data and records of one fold. ``run_training()`` trains to the end.

    ``epoch_end_hooks``: callables ``hook(trainer, epoch)`` run after each epoch's checkpoint is written.
    """

    def __init__(self, run: TrainingRun, context: DistributedContext, output_dir: Path | None,
                 epoch_end_hooks: list[Callable[["Trainer", int], None]] | None = None) -> None:
        self.run = run
        self.context = context
        self.device = context.device
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.record = TrainingRecord(self.output_dir if context.is_main else None, echo=context.is_main)
        self.epoch_end_hooks = list(epoch_end_hooks or [])
        self.label_spec = run.label_spec
        plans = run.plans

        # A method may complete its settings from the training data (espmedsam: one controller per domain).
        training_domains = sorted({run.cases[case_id].domain for case_id in run.train_cases})
        run.method_settings = get_method(run.args.method).settings_for_training(run.method_settings,
                                                                                training_domains, plans)
        seed_everything(run.args.seed)  # identical initialisation on every rank
        self.method = ckpt.build_untrained(run.args.method, plans.sam.variant, plans.sam.input_size,
                                           run.method_settings, run.label_spec, sam_checkpoint=plans.sam.checkpoint)
        # Teachers an earlier stage trained (never in checkpoints: loaded for continued runs too).
        self.teacher_notes = self.method.load_teachers(self.output_dir) if self.output_dir is not None else []
        self.method.to(self.device)
        # The trainable set is exactly what the method declares (DDP only tracks parameters that require grad).
        prepare_for_training(self.method, self.device)
        torch.manual_seed(run.args.seed + 1_000_003 * context.rank)  # per-rank stream for in-method randomness

        self.model = self.method
        if context.enabled:
            self.model = DistributedDataParallel(
                self.method, device_ids=[context.local_rank] if self.device.type == "cuda" else None,
                find_unused_parameters=self.method.ddp_find_unused_parameters())
        self.optimization = configure_optimization(self.method, run.epochs * run.iters_per_epoch)
        self.optimizer, self.scheduler = self.optimization.optimizer, self.optimization.scheduler
        self.amp_dtype = torch.bfloat16 if self.device.type == "cuda" else None
        # bf16 needs no loss scaling; the scaler is kept (disabled) so fp16 could be switched on without a new format.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)

        self.input_size = plans.sam.input_size
        self.cache, self.train_cache = self._make_caches()
        views = self.train_cache.views if isinstance(self.train_cache, AugmentedViewCache) else 0
        rank, world = context.rank, context.world_size
        crop = tuple(plans.sam.inplane_crop) if plans.sam.inplane_crop else None
        self.train_sampler = SliceSampler(run.cases, run.train_cases, run.global_batch_size,
                                          plans.training.oversample_foreground_percent, run.args.seed, TRAIN_STREAM)
        self.val_sampler = SliceSampler(run.cases, run.val_cases, run.global_batch_size,
                                        plans.training.oversample_foreground_percent, run.args.seed, VALIDATION_STREAM)
        train_batches = SliceBatches(run.cases, self.train_sampler, plans.channel_mapping, self.input_size,
                                     run.augmentation, crop, rank, world, views,
                                     plans.training.embedding_cache_refresh_epochs, run.args.seed)
        val_batches = SliceBatches(run.cases, self.val_sampler, plans.channel_mapping, self.input_size, "none",
                                   crop, rank, world)
        pin = self.device.type == "cuda"
        self.train_loader, self.train_indices = make_loader(train_batches, run.iters_per_epoch, run.num_workers, pin)
        self.val_loader, self.val_indices = make_loader(val_batches, run.val_iterations, (run.num_workers + 1) // 2,
                                                        pin)

        self.epoch = 0  # finished epochs
        self.resumed_from: str | None = None
        self.resumed_epoch = -1
        self.ema_dice: float | None = None
        self.best_ema_dice = -math.inf
        self.best_val_loss = math.inf

    # ------------------------------------------------------------------------------------------ components

    def _make_caches(self) -> tuple[EmbeddingCache | None, EmbeddingCache | None]:
        """(cache of un-augmented slices: validation, and training without augmentation; cache of the training
        batches: the same one, or the augmented views when augmentation is on). (None, None) when off."""
        mode = self.run.args.embedding_cache
        if mode == "off":
            return None, None
        names = self.method.cacheable_features()
        if names is None and self.run.stage:
            self.record.log(f"--embedding-cache {mode}: not in stage {self.run.stage}, where method "
                            f"'{self.run.args.method}' trains its image encoder")
            return None, None
        if names is None:
            raise SamdgError(f"--embedding-cache {mode}: with its current settings method '{self.run.args.method}' "
                             "trains its image encoder, so encoder features cannot be cached; use "
                             "--embedding-cache off")
        plans, names = self.run.plans, tuple(names)
        # The encoder whose outputs are cached: the plan's, unless the method caches another (a frozen teacher).
        encoder = {"variant": plans.sam.variant, "checkpoint": plans.sam.checkpoint, **self.method.cache_identity()}
        encoder["checkpoint"] = _file_identity(encoder["checkpoint"])
        description = {**encoder, "input_size": plans.sam.input_size, "mapping": plans.to_dict()["channel_mapping"],
                       "preprocessing": plans.preprocessing_hash(), "features": list(names),
                       "precision": str(self.amp_dtype)}
        root = self.run.preprocessed_dir / "embedding_cache"
        plain = EmbeddingCache(mode, names, root / cache_key(description) if mode == "disk" else None)
        if self.run.augmentation == "none":
            self._announce_cache_size(mode, names)
            return plain, plain
        views = plans.training.embedding_cache_views
        # The views depend on the preset, K and the seed too: another value of any of them is another cache.
        description.update(augmentation=self.run.augmentation, views=views, seed=self.run.args.seed)
        refresh = plans.training.embedding_cache_refresh_epochs
        self._announce_cache_size(mode, names, views, refresh)
        augmented = AugmentedViewCache(mode, names, views, refresh,
                                       root / cache_key(description) if mode == "disk" else None)
        return plain, augmented

    def _announce_cache_size(self, mode: str, names: tuple[str, ...], views: int = 0, refresh: int = 0) -> None:
        """Say, before building it, how large the cache can grow (float16 features): every training and validation
        slice; with ``views`` augmented views, K views (features and int32 label) of every training slice per
        round of views (memory keeps one round, disk every round of the run) plus the un-augmented validation
        slices."""
        from samdg.models.backbones.base import Backbone

        encoder = next(module for module in self.method.modules() if isinstance(module, Backbone))
        shapes = dict(encoder.feature_shapes())
        size = encoder.config.embedding_size
        shapes.setdefault("embedding", (256, size, size))
        shapes = self.method.cached_feature_shapes(shapes)
        per_slice = sum(2 * int(np.prod(shapes[name])) for name in ("embedding", *names))
        where = "RAM of each training process" if mode == "memory" else "disk"
        what = f"embedding cache ({mode}): {', '.join(('embedding', *names))}; {per_slice / 2**20:.2f} MiB per slice"
        if not views:
            slices = sum(self.run.cases[c].num_slices for c in {*self.run.train_cases, *self.run.val_cases})
            self.record.log(f"{what}, up to {slices} slices = {per_slice * slices / 2**30:.2f} GiB of {where}")
            return
        train_slices = sum(self.run.cases[c].num_slices for c in self.run.train_cases)
        val_slices = sum(self.run.cases[c].num_slices for c in self.run.val_cases)
        rounds = 1 if mode == "memory" or refresh <= 0 else math.ceil(self.run.epochs / refresh)
        per_view = per_slice + 4 * self.input_size**2
        total = rounds * views * train_slices * per_view + val_slices * per_slice
        refreshed = f", drawn anew every {refresh} epochs" if refresh > 0 else ""
        self.record.log(f"{what}; augmented ({self.run.augmentation}): {views} views of each of {train_slices} "
                        f"training slices{refreshed} ({rounds} round(s) kept), {per_view / 2**20:.2f} MiB per view "
                        f"with its label, plus {val_slices} un-augmented validation slices: up to "
                        f"{total / 2**30:.2f} GiB of {where}")

    def autocast(self):
        return autocast(self.device, self.amp_dtype)

    def _encode_for_cache(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with evaluating(self.method), self.autocast():
            return self.method.encode_for_cache(images)

    def prepare(self, batch: dict[str, Any], cache: EmbeddingCache | None = None) -> dict[str, Any]:
        """Move a loader batch to the device and attach cached encoder features from ``cache`` (default: the
        un-augmented cache); a cache of augmented views also gives the label stored with each view."""
        cache = self.cache if cache is None else cache
        batch = dict(batch)
        batch["image"] = batch["image"].to(self.device, non_blocking=True)
        batch["target"] = batch["target"].to(self.device, non_blocking=True)
        if cache is not None:
            labels = batch["target"] if cache.stores_labels else None
            features = cache.features(batch["keys"], batch["image"], self._encode_for_cache, labels)
            if "label" in features:
                batch["target"] = features.pop("label")
            batch["features"] = features
        return batch

    # ------------------------------------------------------------------------------------------ one step

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, float]:
        """Forward, loss and backward of one prepared batch; gradients are left in ``.grad`` (DDP-averaged)."""
        with self.autocast():
            outputs = self.model(batch)
            loss, parts = self.method.loss(outputs, batch)
        self.scaler.scale(loss).backward()
        return {"loss": float(loss.detach()), **parts}

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        parts = self.forward_backward(self.prepare(batch, self.train_cache))
        optimizer_step(self.optimization, self.scaler)
        return parts

    # ------------------------------------------------------------------------------------------ epochs

    def train_epoch(self, epoch: int) -> dict[str, float]:
        from tqdm import tqdm

        self.method.train()
        self.train_indices.set_epoch(epoch)
        if isinstance(self.train_cache, AugmentedViewCache):
            self.train_cache.begin_epoch(epoch)
        sums: dict[str, float] = defaultdict(float)
        show = self.run.args.progress_bar and self.context.is_main
        bar = tqdm(self.train_loader, total=self.run.iters_per_epoch, desc=f"epoch {epoch + 1}/{self.run.epochs}",
                   disable=not show, leave=False, dynamic_ncols=True)
        for batch in bar:
            parts = self.train_step(batch)
            for key, value in parts.items():
                sums[key] += value
            bar.set_postfix(loss=f"{parts['loss']:.4f}")
        bar.close()
        end_of_epoch(self.optimization)
        keys = sorted(sums)
        totals = all_reduce_sum(torch.tensor([sums[k] for k in keys], dtype=torch.float64), self.context)
        count = self.run.iters_per_epoch * self.context.world_size
        return {key: float(totals[i]) / count for i, key in enumerate(keys)}

    @torch.no_grad()
    def validate_epoch(self) -> tuple[dict[str, float], float | None]:
        """One pass over the fixed validation batches (summed over processes): slice-level pseudo Dice per class,
        and the mean method loss (:meth:`loss` of :meth:`forward`) when the method selects its best checkpoint by
        it, else None."""
        confusion = torch.zeros((self.label_spec.num_classes, 3), dtype=torch.float64)
        with_loss = self.method.validation_loss_selects_best()
        loss_totals = torch.zeros(2, dtype=torch.float64)  # loss sum, batches
        self.val_indices.set_epoch(0)  # the same slices every epoch
        with evaluating(self.method):
            for batch in self.val_loader:
                batch = self.prepare(batch)
                with self.autocast():
                    logits = self.method.predict(batch["image"], batch.get("features"))
                    if with_loss:
                        loss, _ = self.method.loss(self.method(batch), batch)
                        loss_totals += torch.tensor([float(loss), 1.0], dtype=torch.float64)
                confusion += slice_confusion(logits, batch["target"], self.label_spec).cpu().double()
        all_reduce_sum(confusion, self.context)
        if not with_loss:
            return dice_per_class(confusion, self.label_spec), None
        all_reduce_sum(loss_totals, self.context)
        return dice_per_class(confusion, self.label_spec), float(loss_totals[0] / loss_totals[1])

    def end_epoch(self, epoch: int, train: dict[str, float], val_dice: dict[str, float], seconds: float,
                  train_seconds: float, val_loss: float | None = None) -> None:
        mean_dice = nan_mean(val_dice.values())
        if not math.isnan(mean_dice):
            previous = mean_dice if self.ema_dice is None else self.ema_dice
            self.ema_dice = EMA_MOMENTUM * previous + (1 - EMA_MOMENTUM) * mean_dice
        self.epoch = epoch + 1
        slices = self.run.iters_per_epoch * self.run.global_batch_size
        record = {"epoch": self.epoch, **{f"train_{k}": v for k, v in train.items()},
                  "val_dice": val_dice, "val_mean_dice": mean_dice, "ema_dice": self.ema_dice,
                  "lr": self.optimizer.param_groups[0]["lr"], "epoch_seconds": round(seconds, 3),
                  "slices_per_second": round(slices / max(train_seconds, 1e-9), 3)}
        if val_loss is not None:
            record["val_loss"] = val_loss
        if self.device.type == "cuda":
            record["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        if val_loss is None:
            improved = self.ema_dice is not None and self.ema_dice > self.best_ema_dice
            if improved:
                self.best_ema_dice = self.ema_dice
        else:
            improved = val_loss < self.best_val_loss
            if improved:
                self.best_val_loss = val_loss
        rng_states = gather_objects(ckpt.capture_rng_state(), self.context)  # every rank's generators
        if self.context.is_main:
            self.record.add_epoch(record)
            dice_text = ", ".join(f"{name} {value:.4f}" for name, value in val_dice.items())
            self.record.log(f"epoch {self.epoch}/{self.run.epochs}: train loss {train['loss']:.4f} "
                            f"({', '.join(f'{k} {v:.4f}' for k, v in train.items() if k != 'loss')}); "
                            f"val Dice (slices) {dice_text}; EMA {_rounded(self.ema_dice)}; "
                            + (f"val loss {val_loss:.6g}; " if val_loss is not None else "") +
                            f"lr {record['lr']:.3g}; {seconds:.1f} s, {record['slices_per_second']:.1f} slices/s")
            if improved:
                self.record.log((f"new best EMA Dice {self.ema_dice:.4f}" if val_loss is None else
                                 f"new best validation loss {val_loss:.6g}") + ": checkpoint_best.pth updated")
            state = self.state_dict(rng_states)
            ckpt.save_checkpoint(self.output_dir / "checkpoint_latest.pth", state)
            if improved:
                ckpt.save_checkpoint(self.output_dir / "checkpoint_best.pth", state)
        barrier(self.context)
        for hook in self.epoch_end_hooks:
            hook(self, epoch)

    # ------------------------------------------------------------------------------------------ state

    def state_dict(self, rng_states: list[dict] | None = None) -> dict[str, Any]:
        """Everything a checkpoint holds (see :mod:`samdg.training.checkpoint`); ``rng_states``: one per rank."""
        plans = self.run.plans
        return {
            "format_version": ckpt.FORMAT_VERSION,
            "method": self.run.args.method,
            "method_settings": to_plain(self.run.method_settings),
            "labels": plans.labels,
            "regions_class_order": plans.regions_class_order,
            "variant": plans.sam.variant,
            "input_size": plans.sam.input_size,
            "sam_checkpoint": plans.sam.checkpoint,
            "model_state": self.method.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict(),
            "scaler_state": self.scaler.state_dict(),
            "epoch": self.epoch,
            "rng_states": rng_states or [ckpt.capture_rng_state()],
            "log": self.record.state(),
            "ema_dice": self.ema_dice,
            "best_ema_dice": self.best_ema_dice,
            "best_val_loss": self.best_val_loss,
            "training_args": self.run.args.to_dict(),
        }

    def load_state(self, state: dict[str, Any], source: Path) -> None:
        plans = self.run.plans
        mismatches = [key for key, now in (("method", self.run.args.method), ("variant", plans.sam.variant),
                                           ("input_size", plans.sam.input_size)) if state.get(key) != now]
        # Compared with defaults filled in, so a checkpoint written before a setting existed still continues.
        settings = to_plain(self.run.method_settings)
        saved_settings = to_plain(resolve_settings(self.run.args.method, state.get("method_settings")))
        for key in sorted(set(saved_settings) | set(settings)):
            if saved_settings.get(key) != settings.get(key):
                mismatches.append(f"methods.{self.run.args.method}.{key}")
        if mismatches:
            raise SamdgError(f"{source}: cannot continue, the checkpoint differs in {', '.join(mismatches)} "
                             "from this run's plan and overrides (pass the same overrides, or train without --c)")
        ckpt.load_model_state(self.method, state, source)
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.scheduler.load_state_dict(state["scheduler_state"])
        self.scaler.load_state_dict(state["scaler_state"])
        self.epoch = self.resumed_epoch = int(state["epoch"])
        self.ema_dice = state["ema_dice"]
        self.best_ema_dice = state["best_ema_dice"]
        self.best_val_loss = state.get("best_val_loss", math.inf)  # absent from checkpoints before it existed
        self.record.restore(state["log"])
        rng_states = state["rng_states"]
        if len(rng_states) == self.context.world_size:
            ckpt.restore_rng_state(rng_states[self.context.rank])
        else:  # another number of processes than before: generators restart from the seed and the epoch
            seed_everything(self.run.args.seed + 7919 * self.epoch + 1_000_003 * self.context.rank)

    def check_same_plan(self) -> None:
        """``--c`` continues only the model this run's plan defines: the fold's plans.json (written when its run
        started) must agree with this run's plan and overrides, the augmentation and normalisation included."""
        saved = self.output_dir / "plans.json"
        if not saved.is_file() or self.resume_candidate() is None:
            return
        method = self.run.args.method
        differences = plan_differences(model_defining_plan(Plans.load(saved), method),
                                       model_defining_plan(self.run.plans, method))
        if differences:
            raise SamdgError(f"{saved}: cannot continue, the run there was trained with {'; '.join(differences)} "
                             "(pass the same overrides, or train without --c)")

    def resume_candidate(self) -> str | None:
        """``--c`` continues from checkpoint_final, _latest or _best, the first present (nnU-Net's order)."""
        for name in ckpt.CHECKPOINT_NAMES:
            if (self.output_dir / name).is_file():
                return name
        return None

    # ------------------------------------------------------------------------------------------ the run

    def write_run_files(self) -> None:
        """plans.json (with overrides), dataset.json and training_args.json: the folder predicts on its own."""
        make_folder(self.output_dir)
        self.run.plans.save(self.output_dir / "plans.json")
        source = self.run.dataset_json_path
        if source is None:
            from samdg.paths import raw_dataset_dir

            candidate = raw_dataset_dir(self.run.dataset_name) / "dataset.json"
            source = candidate if candidate.is_file() else None
        if source is not None:
            atomic_write_json(self.output_dir / "dataset.json", load_json(source))
        args = self.run.args.to_dict()
        args.update(dataset_name=self.run.dataset_name, world_size=self.context.world_size,
                    global_batch_size=self.run.global_batch_size, epochs_resolved=self.run.epochs,
                    iters_per_epoch_resolved=self.run.iters_per_epoch, train_cases=self.run.train_cases,
                    val_cases=self.run.val_cases)
        atomic_write_json(self.output_dir / "training_args.json", args)

    def start(self) -> None:
        run = self.run
        if run.args.continue_training:
            self.check_same_plan()
        if self.context.is_main:
            self.write_run_files()
        if run.args.continue_training:
            # Every process reads the file itself (multi-node runs need the results folder on shared storage).
            candidate = self.resume_candidate() if self.context.is_main else None
            self.resumed_from = broadcast_object(candidate, self.context)
            if self.resumed_from:
                path = self.output_dir / self.resumed_from
                self.load_state(ckpt.load_checkpoint(path), path)
                self.record.log(f"continuing from {self.resumed_from} after epoch {self.epoch}")
            else:
                self.record.log("--c: no checkpoint found, starting from scratch")
        elif self.context.is_main and any((self.output_dir / n).is_file() for n in ckpt.CHECKPOINT_NAMES):
            self.record.log("existing checkpoints in this folder will be overwritten (use --c to continue instead)")
        if self.context.is_main:
            for line in [*run.stage_notes, *self.teacher_notes]:
                self.record.log(line)
        if not self.resumed_from:
            for line in self.method.before_training(self.output_dir):
                self.record.log(line)
        if self.context.is_main and not self.resumed_from:
            plans = run.plans
            sources = f", source domains {', '.join(run.args.source_domains)}" if run.args.source_domains else ""
            self.record.log(f"dataset {run.dataset_name}, method {run.args.method}, fold {run.fold}{sources}")
            self.record.log(f"variant {plans.sam.variant} at {plans.sam.input_size} px; device {self.device}"
                            f"{' x ' + str(self.context.world_size) + ' processes' if self.context.enabled else ''}; "
                            f"precision {'bf16 autocast' if self.amp_dtype else 'fp32'}")
            self.record.log(f"trainable parameters: {count_trainable(self.method):,} of "
                            f"{count_parameters(self.method):,}")
            self.record.log(f"{len(run.train_cases)} training / {len(run.val_cases)} validation cases; "
                            f"{run.epochs} epochs x {run.iters_per_epoch} iterations, global batch "
                            f"{run.global_batch_size} ({run.global_batch_size // self.context.world_size} per "
                            "process), "
                            f"augmentation {run.augmentation}, "
                            f"embedding cache {'off' if self.cache is None else run.args.embedding_cache}, "
                            f"{run.num_workers} loader workers, seed {run.args.seed}")
            note = fold_note(run.train_cases, run.val_cases)
            if note:
                self.record.log(note)

    def run_training(self) -> Path | None:
        self.start()
        for epoch in range(self.epoch, self.run.epochs):
            started = time.perf_counter()
            train = self.train_epoch(epoch)
            train_seconds = time.perf_counter() - started
            val_dice, val_loss = self.validate_epoch()
            self.end_epoch(epoch, train, val_dice, time.perf_counter() - started, train_seconds, val_loss)
        return self.finish()

    def finish(self) -> Path | None:
        already_final = self.resumed_from == "checkpoint_final.pth" and self.epoch == self.resumed_epoch
        rng_states = gather_objects(ckpt.capture_rng_state(), self.context)
        if self.context.is_main:
            if not already_final:
                ckpt.save_checkpoint(self.output_dir / "checkpoint_final.pth", self.state_dict(rng_states))
                self.record.log("training finished: checkpoint_final.pth written")
            else:
                self.record.log("training had already finished (checkpoint_final.pth)")
            (self.output_dir / "checkpoint_latest.pth").unlink(missing_ok=True)
        barrier(self.context)
        if self.run.args.final_validation:
            self.validate_volumes()
        return self.output_dir

    @torch.no_grad()
    def validate_volumes(self) -> dict[str, Any] | None:
        """Whole-volume Dice of every validation case -> ``validation/summary.json`` (preprocessed space)."""
        from samdg.training.slices import SlicePredictor

        plans = self.run.plans
        cached = _CachedPredict(self.method, self.cache, self._encode_for_cache)
        predictor = SlicePredictor([cached], self.input_size, plans.sam.inplane_crop, ((),), self.device,
                                   self.amp_dtype)
        batch_size = max(1, self.run.global_batch_size // self.context.world_size)
        results = {}
        with evaluating(self.method):
            for case_id in self.run.val_cases[self.context.rank::self.context.world_size]:
                case = self.run.cases[case_id]
                prediction = predict_volume(predictor, case.data(), plans.channel_mapping, self.label_spec, batch_size,
                                            before_batch=lambda indices: cached.point_at(case_id, indices))
                results[case_id] = {"domain": case.domain,
                                    "dice": volume_dice(prediction, np.asarray(case.seg()[0]), self.label_spec)}
        merged = {}
        for part in gather_objects(results, self.context):
            merged.update(part)
        if not self.context.is_main:
            return None
        ordered = {case_id: merged[case_id] for case_id in sorted(merged)}
        mean = {name: nan_mean([r["dice"][name] for r in ordered.values()]) for name in self.label_spec.names}
        summary = {"metric": "dice", "space": "preprocessed (whole volumes)", "checkpoint": "checkpoint_final.pth",
                   "foreground_mean": nan_mean(mean.values()), "mean": mean, "cases": ordered}
        atomic_write_json(self.output_dir / "validation" / "summary.json", nan_to_none(summary))
        self.record.log(f"whole-volume validation on {len(ordered)} case(s): mean Dice "
                        + ", ".join(f"{k} {v:.4f}" for k, v in mean.items())
                        + f"; foreground mean {summary['foreground_mean']:.4f} (validation/summary.json)")
        return summary

    def close(self) -> None:
        """Let the loader worker processes go (they stop when their loader is released)."""
        self.train_loader = self.val_loader = None


class _CachedPredict:
    """``method.predict`` for the slice predictor, with encoder features from the embedding cache when it is on.

    The cache needs the slices' keys; :meth:`point_at` names the slices of the next batch (whole slices only:
    the cache is refused with in-plane crops).
    """

    def __init__(self, method, cache: EmbeddingCache | None, encode) -> None:
        self.method, self.cache, self.encode = method, cache, encode
        self.keys: list[str] | None = None

    def point_at(self, case_id: str, indices: list[int]) -> None:
        self.keys = [f"{case_id}:{i}" for i in indices]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        features = None
        if self.cache is not None and self.keys is not None and len(self.keys) == images.shape[0]:
            features = self.cache.features(self.keys, images, self.encode)
        return self.method.predict(images, features)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def train(args: TrainingArgs, epoch_end_hooks: list[Callable[[Trainer, int], None]] | None = None) -> Path:
    """Train one fold as ``samdg_train`` does (also under torchrun); returns the fold's results folder.

    A method with several stages (:meth:`SegmentationMethod.training_stages`) trains them in order, each in its
    stage folder; a prerequisite stage that already finished for the same plan is reused (see
    :func:`prerequisite_difference`). ``--c`` continues whichever stage was interrupted."""
    context = init_distributed(args.device)
    try:
        run = resolve_run(args, context.device.type, context.world_size)
        method = get_method(args.method)
        fold_dir = results_fold_dir(run.dataset_name, args.method, run.fold, args.source_domains)
        stages = method.training_stages(run.method_settings)
        notes: list[str] = []
        retrained = False  # once a stage trains, the stages after it are trained afresh (they build on it)
        for index, (name, settings) in enumerate(stages):
            stage_run = run if len(stages) == 1 else stage_of(run, name, settings, f"{index + 1} of {len(stages)}")
            output_dir = fold_dir / method.stage_folder(settings)
            label = f"stage {name} ({index + 1} of {len(stages)})"
            last = index == len(stages) - 1
            difference = None if last else prerequisite_difference(output_dir, stage_run)
            if not last and difference is None and not retrained:
                notes.append(f"{label}: reusing the finished model in {output_dir}"
                             f"{_run_length_note(output_dir, args)}")
                continue
            if not last:
                notes.append(f"{label}: {difference or 'an earlier stage was trained in this call'}, so it trains "
                             "first")
            if retrained and args.continue_training and any((output_dir / n).is_file() for n in ckpt.CHECKPOINT_NAMES):
                notes.append(f"{label}: an earlier stage was trained in this call, so this one starts afresh")
            if retrained or (difference is not None and not difference.startswith(NOT_FINISHED)):
                stage_run.args = dataclasses.replace(args, continue_training=False)  # outdated: replaced
            retrained = True
            stage_run.stage_notes = notes
            notes = []
            with fold_folder_in_use(output_dir, context.is_main):  # one run per fold; a killed run's temp files go
                trainer = Trainer(stage_run, context, output_dir, epoch_end_hooks)
                try:
                    trainer.run_training()
                finally:
                    trainer.close()
        return output_dir
    finally:
        shutdown(context)


NOT_FINISHED = "no finished model of this stage"


def stage_of(run: TrainingRun, name: str, settings: Any, position: str) -> TrainingRun:
    """``run`` narrowed to one of its method's stages: the stage's settings, also written into the plan's method
    block (recorded as a decision), so the stage folder's plans.json and checkpoints name the stage."""
    method = run.args.method
    planned = run.plans.methods[method]
    changed = {f"methods.{method}.{key}": value for key, value in to_plain(settings).items()
               if planned.get(key) != value}
    plans = apply_overrides(run.plans, changed, f"stage {name} ({position}) of this samdg_train call")
    return dataclasses.replace(run, plans=plans, method_settings=settings, stage=name, stage_notes=[])


def prerequisite_difference(stage_dir: Path, stage_run: TrainingRun) -> str | None:
    """None when ``stage_dir`` holds a finished model (checkpoint_final.pth) trained with this stage's plan, else
    why not: :data:`NOT_FINISHED`, or the plan entries that differ."""
    if not (stage_dir / "checkpoint_final.pth").is_file() or not (stage_dir / "plans.json").is_file():
        return f"{NOT_FINISHED} in {stage_dir}"
    method = stage_run.args.method
    differences = plan_differences(model_defining_plan(Plans.load(stage_dir / "plans.json"), method),
                                   model_defining_plan(stage_run.plans, method))
    if differences:
        return f"the model in {stage_dir} was trained with {'; '.join(differences)}"
    return None


def _run_length_note(stage_dir: Path, args: TrainingArgs) -> str:
    """The reused stage's run length when it differs from the one asked for (see ``run_length_note``)."""
    path = stage_dir / "training_args.json"
    trained = load_json(path) if path.is_file() else {}
    return run_length_note(trained.get("epochs_resolved"), trained.get("iters_per_epoch_resolved"), args.epochs,
                           args.iters_per_epoch)
