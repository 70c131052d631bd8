"""What a run adds to TensorBoard beyond the scalars: the HParams tab and test-time figures.

Both are callbacks (configs/callbacks/tensorboard.yaml) that write through the run's
TensorBoardLogger and do nothing without one; the test figures go to MLflow too (logger=mlflow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from omegaconf import OmegaConf
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from digitrec.nets.networks import as_unit_float
from digitrec.tracking.figures import confusion_matrix_figure, misclassified_grid

# TensorBoard's Time Series shows one card group per tag prefix, groups sorted by name: under the
# metric names (test/acc, train/loss, val/acc) the single test points would come first and the
# curves a screen or more below. So the TensorBoard logger writes the training and validation curves
# under `curves/`, by metric and then stage (curves/acc/train beside curves/acc/val), and the first
# group is the curves; `test/...` (the test points and figures) follows. The names stay everywhere
# else (metrics.json, callbacks, monitors, MLflow, CSV).
CURVES = "curves"
STAGES = ("train", "val")


def tensorboard_tag(name: str) -> str:
    """train/loss_epoch -> curves/loss/train, train/loss_step -> curves/loss/train_step,
    val/acc_best -> curves/acc/val_best, train/lr -> curves/lr/train; test/... and the rest unchanged."""
    stage, _, metric = name.partition("/")
    if stage not in STAGES or not metric:
        return name
    base, _, detail = metric.partition("_")
    return f"{CURVES}/{base}/{stage}" + (f"_{detail}" if detail and detail != "epoch" else "")


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger with the curves first in TensorBoard (`tensorboard_tag`) and without
    its `epoch` scalar: a counter that would be a card group of its own (the step axis says where a run is)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({tensorboard_tag(k): v for k, v in metrics.items() if k != "epoch"}, step)


def tensorboard_loggers(trainer: L.Trainer) -> list[LightningTensorBoardLogger]:
    if not trainer.is_global_zero:
        return []
    return [lg for lg in trainer.loggers if isinstance(lg, LightningTensorBoardLogger)]


def figure_loggers(trainer: L.Trainer) -> list[LightningTensorBoardLogger | MLFlowLogger]:
    if not trainer.is_global_zero:
        return []
    return [lg for lg in trainer.loggers if isinstance(lg, (LightningTensorBoardLogger, MLFlowLogger))]


def hparam_value(value: Any) -> int | float | str | bool:
    """The HParams tab takes numbers, strings and booleans; lists (hidden sizes) become text, and so
    do integers, which it would show with five digits (batch size 100.00)."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "none"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (bool, float, str)):
        return value
    return str(value).replace("'", "")


# Arguments every run of a network has the same value for: no column of their own.
UNVARYING_ARGUMENTS = {"input_size", "num_classes", "mean", "std"}


def record_name(record: Mapping[str, Any]) -> str:
    """A readable value for a `_target_` record: its class's name; the augmentation by its kind."""
    name = str(record.get("_target_", "")).rpartition(".")[2]
    if name == "RandomWarp":
        return "elastic" if record.get("elastic_alpha") else "affine"
    return name


def hparam_columns(hparams: Mapping[str, Any]) -> dict[str, int | float | str | bool]:
    """The HParams tab's columns: a record (net, optimiser, schedule, augmentation) becomes its
    readable name plus one column per argument; everything else one column as it is."""
    columns: dict[str, int | float | str | bool] = {}
    for key, value in hparams.items():
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if isinstance(value, Mapping) and "_target_" in value:
            columns[key] = record_name(value)
            for name, argument in value.items():
                if not str(name).startswith("_") and name not in UNVARYING_ARGUMENTS:
                    columns[f"{key}.{name}"] = hparam_value(argument)
        else:
            columns[key] = hparam_value(value)
    return columns


CURVES_LAYOUT = {
    "train vs val": {
        "loss": ["Multiline", [f"^{tensorboard_tag('train/loss_epoch')}$", f"^{tensorboard_tag('val/loss')}$"]],
        "accuracy": ["Multiline", [f"^{tensorboard_tag(name)}$" for name in ("train/acc", "val/acc", "val/acc_best")]],
    }
}


