"""digitrec eval: a test set on a checkpoint, the model rebuilt from the file alone.

Besides test/acc: each digit's accuracy and the confusion matrix (printed, in metrics.json, in
TensorBoard), and for a folder of images (data=folder) the files it read wrong, in misread.csv.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from digitrec.config.checks import trusted_classes
from digitrec.config.job import run_overrides
from digitrec.tracking import record
from digitrec.tracking.viewers import viewer_commands
from digitrec.training.classifier import DigitClassifier, load_model
from digitrec.training.console import print_breakdown, print_summary, tested_images
from digitrec.training.trainer import build_trainer, setup_run

MISREAD_FILE = "misread.csv"


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    setup_run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    model = load_model(cfg.ckpt_path, trusted_classes(cfg))
    datamodule = instantiate(cfg.data)
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    trainer = build_trainer(cfg, loggers)
    results = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    if not trainer.is_global_zero:
        return {}
    tested = tested_images(trainer)
    predicted, labels, probability = predictions(model, datamodule.test_split, tested)
    classes = model.num_classes
    matrix = torch.bincount(labels * classes + predicted, minlength=classes * classes).view(classes, classes)
    per_digit = {str(d): round(float(matrix[d, d] / matrix[d].sum()), 4) for d in range(classes) if matrix[d].sum()}
    metrics = {
        **{k: float(v) for k, v in results.items()},
        "test/images": tested,
        record.CKPT_PATH: str(cfg.ckpt_path),
        record.HYPER_PARAMETERS: dict(model.hparams),
        record.OVERRIDES: run_overrides(),
        "test/acc_per_digit": per_digit,
        "test/confusion_matrix": matrix.tolist(),
    }
    for logger in loggers:  # the matrix itself is drawn by the test_figures callback
        logger.log_metrics({f"test/acc_digit_{d}": acc for d, acc in per_digit.items()}, step=trainer.global_step)
        # trainer.test has finalized the loggers already: without a flush these late values may still
        # sit in the TensorBoard writer's queue when the process exits (seen on a loaded machine).
        logger.save()
    files = getattr(datamodule, "test_files", None)
    if files is not None:
        wrong = (predicted != labels).nonzero().flatten().tolist()
        metrics["misread"] = str(write_misread(run_dir / MISREAD_FILE, Path(cfg.data.root), files, wrong, labels, predicted, probability))
        metrics["misread_count"] = len(wrong)
        root = Path(cfg.data.root).expanduser().resolve()
        metrics["test/set"] = (
            f"(every image of {root}: {len(files):,})" if tested == len(files) else f"({tested:,} of the {len(files):,} images of {root})"
        )
    record.write_record(run_dir, metrics)
    print_breakdown(per_digit, matrix.tolist(), metrics.get("misread"), metrics.get("misread_count"))
    print_summary("evaluation done", metrics, viewer_commands(cfg.get("logger"), run_dir))
    return metrics


@torch.no_grad()
def predictions(model: DigitClassifier, split, tested: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tested images' predictions and their probabilities (one more pass, on the CPU: seconds for 10k).

    The test loader is not shuffled, so with trainer.limit_test_batches the images tested are the
    split's first `tested` (on one process; under DDP each process tests every N-th image of its
    batches, and the breakdown covers the first `tested` images instead: as many, not the same)."""
    model = model.cpu().eval()
    images, labels = split.images[:tested].cpu(), split.labels[:tested].cpu()
    probabilities = torch.cat([model(images[i : i + 1000]).softmax(dim=1) for i in range(0, len(labels), 1000)])
    probability, predicted = probabilities.max(dim=1)
    return predicted, labels, probability


def write_misread(path: Path, root: Path, files: list[str], wrong: list[int], labels, predicted, probability) -> Path:
    """The images read wrong, surest mistakes first: path, true digit, predicted digit, its probability."""
    wrong = sorted(wrong, key=lambda i: -float(probability[i]))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "true", "predicted", "probability"])
        for i in wrong:
            writer.writerow([str(root.expanduser().resolve() / files[i]), int(labels[i]), int(predicted[i]), f"{float(probability[i]):.4f}"])
    return path
