"""Sweeps: each job's outcome recorded in its directory, and one summary across the jobs.

Every job writes `metrics.json` (a failed one too, with its reason) beside Hydra's
`.hydra/overrides.yaml`, so the summary is built from the sweep directory alone: at the end
of a sweep (a Hydra callback) and at any later time (`digitrec sweep-report DIR`).
"""

from __future__ import annotations

import csv
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback

from digitrec.config.job import run_overrides
from digitrec.errors import EXIT_FAILED_RUN, EXIT_USER_ERROR, DigitrecError
from digitrec.tracking import record
from digitrec.tracking.viewers import viewer_commands

log = logging.getLogger(__name__)

SUMMARY_FILES = ("summary.csv", "summary.md")


class JobPruned(Exception):
    """Raised inside a job (by the Optuna pruning callback) to stop a trial that is not worth
    finishing; the job is recorded as "pruned", with what it reached so far."""

    def __init__(self, reason: str, metrics: dict[str, Any]) -> None:
        super().__init__(reason)
        self.metrics = metrics


def reason_of(err: BaseException) -> str:
    """The first line of an error; our own errors are self-explanatory, others get their type."""
    text = " ".join(str(err).strip().splitlines()[:1])[:300]
    if isinstance(err, DigitrecError):
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def run_sweep_job(task: Callable[[Any], dict[str, Any]], cfg, check: Callable[[], None] = lambda: None) -> Any:
    """Check and run one job of a sweep. A failure is recorded in the job's metrics.json and the sweep goes on.

    Returns the sweep's objective (what Optuna's sweeper optimises), or None for a failed job,
    which the Optuna sweeper records as a failed trial.
    """

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check()
        metrics = task(cfg)
    except JobPruned as err:
        record.write_outcome(run_dir, record.PRUNED, str(err), run_overrides(), err.metrics)
        print(f"digitrec: job {HydraConfig.get().job.num} pruned {err}", file=sys.stderr, flush=True)
        return None
    except Exception as err:  # noqa: BLE001  (any failure of one job, a bug included: the others still run)
        reason = reason_of(err)
        if not isinstance(err, DigitrecError):
            (run_dir / "traceback.txt").write_text(traceback.format_exc())
            reason += " (traceback.txt in the job's directory)"
        record.write_outcome(run_dir, record.FAILED, reason, run_overrides())
        print(f"digitrec: job {HydraConfig.get().job.num} failed: {reason}", file=sys.stderr, flush=True)
        return None
    return metrics.get(record.config_objective(cfg))


# --- the summary ------------------------------------------------------------------------------


@dataclass
class Job:
    num: int
    name: str
    overrides: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    worker: str = ""  # an Optuna study's trial: the host:pid that ran it
    folder: str = ""  # the job's directory, when it is not sweep_dir/name (another machine's)

    @property
    def status(self) -> str:
        return "unfinished" if record.is_unfinished(self.metrics or None) else record.status(self.metrics)


