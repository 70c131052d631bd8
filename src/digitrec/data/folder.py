"""A folder of your own labelled digits, in torchvision's ImageFolder layout (ROOT/0/ ... ROOT/9/).

Each image goes through `digitrec predict`'s own preprocessing (digitrec.inference.preprocess), so
the model trains on exactly the 28x28 images it will see at predict time. That takes ~10-20 ms an
image, so the prepared tensors are cached in the user cache (never in the folder, which is only
read), under a key made of every file's content, its path and digit, and the preprocessing's own
source: a second run reads the cache; a changed, added or removed file (or a changed
preprocessing) prepares the folder again.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from digitrec.errors import DigitrecError, first_line
from digitrec.inference import preprocess as preprocessing

log = logging.getLogger(__name__)

DIGITS = tuple(str(d) for d in range(10))
LAYOUT = "one subfolder per digit, 0/ to 9/, each holding that digit's image files (torchvision's ImageFolder layout)"
# How many unreadable files a message names before it says "and N more".
SHOWN = 5


@dataclass
class PreparedFolder:
    images: torch.Tensor  # float32 (N, 28, 28) in [0, 1], white on black: what predict feeds the model
    labels: torch.Tensor  # int64 (N,)
    files: list[str]  # each image's path relative to the folder, as "4/a.png"
    bad: list[tuple[str, str]]  # files that could not be used: (relative path, why)


def list_images(root: str | Path) -> list[tuple[Path, int]]:
    """(file, digit) for every file under ROOT/0/ ... ROOT/9/, in a stable order; one line for each
    way the folder is not such a folder."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DigitrecError(f"data.root={root} does not exist: point it at a folder with {LAYOUT}")
    if not root.is_dir():
        raise DigitrecError(f"data.root={root} is a file, not a folder: point it at a folder with {LAYOUT}")
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    others = [p.name for p in subfolders if p.name not in DIGITS]
    if others:
        raise DigitrecError(
            f"data.root={root} has subfolders that are not digits 0-9 ({', '.join(others[:SHOWN])}): it needs {LAYOUT}; move the others out"
        )
    if not subfolders:
        raise DigitrecError(f"data.root={root} has no digit subfolders: it needs {LAYOUT}")
    found = []
    for folder in subfolders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
        if not files:
            raise DigitrecError(f"data.root={root}: the digit folder {folder.name}/ holds no image files: add images of {folder.name} or remove it")
        found += [(path, int(folder.name)) for path in files]
    return found


def cache_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "digitrec" / "folders"


def content_key(root: Path, files: list[tuple[Path, int]]) -> str:
    """What the prepared tensors depend on: each file's path, digit and bytes, and the preprocessing code."""
    key = hashlib.sha256(inspect.getsource(preprocessing).encode())
    for path, label in files:
        key.update(f"{path.relative_to(root).as_posix()}\0{label}\0".encode())
        key.update(hashlib.sha256(path.read_bytes()).digest())
    return key.hexdigest()


def prepare_folder(root: str | Path, skip_bad_images: bool = False, say_skipped: bool = True) -> PreparedFolder:
    """The folder's images as predict sees them, from the cache when nothing changed.

    Files that cannot be used (not an image, corrupt, no digit in them) stop it with one line
    naming them, unless skip_bad_images: then they are left out, and said so in one line (unless
    not say_skipped: the command's check prepares the folder before the run, which then says it)."""
    root = Path(root).expanduser()
    files = list_images(root)
    cached = cache_dir() / f"{content_key(root, files)}.pt"
    prepared = read_cache(cached)
    if prepared is None:
        prepared = prepare(root, files)
        write_cache(cached, prepared)
    if prepared.bad:
        shown = "; ".join(f"{path}: {why}" for path, why in prepared.bad[:SHOWN])
        more = f"; and {len(prepared.bad) - SHOWN} more" if len(prepared.bad) > SHOWN else ""
        summary = f"{len(prepared.bad)} of {len(files)} files in {root} cannot be used ({shown}{more})"
        if not skip_bad_images:
            raise DigitrecError(f"{summary}: fix or remove them, or leave them out with data.skip_bad_images=true")
        if say_skipped:
            log.warning("%s: left out (data.skip_bad_images=true)", summary)
    if not len(prepared.labels):
        raise DigitrecError(f"data.root={root}: none of its {len(files)} files is a usable digit image")
    return prepared


def prepare(root: Path, files: list[tuple[Path, int]]) -> PreparedFolder:
    images, labels, names, bad = [], [], [], []
    for path, label in files:
        name = path.relative_to(root).as_posix()
        try:
            images.append(preprocessing.preprocess(path))
        except DigitrecError as err:  # the preprocessing's own one-line reasons
            bad.append((name, str(err)))
            continue
        except Exception as err:  # noqa: BLE001  (an odd file must not end the others' preparation)
            bad.append((name, f"could not be processed ({type(err).__name__}: {first_line(err, 120, fallback='')})"))
            continue
        labels.append(label)
        names.append(name)
    stacked = torch.from_numpy(np.stack(images)) if images else torch.zeros(0, 28, 28)
    return PreparedFolder(stacked.float(), torch.tensor(labels, dtype=torch.long), names, bad)


def read_cache(path: Path) -> PreparedFolder | None:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return PreparedFolder(saved["images"], saved["labels"], list(saved["files"]), [tuple(b) for b in saved["bad"]])
    except Exception:  # noqa: BLE001  (missing, damaged or from another version: prepare again)
        return None


def write_cache(path: Path, prepared: PreparedFolder) -> None:
    """Written under a temporary name, then renamed: two runs preparing at once never read half a file."""
    saved = {"images": prepared.images, "labels": prepared.labels, "files": prepared.files, "bad": [list(b) for b in prepared.bad]}
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(saved, temp)
        os.replace(temp, path)
    except OSError as err:  # an unwritable cache only costs preparing again next time
        temp.unlink(missing_ok=True)
        log.warning("could not cache the prepared images in %s (%s)", path.parent, first_line(err))


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val): val_fraction of each digit's images held out (seeded), at least one
    per digit that has two or more, and never a digit's last training image."""
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for digit in labels.unique(sorted=True):
        members = (labels == digit).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        held = min(len(members) - 1, max(1, round(len(members) * val_fraction)))
        val.append(members[:held])
        train.append(members[held:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values
