"""The Trainer of a run: built from cfg.trainer with digitrec's callbacks, the process-wide
settings every run shares, and the watch that fails a run which stopped learning."""

from __future__ import annotations

import logging
import math

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy

# Private, and the one place digitrec uses it: Lightning has no public way to ask whether a
# strategy starts its other devices by re-running the command line (see build_trainer).
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from omegaconf import DictConfig

from digitrec.config.job import in_multirun
from digitrec.errors import DigitrecError, RunFailed
from digitrec.training.checkpoints import AtomicCheckpointIO
from digitrec.training.console import ShortModelSummary, progress_callbacks, quiet_lightning
from digitrec.training.runtime import skip_futile_nvml_probe

log = logging.getLogger(__name__)


class TrainingWatch(L.Callback):
    """Fails a run that has stopped learning, with the reason and a suggestion, instead of training
    on: a loss that is no longer a number, a validation loss far above an untrained model's, or a
    validation accuracy still at chance after enough steps to learn. Also counts finished epochs in
    callback_metrics, the one place that spawned device processes report back from (their
    trainer.current_epoch stays theirs)."""

    # An untrained classifier's loss is ln(classes); a loss this many times higher has blown up.
    LOSS_BLOWUP = 5.0
    # Steps after which the tutorial's model is far above chance (~0.9 after 100 steps at lr 1e-3).
    STEPS_TO_LEARN = 100

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.callback_metrics["epochs"] = torch.tensor(float(trainer.current_epoch + 1))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        lr = getattr(pl_module, "lr", None)
        advice = (
            f"try a smaller model.optimizer.lr than {lr}, e.g. model.optimizer.lr={min(lr / 10, 1e-3):g}"
            if isinstance(lr, (int, float))
            else "try a smaller model.optimizer.lr"
        )
        epoch = trainer.current_epoch + 1
        for key in ("train/loss_step", "val/loss"):
            value = trainer.callback_metrics.get(key)
            if value is not None and not torch.isfinite(value).all():
                raise RunFailed(f"training diverged: {key.removesuffix('_step')} is {float(value)} in epoch {epoch} ({advice})")
        classes = int(getattr(pl_module, "num_classes", 10))
        loss, acc = trainer.callback_metrics.get("val/loss"), trainer.callback_metrics.get("val/acc")
        start = math.log(classes)
        if loss is not None and float(loss) > self.LOSS_BLOWUP * start:
            raise RunFailed(
                f"training diverged: val/loss is {float(loss):.4g} in epoch {epoch}, far above an untrained model's {start:.2f} ({advice})"
            )
        if acc is not None and trainer.global_step >= self.STEPS_TO_LEARN and float(acc) <= 2.0 / classes:
            raise RunFailed(
                f"training stopped learning: val/acc is {float(acc):.4f} after epoch {epoch} ({trainer.global_step} steps), "
                f"chance level is {1 / classes:.2f} (try another model.optimizer.lr than {lr}; the tutorial's is 0.001)"
            )


class LoggingInterval(L.Callback):
    """A run with fewer training batches per epoch than trainer.log_every_n_steps (debug=limit, short
    sweep jobs) would write no step values within an epoch, and Lightning warns about it: such a run
    writes every epoch's last step instead, as the warning advises (the interval is the epoch's
    length). Set at the start of fit, the first moment Lightning knows an epoch's batches; the
    LightningModule reads the interval after this (callbacks' on_train_start hooks run first)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches = trainer.num_training_batches
        if trainer.log_every_n_steps > 0 and math.isfinite(batches) and 0 < batches < trainer.log_every_n_steps:
            trainer.log_every_n_steps = int(batches)


def build_trainer(cfg: DictConfig, loggers: list | bool = False) -> L.Trainer:
    """A Trainer from cfg.trainer, with the progress display and checkpoint callbacks of cfg."""
    callbacks, show_bar = progress_callbacks(cfg.get("progress", "auto"))
    callbacks.append(LoggingInterval())
    # digitrec's short summary instead of Lightning's table (trainer.enable_model_summary=false: none).
    show_summary = cfg.trainer.get("enable_model_summary")
    if show_summary is None or show_summary:
        callbacks.append(ShortModelSummary())
    callbacks += [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not loggers:  # LearningRateMonitor refuses to start without a logger to write to
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.LearningRateMonitor)]
    callbacks.append(TrainingWatch())

    def make(**settings) -> L.Trainer:
        try:
            return instantiate(
                cfg.trainer,
                callbacks=callbacks,
                logger=loggers,
                enable_progress_bar=show_bar,
                enable_model_summary=False,
                enable_checkpointing=any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks),
                plugins=[AtomicCheckpointIO()],
                **settings,
            )
        except Exception as err:  # noqa: BLE001  (check_trainer built the same Trainer; this is for what it could not see)
            raise DigitrecError(f"config error at trainer: {trainer_error(err)}") from None

    trainer = make()
    # Strategies like ddp start each extra device by re-running the command line; in a sweep that
    # command is the whole sweep (a duplicate sweep, clashing jobs). Spawned processes do not.
    if in_multirun() and isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        if not isinstance(trainer.strategy, DDPStrategy):
            raise DigitrecError(
                f"trainer.strategy={cfg.trainer.get('strategy', 'auto')} re-runs the command on each device, which in a sweep "
                "re-runs the whole sweep: use trainer.strategy=ddp_spawn or trainer.devices=1 with -m"
            )
        log.info("in a sweep, ddp becomes ddp_spawn: ddp would re-run the whole sweep on each extra device")
        trainer = make(strategy="ddp_spawn")
    return trainer


def setup_run(cfg: DictConfig) -> None:
    """Global settings shared by every command that runs a Trainer (its config is checked already)."""
    quiet_lightning()
    skip_futile_nvml_probe()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)


def trainer_error(err: BaseException) -> str:
    """One line for an error Lightning raised when building a Trainer (its messages run long)."""
    text = " ".join(str(getattr(err, "__cause__", None) or err).split()) if "Error in call to target" in str(err) else " ".join(str(err).split())
    text = text.split(" Find a complete list")[0].split(" See https://")[0]
    return text[:400] or type(err).__name__
