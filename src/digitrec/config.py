"""The config schema and its checks: every user mistake becomes one line before training starts.

Hydra composes `configs/`; `check_config` then merges the result into typed dataclasses
(wrong types and unknown keys fail there) and applies the value rules below.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
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
    data_dir: str | None = None
    download: bool = True
    download_dir: str = "data"
    val_size: int = 5000
    batch_size: int = 100
    eval_batch_size: int = 1000
    seed: int = 12345


# numpy's and Python's generators take seeds in [0, 2**32): Lightning's seed_everything refuses others.
MAX_SEED = 2**32 - 1


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parameter_count(input_size: int, hidden_sizes: list[int], num_classes: int) -> int:
    widths = [input_size, *hidden_sizes, num_classes]
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


def memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _model_fits(model: DictConfig) -> tuple[bool, str]:
    """Whether training the MLP fits in memory: weights, gradients and Adam's two moments are
    4 float32 copies of the parameters (SGD: 3), checked before anything is allocated."""
    params = parameter_count(model.input_size, list(model.hidden_sizes), model.num_classes)
    needed, memory = 4 * 4 * params, memory_bytes()
    if memory is None or needed <= memory:
        return True, ""
    return False, (
        f"{params:,} parameters ({4 * params / 1e9:,.1f} GB as float32, about {needed / 1e9:,.0f} GB to train), "
        f"more than this machine's {memory / 1e9:.0f} GB of memory: choose smaller widths, e.g. model.hidden_sizes=[500,100]"
    )


def _limit_ok(value: Any) -> bool:
    # Lightning's limit_*_batches: a share of the batches (0.0-1.0) or a number of batches.
    return (is_int(value) and value >= 0) or (isinstance(value, float) and 0.0 <= value <= 1.0)


def _devices_ok(value: Any) -> bool:
    if value == "auto" or (is_int(value) and (value >= 1 or value == -1)):
        return True
    if isinstance(value, str):  # "2", "-1", "0,1", "0,"
        return re.fullmatch(r"\s*(-1|\d+|(\d+\s*,\s*)+\d*)\s*", value) is not None and value.strip() != "0"
    if isinstance(value, (list, tuple, ListConfig)):
        return len(value) > 0 and all(is_int(v) and v >= 0 for v in value)
    return False


def _max_time_ok(value: Any) -> bool:
    if isinstance(value, str):
        return re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", value) is not None
    if isinstance(value, (dict, DictConfig)):
        return set(value) <= {"weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds"} and all(
            is_number(v) and v >= 0 for v in value.values()
        )
    return False


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "xla")


def _trainer_rules(trainer: DictConfig) -> list[tuple[str, Any, bool, str]]:
    """Value rules for the Trainer options people set most; Lightning itself checks the rest (see
    check_trainer_with_lightning). Only keys that are set are checked."""
    t = {k: trainer[k] for k in trainer if k != "_target_" and not OmegaConf.is_missing(trainer, k)}
    checks = {
        "devices": (_devices_ok, "a number of devices >= 1, -1 (all), auto, or device indices such as [0,1] or '0,1'"),
        "accelerator": (lambda v: v in ACCELERATORS, f"one of {', '.join(ACCELERATORS)}"),
        "precision": (lambda v: v in precision_values(), "one of " + ", ".join(map(str, precision_values())) + ", e.g. trainer.precision=bf16-mixed"),
        "max_time": (_max_time_ok, "DD:HH:MM:SS, e.g. trainer.max_time=00:01:30:00 (an hour and a half)"),
        "limit_train_batches": (_limit_ok, "a share of the batches between 0.0 and 1.0, or a number of batches >= 0"),
        "limit_val_batches": (_limit_ok, "a share of the batches between 0.0 and 1.0, or a number of batches >= 0"),
        "limit_test_batches": (_limit_ok, "a share of the batches between 0.0 and 1.0, or a number of batches >= 0"),
        "limit_predict_batches": (_limit_ok, "a share of the batches between 0.0 and 1.0, or a number of batches >= 0"),
        "overfit_batches": (_limit_ok, "a share of the batches between 0.0 and 1.0, or a number of batches >= 0"),
        "gradient_clip_val": (lambda v: is_number(v) and v >= 0, "a number >= 0, e.g. trainer.gradient_clip_val=1.0"),
        "gradient_clip_algorithm": (lambda v: v in ("norm", "value"), "norm or value"),
        "accumulate_grad_batches": (lambda v: is_int(v) and v >= 1, "an integer >= 1, e.g. trainer.accumulate_grad_batches=2"),
        "log_every_n_steps": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (0: no step logging), e.g. trainer.log_every_n_steps=50"),
        "max_steps": (lambda v: is_int(v) and v >= -1, "an integer >= 1, or -1 (no limit)"),
        "min_epochs": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
        "check_val_every_n_epoch": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "val_check_interval": (
            lambda v: (is_int(v) and v >= 1) or (isinstance(v, float) and 0.0 < v <= 1.0),
            "a share of an epoch (0.0-1.0] or a number of steps >= 1",
        ),
        "num_sanity_val_steps": (lambda v: is_int(v) and v >= -1, "an integer >= 0, or -1 (all)"),
        "deterministic": (lambda v: isinstance(v, bool) or v == "warn", "true, false or warn"),
        "fast_dev_run": (lambda v: isinstance(v, bool) or (is_int(v) and v >= 0), "true, false, or a number of batches"),
    }
    return [(f"trainer.{k}", t[k], ok(t[k]), expected) for k, (ok, expected) in checks.items() if t.get(k) is not None]


def _rules(cfg: DictConfig, model: DictConfig | None, data: DictConfig) -> list[tuple[str, Any, bool, str]]:
    """(key, value, ok, what a valid value looks like) for every value rule, on type-checked sections."""
    rules = [
        ("seed", cfg.seed, is_int(cfg.seed) and 0 <= cfg.seed <= MAX_SEED, f"an integer from 0 to {MAX_SEED}, e.g. seed=12345"),
        ("data.batch_size", data.batch_size, data.batch_size >= 1, "an integer >= 1, e.g. data.batch_size=100"),
        ("data.eval_batch_size", data.eval_batch_size, data.eval_batch_size >= 1, "an integer >= 1"),
        ("data.val_size", data.val_size, 1 <= data.val_size < 60000, "between 1 and 59999 images of the official training set"),
    ]
    if model is not None:
        hidden = list(model.hidden_sizes)
        rules += [
            ("model.lr", model.lr, model.lr > 0, "a positive number, e.g. model.lr=0.001"),
            (
                "model.hidden_sizes",
                hidden,
                len(hidden) > 0 and all(h >= 1 for h in hidden),
                "a non-empty list of positive widths, e.g. model.hidden_sizes=[500,100]",
            ),
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
    rules += _trainer_rules(trainer)
    for group, kind in (("callbacks", "a callback"), ("logger", "a logger")):
        for name, entry in (cfg.get(group) or {}).items():
            ok = entry is None or (isinstance(entry, DictConfig) and "_target_" in entry)
            rules.append((f"{group}.{name}", entry, ok, f"{kind} config with a _target_ (or null to turn it off), e.g. {group}.{name}=null"))
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


TRAINER_TARGETS = ("lightning.pytorch.Trainer", "lightning.Trainer", "lightning.pytorch.trainer.trainer.Trainer")


def _lightning_module_ast(relative: str) -> ast.Module | None:
    """A module of the installed Lightning, parsed but not imported: importing Lightning takes
    seconds, and a typo on the command line should be reported in about one."""
    spec = importlib.util.find_spec("lightning")  # a top-level find_spec imports nothing
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        return ast.parse((Path(spec.submodule_search_locations[0]) / relative).read_text())
    except (OSError, SyntaxError, ValueError):
        return None


def trainer_parameters() -> set[str]:
    """The keyword arguments of Lightning's Trainer, read from its source (imported only as a fallback)."""
    tree = _lightning_module_ast("pytorch/trainer/trainer.py")
    for node in ast.walk(tree) if tree else ():
        if isinstance(node, ast.ClassDef) and node.name == "Trainer":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    args = item.args
                    return {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]} - {"self"}
    from lightning.pytorch import Trainer

    return set(inspect.signature(Trainer.__init__).parameters) - {"self"}