def read_jobs(sweep_dir: Path) -> list[Job]:
    """The jobs of a sweep directory: every subdirectory that Hydra started a job in."""
    jobs = []
    for overrides_file in sweep_dir.glob("*/.hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        number = job_dir.name.split("_", 1)[0]
        metrics = record.read_record(job_dir) or {}
        jobs.append(Job(int(number) if number.isdigit() else -1, job_dir.name, yaml.safe_load(overrides_file.read_text()) or [], metrics))
    return sorted(jobs, key=lambda job: (job.num, job.name))


def standings(jobs: list[Job], objective: str) -> list[tuple[int | None, Job]]:
    """(rank, job), best first by the objective (losses: lowest first); then the pruned, the failed
    and the unfinished jobs, which have no rank."""

    def key(job: Job):
        value = record.objective_value(job.metrics, objective)
        if job.status == record.OK and value is not None:
            return (0, record.rank_key(objective, value), job.num)
        return ({record.PRUNED: 1, record.FAILED: 2}.get(job.status, 3), 0, job.num)

    ordered = sorted(jobs, key=key)
    ranked = sum(key(job)[0] == 0 for job in ordered)
    return [(i + 1 if i < ranked else None, job) for i, job in enumerate(ordered)]


def metric_keys(objective: str, others: tuple[str, ...] = (record.VAL_ACC_BEST, record.TEST_ACC)) -> list[str]:
    return [objective, *(m for m in others if m != objective)]


def common_overrides(jobs: list[Job]) -> list[str]:
    if len(jobs) < 2:
        return []
    shared = set(jobs[0].overrides).intersection(*(job.overrides for job in jobs[1:]))
    return [o for o in jobs[0].overrides if o in shared]


# Summaries show numbers to 4 significant digits; metrics.json and summary.csv keep every digit.
SHOWN_DIGITS = 4
# The longest status (a failed job's reason) a summary's row shows; summary.csv has it whole.
SHOWN_REASON = 100


def fmt(value: Any, digits: int = SHOWN_DIGITS) -> str:
    if value is None:
        return ""
    return f"{value:#.{digits}g}" if isinstance(value, float) else str(value)  # 0.8710, not 0.871: columns line up


def short_override(override: str) -> str:
    """An override with its number to 4 significant digits, for reading (an Optuna trial's
    model.optimizer.lr=0.007231563192959944 shows as model.optimizer.lr=0.007232)."""
    key, sep, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    if not sep or not any(c in value for c in ".eE"):  # an integer stays whole
        return override
    short = f"{number:.{SHOWN_DIGITS}g}"
    return f"{key}={short}" if len(short) < len(value) else override


def short_params(params: dict[str, Any]) -> str:
    """An Optuna trial's parameters as overrides, numbers to 4 significant digits."""
    return " ".join(short_override(f"{key}={value}") for key, value in params.items())


def status_text(job: Job) -> str:
    reason = str(job.metrics.get("reason", ""))
    if len(reason) > SHOWN_REASON:
        reason = reason[: SHOWN_REASON - 1].rstrip() + "…"
    if job.status == record.FAILED:
        return f"failed: {reason}"
    if job.status == record.PRUNED:
        return f"pruned {reason}"
    if job.status == "unfinished":
        return f"unfinished: {reason}" if reason else "unfinished (interrupted, or still running)"
    return job.status


def markdown(sweep_dir: Path, jobs: list[Job], objective: str) -> str:
    """The summary as a markdown table (aligned, so that it reads in a terminal too)."""
    shared = common_overrides(jobs)
    metrics = metric_keys(objective)
    header = ["rank", "job", "overrides", *metrics, "epochs", "train time", "status"]
    workers = any(job.worker for job in jobs)
    if workers:
        header.append("worker")
    rows = []
    for rank, job in standings(jobs, objective):
        seconds = job.metrics.get("train_seconds")
        rows.append(
            [
                "-" if rank is None else f"{rank} best" if rank == 1 else str(rank),
                str(job.num),
                " ".join(short_override(o) for o in job.overrides if o not in shared) or "(none)",
                *(fmt(job.metrics.get(m)) for m in metrics),
                fmt(job.metrics.get("epochs")),
                f"{seconds:.1f} s" if seconds is not None else "",
                status_text(job),
                *([job.worker] if workers else []),
            ]
        )
    counts = {s: sum(job.status == s for job in jobs) for s in (record.OK, record.PRUNED, record.FAILED, "unfinished")}
    direction = "higher" if record.higher_is_better(objective) else "lower"
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f". Sorted by {objective} ({direction} is better).",
    ]
    if shared:
        lines.append(f"Overrides of every job: {' '.join(map(short_override, shared))}")
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(c.replace("|", "\\|").ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    lines += ["", line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, sweep_dir: Path, jobs: list[Job], objective: str) -> None:
    """The summary with every value unformatted, and all of each job's overrides."""
    metrics = metric_keys(objective, record.OBJECTIVES)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "best", "job", "status", "reason", *metrics, "epochs", "train_seconds", "overrides", "run_dir", "worker"])
        for rank, job in standings(jobs, objective):
            writer.writerow(
                [
                    rank or "",
                    "yes" if rank == 1 else "",
                    job.num,
                    job.status,
                    job.metrics.get("reason", ""),
                    *(job.metrics.get(m, "") for m in metrics),
                    job.metrics.get("epochs", ""),
                    job.metrics.get("train_seconds", ""),
                    " ".join(job.overrides),
                    job.folder or sweep_dir / job.name,
                    job.worker,
                ]
            )


def write_summary(sweep_dir: str | Path, jobs: list[Job] | None = None, objective: str | None = None, title: str | None = None) -> str:
    """Write summary.csv and summary.md into the sweep directory; return the markdown. The jobs are
    the folder's, unless given (an Optuna study's trials, from every worker)."""
    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir) if jobs is None else jobs
    objective = objective or record.objective_of(sweep_dir)
    text = markdown(Path(title) if title else sweep_dir, jobs, objective)
    (sweep_dir / "summary.md").write_text(text)
    write_csv(sweep_dir / "summary.csv", sweep_dir, jobs, objective)
    return text


