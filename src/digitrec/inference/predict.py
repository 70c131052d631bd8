"""`digitrec predict`: the digit in image files, and the Python API behind it.

    from digitrec.inference.predict import Predictor
    predictor = Predictor.from_checkpoint("outputs/train/runs/<run>/model.ckpt")
    predictor.predict(["photo.jpg", pil_image, array])   # one Prediction per image

Only torch, numpy, Pillow and scipy are imported: the plain network is rebuilt from the checkpoint,
so a one-image prediction does not pay for Lightning's start-up.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from digitrec.errors import EXIT_FAILED_RUN, EXIT_USER_ERROR, DigitrecError, first_line
from digitrec.inference.preprocess import ImageLike, preprocess
from digitrec.nets.checkpoint import load_checkpoint
from digitrec.nets.networks import net_from_checkpoint
from digitrec.tracking import record

RUNS_ROOT = Path("outputs")


@dataclass(frozen=True)
class Prediction:
    digit: int
    probability: float
    top_k: list[tuple[int, float]]  # (digit, probability), most likely first
    image: np.ndarray = field(repr=False)  # float32 (28, 28) in [0, 1]: what the model saw


def load_net(path: str | Path, trusted: Sequence[str] = ()) -> nn.Module:
    """The trained network of a Lightning checkpoint or an exported model.ckpt, in eval mode.
    `trusted`: network classes besides digitrec's own that the file may name (see build_net)."""
    return net_from_checkpoint(load_checkpoint(path), path, trusted)


class Predictor:
    """A trained model that reads digits: load once, then predict as many images as you like."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net.eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, trusted: Sequence[str] = ()) -> Predictor:
        return cls(load_net(path, trusted))

    @torch.inference_mode()
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, 28, 28) images as the model reads them (float in [0, 1]) -> (N, classes) probabilities."""
        logits = self.net(torch.as_tensor(np.asarray(images, dtype=np.float32)))
        return torch.softmax(logits, dim=1).numpy()

    def classify(self, images: np.ndarray, top_k: int = 3) -> list[Prediction]:
        """Predictions for images already in the model's form, e.g. the output of `preprocess`."""
        images = np.asarray(images, dtype=np.float32)
        probabilities = self.probabilities(images)
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
        return [
            Prediction(int(best[0]), float(p[best[0]]), [(int(d), float(p[d])) for d in best], image)
            for p, best, image in zip(probabilities, order, images)
        ]

    def predict(self, images: ImageLike | Iterable[ImageLike], top_k: int = 3, batch_size: int = 256) -> list[Prediction]:
        """Predictions for image files, PIL images or arrays, each made MNIST-like first.

        One image may be passed alone; an array of shape (N, H, W) or (N, H, W, 3|4) is N images.
        Raises ImageError naming the first image that cannot be read or holds no digit.
        """
        results = []
        for outcome in self.predict_each(images, top_k, batch_size):
            if isinstance(outcome, ImageError):
                raise outcome
            results.append(outcome)
        return results

    def predict_one(self, image: ImageLike, top_k: int = 3) -> Prediction:
        return self.predict([image], top_k)[0]

    def predict_each(self, images: ImageLike | Iterable[ImageLike], top_k: int = 3, batch_size: int = 256) -> Iterator[Prediction | ImageError]:
        """Like `predict`, but in order and lazily, with an ImageError in place of each image that
        failed: for batch jobs, where one bad file must not stop the others."""
        for chunk in batched(as_image_list(images), batch_size):
            prepared, failures = [], {}
            for index, image in chunk:
                try:
                    prepared.append(preprocess(image))
                except DigitrecError as err:
                    failures[index] = ImageError(describe(image, index), str(err))
                except Exception as err:  # noqa: BLE001 - an odd file must not end the whole batch
                    detail = first_line(err, 120, fallback="")
                    failures[index] = ImageError(describe(image, index), f"could not be processed ({type(err).__name__}: {detail})")
            predictions = iter(self.classify(np.stack(prepared), top_k) if prepared else [])
            for index, _ in chunk:
                yield failures[index] if index in failures else next(predictions)


