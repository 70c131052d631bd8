"""Accuracy on foreign images: naive preprocessing (the tutorial's) against digitrec's.

    python -m benchmarks.foreign_images [--ckpt PATH] [--every 10] [--font-copies 10]

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
from digitrec.errors import DigitrecError
from digitrec.mnist import load_mnist
from digitrec.predict import ImageError, Predictor, newest_run_checkpoint


def score(predictor: Predictor, paths: list[Path], labels: list[int]) -> dict:
    """Accuracy of both pipelines on image files, and digitrec's preprocessing time per image."""
    labels = np.asarray(labels)
    naive = np.stack([foreign_set.naive_preprocess(image) for image in foreign_set.iter_images(paths)])
    naive_digits = np.array([p.digit for p in predictor.classify(naive)])
    started = time.perf_counter()
    # A file digitrec cannot read counts as wrong (-1 matches no label).
    ours = np.array([-1 if isinstance(p, ImageError) else p.digit for p in predictor.predict_each(paths)])
    seconds = time.perf_counter() - started
    return {
        "n": len(labels),
        "naive": float(np.mean(naive_digits == labels)),
        "digitrec": float(np.mean(ours == labels)),
        "unread": int(np.sum(ours == -1)),
        "ms_per_image": round(1000 * seconds / len(labels), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="model to measure (default: the newest run under outputs/)")
    parser.add_argument("--mnist-dir", default=os.environ.get("DIGITREC_MNIST_DIR"), help="MNIST folder (default: $DIGITREC_MNIST_DIR)")
    parser.add_argument("--every", type=int, default=10, help="use every N-th MNIST test digit (default: 10, i.e. 1000 digits)")
    parser.add_argument("--font-copies", type=int, default=10, help="photos of each digit in each font (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated set (default: 0)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    if not args.mnist_dir:
        parser.error("set DIGITREC_MNIST_DIR or pass --mnist-dir")

    try:
        ckpt = args.ckpt or newest_run_checkpoint()
        predictor = Predictor.from_checkpoint(ckpt)
    except DigitrecError as err:
        parser.error(str(err))
    mnist = load_mnist(args.mnist_dir)
    images, labels = mnist.test_images[:: args.every].numpy(), mnist.test_labels[:: args.every].numpy()
    ceiling = float(np.mean([p.digit for p in predictor.classify(images / 255.0)] == labels))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in foreign_set.MNIST_VARIANTS:
            written = foreign_set.write_mnist_photos(Path(tmp) / variant, images, labels, variant, args.seed)
            results[f"mnist/{variant}"] = score(predictor, *map(list, zip(*written)))
            print(f"{variant}: {results[f'mnist/{variant}']}", file=sys.stderr, flush=True)
        written = foreign_set.write_font_digits(Path(tmp) / "fonts", foreign_set.find_fonts(), args.font_copies, args.seed)
        for font in dict.fromkeys(name for _, _, name in written):
            paths, digits = zip(*[(path, digit) for path, digit, name in written if name == font])
            results[f"font/{font}"] = score(predictor, list(paths), list(digits))
        paths, digits, _ = zip(*written)
        results["font/all"] = score(predictor, list(paths), list(digits))

    print(f"model: {ckpt}; the same {len(labels)} MNIST test digits as 28x28 originals: {ceiling:.1%}\n")
    print("| set | images | naive (resize + invert) | digitrec | preprocessing ms/image |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['n']} | {r['naive']:.1%} | {r['digitrec']:.1%} | {r['ms_per_image']} |")
    if args.json:
        args.json.write_text(json.dumps({"ckpt": str(ckpt), "mnist_originals": ceiling, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