def precision_values() -> tuple:
    """The precision values Lightning's Trainer accepts, from its source (imported only as a fallback)."""
    names = ("_PRECISION_INPUT_INT", "_PRECISION_INPUT_STR", "_PRECISION_INPUT_STR_ALIAS")
    tree = _lightning_module_ast("fabric/plugins/precision/precision.py")
    found: dict[str, tuple] = {}
    for node in tree.body if tree else ():
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and getattr(node.targets[0], "id", None) in names:
            try:
                values = ast.literal_eval(node.value.slice)
            except (ValueError, AttributeError, SyntaxError):
                continue
            found[node.targets[0].id] = values if isinstance(values, tuple) else (values,)
    if len(found) == len(names):
        return tuple(v for name in names for v in found[name])
    from typing import get_args

    from lightning.fabric.plugins.precision import precision

    return tuple(v for name in names for v in get_args(getattr(precision, name)))


def _check_trainer_keys(trainer: DictConfig) -> None:
    if str(trainer.get("_target_")) in TRAINER_TARGETS:
        known = trainer_parameters()
    else:  # another Trainer class: ask it
        from hydra.utils import get_class

        known = set(inspect.signature(get_class(trainer._target_).__init__).parameters) - {"self"}
    unknown = sorted(k for k in trainer if k != "_target_" and k not in known)
    if unknown:
        raise DigitrecError(
            f"config error at trainer.{unknown[0]}: not an option of Lightning's Trainer (see Trainer's documentation for valid keys)"
        )


