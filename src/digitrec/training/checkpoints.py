"""What a training run writes to disk to survive a crash, and how a resume picks it up again.

- `AtomicCheckpointIO`: every checkpoint is written beside its final name, flushed to disk, then
  renamed over it, so a crash or a full disk never leaves a truncated file under a final name; and
  Lightning reads checkpoints (a resume, the best epoch's test) through digitrec's own loader.
- `RunCheckpoint`: Lightning's ModelCheckpoint (the best epoch by val/acc, and last.ckpt), plus
  last.ckpt every N training steps for exact mid-epoch resume.
- `best_checkpoint`: the best epoch's file, trusted only inside the run's own checkpoint folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from digitrec.nets.checkpoint import atomic_save, is_model_checkpoint, is_url, read_torch_file, upgrade


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save checkpoints, written atomically in their own directory, and read by
    digitrec.nets.checkpoint.load_checkpoint.

    Lightning's own save stages the file elsewhere and may fall back to writing over the old file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # Always weights_only, on the CPU (Lightning moves the weights), and in today's form: a run
        # resumed from a digitrec.model/1 checkpoint gets its weights under today's names too.
        # Lightning's own files (ddp_spawn hands the weights back in one) are read as they are.
        checkpoint = read_torch_file(Path(path))
        return upgrade(checkpoint) if is_model_checkpoint(checkpoint) else checkpoint


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose `every_n_train_steps` also writes last.ckpt every N training steps.

    In Lightning's own ModelCheckpoint, every_n_train_steps replaces the per-epoch saves, and the
    best "epoch" becomes whichever step file follows a good validation. Here the best stays the
    epoch whose weights scored best on validation, and the step saves only refresh last.ckpt, which
    holds the data loader's position: a run killed mid-epoch resumes from that step exactly.
    """

    def __init__(self, *args: Any, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step_interval = every_n_train_steps or 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.save_last or self.step_interval < 1 or trainer.global_step % self.step_interval or trainer.fast_dev_run:
            return
        # The last path is part of the saved state, so it is set before saving (as Lightning does).
        self.last_model_path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
        trainer.save_checkpoint(self.last_model_path, weights_only=False)  # the full state, to resume from


def best_checkpoint(trainer: L.Trainer) -> Path | None:
    """The best epoch's checkpoint file, if the run has one in its own checkpoint directory.

    After a resume Lightning restores best_model_path from inside the checkpoint file: a path is
    only trusted if it is a file in this run's checkpoint directory, never another folder or a URL.
    """
    callback = trainer.checkpoint_callback
    if not isinstance(callback, ModelCheckpoint) or not callback.best_model_path or not callback.dirpath:
        return None
    best = callback.best_model_path
    if is_url(best):
        return None
    best_path = Path(best).resolve()
    if best_path.parent != Path(callback.dirpath).resolve() or not best_path.is_file():
        return None
    return best_path
