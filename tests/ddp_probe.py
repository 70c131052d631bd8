"""A callback for the DDP tests: records what each process trained and tested on, to files.

Named on the command line (`+callbacks.probe._target_=ddp_probe.BatchProbe`, with tests/ on
PYTHONPATH), so every process of a real multi-process run loads it.
"""

import os
from pathlib import Path

import lightning as L
import torch

from digitrec.tracking.tensorboard import TestFigures


class BatchProbe(L.Callback):
    def __init__(self) -> None:
        self.out = Path(os.environ["DIGITREC_PROBE_DIR"])
        self.images: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.images.append(batch[0].reshape(len(batch[0]), -1).cpu())

    def on_train_end(self, trainer, pl_module) -> None:
        torch.save(torch.cat(self.images), self.out / f"train_rank{trainer.global_rank}.pt")

    def on_test_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            (figures,) = [c for c in trainer.callbacks if isinstance(c, TestFigures)]
            torch.save(torch.as_tensor(figures.confusion), self.out / "test_confusion.pt")
