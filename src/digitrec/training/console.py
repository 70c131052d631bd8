"""What a person sees in the terminal: a live bar or one line per epoch, each message once, and no advertising."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import get_human_readable_count

from digitrec.config.job import in_multirun, job_number

# The official MNIST test set: a run that tested fewer images (limit_test_batches) says how many.
MNIST_TEST_IMAGES = 10_000


class EpochLines(Callback):
    """Prints one short line per finished epoch (for CI logs and files, where a bar is noise)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # One line per epoch from the first process only: under DDP the others would repeat it.
        if trainer.sanity_checking or not hasattr(self, "started") or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        shown = "  ".join(f"{k} {float(metrics[k]):.4f}" for k in ("train/loss", "val/loss", "val/acc") if k in metrics)
        seconds = time.perf_counter() - self.started
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  ({seconds:.1f} s)", flush=True)


class EpochBar(RichProgressBar):
    """Lightning's live bar, counting epochs from 1 as the epoch lines and messages do ("Epoch 1/5").

    Lightning names the bar's task "Epoch 0/4" and offers no setting for it, so after Lightning has
    set it (at an epoch's start, or at the first batch when a run resumes mid-epoch) the task is
    relabelled through Rich's own Progress.update."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self.count_from_one(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        relabel = self.train_progress_bar_id is None
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if relabel:
            self.count_from_one(trainer)

    def count_from_one(self, trainer) -> None:
        if self.progress is None or self.train_progress_bar_id is None:
            return
        description = f"Epoch {trainer.current_epoch + 1}" + (f"/{trainer.max_epochs}" if trainer.max_epochs else "")
        description = description.ljust(len(self.validation_description))
        styled = f"[{self.theme.description}]{description}" if self.theme.description else description
        self.progress.update(self.train_progress_bar_id, description=styled)


class ShortModelSummary(ModelSummary):
    """The model in a few lines: the layers that hold parameters, then the totals. Lightning's own
    table lists every metric object (no parameters) and a FLOPs column of zeros, which Lightning
    can only count when the model sets an example_input_array; FLOPs are shown when there are some.
    In a sweep job, one line."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, **kwargs) -> None:
        totals = f"{get_human_readable_count(total_parameters)} parameters"
        if trainable_parameters != total_parameters:
            totals += f" ({get_human_readable_count(trainable_parameters)} trainable)"
        totals += f", {model_size:.1f} MB" + (f", {get_human_readable_count(total_flops)} FLOPs per forward" if total_flops else "")
        columns = dict(summary_data)
        names = ["Name", "Type", "Params", *(["FLOPs"] if total_flops else [])]
        rows = [[columns[n][i].strip() for n in names] for i in range(len(columns["Name"])) if columns["Params"][i].strip() != "0"]
        if in_multirun() or not rows:
            print(f"model: {totals}", flush=True)
            return
        widths = [max(len(n), *(len(r[j]) for r in rows)) for j, n in enumerate(names)]
        print(f"model: {totals}")
        for row in [names, *rows]:
            print("  " + "  ".join(cell.rjust(w) if j >= 2 else cell.ljust(w) for j, (cell, w) in enumerate(zip(row, widths))).rstrip())
        sys.stdout.flush()


def progress_callbacks(mode: str) -> tuple[list[Callback], bool]:
    """The callbacks for a progress mode (auto, bar, lines) and whether Lightning's bar is on."""
    if mode == "auto":
        mode = "bar" if sys.stdout.isatty() else "lines"
    if mode == "bar":
        return [EpochBar()], True
    return [EpochLines()], False


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip")


class _DropLightningInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("lightning") and record.levelno < logging.WARNING)


def quiet_lightning() -> None:
    """Each of Lightning's messages once, and none of its product tips or warnings about its own
    internals (not ours to fix).

    Importing `lightning` gives its logger a console handler of its own ("INFO: ..." on stderr),
    and its records also reach the handlers Hydra set up for the job (the console and train.log):
    every message came twice. Where Hydra's handlers are there, Lightning's own goes. In a sweep
    job Lightning's INFO lines (devices, checkpoint restored, ...) go to the job's train.log only,
    so that each job reads as a few lines on the console."""
    root = logging.getLogger()
    if root.handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
        if in_multirun():
            for handler in root.handlers:
                if type(handler) is logging.StreamHandler and not any(isinstance(f, _DropLightningInfo) for f in handler.filters):
                    handler.addFilter(_DropLightningInfo())
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())
    # digitrec picks the logging interval of a short run itself (trainer.LoggingInterval).
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging interval")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # The splits are tensors in memory (data.py): worker processes would only copy them.
    warnings.filterwarnings("ignore", message=r".*does not have many workers")
    # Raised inside Lightning's all_gather (the test figures under DDP), not by our calls.
    warnings.filterwarnings("ignore", message=r".*all_gather is deprecated")


def tested_images(trainer: L.Trainer) -> int | None:
    """How many test images the last trainer.test saw (DigitClassifier counts them as test/images)."""
    count = trainer.callback_metrics.get("test/images")
    return None if count is None else round(float(count))


def test_set_text(images: int | None) -> str:
    if images is None or images == MNIST_TEST_IMAGES:
        return "(official 10k MNIST test set)"
    return f"({images:,} of the 10,000 official MNIST test images)"


def print_summary(title: str, metrics: dict[str, Any], viewers: list[tuple[str, str]] = ()) -> None:
    """The block at the end of a run; in a sweep job one line (the sweep's summary follows at its end)."""
    if in_multirun():
        shown = "  ".join(f"{k} {metrics[k]:#.4g}" for k in ("val/acc_best", "test/acc", "test/loss") if metrics.get(k) is not None)
        images = metrics.get("test/images")
        extra = f" on {images:,} test images" if images not in (None, MNIST_TEST_IMAGES) else ""
        print(f"digitrec: job {job_number()} {title}: {shown}{extra}  ({metrics.get('run_dir') or metrics.get('ckpt_path')})", flush=True)
        return
    rows = [
        ("test/acc", f"{metrics['test/acc']:.4f}  {metrics.get('test/set') or test_set_text(metrics.get('test/images'))}"),
        ("test/loss", f"{metrics['test/loss']:.4f}"),
    ]
    if metrics.get("val/acc_best") is not None:
        rows.append(("val/acc_best", f"{metrics['val/acc_best']:.4f}"))
    for key, label in (("run_dir", "run dir"), ("best_ckpt_path", "best ckpt"), ("ckpt_path", "checkpoint"), ("model_path", "model")):
        if metrics.get(key):
            rows.append((label, metrics[key]))
    rows += viewers
    width = max(len(label) for label, _ in rows)
    print(f"\ndigitrec: {title}")
    for label, value in rows:
        print(f"  {label.ljust(width)}  {value}")
    print(flush=True)


def print_breakdown(per_digit: dict[str, float], matrix: list[list[int]], misread: str | None, misread_count: int | None) -> None:
    """Each digit's accuracy and the confusion matrix (true digits as rows), and where the misread files are."""
    if in_multirun():
        return
    print("\nper digit (true rows, predicted columns)")
    print("       " + " ".join(f"{d:>5}" for d in range(len(matrix))) + "    acc")
    for d, row in enumerate(matrix):
        acc = per_digit.get(str(d))
        print(f"  {d:>3}  " + " ".join(f"{n:>5}" for n in row) + (f"  {acc:.3f}" if acc is not None else "      -"))
    if misread:
        print(f"{misread_count} files misread: {misread}")
    sys.stdout.flush()
