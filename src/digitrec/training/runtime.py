"""Process-wide settings that make a training run faster without changing what it computes."""

from __future__ import annotations

import ctypes
import os


def skip_futile_nvml_probe() -> None:
    """Stop every optimizer step from searching for an NVIDIA driver that is not installed.

    Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1, so that asking whether CUDA is
    available never initialises CUDA (which would break fork-based strategies). PyTorch's
    optimizers ask at every step, and with the flag set each question tries to load NVML
    again: without a driver that failed load costs ~5% of a step of this model on a CPU.
    Without NVML, PyTorch falls back to the very check the flag avoids anyway, so dropping
    the flag there changes nothing but the time. With a driver, Lightning's setting stays.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")  # the library PyTorch's NVML check loads
    except OSError:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]
