"""The training record of a fold folder: ``training_log.txt``, ``metrics.jsonl`` and ``progress.png``.

All three are rewritten atomically from the in-memory record (which also travels in every checkpoint), so a
resumed run continues the very same files and a killed run never leaves a torn line. Only rank 0 writes.
``metrics.jsonl`` has one JSON object per finished epoch: ``epoch``, ``train_loss`` and its parts
(``train_<part>``), ``val_dice`` (per class, slice-level pseudo Dice), ``val_mean_dice``, ``ema_dice``, ``lr``,
``epoch_seconds``, ``slices_per_second``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from samdg.utils.files import atomic_path, atomic_write_text


class TrainingRecord:
    def __init__(self, folder: Path | None, echo: bool = True) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.echo = echo
        self.lines: list[str] = []
        self.epochs: list[dict[str, Any]] = []

    # --- persistence -----------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"lines": list(self.lines), "epochs_json": [json.dumps(e) for e in self.epochs]}

    def restore(self, state: dict[str, Any]) -> None:
        self.lines = list(state["lines"])
        self.epochs = [json.loads(e) for e in state["epochs_json"]]
        self._write_log()
        self._write_metrics()
        self.plot()

    # --- recording -------------------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {message}"
        self.lines.append(line)
        if self.echo:
            print(line, flush=True)
        self._write_log()

    def add_epoch(self, record: dict[str, Any]) -> None:
        self.epochs.append(record)
        self._write_metrics()
        self.plot()

    def _write_log(self) -> None:
        if self.folder is not None:
            atomic_write_text(self.folder / "training_log.txt", "\n".join(self.lines) + "\n")

    def _write_metrics(self) -> None:
        if self.folder is not None:
            atomic_write_text(self.folder / "metrics.jsonl", "".join(json.dumps(e) + "\n" for e in self.epochs))

    def plot(self) -> None:
        """progress.png: loss parts, validation Dice (+ EMA) and learning rate per epoch."""
        if self.folder is None or not self.epochs:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [e["epoch"] for e in self.epochs]
        figure, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
        loss_keys = [k for k in self.epochs[-1] if k.startswith("train_") and k != "train_slices"]
        for key in loss_keys:
            axes[0].plot(epochs, [e.get(key) for e in self.epochs], label=key[len("train_"):])
        axes[0].set_ylabel("training loss")
        axes[0].legend(loc="upper right")
        class_names = list(self.epochs[-1].get("val_dice", {}))
        for name in class_names:
            axes[1].plot(epochs, [e.get("val_dice", {}).get(name) for e in self.epochs], alpha=0.5, label=name)
        axes[1].plot(epochs, [e.get("val_mean_dice") for e in self.epochs], color="black", label="mean")
        axes[1].plot(epochs, [e.get("ema_dice") for e in self.epochs], color="black", linestyle="--", label="EMA")
        axes[1].set_ylabel("validation Dice (slices)")
        axes[1].set_ylim(0, 1)
        axes[1].legend(loc="lower right", fontsize="small")
        axes[2].plot(epochs, [e.get("lr") for e in self.epochs])
        axes[2].set_ylabel("learning rate")
        axes[2].set_xlabel("epoch")
        figure.tight_layout()
        with atomic_path(self.folder / "progress.png", suffix=".png") as tmp:
            figure.savefig(tmp, dpi=80)
        plt.close(figure)
