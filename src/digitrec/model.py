"""The LightningModule that trains the tutorial's MLP."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from digitrec.mlp import MLP, MNIST_MEAN, MNIST_STD

__all__ = ["MLP", "MNIST_MEAN", "MNIST_STD", "DigitClassifier"]


class DigitClassifier(L.LightningModule):
    """Cross-entropy training of the MLP (Adam by default); metrics per stage with torchmetrics."""

    def __init__(
        self,
        input_size: int = 784,
        hidden_sizes: Sequence[int] = (500, 100),
        num_classes: int = 10,
        lr: float = 1e-3,
        mean: float = MNIST_MEAN,
        std: float = MNIST_STD,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        # Plain Python types only: checkpoints must load with torch.load(weights_only=True)
        # and rebuild this module from the file alone.
        self.save_hyperparameters(
            {
                "input_size": int(input_size),
                "hidden_sizes": [int(h) for h in hidden_sizes],
                "num_classes": int(num_classes),
                "lr": float(lr),
                "mean": float(mean),
                "std": float(std),
                "optimizer": str(optimizer),
                "weight_decay": float(weight_decay),
                "momentum": float(momentum),
                "lr_schedule": str(lr_schedule),
            }
        )
        hp = self.hparams
        self.net = MLP(hp.input_size, hp.hidden_sizes, hp.num_classes, hp.mean, hp.std)
        self.loss_fn = nn.CrossEntropyLoss()
        # One metric object per stage, so their states never mix.
        acc = lambda: MulticlassAccuracy(num_classes=hp.num_classes, average="micro", validate_args=False)  # noqa: E731
        self.train_acc, self.val_acc, self.test_acc = acc(), acc(), acc()
        # No NaN check on the losses: it would wait for the GPU at every step. A NaN loss
        # shows as a NaN mean instead of being dropped with a warning.
        mean = lambda: MeanMetric(nan_strategy="disable")  # noqa: E731
        self.train_loss, self.val_loss, self.test_loss = mean(), mean(), mean()
        self.val_acc_best = MaxMetric()

    def __setattr__(self, name: str, value) -> None:
        # Lightning records the running hook's name on the module around every hook call, some
        # 40 times a training step; nn.Module.__setattr__ would check each string for being a
        # parameter, buffer or submodule, about 3% of this small model's step on a CPU.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]):
        images, labels = batch
        logits = self.net(images)
        return self.loss_fn(logits, labels), logits.argmax(dim=1), labels

    def on_train_start(self) -> None:
        # At the start of fit, not of each epoch: a run resumed mid-epoch starts inside one.
        trainer = self.trainer
        # Metrics are updated on the steps whose values Lightning writes (every log_every_n_steps)
        # and on the epoch's and the run's last steps, which close the epoch's values.
        self._write_every, self._last_batch, self._max_steps = trainer.log_every_n_steps, trainer.num_training_batches - 1, trainer.max_steps
        self._window: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def _writes_step(self, batch_idx: int) -> bool:
        step = self.global_step + 1
        return (self._write_every > 0 and step % self._write_every == 0) or batch_idx == self._last_batch or step == self._max_steps

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, preds, labels = self._step(batch)
        # Updating two metrics and calling self.log at every step costs about a tenth of this
        # small model's step on a CPU. So each step's loss and predictions wait in a window,
        # which the metrics take at once on the steps whose values are written: the same logged
        # values, names and curves, from a fiftieth of the calls.
        self._window.append((loss.detach(), preds, labels))
        if self._writes_step(batch_idx):
            self._update_train_metrics()
            self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _update_train_metrics(self) -> None:
        losses, preds, labels = zip(*self._window)
        self._window.clear()
        if len(losses) > 1:
            self.train_loss.update(torch.stack(losses[:-1]))
        self.train_loss(losses[-1])  # a forward: the latest batch's own loss is the step's value
        self.train_acc.update(torch.cat(preds), torch.cat(labels))

    def on_train_epoch_end(self) -> None:
        # An epoch stopped early (max_time, a callback) may end between two written steps.
        if self._window:
            self._update_train_metrics()

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, preds, labels = self._step(batch)
        self.val_loss.update(loss)
        self.val_acc.update(preds, labels)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # a couple of batches before training: no epoch to rank
            return
        # val_acc.compute() is reduced over every process already, so each holds the same best.
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Metric states are not part of the state_dict: keep the best so far as a plain number,
        # so that after a resume an earlier, better epoch still counts as the best.
        checkpoint["val_acc_best"] = float(self.val_acc_best.max_value)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        best = checkpoint.get("val_acc_best")
        if best is not None and best > float("-inf"):
            self.val_acc_best.update(torch.tensor(best))

    def test_step(self, batch, batch_idx: int) -> None:
        loss, preds, labels = self._step(batch)
        self.test_loss.update(loss)
        self.test_acc.update(preds, labels)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        # Fused kernels: one pass over all parameters per step instead of one per tensor and
        # operation (on a CPU, Adam's step takes a third of the time). Same algorithm; the
        # last digits of the results may differ from the unfused one.
        fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters())
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                self.parameters(), lr=hp.lr, momentum=hp.momentum, nesterov=hp.momentum > 0, weight_decay=hp.weight_decay, fused=fused
            )
        else:
            adam = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
            optimizer = adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused)
        if hp.lr_schedule == "cosine":
            # Per step down to zero at the last one: a smooth decay, no jumps between epochs.
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.trainer.estimated_stepping_batches))
            interval = "step"
        else:
            # A no-op schedule, so that LearningRateMonitor logs the rate as train/lr either way.
            schedule, interval = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0), "epoch"
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": interval, "name": "train/lr"}}
