"""Fixtures shared by the predict, preprocess and export tests: a trained model and image files.

Test modules import the fixtures they use; the model is trained once per test session even
when several modules import its fixture (the result is cached here).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digitrec.nets.checkpoint import export_model

_TRAINED: dict[str, Path] = {}


def train_model(mnist, folder: Path, epochs: int = 2, seed: int = 0) -> Path:
    """The tutorial's model and optimiser on all 60k training digits, saved as model.ckpt.

    A plain loop over in-memory tensors: seconds on a CPU, about 97% on the MNIST test set.
    One thread: steps this small run several times slower when threads fight over busy cores.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(mnist, folder, epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _train(mnist, folder: Path, epochs: int, seed: int) -> Path:
    from digitrec.training.classifier import DigitClassifier

    torch.manual_seed(seed)
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=model.lr)
    images, labels = mnist.train_images, mnist.train_labels
    for _ in range(epochs):
        order = torch.randperm(len(labels))
        for start in range(0, len(labels), 100):
            batch = order[start : start + 100]
            loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return export_model(model.eval(), folder / "model.ckpt")


@pytest.fixture(scope="session")
def model_ckpt(mnist, tmp_path_factory) -> Path:
    if "model" not in _TRAINED:
        _TRAINED["model"] = train_model(mnist, tmp_path_factory.mktemp("trained"))
    return _TRAINED["model"]


@pytest.fixture(scope="session")
def predictor(model_ckpt):
    from digitrec.inference.predict import Predictor

    return Predictor.from_checkpoint(model_ckpt)


def lightning_style_checkpoint(model_ckpt: Path, path: Path) -> Path:
    """The same weights in the layout of a Lightning checkpoint (loop and optimizer state too)."""
    exported = torch.load(model_ckpt, weights_only=True)
    torch.save(
        {
            "epoch": 1,
            "global_step": 1100,
            "pytorch-lightning_version": "2.5.0",
            "state_dict": exported["state_dict"],
            "hyper_parameters": exported["hyper_parameters"],
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}],
            "loops": {},
            "callbacks": {},
        },
        path,
    )
    return path


class Payload:
    """Unpickling this runs `open(marker, "w")`: proof that a checkpoint's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint that looks like ours but creates `marker` if anything unpickles it unsafely."""
    torch.save({"state_dict": {}, "hyper_parameters": {}, "payload": Payload(marker)}, path)
    return path


def mnist_digit_png(mnist, index: int, path: Path, size: int = 140) -> Path:
    """MNIST test digit `index` as a dark-on-light photo-like PNG (upscaled, off-centre)."""
    digit = Image.fromarray(mnist.test_images[index].numpy()).resize((size, size), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (size * 2, size + 40), 0)
    canvas.paste(digit, (size // 3, 25))
    Image.eval(canvas, lambda v: 235 - v * 200 // 255).save(path)
    return path


def ink_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """How alike two preprocessed images are (1 = identical up to brightness)."""
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def crafted_png(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
