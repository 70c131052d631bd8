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
from dataclasses import dataclass
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

# What a sweep may rank its jobs by: the numbers every run writes into metrics.json.
OBJECTIVES = ("val/acc_best", "test/acc", "test/loss")


@dataclass
class ModelSchema:
    _target_: str = "digitrec.model.DigitClassifier"
    _recursive_: bool = False
    net: Any = None
    optimizer: Any = None
    scheduler: Any = None
    label_smoothing: float = 0.0


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
    augment: Any = None


# numpy's and Python's generators take seeds in [0, 2**32): Lightning's seed_everything refuses others.
MAX_SEED = 2**32 - 1


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parameter_count(net: DictConfig) -> int | None:
    """The number of weights of one of digitrec's networks (None for another class)."""
    target = net.get("_target_")
    if target == "digitrec.nets.MLP":
        widths = [net.get("input_size", 784), *net.get("hidden_sizes", [500, 100]), net.get("num_classes", 10)]
        return sum(a * b + b for a, b in zip(widths, widths[1:]))
    if target == "digitrec.nets.CNN":
        k, width, size, count = net.get("kernel_size", 3), 1, 28, 0
        for out in net.get("channels", [32, 64]):
            for _ in range(net.get("convs_per_block", 2)):
                count, width = count + width * out * k * k + out, out
            size //= 2
        hidden = net.get("hidden_size", 256)
        return count + width * size * size * hidden + hidden + hidden * net.get("num_classes", 10) + net.get("num_classes", 10)
    return None


def memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _model_fits(net: DictConfig) -> tuple[bool, str]:
    """Whether training the network fits in memory: weights, gradients and Adam's two moments are
    4 float32 copies of the parameters, checked before anything is allocated."""
    params, memory = parameter_count(net), memory_bytes()
    if params is None or memory is None or 16 * params <= memory:
        return True, ""
    return False, (
        f"{params:,} parameters ({4 * params / 1e9:,.1f} GB as float32, about {16 * params / 1e9:,.0f} GB to train), "
        f"more than this machine's {memory / 1e9:.0f} GB of memory: choose smaller widths, e.g. model.net.hidden_sizes=[500,100]"
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
        rules.append(
            (
                "model.label_smoothing",
                model.label_smoothing,
                0 <= model.label_smoothing < 1,
                "a number from 0 (none) to below 1, e.g. model.label_smoothing=0.1",
            )
        )

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
        check_model_records(model)
    if data.augment is not None:
        check_record("data.augment", data.augment, "an augmentation", skip=0)
        check_values("data.augment", data.augment)


# The same names as digitrec.nets.ACTIVATIONS (that module imports torch; this one must not).
ACTIVATION_NAMES = ("relu", "gelu", "silu", "tanh", "leaky_relu", "elu")
NET_RULES: dict[str, tuple[Any, str]] = {
    "input_size": (lambda v: v == 784, "784 (28x28 MNIST images)"),
    "num_classes": (lambda v: v == 10, "10 (the digits 0-9)"),
    "hidden_sizes": (
        lambda v: is_list(v) and len(v) > 0 and all(is_int(h) and h >= 1 for h in v),
        "a non-empty list of positive widths, e.g. [500,100]",
    ),
    "channels": (
        lambda v: is_list(v) and 1 <= len(v) <= 4 and all(is_int(c) and c >= 1 for c in v),
        "1 to 4 positive widths (each block halves the 28x28 image), e.g. [32,64]",
    ),
    "kernel_size": (lambda v: is_int(v) and v >= 1 and v % 2 == 1, "an odd integer >= 1, e.g. 3 or 5"),
    "convs_per_block": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "hidden_size": (lambda v: is_int(v) and v >= 1, "an integer >= 1, e.g. 256"),
    "dropout": (lambda v: is_number(v) and 0 <= v < 1, "a probability from 0 to below 1, e.g. 0.2"),
    "norm": (lambda v: v in ("none", "batch", "layer"), "one of none, batch, layer"),
    "activation": (lambda v: v in ACTIVATION_NAMES, "one of " + ", ".join(ACTIVATION_NAMES)),
    "std": (lambda v: is_number(v) and v > 0, "a positive number"),
}
OPTIMIZER_RULES: dict[str, tuple[Any, str]] = {
    "lr": (lambda v: is_number(v) and v > 0, "a positive number, e.g. model.optimizer.lr=0.001"),
    "weight_decay": (lambda v: is_number(v) and v >= 0, "a number >= 0, e.g. model.optimizer.weight_decay=0.01"),
    "momentum": (lambda v: is_number(v) and 0 <= v < 1, "a number from 0 to below 1, e.g. 0.9"),
}
SCHEDULER_RULES: dict[str, tuple[Any, str]] = {
    "interval": (lambda v: v in ("step", "epoch"), "step or epoch (how often the schedule moves)"),
    "max_lr": (lambda v: is_number(v) and v > 0, "a positive number, e.g. 0.003"),
    "pct_start": (lambda v: is_number(v) and 0 < v < 1, "a share of the run between 0 and 1, e.g. 0.25"),
    "warmup_fraction": (lambda v: is_number(v) and 0 <= v < 1, "a share of the run from 0 to below 1, e.g. 0.05"),
    "step_size": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "gamma": (lambda v: is_number(v) and v > 0, "a positive number, e.g. 0.5"),
}
AUGMENT_RULES: dict[str, tuple[Any, str]] = {
    "degrees": (lambda v: is_number(v) and 0 <= v <= 180, "an angle from 0 to 180 degrees"),
    "shear": (lambda v: is_number(v) and 0 <= v < 90, "an angle from 0 to below 90 degrees"),
    "scale": (
        lambda v: is_list(v) and len(v) == 2 and all(is_number(x) and x > 0 for x in v) and v[0] <= v[1],
        "[low, high] scale factors, 0 < low <= high, e.g. [0.9,1.1]",
    ),
    "translate": (lambda v: is_number(v) and 0 <= v < 1, "a share of the width from 0 to below 1, e.g. 0.1"),
    "elastic_alpha": (lambda v: is_number(v) and v >= 0, "a displacement in pixels >= 0 (0: no elastic distortion), e.g. 34"),
    "elastic_sigma": (lambda v: is_number(v) and v > 0, "a smoothing width in pixels > 0, e.g. 4"),
    "p": (lambda v: is_number(v) and 0 <= v <= 1, "a probability from 0 to 1"),
}
# Keys of a record that are digitrec's, not arguments of the class it names.
DIGITREC_KEYS = {"model.scheduler": {"interval"}}
# Arguments digitrec passes itself: the parameters (optimizer), the optimizer (scheduler).
FILLED_IN = {"model.scheduler": {"total_steps", "T_max", "total_iters"}}


def is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, ListConfig))


