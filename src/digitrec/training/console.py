"""What a person sees in the terminal: a live bar or one line per epoch, and no advertising."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar


class EpochLines(Callback):
    """Prints one short line per finished epoch (for CI logs and files, where a bar is noise)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # One line per epoch from the first process only: under DDP the others would repeat it.
        if trainer.sanity_checking or not hasattr(self, "started") or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        shown = "  ".join(f"{k} {float(metrics[k]):.4f}" for k in ("train/loss", "val/loss", "val/acc") if k in metrics)
        seconds = time.perf_counter() - self.started
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  ({seconds:.1f} s)", flush=True)


def progress_callbacks(mode: str) -> tuple[list[Callback], bool]:
    """The callbacks for a progress mode (auto, bar, lines) and whether Lightning's bar is on."""
    if mode == "auto":
        mode = "bar" if sys.stdout.isatty() else "lines"
    if mode == "bar":
        return [RichProgressBar()], True
    return [EpochLines()], False


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip")


def quiet_lightning() -> None:
    """Drop Lightning's product tips and a deprecation warning from its own internals (not ours to fix)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # The splits are tensors in memory (data.py): worker processes would only copy them.
    warnings.filterwarnings("ignore", message=r".*does not have many workers")
    # Raised inside Lightning's all_gather (the test figures under DDP), not by our calls.
    warnings.filterwarnings("ignore", message=r".*all_gather is deprecated")


def print_summary(title: str, metrics: dict[str, Any], viewers: list[tuple[str, str]] = ()) -> None:
    rows = [
        ("test/acc", f"{metrics['test/acc']:.4f}  (official 10k MNIST test set)"),
        ("test/loss", f"{metrics['test/loss']:.4f}"),
    ]
    if metrics.get("val/acc_best") is not None:
        rows.append(("val/acc_best", f"{metrics['val/acc_best']:.4f}"))
    for key, label in (("run_dir", "run dir"), ("best_ckpt_path", "best ckpt"), ("ckpt_path", "checkpoint"), ("model_path", "model")):
        if metrics.get(key):
            rows.append((label, metrics[key]))
    rows += viewers
    width = max(len(label) for label, _ in rows)
    print(f"\ndigitrec: {title}")
    for label, value in rows:
        print(f"  {label.ljust(width)}  {value}")
    print(flush=True)