class ImageError(DigitrecError):
    """One image that could not be read or holds no digit; the batch goes on without it."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source, self.problem = source, problem


def as_image_list(images: ImageLike | Iterable[ImageLike]) -> list[ImageLike]:
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        array = np.asarray(images.detach().cpu() if isinstance(images, torch.Tensor) else images)
        single = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))
        return [array] if single else list(array)
    return list(images)


def batched(items: Sequence[Any], size: int) -> Iterator[list[tuple[int, Any]]]:
    for start in range(0, len(items), size):
        yield list(enumerate(items[start : start + size], start))


def describe(image: ImageLike, index: int) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"image {index}"


# --- the command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitrec predict",
        description=(
            "Recognise the digit in image files (photos, scans, any format Pillow reads). Each image is "
            "made MNIST-like first: polarity, lighting and tint corrected, the digit found, cropped, "
            "scaled to a 20 px box and centred by mass in 28x28."
        ),
        epilog="One line per file (`photo.jpg: 4 (0.97)`); unreadable files are reported and skipped; the exit code is 1 if any file failed.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to read")
    parser.add_argument(
        "--ckpt",
        metavar="PATH",
        help="model to use: a Lightning checkpoint (checkpoints/*.ckpt) or an exported model.ckpt "
        "(default: the best checkpoint of the newest successful training run under outputs/; for a sweep, its best job)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per file instead of text")
    parser.add_argument("--top-k", type=int, default=1, metavar="K", help="also list the K most likely digits (default: 1)")
    parser.add_argument(
        "--save-preprocessed",
        metavar="DIR",
        type=Path,
        help="write the 28x28 image the model saw for each input to DIR, as PNG (white digit on black)",
    )
    parser.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per model call (default: 256)")
    add_net_class_option(parser)
    return parser


def add_net_class_option(parser: argparse.ArgumentParser) -> None:
    """--net-class, for every command that rebuilds a network from a file (predict, export, serve)."""
    parser.add_argument(
        "--net-class",
        action="append",
        default=[],
        metavar="MODULE.CLASS",
        help="a network class of your own that the checkpoint names, to import and rebuild (digitrec's own nets need none; "
        "a checkpoint alone never makes digitrec import code)",
    )


def run_checkpoint(run_dir: Path, metrics: dict[str, Any] | None) -> Path | None:
    """The checkpoint of a successful training run: its best epoch, else its model.ckpt."""
    if metrics is None or record.status(metrics) != record.OK or (record.MODEL_PATH not in metrics and record.BEST_CKPT_PATH not in metrics):
        return None  # no record, failed, interrupted, or an evaluation (which names no checkpoint of its own)
    best = metrics.get(record.BEST_CKPT_PATH)
    candidates = ([Path(best), run_dir / best] if isinstance(best, str) and best else []) + [run_dir / "model.ckpt"]
    return next((c for c in candidates if c.is_file()), None)


def best_sweep_job(sweep_dir: Path) -> tuple[Path, str] | None:
    """The best successful job of a sweep or an Optuna search, by the sweep's own objective."""
    objective = record.objective_of(sweep_dir)
    ranked = []
    for metrics_file in sweep_dir.glob(f"*/{record.FILE_NAME}"):
        metrics = record.read_record(metrics_file.parent)
        value, ckpt = record.objective_value(metrics, objective), run_checkpoint(metrics_file.parent, metrics)
        if value is not None and ckpt is not None:
            ranked.append((record.rank_key(objective, value), metrics_file.parent.name, ckpt, value))
    if not ranked:
        return None
    _, job, ckpt, value = min(ranked)
    return ckpt, f"the best job ({objective} {value:.4f}) of the sweep {sweep_dir}, job {job}"


