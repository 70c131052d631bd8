"""`make bench`: digitrec against the tutorial's loop and a tensor-resident loop, interleaved.

    python -m benchmarks.bench [--rounds 3] [--epochs 5] [--out benchmarks/results] ...

Each round runs every variant once, in turn (A B C A B C ...), each as its own process, so a
noisy neighbour on this shared machine slows all of them alike; medians and per-round ratios
do the rest. Every process trains the same steps with the same batch size and threads:
- tutorial: torchvision MNIST + ToTensor() + DataLoader(shuffle=True), plain PyTorch;
- tensor:   the same model and optimizer over tensors held in memory (the practical floor);
- digitrec: `python -m digitrec train` with the default config (TensorBoard, checkpoints,
            validation, test) plus one timing callback;
- ddp:      the same with trainer=ddp_cpu: 2 processes x `threads` threads, each training on
            half of every epoch (the multi-device data path on a machine without GPUs).
Then the scaling runs (batch size x hidden width) for digitrec and the tensor loop.
Results go to OUT/bench.json, OUT/bench.md and OUT/scaling.png; `--smoke` runs a tiny setting
that only checks the harness still works.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks.floor import gemm_floor
from benchmarks.report import write_markdown, write_plot

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("tutorial", "tensor", "digitrec", "ddp", "affine", "elastic")
# digitrec runs with one more setting each: what the variant costs is its epoch minus digitrec's.
DIGITREC_VARIANTS = {"digitrec": [], "ddp": ["trainer=ddp_cpu"], "affine": ["data/augment=affine"], "elastic": ["data/augment=elastic"]}
TRAIN_SIZE = 60000  # the official training set; digitrec holds out data.val_size of it
DEFAULT_HIDDEN = [500, 100]


class BenchError(Exception):
    """A run that failed: the message says which, and where its log is."""


def defaults() -> dict:
    """The values of digitrec's default config that the loops must match."""
    configs = resources.files("digitrec.configs")
    train = OmegaConf.load(configs / "train.yaml")
    data = OmegaConf.load(configs / "data" / "mnist.yaml")
    return {"threads": train.get("threads"), "val_size": int(data.val_size), "batch_size": int(data.batch_size)}


def mnist_dir() -> Path:
    """Where MNIST is: $DIGITREC_MNIST_DIR, else what `make data` downloaded."""
    configured = os.environ.get("DIGITREC_MNIST_DIR")
    folder = Path(configured) if configured else REPO / "data" / "MNIST" / "raw"
    if not folder.is_dir():
        raise BenchError(f"MNIST not found at {folder}: set DIGITREC_MNIST_DIR or run `make data` first")
    return folder


def torchvision_root(source: Path, root: Path) -> Path:
    """Lay out verified MNIST the way torchvision's MNIST class reads it: ROOT/MNIST/raw/NAME."""
    from digitrec.data.mnist import SHA256, find_file, read_verified

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in SHA256:
        (raw / name).write_bytes(read_verified(find_file(source, name), name))
    return root