def check_record(key: str, record: Any, kind: str, skip: int) -> None:
    """A `_target_` record: the class exists, every key is one of its arguments, none is missing.
    The class is read from its source where possible (no import of torch for a typo)."""
    from digitrec.targets import signature

    example = {"model.net": "model/net=cnn", "model.optimizer": "model/optimizer=adamw", "model.scheduler": "model/scheduler=cosine"}.get(key, "")
    if not isinstance(record, DictConfig) or "_target_" not in record.keys():
        hint = f", e.g. {example}" if example else ""
        if isinstance(record, DictConfig) and key in ("model.scheduler", "data.augment"):
            # Settings with no class: an experiment's values left on a group switched to none.
            hint += f" (to turn it off where an experiment sets its values, use {key}=null rather than {key.replace('.', '/')}=none)"
        raise DigitrecError(f"config error at {key}: got {record!r}, expected {kind} config with a _target_{hint}")
    if OmegaConf.is_missing(record, "_target_"):
        raise DigitrecError(f"config error at {key}._target_: missing: name the class, e.g. {key}._target_=my_package.MyNet")
    target = record._target_
    if not isinstance(target, str) or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", target):
        raise DigitrecError(f"config error at {key}._target_: got {target!r}, expected a dotted class path, e.g. torch.optim.Adam")
    try:
        accepted = signature(target, skip=skip)
    except DigitrecError as err:
        raise DigitrecError(f"config error at {key}._target_: {err}") from None
    ours = DIGITREC_KEYS.get(key, set())
    arguments = [str(k) for k in record if not str(k).startswith("_") and k not in ours]
    for name in arguments:
        if not accepted.accepts(name):
            takes = ", ".join(accepted.names) or "no arguments"
            raise DigitrecError(f"config error at {key}.{name}: {target} takes no argument {name} (it takes: {takes}); remove it with ~{key}.{name}")
    missing = sorted(accepted.required - set(arguments) - FILLED_IN.get(key, set()))
    if missing:
        raise DigitrecError(f"config error at {key}: {target} needs {', '.join(missing)}: add it, e.g. +{key}.{missing[0]}=VALUE")


def check_values(key: str, record: DictConfig) -> None:
    rules = {"model.net": NET_RULES, "model.optimizer": OPTIMIZER_RULES, "model.scheduler": SCHEDULER_RULES, "data.augment": AUGMENT_RULES}[key]
    own = str(record._target_).startswith("digitrec.")  # other classes' arguments are theirs to judge
    for name in record:
        rule = rules.get(str(name))
        if rule is None or (not own and key in ("model.net", "data.augment")):
            continue
        ok, expected = rule
        value = record[name]
        plain_value = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
        # null is no value for any of these (only a schedule's length arguments may be null, see FILLED_IN).
        if not ok(plain_value):
            raise DigitrecError(f"config error at {key}.{name}: got {plain_value!r}, expected {expected}")


def check_model_records(model: DictConfig) -> None:
    """model.net, model.optimizer and model.scheduler: classes, arguments and values."""
    check_record("model.net", model.net, "a network", skip=0)
    check_values("model.net", model.net)
    fits, why = _model_fits(model.net)
    if not fits:
        raise DigitrecError(f"config error at model.net: the network gives {why}")
    check_record("model.optimizer", model.optimizer, "an optimiser", skip=1)
    if not model.optimizer.get("_partial_", False):
        raise DigitrecError(
            "config error at model.optimizer._partial_: must be true (digitrec passes the parameters), e.g. ++model.optimizer._partial_=true"
        )
    check_values("model.optimizer", model.optimizer)
    if model.scheduler is not None:
        check_record("model.scheduler", model.scheduler, "a learning-rate schedule", skip=1)
        check_values("model.scheduler", model.scheduler)


def trusted_classes(cfg: DictConfig) -> list[str]:
    """eval's net_class (network classes of the user's own a checkpoint may name): one class name or a list of them."""
    classes = cfg.get("net_class") or []
    return [str(classes)] if isinstance(classes, str) else [str(c) for c in classes]


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