class SweepSummary(Callback):
    """Hydra callback: when a sweep ends, write its summary into the sweep directory and print it."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        jobs = None
        if config.hydra.sweeper.get("storage") and config.hydra.sweeper.get("study_name"):
            # An Optuna search: every trial of the study, those of other workers (other machines) too.
            from digitrec.sweeps.study import study_jobs

            jobs = study_jobs(str(config.hydra.sweeper.storage), str(config.hydra.sweeper.study_name))
        text = write_summary(sweep_dir, jobs, record.config_objective(config) if jobs is not None else None)
        print(f"\n{text}\nsummary: {sweep_dir / 'summary.md'} and summary.csv", flush=True)
        for label, command in viewer_commands(config.get("logger"), sweep_dir, sweep=True):
            print(f"{label}: {command}", flush=True)
        failed = [job for job in (read_jobs(sweep_dir) if jobs is None else jobs) if job.status == record.FAILED]
        if failed:
            # The last thing Hydra runs: leaving through SystemExit keeps its error report out.
            print(f"digitrec: error: {len(failed)} of the sweep's jobs failed (see the status column above)", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_FAILED_RUN)


def newest_sweep(output_root: Path) -> Path:
    """The sweep or search under output_root (outputs/*/multiruns/*, outputs/*/optuna/*) changed last."""
    sweeps = {job.parent.parent.parent for job in output_root.glob("*/*/*/*/.hydra/overrides.yaml")}
    if not sweeps:
        raise DigitrecError(f"no sweep under {output_root}/ (none of {output_root}/*/multiruns/* or */optuna/* holds jobs): pass a sweep's directory")
    return max(sweeps, key=lambda folder: folder.stat().st_mtime)


REPORT_USAGE = (
    "usage: digitrec sweep-report [SWEEP_DIR]  (e.g. outputs/train/multiruns/<sweep>; none: the newest sweep under outputs/)"
    " | digitrec sweep-report --storage URL --study NAME [SWEEP_DIR]  (an Optuna study's every trial, all workers)"
)


def report_main(args: list[str]) -> int:
    """digitrec sweep-report [DIR]: rebuild and print the summary of a past sweep (the newest under outputs/ by default).
    With --storage and --study: an Optuna study's, from its storage (every worker's trials)."""
    options: dict[str, str] = {}
    rest = list(args)
    for name in ("--storage", "--study"):
        for i, arg in enumerate(rest):
            if arg == name and i + 1 < len(rest):
                options[name] = rest[i + 1]
                del rest[i : i + 2]
                break
            if arg.startswith(name + "="):
                options[name] = arg.partition("=")[2]
                del rest[i]
                break
    if len(rest) > 1 or (rest and rest[0].startswith("-")) or len(options) == 1:
        print(REPORT_USAGE, file=sys.stderr)
        return 0 if rest and rest[0] in ("-h", "--help") else EXIT_USER_ERROR
    if options:
        from digitrec.sweeps.study import OBJECTIVE_ATTR, load, masked, study_jobs

        search = load(options["--storage"], options["--study"])
        objective = str(search.user_attrs.get(OBJECTIVE_ATTR, record.DEFAULT_OBJECTIVE))
        title = f"study {search.study_name} in {masked(options['--storage'])}"
        if rest:
            print(write_summary(Path(rest[0]), study_jobs(search), objective, title), end="")
            print(f"\nwritten: {Path(rest[0]) / 'summary.md'} and {Path(rest[0]) / 'summary.csv'}")
        else:
            print(markdown(Path(title), study_jobs(search), objective), end="")
        return 0
    if not rest:
        sweep_dir = newest_sweep(Path("outputs"))
        print(f"digitrec: the newest sweep under outputs/: {sweep_dir}", file=sys.stderr, flush=True)
    else:
        sweep_dir = Path(rest[0])
    if not sweep_dir.is_dir():
        raise DigitrecError(f"sweep directory {sweep_dir} does not exist: pass a directory under outputs/*/multiruns or outputs/*/optuna")
    if not any(sweep_dir.glob("*/.hydra/overrides.yaml")):
        raise DigitrecError(f"{sweep_dir} holds no sweep jobs (no */.hydra/overrides.yaml): pass the sweep's directory, not a job's")
    print(write_summary(sweep_dir), end="")
    print(f"\nwritten: {sweep_dir / 'summary.md'} and {sweep_dir / 'summary.csv'}")
    return 0
