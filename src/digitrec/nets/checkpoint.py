"""Reading and writing digitrec checkpoints safely.

Two kinds of file hold a model, and both are dicts of plain types with the same two keys,
so one loader serves both:
- Lightning checkpoints (`checkpoints/*.ckpt`): `state_dict`, `hyper_parameters`, plus
  optimizer and loop state for resuming.
- the exported `model.ckpt`: only `state_dict` and `hyper_parameters` (and a format tag).
Every load passes `weights_only=True` explicitly: a pickle payload never runs. Every load also
returns today's form (`upgrade`), whichever digitrec version wrote the file: the rest of digitrec
knows only one.
"""

from __future__ import annotations

import errno
import io
import os
import pickletools
import secrets
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from digitrec.errors import DigitrecError, RunFailed, first_line

# /2: hyper_parameters hold net/optimizer/scheduler records with a _target_; /1 (the tutorial's MLP
# as flat keys) still loads, upgraded by `upgrade`.
EXPORT_FORMAT = "digitrec.model/2"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a digitrec checkpoint (Lightning or exported) without running any pickled code, in
    today's form (digitrec.model/2) whatever version wrote it."""
    path = Path(path)
    checkpoint = read_torch_file(path)
    if not is_model_checkpoint(checkpoint):
        raise DigitrecError(
            f"checkpoint {path} is not a digitrec model (no state_dict/hyper_parameters): use checkpoints/*.ckpt or model.ckpt from a digitrec run"
        )
    try:
        return upgrade(checkpoint)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        detail = f"no {err.args[0]}" if isinstance(err, KeyError) else first_line(err)
        raise DigitrecError(
            f"checkpoint {path} does not match the digitrec model: its hyper_parameters are of no digitrec version ({detail})"
        ) from None


def is_model_checkpoint(checkpoint: Any) -> bool:
    return isinstance(checkpoint, dict) and "state_dict" in checkpoint and "hyper_parameters" in checkpoint


