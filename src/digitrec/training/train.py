"""The training path: config -> data -> model -> trainer -> best checkpoint -> test -> metrics."""

from __future__ import annotations

import inspect
import logging
import math
import time
import warnings
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy

# Private, and the one place digitrec uses it: Lightning has no public way to ask whether a
# strategy starts its other devices by re-running the command line (see build_trainer).
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from omegaconf import DictConfig, OmegaConf

from digitrec.config.checks import check_record
from digitrec.config.job import in_multirun, run_overrides
from digitrec.errors import DigitrecError, RunFailed
from digitrec.nets.checkpoint import export_model, load_checkpoint, resume_checkpoint
from digitrec.nets.networks import with_defaults
from digitrec.targets import locate
from digitrec.tracking import record
from digitrec.tracking.viewers import viewer_commands
from digitrec.training.checkpoints import AtomicCheckpointIO, best_checkpoint
from digitrec.training.console import progress_callbacks, quiet_lightning
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


def build_trainer(cfg: DictConfig, loggers: list | bool = False) -> L.Trainer:
    """A Trainer from cfg.trainer, with the progress display and checkpoint callbacks of cfg."""
    callbacks, show_bar = progress_callbacks(cfg.get("progress", "auto"))
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


def describe_type(annotation: Any) -> str:
    """A type annotation in the words of the command line: Union[bool, Literal['warn'], None] -> true, false, warn or null."""
    words: list[str] = []
    for part in get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,):
        if get_origin(part) is Literal:
            words += [str(v) for v in get_args(part)]
        else:
            words += {bool: ["true", "false"], type(None): ["null"], int: ["an integer"], float: ["a number"], str: ["a string"]}.get(
                part, [str(part).replace("typing.", "")]
            )
    unique = list(dict.fromkeys(words))
    return ", ".join(unique[:-1]) + f" or {unique[-1]}" if len(unique) > 1 else unique[0]


def check_trainer(trainer: DictConfig) -> None:
    """Lightning judges the Trainer options: their names and declared types from the Trainer's
    signature, their values by building a bare Trainer once (no callbacks, loggers or files)."""
    from typeguard import TypeCheckError, check_type

    trainer_class = locate(str(trainer._target_))
    options = {str(k): v for k, v in OmegaConf.to_container(trainer, resolve=True).items() if k != "_target_"}
    parameters = inspect.signature(trainer_class).parameters
    for name, value in options.items():
        annotation = parameters[name].annotation
        if annotation is inspect.Parameter.empty:
            continue
        try:
            check_type(value, annotation)
        except TypeCheckError:
            raise DigitrecError(f"config error at trainer.{name}: got {value!r}, expected {describe_type(annotation)}") from None
    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the run's own Trainer reports the devices; this one stays silent
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bare = {"default_root_dir": None, "callbacks": [], "logger": False, "enable_progress_bar": False, "enable_checkpointing": False}
            trainer_class(**{**options, **bare})
    except Exception as err:  # noqa: BLE001  (Lightning raises ValueError, TypeError, MisconfigurationException, ...)
        hint = ""
        if str(options.get("accelerator")) in ("gpu", "cuda"):
            hint = " (no usable GPU here? use trainer=cpu, or trainer.accelerator=auto to take a GPU when there is one)"
        raise DigitrecError(f"config error at trainer: {trainer_error(err)}{hint}") from None
    finally:
        quiet.setLevel(level)


def check_lightning_components(cfg: DictConfig) -> None:
    """What the classes Lightning runs judge themselves: the arguments of the model, the data, the
    callbacks and the loggers (their signatures), and the Trainer (see check_trainer)."""
    if "model" in cfg:
        check_record("model", cfg.model, "a LightningModule")
    check_record("data", cfg.data, "a LightningDataModule")
    for group, kind in (("callbacks", "a callback"), ("logger", "a logger")):
        for name, entry in (cfg.get(group) or {}).items():
            if entry is not None:
                check_record(f"{group}.{name}", entry, kind)
    check_record("trainer", cfg.trainer, "a Trainer")
    check_trainer(cfg.trainer)
    if cfg.get("ckpt_path") and "model" in cfg:
        check_resume(str(cfg.ckpt_path), cfg.model.net)