def run_process(command: list[str], log: Path, env: dict[str, str]) -> dict[str, float]:
    """Run one command to its end; its wall time from start to exit and its peak RSS."""
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        # wait4 gives this child's own resource usage (ru_maxrss in KiB on Linux).
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise BenchError(f"{shlex.join(command[1:4])}... exited with {process.returncode} (log: {log}):\n{tail}")
    return {"process_wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


class Runner:
    """Builds and runs the command of each variant for one setting (batch size, width, steps)."""

    def __init__(self, args: argparse.Namespace, work: Path, mnist: Path, tv_root: Path | None) -> None:
        self.args, self.work, self.mnist, self.tv_root = args, work, mnist, tv_root
        self.env = {**os.environ, "DIGITREC_MNIST_DIR": str(mnist), "PYTHONUNBUFFERED": "1"}
        self.count = 0

    def run(self, variant: str, batch_size: int, hidden: list[int], steps: int, epochs: int) -> dict:
        self.count += 1
        name = f"{self.count:03d}_{variant}"
        result_path, log = self.work / f"{name}.json", self.work / f"{name}.log"
        if variant in DIGITREC_VARIANTS:
            command, run_dir = self.digitrec_command(name, result_path, batch_size, hidden, steps, epochs)
            command += DIGITREC_VARIANTS[variant]
        else:
            command = [
                sys.executable, "-m", "benchmarks.loops", variant, "--json", str(result_path), "--mnist-dir", str(self.mnist),
                "--epochs", str(epochs), "--steps", str(steps), "--batch-size", str(batch_size),
                "--hidden", ",".join(map(str, hidden)), "--device", self.args.device,
            ]  # fmt: skip
            if variant == "tutorial":
                command += ["--torchvision-root", str(self.tv_root)]
            if self.args.threads:
                command += ["--threads", str(self.args.threads)]
        process = run_process(command, log, self.env)
        measured = json.loads(result_path.read_text())
        if variant in DIGITREC_VARIANTS:
            measured["test_acc"] = json.loads((run_dir / "metrics.json").read_text())["test/acc"]
        return {**measured, **process}

    def digitrec_command(self, name: str, timer: Path, batch_size: int, hidden: list[int], steps: int, epochs: int):
        run_dir = self.work / name
        command = [
            sys.executable, "-m", "digitrec", "train", f"hydra.run.dir={run_dir}", f"trainer.max_epochs={epochs}",
            # The benchmark's clock, one more callback; the module is found because cwd is the repo.
            "+callbacks.bench_timer._target_=benchmarks.timing.EpochTimer", f"+callbacks.bench_timer.path={timer}",
        ]  # fmt: skip
        if steps < self.full_epoch(batch_size):  # per process: a ddp run then covers twice as much
            command.append(f"trainer.limit_train_batches={steps}")
        if batch_size != self.args.defaults["batch_size"]:
            command.append(f"data.batch_size={batch_size}")
        if hidden != DEFAULT_HIDDEN:
            command.append(f"model.net.hidden_sizes=[{','.join(map(str, hidden))}]")
        if self.args.threads != self.args.defaults["threads"]:
            command.append(f"threads={self.args.threads}")
        return command, run_dir

    def full_epoch(self, batch_size: int) -> int:
        return math.ceil((TRAIN_SIZE - self.args.defaults["val_size"]) / batch_size)


def summarize(runs: list[dict], samples_per_epoch: int) -> dict:
    """Per-epoch training time over every epoch of every round, and the per-process numbers."""
    wall = [e["wall"] for run in runs for e in run["epochs"]]
    cpu = [e["cpu"] for run in runs for e in run["epochs"]]
    summary = {
        "epoch_s_median": statistics.median(wall),
        "epoch_s_min": min(wall),
        "epoch_s_max": max(wall),
        "epoch_cpu_s_median": statistics.median(cpu),
        "ms_per_1000_samples": 1000 * statistics.median(wall) / samples_per_epoch * 1000,
        "process_wall_s_median": statistics.median(run["process_wall_s"] for run in runs),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
        "test_acc": statistics.median(run["test_acc"] for run in runs),
    }
    with_validation = [e["wall"] for run in runs for e in run.get("epochs_with_validation", [])]
    if with_validation:
        summary["epoch_with_validation_s_median"] = statistics.median(with_validation)
    return summary


def round_median(run: dict, clock: str = "wall") -> float:
    return statistics.median(e[clock] for e in run["epochs"])


def ratios(rounds: list[dict], top: str, bottom: str) -> dict:
    """top/bottom per round (of the rounds' median epochs, wall and CPU) and their medians."""
    result = {}
    for clock in ("wall", "cpu"):
        per_round = [round_median(r[top], clock) / round_median(r[bottom], clock) for r in rounds]
        result[clock] = {"per_round": per_round, "median": statistics.median(per_round)}
    per_round = [r[top]["process_wall_s"] / r[bottom]["process_wall_s"] for r in rounds]
    result["process"] = {"per_round": per_round, "median": statistics.median(per_round)}
    return result


def targets(summary: dict, ratio: dict, floor: dict) -> list[dict]:
    """The issues' targets, measured (never asserted in a test)."""
    found = []
    if "digitrec/tensor" in ratio:
        found.append(
            {"target": "digitrec epoch CPU time <= 1.0x tensor loop", "value": ratio["digitrec/tensor"]["cpu"]["median"], "limit": 1.0, "le": True}
        )
        found.append(
            {"target": "digitrec process <= 1.3x tensor loop", "value": ratio["digitrec/tensor"]["process"]["median"], "limit": 1.3, "le": True}
        )
    if "digitrec" in summary:
        value = summary["digitrec"]["epoch_cpu_s_median"] / floor["min_epoch_s"]
        found.append({"target": "digitrec epoch CPU time <= 1.5x GEMM floor", "value": value, "limit": 1.5, "le": True})
        found.append({"target": "digitrec test accuracy >= 0.9760", "value": summary["digitrec"]["test_acc"], "limit": 0.976, "le": False})
    if "ddp/digitrec" in ratio:
        found.append(
            {"target": "ddp (2 processes) epoch <= 0.65x digitrec (1)", "value": ratio["ddp/digitrec"]["wall"]["median"], "limit": 0.65, "le": True}
        )
    if "tutorial/digitrec" in ratio:
        found.append(
            {"target": "digitrec >= 4x faster than tutorial", "value": ratio["tutorial/digitrec"]["wall"]["median"], "limit": 4.0, "le": False}
        )
    if "digitrec" in summary:
        found.append({"target": "digitrec peak RSS <= 1500 MB", "value": summary["digitrec"]["peak_rss_mb"], "limit": 1500, "le": True})
    for t in found:
        t["met"] = t["value"] <= t["limit"] if t["le"] else t["value"] >= t["limit"]
    return found


def machine(threads: int | None, device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info |= {"gpu": torch.cuda.get_device_name(torch.device(device)), "cuda": torch.version.cuda}
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="digitrec against the tutorial's loop and a tensor-resident loop, interleaved")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every variant (default 3)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs per run (default 5, the tutorial's)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per epoch (default: a full epoch, 550 at batch 100)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for every variant (default: digitrec's config value)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument("--device", default="cpu", help="device of the tensor loop and the GEMM floor: cpu or cuda (digitrec picks its own)")
    parser.add_argument("--scaling-batch-sizes", default="100,256,1024", help="batch sizes of the scaling runs")
    parser.add_argument("--scaling-epochs", type=int, default=2, help="epochs per scaling run (0: no scaling runs)")
    parser.add_argument("--out", type=Path, default=None, help="folder for bench.json, bench.md, scaling.png (default benchmarks/results)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny setting that checks the harness runs (1 round, 1 epoch of 5 steps, no scaling) into a temp folder",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.epochs, args.steps, args.scaling_epochs = 1, 1, 5, 0
        args.out = args.out or Path(tempfile.gettempdir()) / "digitrec-bench-smoke"
    args.out = args.out or REPO / "benchmarks" / "results"
    args.defaults = defaults()
    args.threads = args.threads or args.defaults["threads"]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown or not args.variants:
        parser.error(f"--variants: choose from {','.join(VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)  # for the GEMM floor measured here, like the runs
    command = "python -m benchmarks.bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    batch, hidden = args.defaults["batch_size"], DEFAULT_HIDDEN
    widths = [784, *hidden, 10]
    try:
        source = mnist_dir()
        with tempfile.TemporaryDirectory(prefix="digitrec-bench-") as tmp:
            work = Path(tmp)
            tv_root = torchvision_root(source, work / "torchvision") if "tutorial" in args.variants else None
            runner = Runner(args, work, source, tv_root)
            steps = args.steps or runner.full_epoch(batch)

            rounds = []
            for number in range(1, args.rounds + 1):
                this_round = {}
                for variant in args.variants:
                    print(f"round {number}/{args.rounds}: {variant} ...", end=" ", flush=True)
                    this_round[variant] = runner.run(variant, batch, hidden, steps, args.epochs)
                    print(f"{round_median(this_round[variant]):.2f} s/epoch", flush=True)
                rounds.append(this_round)

            scaling = []
            scaled_variants = [v for v in ("tensor", "digitrec") if v in args.variants]
            if args.scaling_epochs > 0:
                for width in (hidden, [4 * h for h in hidden]):
                    for size in map(int, args.scaling_batch_sizes.split(",")):
                        full = runner.full_epoch(size)
                        row = {"batch_size": size, "hidden_sizes": width, "steps": full}
                        for variant in scaled_variants:
                            print(f"scaling batch {size} hidden {width}: {variant} ...", end=" ", flush=True)
                            run = runner.run(variant, size, width, full, args.scaling_epochs)
                            row[variant] = {
                                "epoch_s_median": round_median(run),
                                "epoch_cpu_s_median": round_median(run, "cpu"),
                                "test_acc": run["test_acc"],
                            }
                            row[variant]["ms_per_1000_samples"] = 1e6 * row[variant]["epoch_s_median"] / (full * size)
                            print(f"{row[variant]['epoch_s_median']:.2f} s/epoch", flush=True)
                        row["floor"] = gemm_floor(size, [784, *width, 10], full, args.device, repeats=20)
                        scaling.append(row)
    except BenchError as err:
        raise SystemExit(f"bench: error: {err}") from None

    floor = gemm_floor(batch, widths, steps, args.device)
    summary = {v: summarize([r[v] for r in rounds], steps * batch) for v in args.variants}
    ratio = {}
    pairs = (
        ("digitrec", "tensor"),
        ("tutorial", "digitrec"),
        ("tutorial", "tensor"),
        ("ddp", "digitrec"),
        ("affine", "digitrec"),
        ("elastic", "digitrec"),
    )
    for top, bottom in pairs:
        if top in args.variants and bottom in args.variants:
            ratio[f"{top}/{bottom}"] = ratios(rounds, top, bottom)
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(args.threads, args.device),
        "setting": {"rounds": args.rounds, "epochs": args.epochs, "steps_per_epoch": steps, "batch_size": batch, "hidden_sizes": hidden},
        "floor": floor,
        "summary": summary,
        "ratios": ratio,
        "targets": targets(summary, ratio, floor),
        "rounds": rounds,
        "scaling": scaling,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    plot = write_plot(scaling, args.out / "scaling.png") if scaling else None
    markdown = write_markdown(results, args.out / "bench.md", plot)
    print(markdown.read_text())


if __name__ == "__main__":
    main()
