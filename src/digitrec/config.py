"""The config schema and its checks: every user mistake becomes one line before training starts.

Hydra composes `configs/`; `check_config` then merges the result into typed dataclasses
(wrong types and unknown keys fail there) and applies the value rules below.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from digitrec.errors import DigitrecError, first_line

# A short random id per run, cached so every read of the run directory gives the same value;
# with the timestamp it keeps two runs that start in the same second apart.
# Hydra copies the resolver cache into each job of a sweep, so a sweep shares one id.
if not OmegaConf.has_resolver("run_id"):
    OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)


def overrides_suffix(override_dirname: str, limit: int = 120) -> str:
    """`_<overrides>` for a directory name (empty without overrides), so run names say what differs.

    Characters that nest directories (slashes) or need quoting become `-`; a very long list is
    cut and ends in a short hash, which keeps two different cut lists apart.
    """
    if not override_dirname:
        return ""
    name = re.sub(r"[^\w.,=+\-\[\]()]+", "-", override_dirname)
    if len(name) > limit:
        name = f"{name[: limit - 9]}~{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return f"_{name}"


if not OmegaConf.has_resolver("overrides_suffix"):
    OmegaConf.register_new_resolver("overrides_suffix", overrides_suffix)
# `<overrides>_` for the front of a run's directory name: TensorBoard's run list cuts long names at
# the end, so what differs between runs comes first and the timestamp last.
if not OmegaConf.has_resolver("overrides_prefix"):
    OmegaConf.register_new_resolver("overrides_prefix", lambda dirname: f"{overrides_suffix(dirname)[1:]}_" if dirname else "")

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine")
# What a sweep may rank its jobs by: the numbers every run writes into metrics.json.
OBJECTIVES = ("val/acc_best", "test/acc", "test/loss")


@dataclass
class ModelSchema:
    _target_: str = "digitrec.model.DigitClassifier"
    input_size: int = 784
    hidden_sizes: list[int] = field(default_factory=lambda: [500, 100])
    num_classes: int = 10
    lr: float = 1e-3
    mean: float = 0.1307
    std: float = 0.3081
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    lr_schedule: str = "constant"


@dataclass
class DataSchema:
    _target_: str = "digitrec.data.MNISTDataModule"
    data_dir: Optional[str] = None
    download: bool = True
    download_dir: str = "data"
    val_size: int = 5000
    batch_size: int = 100
    eval_batch_size: int = 1000
    seed: int = 12345


def _rules(cfg: DictConfig, model: DictConfig | None, data: DictConfig) -> list[tuple[str, Any, bool, str]]:
    """(key, value, ok, what a valid value looks like) for every value rule, on type-checked sections."""
    rules = [
        ("seed", cfg.seed, isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool), "an integer, e.g. seed=12345"),
        ("data.batch_size", data.batch_size, data.batch_size >= 1, "an integer >= 1, e.g. data.batch_size=100"),
        ("data.eval_batch_size", data.eval_batch_size, data.eval_batch_size >= 1, "an integer >= 1"),
        ("data.val_size", data.val_size, 1 <= data.val_size < 60000, "between 1 and 59999 images of the official training set"),
    ]
    if model is not None:
        hidden = list(model.hidden_sizes)
        rules += [
            ("model.lr", model.lr, model.lr > 0, "a positive number, e.g. model.lr=0.001"),
            ("model.hidden_sizes", hidden, len(hidden) > 0 and all(h >= 1 for h in hidden), "a non-empty list of positive widths, e.g. model.hidden_sizes=[500,100]"),
            ("model.input_size", model.input_size, model.input_size == 784, "784 (28x28 MNIST images)"),
            ("model.num_classes", model.num_classes, model.num_classes == 10, "10 (the digits 0-9)"),
            ("model.std", model.std, model.std > 0, "a positive number"),
            ("model.optimizer", model.optimizer, model.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
            ("model.weight_decay", model.weight_decay, model.weight_decay >= 0, "a number >= 0, e.g. model.weight_decay=0.01"),
            ("model.momentum", model.momentum, 0 <= model.momentum < 1, "between 0 and 1 (used by model.optimizer=sgd)"),
            ("model.lr_schedule", model.lr_schedule, model.lr_schedule in LR_SCHEDULES, f"one of {', '.join(LR_SCHEDULES)}"),
        ]
    trainer = cfg.trainer
    max_epochs = trainer.get("max_epochs")
    rules.append(("trainer.max_epochs", max_epochs, isinstance(max_epochs, int) and max_epochs >= 1, "an integer >= 1, e.g. trainer.max_epochs=5"))
    threads = cfg.get("threads")
    rules.append(("threads", threads, threads is None or (isinstance(threads, int) and threads >= 1), "null (PyTorch's default) or an integer >= 1"))
    objective = cfg.get("optimized_metric")
    rules.append(("optimized_metric", objective, objective in (None, *OBJECTIVES), f"one of {', '.join(OBJECTIVES)}"))
    progress = cfg.get("progress", "auto")
    rules.append(("progress", progress, progress in ("auto", "bar", "lines"), "one of auto, bar, lines"))
    return rules


def _merge_schema(section: str, schema: type, values: DictConfig) -> DictConfig:
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), values)
    except OmegaConfBaseException as err:
        key = f"{section}.{err.key}" if getattr(err, "key", None) is not None else section
        reason = first_line(err, limit=10_000)
        if "not in" in reason or "Key '" in reason:
            known = ", ".join(k for k in OmegaConf.structured(schema) if not k.startswith("_"))
            reason = f"unknown key (known keys: {known})"
        raise DigitrecError(f"config error at {key}: {reason}") from None


def _check_trainer_keys(trainer: DictConfig) -> None:
    from lightning.pytorch import Trainer

    known = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    unknown = sorted(k for k in trainer if k != "_target_" and k not in known)
    if unknown:
        raise DigitrecError(f"config error at trainer.{unknown[0]}: not an option of Lightning's Trainer (see Trainer's documentation for valid keys)")


def check_config(cfg: DictConfig) -> None:
    """Raise DigitrecError (one line) for the first invalid value; return quietly when all is well."""
    # `in` is False for a ??? value, so ask the keys.
    if "ckpt_path" in cfg.keys() and OmegaConf.is_missing(cfg, "ckpt_path"):
        raise DigitrecError("ckpt_path is required: e.g. digitrec eval ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt")
    try:
        OmegaConf.to_container(cfg, resolve=True)  # surfaces broken interpolations now, not mid-run
    except OmegaConfBaseException as err:
        raise DigitrecError(f"config error at {getattr(err, 'full_key', '') or 'config'}: {first_line(err, limit=10_000)}") from None
    model = _merge_schema("model", ModelSchema, cfg.model) if "model" in cfg else None
    data = _merge_schema("data", DataSchema, cfg.data)
    _check_trainer_keys(cfg.trainer)
    for key, value, ok, expected in _rules(cfg, model, data):
        if not ok:
            raise DigitrecError(f"config error at {key}: got {value!r}, expected {expected}")
