"""Time to accuracy: each recipe's validation accuracy against wall time, and its test point at the end.

    python -m benchmarks.time_to_accuracy --recipe tutorial --recipe speedrun [--seed 12345]
    python -m benchmarks.time_to_accuracy --report        # the table and plot of what is recorded

Each recipe runs as the real command, `digitrec train experiment=RECIPE seed=SEED`, plus one callback
that notes the wall-clock time and val/acc at the end of every validation. The clock starts just before
the process is launched and stops when it exits, so the test point (test/acc from the run's
metrics.json) sits at the whole run's wall time: start-up, data, training, validation, test, writing
model.ckpt. The runs stay in outputs/time_to_accuracy/RECIPE_SEED (their model.ckpt is a trained model of
that recipe, e.g. for `make bench-handwriting`). Every run is added to OUT/time_to_accuracy.json (a run of the same recipe and seed replaces
its earlier one), so the long recipes can be measured one at a time; the table (OUT/time_to_accuracy.md)
and the plot (OUT/time_to_accuracy.png) are made from all recorded runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from benchmarks.bench import REPO, BenchError, machine, mnist_dir, run_process

# "default" is plain `digitrec train` (no experiment): the yardstick the speedrun's time is held to.
RECIPES = ("default", "tutorial", "speedrun", "cnn", "mlp_augmented")
RESULTS = "time_to_accuracy"


class ValidationClock(Callback):
    """Notes time.time() and val/acc at the end of every validation epoch (not the sanity check)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.points: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        accuracy = trainer.callback_metrics.get("val/acc")
        if trainer.sanity_checking or accuracy is None or not trainer.is_global_zero:
            return
        self.points.append({"epoch": trainer.current_epoch + 1, "time": time.time(), "val_acc": float(accuracy)})
        # Written every epoch, so an interrupted run still leaves its curve.
        self.path.write_text(json.dumps(self.points) + "\n")


def measure(recipe: str, seed: int, work: Path, extra: list[str]) -> dict:
    """One run of a recipe: its curve (seconds since launch, val/acc), test/acc and whole wall time."""
    run_dir, curve, log = work / f"{recipe}_{seed}", work / f"{recipe}_{seed}.curve.json", work / f"{recipe}_{seed}.log"
    chosen = ([] if recipe == "default" else [f"experiment={recipe}"]) + [f"seed={seed}", *extra]
    command = [
        sys.executable, "-m", "digitrec", "train", *chosen, f"hydra.run.dir={run_dir}", "progress=lines",
        "+callbacks.validation_clock._target_=benchmarks.time_to_accuracy.ValidationClock", f"+callbacks.validation_clock.path={curve}",
    ]  # fmt: skip
    env = {**os.environ, "DIGITREC_MNIST_DIR": str(mnist_dir()), "PYTHONUNBUFFERED": "1"}
    print(f"[{recipe}, seed {seed}] {shlex.join(command[3:])}  (log: {log})", flush=True)
    launched = time.time()
    process = run_process(command, log, env)
    record = json.loads((run_dir / "metrics.json").read_text())
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    points = json.loads(curve.read_text()) if curve.exists() else []
    result = {
        "recipe": recipe,
        "seed": seed,
        "command": "digitrec train " + shlex.join(chosen),
        "wall_s": process["process_wall_s"],
        "test_acc": record["test/acc"],
        "epochs": record["epochs"],
        "threads": config.get("threads"),
        "curve": [{"epoch": p["epoch"], "seconds": p["time"] - launched, "val_acc": p["val_acc"]} for p in points],
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine(config.get("threads"), "cuda" if torch.cuda.is_available() else "cpu"),
    }
    print(f"[{recipe}, seed {seed}] test/acc {result['test_acc']:.4f} in {result['wall_s']:.1f} s, {result['epochs']} epochs", flush=True)
    return result


def describe_machine(about: dict) -> str:
    return f"{about['gpu']}, CUDA {about['cuda']}" if "gpu" in about else f"{about['cores']} CPU cores"


def median_epoch_s(run: dict) -> float | None:
    """The median time between consecutive validations: an epoch with its validation."""
    times = [p["seconds"] for p in run["curve"]]
    return statistics.median(b - a for a, b in zip(times, times[1:])) if len(times) > 1 else None


def first_time_at(run: dict, target: float) -> float | None:
    """Seconds from launch to the first validation at or above the target, if any."""
    return next((p["seconds"] for p in run["curve"] if p["val_acc"] >= target), None)


