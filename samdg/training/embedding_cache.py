"""Cache of frozen-encoder outputs, so each slice goes through the image encoder once (or K times, augmented).

A method whose encoder does not train says which encoder outputs it needs
(:meth:`SegmentationMethod.cacheable_features`: ``()`` for the embedding only, tap names such as ``"block2"`` for
DeSAM-style intermediate features). When the input of a slice is identical every time it is drawn (augmentation
``none``, no random in-plane crop) its features can be computed once and reused:

- ``off`` (default): the encoder runs on every batch.
- ``memory``: features kept in RAM of each training process, as float16 (an embedding of 256x64x64 takes 2 MiB;
  1,000 slices take 2 GiB). Lost when the run ends.
- ``disk``: float16 files under ``$SAMDG_preprocessed/DatasetXXX/embedding_cache/<key>/``, shared by folds, runs
  and methods that use the same encoder, weights, input size, channel mapping and taps (``<key>`` hashes these).
  Written atomically, so concurrent ranks or runs never see half a file; temp files that a killed run left in a
  cache folder are removed when the folder is next opened.

With augmentation on, the training slices go through :class:`AugmentedViewCache` instead: K augmented views per
slice (``plans.training.embedding_cache_views``), each an (image, label) pair augmented alike by the loader from a
seed fixed by the run's seed, the slice, the view and the refresh round; an entry stores the view's features and
its augmented label. Each training draw takes one of the K views at random. Every
``plans.training.embedding_cache_refresh_epochs`` epochs a new round of views is drawn (memory: the old round is
dropped; disk: each round has its own subfolder). The disk key adds the preset, K and the seed to the encoder's.

The disk key also holds a code version (:func:`code_version`): a hash of the source files that compute the features
(``FEATURE_CODE``: models and encoders, the encoder input (channels, resize, pad), slice loading, augmentation,
this module). After a change of any of them a run writes a new cache folder instead of reusing features the new
code would not compute; old folders are left in place (delete ``embedding_cache/`` to free the space).

float16 storage rounds the features (relative error ~5e-4); training with the cache is therefore close to, not
bit-identical with, training without it. The plain cache also serves the per-epoch validation slices, which are
never augmented.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Callable

import torch

from samdg.utils.files import atomic_path, remove_stale_temp_files

CACHE_MODES = ("off", "memory", "disk")
# Modules (a package: all of its files) whose code decides what a cached entry holds: the encoders and methods
# compute the features, slice loading and augmentation make their input, this module stores them.
FEATURE_CODE = ("samdg.models", "samdg.preprocessing.sam_input", "samdg.training.dataset", "samdg.training.slices",
                "samdg.training.loader", "samdg.training.augmentation", "samdg.training.dg_augmentations",
                "samdg.training.embedding_cache")


def code_version(modules: tuple[str, ...] = FEATURE_CODE) -> str:
    """Short hash of the source of ``modules`` (dotted names; a package counts every ``.py`` file below it)."""
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"no source for module {name!r}")
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if spec.submodule_search_locations else [origin]
        for file in files:
            digest.update(f"{name}:{file.relative_to(origin.parent).as_posix()}\n".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(description: dict, code: str | None = None) -> str:
    """Short stable hash of everything that determines the features (variant, weights, input, taps, data) and of
    the code that computes them (``code``, default :func:`code_version`)."""
    text = json.dumps({**description, "code": code_version() if code is None else code}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EmbeddingCache:
    """``features(keys, images, encode) -> {name: (B,...) tensor}`` with cached entries reused."""

    def __init__(self, mode: str, names: tuple[str, ...], folder: Path | None = None, storage_dtype=torch.float16,
                 stores_labels: bool = False) -> None:
        if mode not in ("memory", "disk"):
            raise ValueError(f"cache mode must be memory or disk, got {mode!r}")
        if mode == "disk" and folder is None:
            raise ValueError("a disk cache needs a folder")
        self.mode = mode
        self.names = ("embedding",) + tuple(names)
        self.folder = Path(folder) if folder is not None else None
        self.storage_dtype = storage_dtype
        self.stores_labels = stores_labels
        self._memory: dict[str, dict[str, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0
        if self.folder is not None:
            remove_stale_temp_files(self.folder)  # half-written entries of a killed run

    def __len__(self) -> int:
        if self.mode == "memory":
            return len(self._memory)
        return len(list(self.folder.glob("*.pt"))) if self.folder.is_dir() else 0

    def _path(self, key: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in key)
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]  # keeps keys that sanitise alike apart
        return self.folder / f"{safe}_{digest}.pt"

    def _load(self, key: str) -> dict[str, torch.Tensor] | None:
        if self.mode == "memory":
            return self._memory.get(key)
        path = self._path(key)
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def _store(self, key: str, entry: dict[str, torch.Tensor]) -> None:
        if self.mode == "memory":
            self._memory[key] = entry
            return
        with atomic_path(self._path(key), suffix=".pt") as tmp:
            torch.save(entry, tmp)

    def features(
        self,
        keys: list[str],
        images: torch.Tensor,
        encode: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Features of the B images (B,3,S,S) named by ``keys``; missing ones are computed with ``encode`` (no grad).

        Returns tensors on ``images.device`` in float32 (autocast casts them as the model needs). A cache that
        stores labels also stores ``labels`` (B,S,S) with new entries and returns the stored ones as ``"label"``
        (B,S,S) int64: the label that belongs to the cached view.
        """
        if self.stores_labels and labels is None:
            raise ValueError("this cache stores labels: pass the labels of the images")
        entries = [self._load(key) for key in keys]
        missing = [i for i, entry in enumerate(entries) if entry is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            with torch.no_grad():
                computed = encode(images[missing])
            for row, i in enumerate(missing):
                entry = {name: computed[name][row].detach().to("cpu", self.storage_dtype).clone()
                         for name in self.names}
                if self.stores_labels:
                    entry["label"] = labels[i].detach().to("cpu", torch.int32).clone()
                self._store(keys[i], entry)
                entries[i] = entry
        result = {
            name: torch.stack([entry[name] for entry in entries]).to(images.device, torch.float32, non_blocking=True)
            for name in self.names
        }
        if self.stores_labels:
            result["label"] = torch.stack([entry["label"] for entry in entries]).to(images.device, torch.int64)
        return result

    def clear(self) -> None:
        """Forget every entry held in memory (files of a disk cache stay)."""
        self._memory.clear()


def view_key(slice_key: str, refresh_round: int, view: int) -> str:
    """Cache key of augmented view ``view`` of a slice in refresh round ``refresh_round``."""
    return f"{slice_key}@r{refresh_round}v{view}"


def refresh_round(epoch: int, refresh_epochs: int) -> int:
    """Which round of views epoch ``epoch`` (0-based) uses: a new round every ``refresh_epochs`` epochs (0: never)."""
    return epoch // refresh_epochs if refresh_epochs > 0 else 0


class AugmentedViewCache(EmbeddingCache):
    """The training slices' K augmented views with their labels, one round of views at a time.

    Memory: entries of a finished round are dropped when the next begins. Disk: round ``r`` lives in
    ``<folder>/round_<r>/``, so another run with the same key and seed reuses every round it reaches.
    """

    def __init__(self, mode: str, names: tuple[str, ...], views: int, refresh_epochs: int,
                 folder: Path | None = None) -> None:
        super().__init__(mode, names, folder, stores_labels=True)
        self.views = int(views)
        self.refresh_epochs = int(refresh_epochs)
        self.base_folder = self.folder
        self.round = -1
        self.begin_epoch(0)

    def begin_epoch(self, epoch: int) -> None:
        """Switch to the round of views that ``epoch`` (0-based) trains on."""
        new_round = refresh_round(epoch, self.refresh_epochs)
        if new_round == self.round:
            return
        self.round = new_round
        self.clear()
        if self.base_folder is not None:
            self.folder = self.base_folder / f"round_{new_round}"
            remove_stale_temp_files(self.folder)
