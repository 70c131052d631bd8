"""Accuracy on foreign images: naive preprocessing (the tutorial's) against digitrec's.

    python -m benchmarks.foreign_images [--ckpt PATH ...] [--every 10] [--font-copies 10]

The set is regenerated from a seed (see benchmarks/foreign_set.py): every 10th MNIST test digit
(1000 digits, both the clean and the hard half of the test set) as photos of each variant,
and digits typed in every font found. The model defaults to the newest run under outputs/,
the one `make train` writes. Prints a markdown table; --json also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import foreign_set
from digitrec.data.mnist import load_mnist
from digitrec.errors import DigitrecError
from digitrec.inference.predict import Predictor, newest_run_checkpoint
from digitrec.inference.preprocess import preprocess


def read_set(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, list[bool], float]:
    """Both pipelines' 28x28 images of a set of files (naive and digitrec's), which digitrec could
    read, and digitrec's preprocessing time per image: done once, whatever the number of models."""
    naive = np.stack([foreign_set.naive_preprocess(image) for image in foreign_set.iter_images(paths)])
    started = time.perf_counter()
    ours, readable = [], []
    for path in paths:
        try:
            ours.append(preprocess(path))
            readable.append(True)
        except DigitrecError:  # a file digitrec cannot read counts as wrong
            ours.append(np.zeros((28, 28), dtype=np.float32))
            readable.append(False)
    seconds = time.perf_counter() - started
    return naive, np.stack(ours), readable, 1000 * seconds / len(paths)


def score(predictor: Predictor, prepared: tuple[np.ndarray, np.ndarray, list[bool], float], labels: list[int]) -> dict:
    """Accuracy of both pipelines on one set, for one model."""
    naive, ours, readable, ms = prepared
    labels = np.asarray(labels)
    naive_digits = np.array([p.digit for p in predictor.classify(naive)])
    our_digits = np.where(readable, [p.digit for p in predictor.classify(ours)], -1)
    return {
        "n": len(labels),
        "naive": float(np.mean(naive_digits == labels)),
        "digitrec": float(np.mean(our_digits == labels)),
        "unread": int(np.sum(~np.asarray(readable))),
        "ms_per_image": round(ms, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt", type=Path, action="append", help="model to measure, once per model to compare (default: the newest run under outputs/)"
    )
    parser.add_argument("--mnist-dir", default=os.environ.get("DIGITREC_MNIST_DIR"), help="MNIST folder (default: $DIGITREC_MNIST_DIR)")
    parser.add_argument("--every", type=int, default=10, help="use every N-th MNIST test digit (default: 10, i.e. 1000 digits)")
    parser.add_argument("--font-copies", type=int, default=10, help="photos of each digit in each font (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated set (default: 0)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    if not args.mnist_dir:
        parser.error("set DIGITREC_MNIST_DIR or pass --mnist-dir")

    try:
        ckpts = args.ckpt or [newest_run_checkpoint()]
        predictors = [Predictor.from_checkpoint(ckpt) for ckpt in ckpts]
    except DigitrecError as err:
        parser.error(str(err))
    names = [ckpt_name(ckpt) for ckpt in ckpts]
    names = [name if names.count(name) == 1 else f"{name} ({i + 1})" for i, name in enumerate(names)]  # two runs of one experiment
    mnist = load_mnist(args.mnist_dir)
    images, labels = mnist.test_images[:: args.every].numpy(), mnist.test_labels[:: args.every].numpy()
    ceilings = [float(np.mean([p.digit for p in predictor.classify(images / 255.0)] == labels)) for predictor in predictors]
    results: dict[str, dict[str, dict]] = {name: {} for name in names}

    def measure(key: str, paths: list[Path], digits: list[int]) -> None:
        prepared = read_set(paths)
        for name, predictor in zip(names, predictors):
            results[name][key] = score(predictor, prepared, digits)
        print(f"{key}: " + ", ".join(f"{n} {results[n][key]['digitrec']:.1%}" for n in names), file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        for variant in foreign_set.MNIST_VARIANTS:
            written = foreign_set.write_mnist_photos(Path(tmp) / variant, images, labels, variant, args.seed)
            measure(f"mnist/{variant}", *map(list, zip(*written)))
        written = foreign_set.write_font_digits(Path(tmp) / "fonts", foreign_set.find_fonts(), args.font_copies, args.seed)
        for font in dict.fromkeys(name for _, _, name in written):
            paths, digits = zip(*[(path, digit) for path, digit, name in written if name == font])
            measure(f"font/{font}", list(paths), list(digits))
        paths, digits, _ = zip(*written)
        measure("font/all", list(paths), list(digits))

    for name, ckpt, ceiling in zip(names, ckpts, ceilings):
        print(f"{name}: {ckpt}; the same {len(labels)} MNIST test digits as 28x28 originals: {ceiling:.1%}")
    first = results[names[0]]
    print(
        "\n| set | images | naive (resize + invert), "
        + names[0]
        + " | "
        + " | ".join(f"digitrec, {n}" for n in names)
        + " | preprocessing ms/image |"
    )
    print("| --- | ---: | ---: | " + "---: | " * len(names) + "---: |")
    for key, r in first.items():
        cells = " | ".join(f"{results[n][key]['digitrec']:.1%}" for n in names)
        print(f"| {key} | {r['n']} | {r['naive']:.1%} | {cells} | {r['ms_per_image']} |")
    if args.json:
        record = {n: {"ckpt": str(c), "mnist_originals": m, "results": results[n]} for n, c, m in zip(names, ckpts, ceilings)}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


def ckpt_name(ckpt: Path) -> str:
    """A short column name for a model: its run's experiment, else its run directory's name."""
    run_dir = Path(ckpt).resolve().parent
    if run_dir.name == "checkpoints":
        run_dir = run_dir.parent
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        for line in overrides.read_text().splitlines():
            if "experiment=" in line:
                return line.split("experiment=", 1)[1].strip()
        return "default"
    return run_dir.name[:40]


if __name__ == "__main__":
    sys.exit(main())
