"""A Lightning callback that times each epoch's training steps alone, for the benchmark.

Added to `digitrec train` by the benchmark as one more callback (a Hydra override), so the
measured run is the default one plus this clock. An epoch's training time runs from the
start of the epoch to its end, less the validation inside it: the same span the plain loops
time (batching, forward, backward, optimizer step, and here Lightning's hooks and logging).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from benchmarks.clock import Clock


class EpochTimer(Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.train: list[dict[str, float]] = []
        self.with_validation: list[dict[str, float]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch = Clock(pl_module.device)
        self.validating = {"wall": 0.0, "cpu": 0.0}

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validation = Clock(pl_module.device)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and hasattr(self, "epoch"):
            for clock, seconds in self.validation.elapsed().items():
                self.validating[clock] += seconds

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = self.epoch.elapsed()
        self.with_validation.append(total)
        self.train.append({clock: seconds - self.validating[clock] for clock, seconds in total.items()})
        # Written every epoch, so an interrupted run still leaves what it measured. Under DDP
        # by the first process (all of them take the same number of steps).
        if trainer.is_global_zero:
            self.path.write_text(json.dumps({"epochs": self.train, "epochs_with_validation": self.with_validation}) + "\n")
