"""Cache of frozen-encoder outputs, so each slice goes through the image encoder once.

A method whose encoder does not train says which encoder outputs it needs
(:meth:`SegmentationMethod.cacheable_features`: ``()`` for the embedding only, tap names such as ``"block2"`` for
DeSAM-style intermediate features). When the input of a slice is identical every time it is drawn (augmentation
``none``, no random in-plane crop) its features can be computed once and reused:

- ``off`` (default): the encoder runs on every batch. Needed whenever augmentation is on.
- ``memory``: features kept in RAM of each training process, as float16 (an embedding of 256x64x64 takes 2 MiB;
  1,000 slices take 2 GiB). Lost when the run ends.
- ``disk``: float16 files under ``$SAMDG_preprocessed/DatasetXXX/embedding_cache/<key>/``, shared by folds, runs
  and methods that use the same encoder, weights, input size, channel mapping and taps (``<key>`` hashes these).
  Written atomically, so concurrent ranks or runs never see half a file.

float16 storage rounds the features (relative error ~5e-4); training with the cache is therefore close to, not
bit-identical with, training without it. The cache also serves the per-epoch validation slices, which are never
augmented.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch

from samdg.utils.files import atomic_path

CACHE_MODES = ("off", "memory", "disk")


def cache_key(description: dict) -> str:
    """Short stable hash of everything that determines the features (variant, weights, input, taps, data)."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EmbeddingCache:
    """``features(keys, images, encode) -> {name: (B,...) tensor}`` with cached entries reused."""

    def __init__(self, mode: str, names: tuple[str, ...], folder: Path | None = None, storage_dtype=torch.float16) -> None:
        if mode not in ("memory", "disk"):
            raise ValueError(f"cache mode must be memory or disk, got {mode!r}")
        if mode == "disk" and folder is None:
            raise ValueError("a disk cache needs a folder")
        self.mode = mode
        self.names = ("embedding",) + tuple(names)
        self.folder = Path(folder) if folder is not None else None
        self.storage_dtype = storage_dtype
        self._memory: dict[str, dict[str, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

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
    ) -> dict[str, torch.Tensor]:
        """Features of the B images named by ``keys``; missing ones are computed with ``encode`` (no grad).

        Returns tensors on ``images.device`` in float32 (autocast casts them as the model needs).
        """
        entries = [self._load(key) for key in keys]
        missing = [i for i, entry in enumerate(entries) if entry is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            with torch.no_grad():
                computed = encode(images[missing])
            for row, i in enumerate(missing):
                entry = {name: computed[name][row].detach().to("cpu", self.storage_dtype).clone() for name in self.names}
                self._store(keys[i], entry)
                entries[i] = entry
        return {
            name: torch.stack([entry[name] for entry in entries]).to(images.device, torch.float32, non_blocking=True)
            for name in self.names
        }