def write_table(runs: list[dict], path: Path) -> None:
    lines = [
        "| recipe | seed | test acc | wall time | epochs | epoch (with val) | first val >= 99.5% | threads | measured | command |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in runs:
        reached, epoch = first_time_at(run, 0.995), median_epoch_s(run)
        lines.append(
            f"| {run['recipe']} | {run['seed']} | {run['test_acc']:.4f} | {run['wall_s'] / 60:.1f} min ({run['wall_s']:.0f} s) "
            f"| {run['epochs']} | {'–' if epoch is None else f'{epoch:.1f} s'} | {'–' if reached is None else f'{reached:.0f} s'} "
            f"| {run['threads']} | {run['measured']} | `{run['command']}` |"
        )
    lines += ["", *summary_lines(runs)]
    path.write_text("\n".join(lines) + "\n")


def summary_lines(runs: list[dict]) -> list[str]:
    """Per recipe over its seeds: test accuracy mean and range, median wall time and its ratio to default's."""
    by_recipe: dict[str, list[dict]] = {}
    for run in runs:
        by_recipe.setdefault(run["recipe"], []).append(run)
    default = statistics.median(r["wall_s"] for r in by_recipe["default"]) if "default" in by_recipe else None
    lines = ["| recipe | seeds | test acc mean (min–max) | wall time median | x default's |", "|---|---:|---:|---:|---:|"]
    for recipe, group in by_recipe.items():
        accuracies, wall = [r["test_acc"] for r in group], statistics.median(r["wall_s"] for r in group)
        ratio = "–" if default is None else f"{wall / default:.1f}x"
        lines.append(
            f"| {recipe} | {len(group)} | {statistics.mean(accuracies):.4f} ({min(accuracies):.4f}–{max(accuracies):.4f}) | {wall:.0f} s | {ratio} |"
        )
    return lines


def write_plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    recipes = list(dict.fromkeys(run["recipe"] for run in runs))
    for index, recipe in enumerate(recipes):
        group = [run for run in runs if run["recipe"] == recipe]
        colour = f"C{index}"
        for run in group:
            minutes = [p["seconds"] / 60 for p in run["curve"]]
            axes.plot(minutes, [100 * p["val_acc"] for p in run["curve"]], "-", color=colour, alpha=0.5)
            axes.plot(run["wall_s"] / 60, 100 * run["test_acc"], "o", color=colour)
        tests = sorted(100 * run["test_acc"] for run in group)
        tested = f"{tests[0]:.2f}%" if len(tests) == 1 else f"{tests[0]:.2f}-{tests[-1]:.2f}% ({len(tests)} seeds)"
        axes.plot([], [], "-o", color=colour, label=f"{recipe}: test {tested}")  # one legend entry per recipe
    axes.axhline(99.5, color="grey", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set_ylim(97.0, 100.0)
    axes.set_xlabel("wall time since launch (minutes, log scale)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"Time to accuracy on MNIST ({describe_machine(runs[0]['machine'])})")
    axes.legend(fontsize=8, loc="lower right", title="val per epoch (line), test at the end (dot)", title_fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", action="append", choices=RECIPES, help="a recipe to run (repeat; none: only --report)")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--runs", type=Path, default=REPO / "outputs" / RESULTS, help="where the runs (and their model.ckpt) are kept")
    parser.add_argument("--report", action="store_true", help="write the table and plot of the recorded runs")
    parser.add_argument("overrides", nargs="*", help="more overrides for every run, e.g. trainer.max_epochs=1")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / f"{RESULTS}.json"
    runs = json.loads(store.read_text())["runs"] if store.exists() else []
    args.runs.mkdir(parents=True, exist_ok=True)
    try:
        for recipe in args.recipe or []:
            result = measure(recipe, args.seed, args.runs, args.overrides)
            runs = [r for r in runs if (r["recipe"], r["seed"]) != (recipe, args.seed)] + [result]
            # Saved after every run: a later failure keeps what was measured.
            store.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    except BenchError as error:
        print(f"time_to_accuracy: {error}", file=sys.stderr)
        return 1
    if args.report or args.recipe:
        runs.sort(key=lambda r: (RECIPES.index(r["recipe"]) if r["recipe"] in RECIPES else len(RECIPES), r["seed"]))
        write_table(runs, args.out / f"{RESULTS}.md")
        write_plot(runs, args.out / f"{RESULTS}.png")
        print(f"wrote {args.out / RESULTS}.md and .png ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
