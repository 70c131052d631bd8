"""What Hydra knows about the running job: whether it is part of a sweep, and the overrides it
was started with. (The run's record, metrics.json, is digitrec.tracking.record's.)"""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def job_number() -> int | None:
    """The job's number in its sweep (Hydra's job.num)."""
    return HydraConfig.get().job.num if in_multirun() else None
