"""The arithmetic floor: how fast this machine multiplies the matrices of one training step.

A step of the MLP is, for each Linear layer (in -> out) and batch B, three GEMMs of 2*B*in*out
flops: the forward product, the gradient of the weights, and the gradient of the input (not
needed for the first layer, whose input is data). Timing exactly those products, with the
step's thread count, gives a lower bound on an epoch that no loop can beat.
"""

from __future__ import annotations

import statistics

import torch

from benchmarks.clock import Clock


def step_gemms(batch: int, widths: list[int]) -> list[tuple[int, int, int]]:
    """(m, k, n) of each product of one training step: an (m x k) by (k x n) matrix product."""
    shapes = []
    for layer, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        shapes.append((batch, fan_in, fan_out))  # forward: x @ W.T
        shapes.append((fan_out, batch, fan_in))  # weight gradient: grad.T @ x
        if layer > 0:
            shapes.append((batch, fan_out, fan_in))  # input gradient: grad @ W
    return shapes


def time_gemm(m: int, k: int, n: int, device: torch.device, repeats: int) -> float:
    """Median seconds of one (m x k) @ (k x n) product, over blocks of `repeats` products."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    out = torch.empty(m, n, device=device)
    for _ in range(3):
        torch.mm(a, b, out=out)
    blocks = []
    for _ in range(5):
        clock = Clock(device)
        for _ in range(repeats):
            torch.mm(a, b, out=out)
        blocks.append(clock.elapsed()["wall"] / repeats)
    return statistics.median(blocks)


def gemm_floor(batch: int, widths: list[int], steps: int, device: str = "cpu", repeats: int = 50) -> dict[str, float]:
    """GEMM throughput for one step's shapes and the epoch time it implies (`steps` steps)."""
    device = torch.device(device)
    shapes = step_gemms(batch, widths)
    step_seconds = sum(time_gemm(m, k, n, device, repeats) for m, k, n in shapes)
    step_flops = sum(2 * m * k * n for m, k, n in shapes)
    return {
        "gflops_per_s": step_flops / step_seconds / 1e9,
        "step_gflop": step_flops / 1e9,
        "min_epoch_s": step_seconds * steps,
    }