def read_torch_file(path: Path) -> Any:
    """torch.load with weights_only=True, every way it can fail said in one line."""
    if not path.exists():
        raise DigitrecError(f"checkpoint {path} does not exist: pass the path of a .ckpt file from a run's directory")
    if path.is_dir():
        raise DigitrecError(f"checkpoint {path} is a directory: pass a .ckpt file inside it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. about the pickle protocol of a file about to be refused
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (a file of any content: torch raises a dozen kinds, KeyError and struct.error among them)
        unsafe = unsafe_globals(path)
        if unsafe:
            raise DigitrecError(
                f"checkpoint {path} was refused: it asks to run code ({', '.join(unsafe[:3])}), not only to hold tensors "
                "and plain types; it was not loaded. Only load checkpoints written by digitrec"
            ) from None
        raise DigitrecError(f"checkpoint {path} is not a readable PyTorch file ({type(err).__name__}): it may be truncated or corrupt") from None
    return checkpoint


# digitrec.model/1's optimizer and lr_schedule names (the names a v1 file may hold).
V1_OPTIMIZERS = {"adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW", "sgd": "torch.optim.SGD"}


def upgrade(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A loaded checkpoint in today's form, changed in place: the one place that knows older formats.

    digitrec.model/1 (before networks were configurable): the tutorial's MLP as flat hyper_parameters
    (optimizer and schedule by name), and the MLP's normalisation as its own `net.mean`/`net.std`,
    today the `net.normalize` module's. Lightning checkpoints of that time are the same, without the tag.
    """
    hyper_parameters = checkpoint["hyper_parameters"]
    if not isinstance(hyper_parameters, dict) or not isinstance(checkpoint["state_dict"], dict):
        raise TypeError("hyper_parameters and state_dict must be dicts")
    if "net" in hyper_parameters:
        return checkpoint
    checkpoint["hyper_parameters"] = upgrade_hyper_parameters(hyper_parameters)
    state = checkpoint["state_dict"]
    for name in ("mean", "std"):
        if f"net.{name}" in state:
            state[f"net.normalize.{name}"] = state.pop(f"net.{name}")
    if "format" in checkpoint:
        checkpoint["format"] = EXPORT_FORMAT
    return checkpoint


def upgrade_hyper_parameters(hp: dict[str, Any]) -> dict[str, Any]:
    """digitrec.model/1's hyper_parameters as net/optimizer/scheduler records.

    Every v1 file holds the MLP's input_size, hidden_sizes, num_classes, mean, std and the lr; the
    optimizer, weight_decay, momentum and lr_schedule came later within v1: files without them
    trained with Adam at torch's default weight decay, and no schedule.
    """
    net = {
        "_target_": "digitrec.nets.MLP",
        "input_size": int(hp["input_size"]),
        "hidden_sizes": [int(h) for h in hp["hidden_sizes"]],
        "num_classes": int(hp["num_classes"]),
        "mean": float(hp["mean"]),
        "std": float(hp["std"]),
    }
    name = str(hp.get("optimizer", "adam"))
    optimizer: dict[str, Any] = {"_target_": V1_OPTIMIZERS[name], "_partial_": True, "lr": float(hp["lr"])}
    if "weight_decay" in hp:
        optimizer["weight_decay"] = float(hp["weight_decay"])
    if name == "sgd":  # SGD came with momentum: a file that names it holds both
        momentum = float(hp["momentum"])
        optimizer.update(momentum=momentum, nesterov=momentum > 0)
    scheduler = None
    if hp.get("lr_schedule") == "cosine":  # v1's other schedule, "constant", is none
        scheduler = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True, "T_max": None, "interval": "step"}
    return {"net": net, "optimizer": optimizer, "scheduler": scheduler, "label_smoothing": 0.0}


# What a pickle needs to rebuild tensors and plain containers; anything else it imports is code.
SAFE_GLOBAL_PREFIXES = (
    "torch.",
    "collections.OrderedDict",
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
    "builtins.slice",
    "builtins.complex",
    "numpy.",
)


def unsafe_globals(path: Path) -> list[str]:
    """The callables a checkpoint's pickle would import (and so could run) beyond tensors and plain
    types, found by reading its opcodes, never by running them: whatever torch's error says."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [archive.read(n) for n in archive.namelist() if n.endswith(".pkl")]
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError):
        try:
            pickles = [path.read_bytes()]  # torch's legacy format: plain pickles one after another
        except OSError:
            return []
    found: list[str] = []
    for data in pickles:
        stream, strings = io.BytesIO(data), []
        try:
            while stream.tell() < len(data):  # genops stops at each pickle's end: read the next one too
                for opcode, arg, _ in pickletools.genops(stream):
                    if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING", "STRING"):
                        strings.append(str(arg))
                    elif opcode.name == "GLOBAL":
                        found.append(str(arg).replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
        except Exception:  # noqa: BLE001  (the rest of a damaged pickle cannot be read: judge what was)
            pass
    names = {name.replace("__builtin__.", "builtins.", 1) for name in found}  # protocol 2 spells builtins the Python 2 way
    return sorted(name for name in names if not name.startswith(SAFE_GLOBAL_PREFIXES))


def export_model(model: torch.nn.Module, path: str | Path) -> Path:
    """Write the tutorial's `model.ckpt` from a trained DigitClassifier: its weights and hyper_parameters."""
    return save_model_file(dict(model.hparams), model.state_dict(), path)


def save_model_file(hyper_parameters: dict[str, Any], state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a `model.ckpt`: the weights plus what is needed to rebuild the model (plain types only)."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    atomic_save({"format": EXPORT_FORMAT, "hyper_parameters": dict(hyper_parameters), "state_dict": state}, path)
    return path


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save into a new file beside `path`, flushed to disk, then renamed over `path`.

    A crash, a kill or a full disk at any point leaves either the old file or the new one under
    the final name, never a truncated one; on failure the partial file is removed.
    """
    # Serialised in memory first (as Lightning does): a failed write then raises an OSError that
    # says why (disk full, file size limit), where torch's own file writer only says "unexpected pos".
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # os.open with 0o666, not tempfile (0o600): the file gets the same permissions as torch.save's.
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError as err:
        temp.unlink(missing_ok=True)
        raise RunFailed(f"{write_failure(err)} writing {path}; {last_good(path)}") from None
    # The rename itself reaches the disk only with its directory.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_failure(err: BaseException) -> str:
    code = getattr(err, "errno", None)
    if code == errno.ENOSPC:
        return "no space left on device"
    if code == errno.EFBIG:
        return "file size limit exceeded"
    return f"write error ({first_line(err, 120)})"


def last_good(path: Path) -> str:
    """Which checkpoint survives a failed write of `path`, for the error message."""
    if path.is_file():
        return f"the previous {path.name} is intact"
    others = sorted((p for p in path.parent.glob("*.ckpt") if p.is_file()), key=lambda p: p.stat().st_mtime)
    return f"the last good checkpoint is {others[-1]}" if others else "no earlier checkpoint was written"


def is_url(path: str) -> bool:
    return "://" in path or path.startswith("file:") or "::" in path


def resume_checkpoint(ckpt_path: str) -> Path:
    """The local checkpoint file a resume will read (absolute), refused with one line if it is not one."""
    if is_url(ckpt_path):
        raise DigitrecError(
            f"ckpt_path={ckpt_path} is a URL: digitrec resumes only from local files it can check first; download it, then pass the file"
        )
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise DigitrecError(f"ckpt_path={ckpt_path} {what}: pass a checkpoint file, e.g. outputs/train/runs/<run>/checkpoints/last.ckpt")
    return path.resolve()


def run_dir_of(ckpt_path: str) -> Path | None:
    """The run directory that holds a checkpoint (RUN/checkpoints/NAME.ckpt, RUN/.hydra), or None."""
    if is_url(ckpt_path):
        return None
    path = Path(ckpt_path).expanduser().resolve()
    run_dir = path.parent.parent
    if path.is_file() and path.parent.name == "checkpoints" and (run_dir / ".hydra").is_dir():
        return run_dir
    return None