def overridden_columns(overrides: Sequence[str], exclude: Sequence[str]) -> dict[str, str]:
    """The HParams column of each key the command set (in a sweep's job: the swept keys, the shared
    ones being excluded), with the value as typed: model/net=cnn -> model.net, model.optimizer._target_
    -> model.optimizer."""
    excluded = {str(k).lstrip("+~") for k in exclude}
    columns = {}
    for override in overrides:
        key, _, value = str(override).partition("=")
        key = key.strip().lstrip("+~")
        if key in excluded or key.startswith("hydra."):
            continue
        columns[key.replace("/", ".").removesuffix("._target_")] = value.strip()
    return columns


def experiment_summary(summary, differs: set[str], metrics: Sequence[str]):
    """torch's HParams experiment summary with the columns TensorBoard should show first: it shows 5
    hparams by default, those marked `differs` first, and the first 5 metrics. The metrics go by their
    TensorBoard tags (curves/acc/val_best), named as everywhere else (val/acc_best)."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    plugin_data = summary.value[0].metadata.plugin_data
    data = HParamsPluginData.FromString(plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in differs
    for info in data.experiment.metric_infos:
        info.display_name = next((m for m in metrics if tensorboard_tag(m) == info.name.tag), info.name.tag)
    plugin_data.content = data.SerializeToString()
    return summary


class HParamsSummary(L.Callback):
    """Records the run's hyperparameters for the HParams tab, with the metrics it should show.

    The metric values are not written here: TensorBoard reads the last value of each metric's
    scalar curve in the same run (curves/acc/val_best per epoch, test/acc at the end). The columns
    shown by default are the keys the command set (a sweep's swept keys) and the metrics.
    """

    def __init__(self, hparams: Mapping[str, Any], metrics: Sequence[str] = ("val/acc_best", "test/acc")) -> None:
        self.values = hparam_columns(hparams)
        self.differs: set[str] = set()
        # Read now, in the process Hydra started: spawned device processes have no Hydra config.
        if HydraConfig.initialized():
            hydra = HydraConfig.get()
            self.values = {"experiment": hparam_value(hydra.runtime.choices.get("experiment")), **self.values}
            # What differs between runs (a sweep's swept keys, a run's overrides) is ticked in the
            # HParams tab by default; a key without a column of its own gets one.
            overridden = overridden_columns(hydra.overrides.task, hydra.job.config.override_dirname.exclude_keys)
            for column, value in overridden.items():
                self.values.setdefault(column, hparam_value(value))
            self.differs = set(overridden)
        self.metrics = list(metrics)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in tensorboard_loggers(trainer):
            # What Lightning's own log_hyperparams writes, minus its placeholder metric values.
            experiment, *sessions = hparams_summaries(self.values, dict.fromkeys(map(tensorboard_tag, self.metrics), 0.0))
            summaries = [experiment_summary(experiment, self.differs, self.metrics), *sessions]
            # SummaryWriter.add_hparams would write them into a new sub-run; its public file_writer
            # writes them into this run, beside the curves, as Lightning's own log_hyperparams does.
            writer = logger.experiment.file_writer
            for summary in summaries:
                writer.add_summary(summary)
            # Custom Scalars: training and validation in one chart each, to see over- and underfitting.
            logger.experiment.add_custom_scalars(CURVES_LAYOUT)
            writer.flush()


class TrainingImages(L.Callback):
    """Once per run, the first training batch as the network sees it (after augmentation), in the
    Images tab as train/images: to check what an augmentation config does to the digits."""

    def __init__(self, count: int = 32) -> None:
        self.count, self.done = count, False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.done:
            return
        self.done = True
        images = batch[0][: self.count].reshape(-1, 1, 28, 28)
        images = as_unit_float(images).clamp(0, 1)
        for logger in tensorboard_loggers(trainer):
            logger.experiment.add_images("train/images", images.cpu(), global_step=trainer.global_step, dataformats="NCHW")


class TestFigures(L.Callback):
    """At test time: the confusion matrix and the misclassified digits the model was surest about.

    Under DDP each process tests its share of the test set: the counts are summed and the surest
    mistakes gathered over all processes (every process takes part), then rank 0 draws them.
    """

    def __init__(self, max_misclassified: int = 64) -> None:
        self.max_misclassified = max_misclassified

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        classes = pl_module.num_classes
        # The same answer on every process (loggers exist on all of them; only rank 0 writes).
        self.enabled = any(isinstance(lg, (LightningTensorBoardLogger, MLFlowLogger)) for lg in trainer.loggers)
        self.matrix = torch.zeros(classes * classes, dtype=torch.long, device=pl_module.device)
        self.wrong: list[tuple[torch.Tensor, ...]] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.enabled:
            return
        images, labels = batch
        # test_step keeps no predictions: one more forward pass over the test set, a second or two.
        confidence, predicted = pl_module(images).softmax(dim=1).max(dim=1)
        classes = pl_module.num_classes
        self.matrix += torch.bincount(labels * classes + predicted, minlength=classes * classes)
        wrong = predicted != labels
        if wrong.any():
            self.wrong.append(tuple(t[wrong] for t in (images.reshape(-1, 28, 28), predicted, labels, confidence)))

    def surest_mistakes(self, pl_module: L.LightningModule) -> tuple[torch.Tensor, ...]:
        """This process's surest mistakes, padded to max_misclassified (confidence -1), so that
        every process contributes tensors of one shape to the gather."""
        k, device = self.max_misclassified, pl_module.device
        images = torch.zeros(k, 28, 28, dtype=torch.uint8, device=device)
        predicted, labels = (torch.zeros(k, dtype=torch.long, device=device) for _ in range(2))
        confidence = torch.full((k,), -1.0, device=device)
        if self.wrong:
            parts = [torch.cat(p) for p in zip(*self.wrong)]
            surest = parts[3].argsort(descending=True)[:k]
            n = len(surest)
            images[:n] = torch.as_tensor(as_uint8(parts[0][surest].cpu()), device=device)
            predicted[:n], labels[:n], confidence[:n] = parts[1][surest], parts[2][surest], parts[3][surest]
        return images, predicted, labels, confidence

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        matrix = trainer.strategy.reduce(self.matrix, reduce_op="sum")
        mistakes = [pl_module.all_gather(t).reshape(-1, *t.shape[1:]) for t in self.surest_mistakes(pl_module)]
        loggers = figure_loggers(trainer)
        if not loggers:
            return
        classes = pl_module.num_classes
        matrix = matrix.view(classes, classes).cpu().numpy()
        self.confusion = matrix  # the counts over every process (tests read them)
        figures = {"test/confusion_matrix": confusion_matrix_figure(matrix)}
        images, predicted, labels, confidence = (t.cpu() for t in mistakes)
        surest = confidence.argsort(descending=True)[: self.max_misclassified]
        surest = surest[confidence[surest] >= 0]
        if len(surest):
            errors = int(matrix.sum() - matrix.trace())
            figures["test/misclassified"] = misclassified_grid(
                images[surest].numpy(), predicted[surest].numpy(), labels[surest].numpy(), total=errors
            )
        for logger in loggers:
            for tag, picture in figures.items():
                if isinstance(logger, MLFlowLogger):  # an artifact: test/confusion_matrix.png
                    logger.experiment.log_image(logger.run_id, picture, artifact_file=f"{tag}.png")
                else:
                    logger.experiment.add_image(tag, picture, global_step=trainer.global_step, dataformats="HWC")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The test results beside the figures in MLflow (TensorBoard has them as scalars already).
        results = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("test/", "val/acc_best"))}
        for logger in figure_loggers(trainer):
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_dict(logger.run_id, results, "test/metrics.json")


def as_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 28, 28) uint8 from the batches' images: uint8 already, or floats in [0, 1]."""
    images = images.reshape(len(images), 28, 28)
    if images.dtype != torch.uint8:
        images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return images.numpy()
