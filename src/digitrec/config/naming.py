"""Run and sweep directory names (Hydra resolvers used by configs/hydra/default.yaml): a short form
of what differs between runs first, then the time and a short random id. Importing this module
registers the resolvers; digitrec.command does before Hydra composes anything.

TensorBoard's run list, MLflow's run names and HParams' session column show about 30 characters of
a name, so the names lead with what differs, in short: `model.optimizer.lr=0.0003` becomes
`lr=3e-4`, `data.batch_size=64` becomes `bs=64`. The full overrides stay in each run's `.hydra/`.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Iterable, Sequence

from omegaconf import OmegaConf

# A short random id per run, cached so every read of the run directory gives the same value;
# with the timestamp it keeps two runs that start in the same second apart.
# Hydra copies the resolver cache into each job of a sweep, so a sweep shares one id.
if not OmegaConf.has_resolver("run_id"):
    OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)

# Names for keys whose last part is long or unclear alone.
SHORT_KEYS = {"batch_size": "bs", "max_epochs": "epochs", "weight_decay": "wd", "label_smoothing": "smoothing", "hidden_sizes": "hidden"}
# Numbers with this many significant digits or more (after the first) are sampled, not typed: shown to 4.
SAMPLED_DIGITS = 6
# Names longer than this are cut and end in a hash of the whole, which keeps two cut names apart.
LIMIT = 60


def short_number(text: str) -> str:
    """A number in its shortest exact form (0.0003 -> 3e-4, 1000000.0 -> 1e6, 0.01 stays), or to 4
    significant digits when that form is 7 digits or more; anything else as it is."""
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return str(int(text))
    try:
        value = float(text)
    except ValueError:
        return text
    if not math.isfinite(value) or not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        return text  # nan, inf, 1_000: as typed
    plain = repr(value).removesuffix(".0")
    if "e" in plain:  # repr's own exponent form, 1e-05: written as 1e-5
        mantissa, exponent = plain.split("e")
        plain = f"{mantissa}e{int(exponent)}"
    for digits in range(17):
        mantissa, exponent = f"{value:.{digits}e}".split("e")
        scientific = f"{mantissa}e{int(exponent)}"
        if float(scientific) == value:
            break
    if digits >= SAMPLED_DIGITS:
        # A number nobody typed (an Optuna trial's 0.007231563192959944) would fill the name alone:
        # 4 significant digits, 7.232e-3. The trial's number keeps its folder unique; .hydra/ keeps the value.
        mantissa, exponent = f"{value:.3e}".split("e")
        scientific, plain = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}", f"{value:.4g}"
        return plain if len(plain) < len(scientific) and "e" not in plain else scientific
    return scientific if len(scientific) < len(plain) else plain


def short_value(text: str) -> str:
    """Numbers shortest (in lists too); a class path by its class's name (torch.optim.RMSprop -> RMSprop)."""
    text = str(text)
    if text.startswith("[") and text.endswith("]"):
        return "[" + ",".join(short_number(item) for item in text[1:-1].split(",")) + "]"
    if re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*){2,}", text):
        return text.rpartition(".")[2]
    return short_number(text)


def key_parts(key: str) -> list[str]:
    """`model.optimizer.lr` -> [model, optimizer, lr]; a config group `model/net` -> [model, net];
    `model.optimizer._target_` stands for the optimiser itself."""
    parts = [p for p in re.split(r"[./]", key.lstrip("+~")) if p]
    if len(parts) > 1 and parts[-1] == "_target_":
        parts.pop()
    return parts or [key]


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each key by its last part (with SHORT_KEYS' names); keys whose short names would collide keep
    as many of their last parts as tell them apart."""
    names: dict[str, str] = {}
    for depth in range(1, max((len(key_parts(k)) for k in keys), default=1) + 1):
        for key in keys:
            if key in names:
                continue
            parts = key_parts(key)
            tail = parts[-depth:]
            tail[-1] = SHORT_KEYS.get(tail[-1], tail[-1])
            names.setdefault(key, ".".join(tail))
        counts: dict[str, int] = {}
        for name in names.values():
            counts[name] = counts.get(name, 0) + 1
        names = {k: n for k, n in names.items() if counts[n] == 1 or len(key_parts(k)) <= depth}
        if len(names) == len(keys):
            break
    return names


def safe(name: str, limit: int = LIMIT) -> str:
    """Characters that nest directories (slashes) or need quoting become `-`; too long: cut, with a hash."""
    name = re.sub(r"[^\w.,=+\-\[\]()]+", "-", name)
    if len(name) > limit:
        name = f"{name[: limit - 9]}~{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def split_override(override: str) -> tuple[str, str]:
    key, _, value = str(override).partition("=")
    return key.strip(), value.strip()


def short_overrides(overrides: Iterable[str], exclude: Iterable[str] = ()) -> str:
    """`lr=3e-4,bs=64` for the overrides [model.optimizer.lr=0.0003, data.batch_size=64], in their order,
    without the excluded keys (paths, the logger, a sweep's shared values); empty without any."""
    excluded = {k.lstrip("+~") for k in exclude}
    pairs = [split_override(o) for o in overrides]
    pairs = [(k, v) for k, v in pairs if k.lstrip("+~") not in excluded]
    names = short_keys([k for k, _ in pairs])
    return safe(",".join(f"{names[k]}={short_value(v)}" for k, v in pairs))


def swept_keys(overrides: Iterable[str], exclude: Iterable[str] = ()) -> str:
    """`lr,bs`: the short names of a sweep's keys (those not excluded: the shared values are), the
    same in the sweep and in each of its jobs, where each key has one value."""
    excluded = {k.lstrip("+~") for k in exclude}
    keys = [k for k, _ in map(split_override, overrides) if k.lstrip("+~") not in excluded]
    names = short_keys(keys)
    return safe(",".join(names[k] for k in keys))


def study_name(overrides: Sequence[str]) -> str:
    """An Optuna study's name from its command's overrides: `search` and their short form, plus a hash
    of the overrides as typed (short forms of two different keys may read alike), so that the same
    command continues the same study and any other starts its own."""
    if not overrides:
        return "search"
    command = sorted(overrides)
    digest = hashlib.sha1(",".join(command).encode()).hexdigest()[:6]
    return f"search_{safe(short_overrides(command), LIMIT - 7)}_{digest}"


def with_separator(name: str, before: str = "", after: str = "") -> str:
    return f"{before}{name}{after}" if name else ""


def register() -> None:
    resolvers = {
        # A single run: `lr=3e-4,bs=64_` before its time and id (empty without overrides).
        "run_name_prefix": lambda overrides, exclude: with_separator(short_overrides(overrides, exclude), after="_"),
        # A sweep's job: `_lr=3e-4,bs=64` after its number.
        "job_name_suffix": lambda overrides, exclude: with_separator(short_overrides(overrides, exclude), before="_"),
        # A sweep: `lr,bs_` before its time and id: what it sweeps.
        "sweep_name_prefix": lambda overrides, exclude: with_separator(swept_keys(overrides, exclude), after="_"),
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register()
