"""The four official MNIST files: find them, verify their SHA-256, parse them into tensors.

A folder may hold each file raw or gzipped (`train-images-idx3-ubyte` or `...ubyte.gz`).
Checksums are those of the uncompressed files, as published, so any copy can be checked.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from digitrec.errors import DigitrecError, first_line

SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
HOW_TO_PROVIDE = (
    "set DIGITREC_MNIST_DIR (or data.data_dir=...) to a folder with the four official MNIST files, "
    "or run with data.download=true where a network is available"
)


class MNISTTensors(NamedTuple):
    train_images: torch.Tensor  # uint8 (60000, 28, 28)
    train_labels: torch.Tensor  # int64 (60000,)
    test_images: torch.Tensor  # uint8 (10000, 28, 28)
    test_labels: torch.Tensor  # int64 (10000,)


def find_file(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DigitrecError(f"MNIST file {name}[.gz] is missing from {folder}: {HOW_TO_PROVIDE}")


def read_verified(path: Path, name: str) -> bytes:
    """The uncompressed bytes of one MNIST file, after checking them against the published hash."""
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DigitrecError(f"MNIST file {path} cannot be read ({err}): replace it with a good copy; {HOW_TO_PROVIDE}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[name]:
        raise DigitrecError(
            f"MNIST file {path} has SHA-256 {digest[:16]}..., expected {SHA256[name][:16]}...: "
            f"it is corrupt or not the official file; replace it with a good copy ({HOW_TO_PROVIDE})"
        )
    return data


def parse_idx(data: bytes) -> torch.Tensor:
    """Parse an IDX file of unsigned bytes (magic 0x0000 08 NDIM, then NDIM big-endian sizes)."""
    ndim = data[3]
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    return torch.from_numpy(array.copy())


def load_mnist(folder: str | Path) -> MNISTTensors:
    """Load and verify the official train and test sets from a folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DigitrecError(f"MNIST folder {folder} does not exist: {HOW_TO_PROVIDE}")
    tensors = {name: parse_idx(read_verified(find_file(folder, name), name)) for name in SHA256}
    return MNISTTensors(
        train_images=tensors["train-images-idx3-ubyte"],
        train_labels=tensors["train-labels-idx1-ubyte"].long(),
        test_images=tensors["t10k-images-idx3-ubyte"],
        test_labels=tensors["t10k-labels-idx1-ubyte"].long(),
    )


def download_mnist(root: str | Path) -> Path:
    """Download MNIST from the official mirrors with torchvision; returns the folder of raw files."""
    from torchvision.datasets import MNIST  # only needed when downloading

    root = Path(root).expanduser()
    # torchvision prints a line per mirror tried; on failure the one line below says it all.
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            MNIST(str(root), train=True, download=True)
            MNIST(str(root), train=False, download=True)
    except (RuntimeError, OSError) as err:
        raise DigitrecError(f"MNIST download into {root} failed ({first_line(err, 160)}): {HOW_TO_PROVIDE}") from None
    return root / "MNIST" / "raw"
