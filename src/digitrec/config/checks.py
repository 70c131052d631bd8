"""The config's checks: every user mistake becomes one line before a run starts.

Hydra composes `configs/` once; `check_config` then judges the composed config once, before the
run's directory exists (see digitrec.command.main). Component records (`_target_` + arguments) are checked
against the class they name with `inspect.signature`; the value rules below are digitrec's own
(what its networks, data and runs need), never a copy of what a library checks itself. This
module imports torch (through the classes it asks) but never Lightning: Lightning judges its
Trainer, callbacks and loggers itself (digitrec.training.checks.check_lightning_components).
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from digitrec.errors import DigitrecError, first_line
from digitrec.nets.networks import ACTIVATIONS, NORMS
from digitrec.targets import signature
from digitrec.tracking.record import OBJECTIVES

# numpy's and Python's generators take seeds in [0, 2**32): Lightning's seed_everything refuses others.
MAX_SEED = 2**32 - 1


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, ListConfig))


def memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def parameter_count(net: DictConfig) -> int | None:
    """The network's number of weights, counted on the meta device (shapes only, no memory), or
    None for a class that cannot be built there."""
    import torch

    from digitrec.nets.networks import build_net

    record = OmegaConf.to_container(net, resolve=True)
    try:
        with torch.device("meta"):
            module = build_net(record, trusted=[str(record.get("_target_"))])
    except Exception:  # noqa: BLE001  (a user's class that needs real tensors to initialise: no estimate)
        return None
    return sum(p.numel() for p in module.parameters())


def check_fits_in_memory(net: DictConfig) -> None:
    """Training keeps 4 float32 copies of the parameters (weights, gradients, Adam's two moments):
    refuse a network that cannot fit before anything is allocated."""
    params, memory = parameter_count(net), memory_bytes()
    if params is None or memory is None or 16 * params <= memory:
        return
    raise DigitrecError(
        f"config error at model.net: the network gives {params:,} parameters ({4 * params / 1e9:,.1f} GB as float32, about "
        f"{16 * params / 1e9:,.0f} GB to train), more than this machine's {memory / 1e9:.0f} GB of memory: "
        "choose smaller widths, e.g. model.net.hidden_sizes=[500,100]"
    )


# Trainer values that Lightning's Trainer accepts when it is built (Lightning judges everything
# else itself, see digitrec.training.checks.check_lightning_components) but that fail, or quietly do nothing,
# once a run is under way.
TRAINER_RANGES: dict[str, tuple[Any, str]] = {
    "max_epochs": (lambda v: is_int(v) and v >= 1, "an integer >= 1, e.g. trainer.max_epochs=5"),
    "min_epochs": (lambda v: v is None or (is_int(v) and v >= 0), "an integer >= 0"),
    "log_every_n_steps": (lambda v: v is None or (is_int(v) and v >= 0), "an integer >= 0 (0: no step logging), e.g. trainer.log_every_n_steps=50"),
    "gradient_clip_val": (lambda v: v is None or not is_number(v) or v >= 0, "a number >= 0, e.g. trainer.gradient_clip_val=1.0"),
    "accumulate_grad_batches": (lambda v: not is_int(v) or v >= 1, "an integer >= 1, e.g. trainer.accumulate_grad_batches=2"),
    "val_check_interval": (lambda v: v is None or not is_number(v) or v > 0, "a share of an epoch (0.0-1.0] or a number of steps >= 1"),
    "check_val_every_n_epoch": (lambda v: v is None or (is_int(v) and v >= 1), "an integer >= 1"),
    "num_sanity_val_steps": (lambda v: v is None or (is_int(v) and v >= -1), "an integer >= 0, or -1 (all)"),
}


def _rules(cfg: DictConfig) -> list[tuple[str, Any, bool, str]]:
    """(key, value, ok, what a valid value looks like) for every value rule that applies."""
    rules: list[tuple[str, Any, bool, str]] = [
        ("seed", cfg.seed, is_int(cfg.seed) and 0 <= cfg.seed <= MAX_SEED, f"an integer from 0 to {MAX_SEED}, e.g. seed=12345"),
    ]
    data = cfg.data
    for key, at_least, example in (("batch_size", 1, "data.batch_size=100"), ("eval_batch_size", 1, "data.eval_batch_size=1000")):
        if key in data:
            rules.append((f"data.{key}", data[key], is_int(data[key]) and data[key] >= at_least, f"an integer >= {at_least}, e.g. {example}"))
    if "val_size" in data:
        rules.append(
            (
                "data.val_size",
                data.val_size,
                is_int(data.val_size) and 1 <= data.val_size < 60000,
                "between 1 and 59999 images of the official training set",
            )
        )
    # data=folder (digitrec.data.folder): your own digits, and the MNIST images replayed beside them.
    folder_rules = (
        ("val_fraction", lambda v: is_number(v) and 0 < v < 1, "a share of each digit's images from above 0 to below 1, e.g. data.val_fraction=0.2"),
        (
            "replay_mnist",
            lambda v: is_int(v) and 0 <= v <= 55000,
            "a number of MNIST training images from 0 (none) to 55000, e.g. data.replay_mnist=3000",
        ),
        ("folder_share", lambda v: is_number(v) and 0 < v < 1, "a share of each epoch from above 0 to below 1, e.g. data.folder_share=0.5"),
        ("skip_bad_images", lambda v: isinstance(v, bool), "true or false"),
    )
    for key, ok, expected in folder_rules:
        if key in data:
            rules.append((f"data.{key}", data[key], ok(data[key]), expected))
    model = cfg.get("model")
    if isinstance(model, DictConfig) and "label_smoothing" in model:
        smoothing = model.label_smoothing
        rules.append(
            (
                "model.label_smoothing",
                smoothing,
                is_number(smoothing) and 0 <= smoothing < 1,
                "a number from 0 (none) to below 1, e.g. model.label_smoothing=0.1",
            )
        )
    trainer = cfg.trainer
    for key, (ok, expected) in TRAINER_RANGES.items():
        if key in trainer or key == "max_epochs":
            rules.append((f"trainer.{key}", trainer.get(key), ok(trainer.get(key)), expected))
    for group, kind in (("callbacks", "a callback"), ("logger", "a logger")):
        for name, entry in (cfg.get(group) or {}).items():
            ok = entry is None or (isinstance(entry, DictConfig) and "_target_" in entry)
            rules.append((f"{group}.{name}", entry, ok, f"{kind} config with a _target_ (or null to turn it off), e.g. {group}.{name}=null"))
    threads = cfg.get("threads")
    rules.append(("threads", threads, threads is None or (is_int(threads) and threads >= 1), "null (PyTorch's default) or an integer >= 1"))
    objective = cfg.get("optimized_metric")
    rules.append(("optimized_metric", objective, objective in (None, *OBJECTIVES), f"one of {', '.join(OBJECTIVES)}"))
    progress = cfg.get("progress", "auto")
    rules.append(("progress", progress, progress in ("auto", "bar", "lines"), "one of auto, bar, lines"))
    return rules


def check_config(cfg: DictConfig) -> None:
    """Raise DigitrecError (one line) for the first invalid value; return quietly when all is well."""
    # `in` is False for a ??? value, so ask the keys.
    if "ckpt_path" in cfg.keys() and OmegaConf.is_missing(cfg, "ckpt_path"):
        raise DigitrecError("ckpt_path is required: e.g. digitrec eval ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt")
    if "root" in cfg.data.keys() and OmegaConf.is_missing(cfg.data, "root"):
        raise DigitrecError("data.root is required with data=folder: the folder of your digits, one subfolder per digit, e.g. data.root=~/my_digits")
    try:
        OmegaConf.to_container(cfg, resolve=True)  # surfaces broken interpolations now, not mid-run
    except OmegaConfBaseException as err:
        raise DigitrecError(f"config error at {getattr(err, 'full_key', '') or 'config'}: {first_line(err, limit=10_000)}") from None
    for key, value, ok, expected in _rules(cfg):
        if not ok:
            raise DigitrecError(f"config error at {key}: got {value!r}, expected {expected}")
    if isinstance(cfg.get("model"), DictConfig):
        check_model_records(cfg.model)
    if cfg.data.get("augment") is not None:
        check_record("data.augment", cfg.data.augment, "an augmentation")
        check_values("data.augment", cfg.data.augment)


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
    "norm": (lambda v: v in NORMS, "one of " + ", ".join(NORMS)),
    "activation": (lambda v: v in ACTIVATIONS, "one of " + ", ".join(ACTIVATIONS)),
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


def alternatives(name: str, names: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"did you mean {close[0]}?"
    return f"it takes: {', '.join(names)}" if names else "it takes no arguments"


def check_record(key: str, record: Any, kind: str, skip: int = 0) -> None:
    """A `_target_` record: the class exists, every key is one of its arguments, none is missing.
    The class is imported and asked (inspect.signature), as Hydra will when it builds it."""

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
            raise DigitrecError(
                f"config error at {key}.{name}: {target} takes no argument {name} ({alternatives(name, accepted.names)}); remove it with ~{key}.{name}"
            )
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
    check_fits_in_memory(model.net)
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


# Sections whose added keys are checked against the class they configure (a `_target_` record).
COMPONENT_SECTIONS = ("model", "data", "trainer", "callbacks", "logger", "hydra")


def check_added_keys(cfg: DictConfig, added: list[str], groups: set[str]) -> None:
    """Refuse `+KEY=VALUE` for a key nothing reads (`+seeed=1` would train with the default seed)."""
    for key in added:
        if key.replace(".", "/") in groups or key.split(".")[0] in COMPONENT_SECTIONS:
            continue
        section, _, _ = key.rpartition(".")
        parent = OmegaConf.select(cfg, section) if section else cfg
        known = [k for k in (parent.keys() if isinstance(parent, DictConfig) else []) if (f"{section}.{k}" if section else k) not in added]
        raise DigitrecError(f"config error at {key}: unknown key (known keys: {', '.join(map(str, known))})")


def check_writable(folder: str | Path, key: str) -> None:
    """Refuse a folder that runs cannot be written into, before Hydra tries to make one there."""
    root = Path(str(folder)).expanduser()
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
            f"config error at {key}: cannot write runs into {root} ({problem}): choose a writable folder, e.g. paths.output_root=~/digitrec-outputs"
        )