def choose_checkpoint(root: Path = RUNS_ROOT) -> tuple[Path, str]:
    """The model to use when none is named, and a description of where it comes from.

    The newest successful training run under `root` (its best epoch); when that is a sweep or an
    Optuna search, its best job. Failed, interrupted and unfinished runs and evaluations are skipped.
    """
    found = sorted(root.glob(f"**/{record.FILE_NAME}"), key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
    seen: set[Path] = set()
    for metrics_file in found:
        run_dir = metrics_file.parent
        sweep_dir = run_dir.parent
        if (sweep_dir / "multirun.yaml").is_file() or (sweep_dir / "optuna.db").is_file():
            if sweep_dir in seen:
                continue
            seen.add(sweep_dir)
            best = best_sweep_job(sweep_dir)
            if best:
                return best
            continue
        ckpt = run_checkpoint(run_dir, record.read_record(run_dir))
        if ckpt is not None:
            return ckpt, f"the newest successful training run under {root}/"
    if found:
        raise DigitrecError(
            f"no successful training run with a checkpoint under {root}/ (only failed or unfinished runs, or evaluations): train one with `digitrec train`, or pass --ckpt PATH"
        )
    raise DigitrecError(f"no trained model found under {root}/: train one with `digitrec train`, or pass --ckpt PATH")


def newest_run_checkpoint(root: Path = RUNS_ROOT) -> Path:
    """The checkpoint `digitrec predict` uses without --ckpt (see choose_checkpoint)."""
    return choose_checkpoint(root)[0]


def preprocessed_path(folder: Path, image: str, taken: set[str]) -> Path:
    """DIR/<name>.png, numbered when two inputs share a name (a/1.png and b/1.png)."""
    stem, number = Path(image).stem or "image", 1
    name = f"{stem}.png"
    while name in taken:
        number += 1
        name = f"{stem}-{number}.png"
    taken.add(name)
    return folder / name


def main(argv: list[str]) -> int:
    """`digitrec predict ...`: 0 if every file was read, 1 if any failed, 2 for usage errors."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # argparse has printed the usage and the problem
        return int(exit.code or 0)
    if args.top_k < 1 or args.batch_size < 1:
        parser.print_usage(sys.stderr)
        print("digitrec predict: error: --top-k and --batch-size must be at least 1", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        if args.ckpt:
            ckpt = Path(args.ckpt)
        else:
            ckpt, source = choose_checkpoint()
            print(f"digitrec predict: using {ckpt}, from {source} (--ckpt PATH to choose)", file=sys.stderr)
        predictor = Predictor.from_checkpoint(ckpt, args.net_class)
    except DigitrecError as err:
        print(f"digitrec: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    if args.save_preprocessed:
        try:
            args.save_preprocessed.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            print(f"digitrec: error: cannot create the folder {args.save_preprocessed}: {err.strerror or err}", file=sys.stderr)
            return EXIT_USER_ERROR

    failed, saved_names = 0, set()
    for path, outcome in zip(args.images, predictor.predict_each(args.images, args.top_k, args.batch_size)):
        result: dict[str, Any] = {"path": path}
        if isinstance(outcome, ImageError):
            result["error"] = outcome.problem
        else:
            result.update(digit=outcome.digit, probability=round(outcome.probability, 4))
            result["top_k"] = [{"digit": d, "probability": round(q, 4)} for d, q in outcome.top_k]
            if args.save_preprocessed:
                out = preprocessed_path(args.save_preprocessed, path, saved_names)
                try:
                    Image.fromarray(np.round(outcome.image * 255).astype(np.uint8)).save(out)
                    result["preprocessed"] = str(out)
                except OSError as err:
                    result["error"] = f"cannot write {out}: {err.strerror or err}"
        failed += "error" in result
        print_record(result, args.json, args.top_k)
    return EXIT_FAILED_RUN if failed else 0


def print_record(result: dict[str, Any], as_json: bool, top_k: int) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
    elif "error" in result:
        print(f"{result['path']}: error: {result['error']}", file=sys.stderr, flush=True)
    else:
        line = f"{result['path']}: {result['digit']} ({result['probability']:.2f})"
        if top_k > 1:
            line += "  top-{}: {}".format(top_k, ", ".join(f"{t['digit']} ({t['probability']:.2f})" for t in result["top_k"]))
        print(line, flush=True)
