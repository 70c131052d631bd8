"""One CNN training step on the CPU: what it spends its time on, and what bfloat16 and pool_first save.

    python -m benchmarks.cnn_step [--rounds 5] [--steps 20] [--batch-size 256] [--threads 2] [--profile]

The speedrun's network (experiment=speedrun: 16 then 32 5x5 filters, 128 units) in four variants,
timed in interleaved rounds (A B C D A B C D ...) so that a noisy neighbour slows them alike: fp32 or
bfloat16 autocast (what trainer.precision=bf16-mixed does), pooling after or before BatchNorm and
ReLU (pool_first). A step is forward, loss, backward and AdamW on one batch of random images, the
network alone (no data path, no Lightning). --profile prints torch.profiler's table of the fp32 step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from digitrec.nets import CNN

VARIANTS = {"fp32": (False, False), "bf16": (True, False), "fp32, pool_first": (False, True), "bf16, pool_first": (True, True)}


def step_function(pool_first: bool, bf16: bool, batch_size: int):
    net = CNN(channels=[16, 32], kernel_size=5, convs_per_block=1, hidden_size=128, dropout=0.2, pool_first=pool_first)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    images, labels = torch.rand(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))

    def step() -> None:
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(images), labels, label_smoothing=0.05)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="steps timed per variant and round")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="also print the profile of the fp32 step")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = {name: step_function(pool_first, bf16, args.batch_size) for name, (bf16, pool_first) in VARIANTS.items()}
    for step in steps.values():  # warm-up: oneDNN picks and caches its kernels
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - started) / args.steps * 1000)
    base = statistics.median(times["fp32"])
    print(f"batch {args.batch_size}, {args.threads} threads, torch {torch.__version__}; ms per step, median of {args.rounds} rounds (min-max)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:18s} {median:6.1f} ms ({min(values):.1f}-{max(values):.1f})  {base / median:4.2f}x fp32's speed")
    if args.profile:
        from torch.profiler import profile

        with profile() as prof:
            for _ in range(args.steps):
                steps["fp32"]()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