def check_resume(ckpt_path: str, net: DictConfig) -> None:
    """A checkpoint to resume from: local (never a URL), readable with weights_only, a training
    state (not an exported model), and of the configured architecture. Lightning then reads it."""
    path = resume_checkpoint(ckpt_path)
    checkpoint = load_checkpoint(path)
    if "format" in checkpoint:  # digitrec.model/N: the weights export_model writes, no optimiser or loop state
        last = path.parent / "checkpoints" / "last.ckpt"
        instead = f"continue that run with ckpt_path={last}" if last.is_file() else "resume from a run's checkpoints/last.ckpt"
        raise DigitrecError(f"ckpt_path={ckpt_path} holds a trained model's weights only, no training state to resume: {instead}")
    check_same_network(ckpt_path, checkpoint["hyper_parameters"], OmegaConf.to_container(net, resolve=True))


def check_same_network(ckpt_path: str, hyper_parameters: dict[str, Any], configured_net: dict[str, Any]) -> None:
    """A resume keeps the checkpoint's network: every argument must equal the config's; the rest
    (epochs, optimiser settings, data, logging) may change."""
    saved = with_defaults(hyper_parameters["net"])
    configured = with_defaults(configured_net)
    for key in sorted(set(saved) | set(configured)):
        if saved.get(key) != configured.get(key):
            name = "model.net" if key == "_target_" else f"model.net.{key}"
            value = saved.get(key, "(not set)")
            raise DigitrecError(
                f"checkpoint {ckpt_path} has {name}={value}, but the config says {configured.get(key, '(not set)')}: "
                f"resume with the same network settings ({name}={value})"
            )


def train(cfg: DictConfig) -> dict[str, Any]:
    setup_run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    started = time.perf_counter()

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    model: L.LightningModule = instantiate(cfg.model)
    resume_from = str(resume_checkpoint(cfg.ckpt_path)) if cfg.ckpt_path else None
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    trainer = build_trainer(cfg, loggers)

    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    train_seconds = time.perf_counter() - started
    val_acc_best = trainer.callback_metrics.get("val/acc_best")
    if val_acc_best is None and trainer.checkpoint_callback is not None:
        # A resume of a finished run trains no epoch: the best so far is the checkpoint's (by val/acc).
        val_acc_best = trainer.checkpoint_callback.best_model_score

    # Test the best epoch (by val/acc), not the last; fast_dev_run and callbacks=none keep no checkpoint.
    best = best_checkpoint(trainer)
    test_results = trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False)
    if not trainer.is_global_zero:  # the other processes of a multi-device run leave the files to rank 0
        return {}
    if best:
        # The tested weights, loaded here: with spawned processes `model` still holds the last epoch's.
        model.load_state_dict(load_checkpoint(best)["state_dict"])
    model_path = export_model(model, run_dir / "model.ckpt")

    metrics = {
        record.STATUS: record.OK,
        **{k: float(v) for k, v in test_results[0].items()},
        record.VAL_ACC_BEST: float(val_acc_best) if val_acc_best is not None else None,
        record.EPOCHS: int(trainer.callback_metrics.get("epochs", trainer.current_epoch)),
        record.TRAIN_SECONDS: round(train_seconds, 2),
        record.BEST_CKPT_PATH: str(best) if best else None,
        record.MODEL_PATH: str(model_path),
        record.RUN_DIR: str(run_dir),
        record.OVERRIDES: run_overrides(),
    }
    record.write_record(run_dir, metrics)
    print_summary("training done", metrics, viewer_commands(cfg.get("logger"), run_dir))
    return metrics


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