# Trainer settings that construct on every machine: anything else is tried on a real Trainer
# (check_trainer_with_lightning) before the run starts, which costs the import of Lightning.
PLAIN_TRAINER = {
    "accelerator": ("auto", "cpu"),
    "devices": (1, "1", "auto"),
    "strategy": ("auto",),
    "precision": (32, "32", "32-true"),
    "profiler": (),
}
PLAIN_TRAINER_KEYS = {
    "_target_",
    "default_root_dir",
    "max_epochs",
    "min_epochs",
    "max_steps",
    "max_time",
    "log_every_n_steps",
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
    "overfit_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "accumulate_grad_batches",
    "check_val_every_n_epoch",
    "val_check_interval",
    "num_sanity_val_steps",
    "deterministic",
    "fast_dev_run",
    "benchmark",
    "enable_model_summary",
    "num_nodes",
    *PLAIN_TRAINER,
}


def needs_lightning_check(trainer: DictConfig) -> bool:
    for key in trainer:
        value = trainer.get(key)
        if key not in PLAIN_TRAINER_KEYS or (key in PLAIN_TRAINER and value is not None and value not in PLAIN_TRAINER[key]):
            return True
    return trainer.get("num_nodes", 1) not in (None, 1)


def check_trainer_with_lightning(trainer: DictConfig) -> None:
    """Build the configured Trainer once (no callbacks, no logger) so that what only Lightning can
    judge (is that GPU there? is that strategy known?) is one line before the run directory exists."""
    import logging
    import warnings

    from hydra.utils import instantiate

    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the real Trainer reports the devices; this one stays silent
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            instantiate(trainer, callbacks=[], logger=False, enable_progress_bar=False, enable_checkpointing=False)
    except Exception as err:  # noqa: BLE001  (Lightning raises ValueError, TypeError, MisconfigurationException, ...)
        hint = ""
        if str(trainer.get("accelerator")) in ("gpu", "cuda"):
            hint = " (no usable GPU here? use trainer=cpu, or trainer.accelerator=auto to take a GPU when there is one)"
        raise DigitrecError(f"config error at trainer: {trainer_error(err)}{hint}") from None
    finally:
        quiet.setLevel(level)


def trainer_error(err: BaseException) -> str:
    """One line for an error Lightning raised when building a Trainer (its messages run long)."""
    text = " ".join(str(getattr(err, "__cause__", None) or err).split()) if "Error in call to target" in str(err) else " ".join(str(err).split())
    text = text.split(" Find a complete list")[0].split(" See https://")[0]
    return text[:400] or type(err).__name__


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
    if model is not None:
        fits, why = _model_fits(model)
        if not fits:
            raise DigitrecError(f"config error at model.hidden_sizes: {list(model.hidden_sizes)} gives {why}")


# Sections whose added keys are checked by their own rules (schemas, Trainer options, _target_ entries).
CHECKED_SECTIONS = ("model", "data", "trainer", "callbacks", "logger", "hydra")


def check_added_keys(cfg: DictConfig, added: list[str], groups: set[str]) -> None:
    """Refuse `+KEY=VALUE` for a key nothing reads (`+seeed=1` would train with the default seed)."""
    for key in added:
        if key.replace(".", "/") in groups or key.split(".")[0] in CHECKED_SECTIONS:
            continue
        section, _, _ = key.rpartition(".")
        parent = OmegaConf.select(cfg, section) if section else cfg
        known = [k for k in (parent.keys() if isinstance(parent, DictConfig) else []) if (f"{section}.{k}" if section else k) not in added]
        raise DigitrecError(f"config error at {key}: unknown key (known keys: {', '.join(map(str, known))})")


def check_output_root(cfg: DictConfig) -> None:
    """Refuse an output folder that cannot be written before Hydra tries to make the run directory in it."""
    paths = cfg.get("paths")
    if not isinstance(paths, DictConfig) or paths.get("output_root") is None:
        return
    root = Path(str(paths.output_root)).expanduser()
    probe = root.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    problem = None
    if not probe.is_dir():
        problem = f"{probe} is not a folder"
    elif not os.access(probe, os.W_OK | os.X_OK):
        problem = f"{probe} is not writable"
    else:
        try:  # os.access says yes to root everywhere, and on some special filesystems
            os.rmdir(tempfile.mkdtemp(prefix=".digitrec-write-check-", dir=probe))
        except OSError as err:
            problem = f"{probe} is not writable: {err.strerror or err}"
    if problem:
        raise DigitrecError(
            f"config error at paths.output_root: cannot write runs into {root} ({problem}): choose a writable folder, e.g. paths.output_root=~/digitrec-outputs"
        )


def precheck_config(cfg: DictConfig, added: list[str], groups: set[str]) -> None:
    """Everything check_config does, and what only the start of a run would find: unknown added
    keys, an unwritable output folder, and Trainer options that only Lightning can judge."""
    check_added_keys(cfg, added, groups)
    check_config(cfg)
    check_output_root(cfg)
    if isinstance(cfg.get("trainer"), DictConfig) and needs_lightning_check(cfg.trainer):
        check_trainer_with_lightning(cfg.trainer)
