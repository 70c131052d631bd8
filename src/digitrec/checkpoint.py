"""Reading and writing digitrec checkpoints safely.

Two kinds of file hold a model, and both are dicts of plain types with the same two keys,
so one loader serves both:
- Lightning checkpoints (`checkpoints/*.ckpt`): `state_dict`, `hyper_parameters`, plus
  optimizer and loop state for resuming.
- the exported `model.ckpt`: only `state_dict` and `hyper_parameters` (and a format tag).
Every load passes `weights_only=True` explicitly: a pickle payload never runs.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from digitrec.errors import DigitrecError, first_line

if TYPE_CHECKING:
    from digitrec.model import DigitClassifier

EXPORT_FORMAT = "digitrec.model/1"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a digitrec checkpoint (Lightning or exported) without running any pickled code."""
    path = Path(path)
    if not path.exists():
        raise DigitrecError(f"checkpoint {path} does not exist: pass the path of a .ckpt file from a run's directory")
    if path.is_dir():
        raise DigitrecError(f"checkpoint {path} is a directory: pass a .ckpt file inside it")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # "Unsupported global" means the file asks to run code (a pickled class or function);
        # anything else means it is not a checkpoint at all.
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if unsafe:
            raise DigitrecError(
                f"checkpoint {path} was refused: it holds a pickled object ({unsafe.group(1)}), not only tensors "
                "and plain types; only load checkpoints written by digitrec"
            ) from None
        raise DigitrecError(f"checkpoint {path} is not a readable PyTorch file: it may be truncated or corrupt") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise DigitrecError(f"checkpoint {path} is not a readable PyTorch file ({type(err).__name__}): it may be truncated or corrupt") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise DigitrecError(
            f"checkpoint {path} is not a digitrec model (no state_dict/hyper_parameters): "
            "use checkpoints/*.ckpt or model.ckpt from a digitrec run"
        )
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any], source: str | Path = "checkpoint") -> DigitClassifier:
    """Rebuild the trained model from a loaded checkpoint alone."""
    # Imported here: `load_checkpoint` serves `digitrec predict`, which must not pay for Lightning.
    from digitrec.model import DigitClassifier

    try:
        model = DigitClassifier(**checkpoint["hyper_parameters"])
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, RuntimeError, KeyError) as err:
        raise DigitrecError(f"checkpoint {source} does not match the digitrec model: {first_line(err)}") from None
    return model.eval()


def load_model(path: str | Path) -> DigitClassifier:
    return model_from_checkpoint(load_checkpoint(path), path)


def export_model(model: DigitClassifier, path: str | Path) -> Path:
    """Write the tutorial's `model.ckpt`: the weights plus what is needed to rebuild the model."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": EXPORT_FORMAT, "hyper_parameters": dict(model.hparams), "state_dict": state}, path)
    return path
