"""Wall-clock and CPU time of a span, read only once a GPU's queued kernels are done."""

from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    # Kernels run asynchronously on a GPU: read the clock only once they are done.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Started when made; `elapsed()` gives {"wall": s, "cpu": s} since then.

    CPU time (of the whole process) is reported beside wall time because this machine is
    shared: a process that waits for a core loses wall time but not CPU time.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        synchronize(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def elapsed(self) -> dict[str, float]:
        synchronize(self.device)
        return {"wall": time.perf_counter() - self.wall, "cpu": time.process_time() - self.cpu}
