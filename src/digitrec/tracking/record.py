"""The run record: `metrics.json`, the file every run leaves in its directory, and its one writer and reader.

Training, evaluation and sweep jobs write it when they end; a run that fails or is interrupted
writes it too, with its status and reason, so nothing mistakes it for a result. Everything that
looks back at runs reads it: the sweep summary, the Optuna sweeper, `digitrec predict` and
`digitrec serve` (which choose and describe checkpoints by it).

Only json, yaml and pathlib (and the standard library): predict and serve read records, and
must start without Hydra, OmegaConf, Lightning or torch.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

FILE_NAME = "metrics.json"

# --- fields ------------------------------------------------------------------------------------
STATUS = "status"
REASON = "reason"
RUN_DIR = "run_dir"
OVERRIDES = "overrides"
EPOCHS = "epochs"
TRAIN_SECONDS = "train_seconds"
BEST_CKPT_PATH = "best_ckpt_path"  # training: the checkpoint of the best epoch, the one tested
MODEL_PATH = "model_path"  # training: model.ckpt, those weights exported
CKPT_PATH = "ckpt_path"  # evaluation: the checkpoint evaluated
HYPER_PARAMETERS = "hyper_parameters"  # evaluation: the model's, from its checkpoint
VAL_ACC_BEST = "val/acc_best"
TEST_ACC = "test/acc"
TEST_LOSS = "test/loss"

# --- statuses ----------------------------------------------------------------------------------
OK = "ok"
FAILED = "failed"
PRUNED = "pruned"  # an Optuna trial stopped early by its pruner
RUNNING = "running"  # written when a run starts: still there after a kill
INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM
UNFINISHED = (RUNNING, INTERRUPTED)

# --- objectives --------------------------------------------------------------------------------
# What a sweep may rank its jobs by (a config's `optimized_metric`): numbers every finished run records.
OBJECTIVES = (VAL_ACC_BEST, TEST_ACC, TEST_LOSS)
# For configs that name none: evaluations (digitrec eval -m), which know no validation score.
DEFAULT_OBJECTIVE = TEST_ACC


def path(run_dir: str | Path) -> Path:
    return Path(run_dir) / FILE_NAME


def write_record(run_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Write the run's record, replacing any earlier one in one step: a reader (another process,
    a crash halfway) sees the old record or the new one, never part of one."""
    target = path(run_dir)
    text = json.dumps(dict(record), indent=2) + "\n"
    temp = target.with_name(f".{FILE_NAME}.{secrets.token_hex(4)}.tmp")
    try:
        # os.open with 0o666, not tempfile's 0o600: the record gets the permissions of any file written here.
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def write_outcome(run_dir: str | Path, status: str, reason: str, overrides: list[str], extra: Mapping[str, Any] | None = None) -> Path:
    """The record of a run without a result: failed, pruned (with what it reached, in `extra`),
    or not finished (running, interrupted)."""
    return write_record(run_dir, {STATUS: status, REASON: reason, **(extra or {}), RUN_DIR: str(run_dir), OVERRIDES: list(overrides)})


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's record; None when it has none (never started, or killed before it wrote one).

    A record that cannot be read (unreadable, not JSON, not a JSON object: damaged or edited by
    hand, since writes are atomic) is never an error and never a result: it reads as a failed
    run whose reason says what is wrong, so a summary shows it, and nothing chooses its checkpoint.
    """
    file = path(run_dir)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        return {STATUS: FAILED, REASON: f"{file} cannot be read: {err.strerror or err}"}
    try:
        record = json.loads(data)
    except ValueError as err:  # a decoding error too
        return {STATUS: FAILED, REASON: f"{file} is not valid JSON ({err})"}
    if not isinstance(record, dict):
        return {STATUS: FAILED, REASON: f"{file} holds a JSON {type(record).__name__}, not a run record"}
    return record


def status(record: Mapping[str, Any] | None) -> str | None:
    """The record's status: None without a record; ok for a record that names none (an evaluation's)."""
    if record is None:
        return None
    return str(record.get(STATUS, OK))


def is_unfinished(record: Mapping[str, Any] | None) -> bool:
    return record is None or status(record) in UNFINISHED


# --- objectives --------------------------------------------------------------------------------


def config_objective(config: Mapping[str, Any] | None) -> str:
    """The objective a run's config ranks by: its `optimized_metric`, else test/acc (eval configs name none)."""
    return str((config or {}).get("optimized_metric") or DEFAULT_OBJECTIVE)


def objective_of(directory: str | Path) -> str:
    """The objective of a sweep directory (from its first job's saved config) or of a run directory."""
    directory = Path(directory)
    for config in [directory / ".hydra" / "config.yaml", *sorted(directory.glob("*/.hydra/config.yaml"))]:
        if config.is_file():
            try:
                saved = yaml.safe_load(config.read_text())
            except (OSError, yaml.YAMLError):
                break
            return config_objective(saved if isinstance(saved, dict) else None)
    return DEFAULT_OBJECTIVE


def higher_is_better(objective: str) -> bool:
    """Accuracies are better higher, losses lower."""
    return "loss" not in objective


def rank_key(objective: str, value: float) -> float:
    """A sort key that puts the best value of `objective` first."""
    return -value if higher_is_better(objective) else value


def objective_value(record: Mapping[str, Any] | None, objective: str) -> float | None:
    """The record's number for `objective`, if it has a finite one (a run that diverged ranks nowhere)."""
    found = (record or {}).get(objective)
    if isinstance(found, bool) or not isinstance(found, (int, float)) or not math.isfinite(found):
        return None
    return float(found)
