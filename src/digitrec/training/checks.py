"""What Lightning judges itself, before a run's directory exists (called by digitrec.command.checks):
the arguments of the model, data, callbacks and loggers against their classes' signatures, the
Trainer's options (their declared types, then a bare Trainer built once), and a resume's checkpoint."""

from __future__ import annotations

import inspect
import logging
import warnings
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from omegaconf import DictConfig, OmegaConf

from digitrec.config.checks import check_record
from digitrec.errors import DigitrecError
from digitrec.nets.checkpoint import is_url, load_checkpoint, resume_checkpoint
from digitrec.nets.networks import with_defaults
from digitrec.targets import locate
from digitrec.training.classifier import DEFAULT_NET
from digitrec.training.trainer import trainer_error

log = logging.getLogger(__name__)


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
    net = OmegaConf.to_container(cfg.model.net, resolve=True) if "model" in cfg else None
    if cfg.get("init_from") and net is not None:
        _, net = initial_network(str(cfg.init_from), net)
    if cfg.get("ckpt_path") and net is not None:
        check_resume(str(cfg.ckpt_path), net)


def check_resume(ckpt_path: str, net: dict[str, Any]) -> None:
    """A checkpoint to resume from: local (never a URL), readable with weights_only, a training
    state (not an exported model), and of the configured architecture. Lightning then reads it."""
    path = resume_checkpoint(ckpt_path)
    checkpoint = load_checkpoint(path)
    if "format" in checkpoint:  # digitrec.model/N: the weights export_model writes, no optimiser or loop state
        last = path.parent / "checkpoints" / "last.ckpt"
        instead = f"continue that run with ckpt_path={last}" if last.is_file() else "resume from a run's checkpoints/last.ckpt"
        raise DigitrecError(f"ckpt_path={ckpt_path} holds a trained model's weights only, no training state to resume: {instead}")
    check_same_network(ckpt_path, checkpoint["hyper_parameters"], net)


def initial_network(init_from: str, configured_net: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint a run started with init_from=CKPT starts from, and the network record it trains:
    the checkpoint's. A network configured away from the default (model/net=cnn,
    model.net.hidden_sizes=..., an experiment's) must be that same network, or the weights would not
    fit it: one line says which setting differs."""
    if is_url(init_from):
        raise DigitrecError(
            f"init_from={init_from} is a URL: digitrec starts only from local files it can check first; download it, then pass the file"
        )
    checkpoint = load_checkpoint(init_from)
    saved = checkpoint["hyper_parameters"]["net"]
    if with_defaults(configured_net) != with_defaults(DEFAULT_NET):
        check_same_network(init_from, {"net": saved}, configured_net, what="start from it")
    return checkpoint, saved


def check_same_network(ckpt_path: str, hyper_parameters: dict[str, Any], configured_net: dict[str, Any], what: str = "resume") -> None:
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
                f"{what} with the same network settings ({name}={value})"
            )
