"""The LightningModule that trains a digit network: cross-entropy, metrics, optimiser and schedule.

The network, optimiser and schedule are records with a `_target_` (Hydra's convention), kept as
plain types in the checkpoint's hyper_parameters, so `eval`, `predict` and `export` rebuild the
model from the file alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from digitrec.errors import DigitrecError, first_line
from digitrec.nets.checkpoint import load_checkpoint
from digitrec.nets.networks import MNIST_MEAN, MNIST_STD, build_net, check_net_allowed, with_defaults
from digitrec.targets import locate

__all__ = ["MNIST_MEAN", "MNIST_STD", "DigitClassifier"]

# The library's defaults name only the classes: their values are the classes' own (the MLP's
# signature is the tutorial's network; torch's Adam defaults are the tutorial's lr 1e-3, no decay).
DEFAULT_NET = {"_target_": "digitrec.nets.MLP"}
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True}
# Arguments of a schedule that digitrec fills in from the Trainer when they are null or missing:
# the run's number of steps (interval: step) or epochs (interval: epoch).
LENGTH_ARGUMENTS = ("total_steps", "T_max", "total_iters")


def plain(record: Any) -> Any:
    """A config node (DictConfig from Hydra) or mapping as plain dicts and lists, for the checkpoint."""
    if record is None or isinstance(record, (str, int, float, bool)):
        return record
    if hasattr(record, "_metadata"):  # an OmegaConf node: imported lazily, a checkpoint needs none
        from omegaconf import OmegaConf

        return OmegaConf.to_container(record, resolve=True)
    if isinstance(record, Mapping):
        return {str(k): plain(v) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [plain(v) for v in record]
    raise TypeError(f"{record!r} is not a plain config value")


class DigitClassifier(L.LightningModule):
    """Cross-entropy training of `net` (the tutorial's MLP and Adam by default); metrics per stage with torchmetrics.

    net: a network record, e.g. {"_target_": "digitrec.nets.CNN", "channels": [32, 64]}.
    optimizer: an optimiser record with `_partial_: true` (the parameters are added here).
    scheduler: null, or a torch.optim.lr_scheduler record plus `interval: step|epoch`; its
        total_steps/T_max/total_iters, when null, come from the Trainer.
    """

    def __init__(
        self,
        net: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        # Plain Python types only: checkpoints must load with torch.load(weights_only=True)
        # and rebuild this module from the file alone.
        self.save_hyperparameters(
            {
                # The default network's record is written out in full: the checkpoint describes itself.
                "net": plain(net) if net is not None else with_defaults(DEFAULT_NET),
                "optimizer": plain(optimizer) if optimizer is not None else dict(DEFAULT_OPTIMIZER),
                "scheduler": plain(scheduler),
                "label_smoothing": float(label_smoothing),
            }
        )
        hp = self.hparams
        # The config names the class (the user's own choice): build it, whoever wrote it.
        self.net = build_net(hp.net, trusted=[hp.net.get("_target_", "")])
        self.num_classes = int(hp.net.get("num_classes", 10))
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
        # One metric object per stage, so their states never mix.
        acc = lambda: MulticlassAccuracy(num_classes=self.num_classes, average="micro", validate_args=False)  # noqa: E731
        self.train_acc, self.val_acc, self.test_acc = acc(), acc(), acc()
        # No NaN check on the losses: it would wait for the GPU at every step. A NaN loss
        # shows as a NaN mean instead of being dropped with a warning.
        mean = lambda: MeanMetric(nan_strategy="disable")  # noqa: E731
        self.train_loss, self.val_loss, self.test_loss = mean(), mean(), mean()
        self.val_acc_best = MaxMetric()

    @property
    def lr(self) -> float | None:
        """The optimiser's learning rate (for messages and advice): the configured one, else its class's default."""
        record = self.hparams.optimizer
        lr = record.get("lr")
        if lr is None:
            try:
                lr = inspect.signature(locate(record["_target_"])).parameters["lr"].default
            except (DigitrecError, KeyError, TypeError, ValueError):
                return None
        return float(lr) if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]):
        images, labels = batch
        logits = self.net(images)
        return self.loss_fn(logits, labels), logits.argmax(dim=1), labels

    def on_train_start(self) -> None:
        # At the start of fit, not of each epoch: a run resumed mid-epoch starts inside one.
        trainer = self.trainer
        # Metrics are updated on the steps whose values Lightning writes (every log_every_n_steps, as
        # digitrec.training.trainer.LoggingInterval set it for short epochs just before this hook)
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
        # How many images were tested (all 10,000 unless limit_test_batches): a count for the run's
        # record and summary (digitrec.training.console.tested_images), not a curve for the loggers.
        self.log("test/images", float(labels.numel()), on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True, logger=False)

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        optimizer_class = locate(hp.optimizer["_target_"])
        arguments = {k: v for k, v in hp.optimizer.items() if not k.startswith("_")}
        # Fused kernels where the optimiser has them (Adam, AdamW, SGD, ...): one pass over all
        # parameters per step instead of one per tensor and operation (on a CPU, Adam's step takes
        # a third of the time). Same algorithm; the last digits of the results may differ.
        if "fused" in inspect.signature(optimizer_class).parameters and "fused" not in arguments:
            arguments["fused"] = all(p.device.type in ("cpu", "cuda") for p in self.parameters())
        optimizer = optimizer_class(self.parameters(), **arguments)
        if not hp.scheduler:
            # A no-op schedule, so that LearningRateMonitor logs the rate as train/lr either way.
            schedule, interval = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0), "epoch"
        else:
            schedule, interval = self.build_scheduler(optimizer, dict(hp.scheduler))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": interval, "name": "train/lr"}}

    def build_scheduler(self, optimizer: torch.optim.Optimizer, record: dict[str, Any]):
        interval = record.pop("interval", "step")
        scheduler_class = locate(record["_target_"])
        arguments = {k: v for k, v in record.items() if not k.startswith("_")}
        # The run's length is the Trainer's to know (epochs, batches, devices, accumulation, limits).
        length = max(1, int(self.trainer.estimated_stepping_batches if interval == "step" else self.trainer.max_epochs))
        accepted = inspect.signature(scheduler_class).parameters
        for name in LENGTH_ARGUMENTS:
            if name in accepted and arguments.get(name) is None and (name in arguments or accepted[name].default is inspect.Parameter.empty):
                arguments[name] = length
        return scheduler_class(optimizer, **arguments), interval


def cosine_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.05, start_factor: float = 0.01):
    """A linear warm-up over the first `warmup_fraction` of the steps (from start_factor x lr), then a
    cosine down to 0 at the last step: torch's LinearLR and CosineAnnealingLR in sequence."""
    warmup = max(1, min(total_steps - 1, round(total_steps * warmup_fraction)))
    schedules = torch.optim.lr_scheduler
    return schedules.SequentialLR(
        optimizer,
        [
            schedules.LinearLR(optimizer, start_factor=start_factor, total_iters=warmup),
            schedules.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup)),
        ],
        milestones=[warmup],
    )


def model_from_checkpoint(checkpoint: dict[str, Any], source: str | Path = "checkpoint", trusted: Sequence[str] = ()) -> DigitClassifier:
    """Rebuild the trained model from a loaded checkpoint alone (any format since digitrec.model/1).
    `trusted`: network classes besides digitrec's own that the file may name."""
    hyper_parameters = checkpoint["hyper_parameters"]
    try:
        check_net_allowed(hyper_parameters.get("net") or {}, trusted)
    except DigitrecError as err:
        raise DigitrecError(f"checkpoint {source}: {err}") from None
    try:
        model = DigitClassifier(**hyper_parameters)
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, RuntimeError, KeyError, ValueError) as err:
        raise DigitrecError(f"checkpoint {source} does not match the digitrec model: {first_line(err)}") from None
    return model.eval()


def load_model(path: str | Path, trusted: Sequence[str] = ()) -> DigitClassifier:
    return model_from_checkpoint(load_checkpoint(path), path, trusted)
