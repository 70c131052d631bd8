"""Where an Optuna study lives, and the workers that share it.

hydra.sweeper.storage is an Optuna storage: an SQLAlchemy URL (sqlite:///, postgresql://,
mysql+pymysql://) or `journal:PATH`, Optuna's journal file for a shared filesystem. Many workers
(processes, machines, SLURM jobs) run the same command on one study; each trial records which
worker runs it. A worker that dies leaves its trial RUNNING: the others fail it once its heartbeat
is older than the grace period (Optuna's heartbeat on a database; a `heartbeat` user attribute on a
journal, which has none), or at once when the dead worker was a process on their own machine, and
Optuna's RetryHeartbeatStaleTrialCallback runs its parameters again, once.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from digitrec.errors import DigitrecError, first_line

JOURNAL = "journal:"
# A password typed in the storage URL is taken out of the config before anything is written (the
# run's .hydra files, logs, MLflow): the config keeps MASK, the search's processes get it from here.
PASSWORD_ENV = "DIGITREC_STORAGE_PASSWORD"
MASK = "***"
# "host:pid" of this process: the worker a trial ran on, in the summaries and for spotting dead ones.
WORKER = f"{socket.gethostname()}:{os.getpid()}"
# The trial's user attributes digitrec writes: its worker, folder, outcome (metrics.json's fields) and,
# on a journal, the heartbeat.
WORKER_ATTR, FOLDER_ATTR, RECORD_ATTR, HEARTBEAT_ATTR = "worker", "folder", "record", "heartbeat"
# A trial asked for when the study was already full (two workers asked at once): failed, never counted.
SURPLUS_ATTR = "surplus"


@contextlib.contextmanager
def heartbeat_warnings_off():
    """Optuna marks its heartbeat, fail_stale_trials and the retry callback experimental (since 2.8/2.9),
    and says the heartbeat is meant for Study.optimize: digitrec asks and tells, and beats itself
    (Heartbeat below). Warnings a user can do nothing about; any other warning still shows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        yield


def url_of(storage: str):
    """The SQLAlchemy URL of a storage string (None for a journal); a malformed one is one line."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if storage.startswith(JOURNAL):
        return None
    try:
        return make_url(storage)
    except ArgumentError:
        raise DigitrecError(
            f"hydra.sweeper.storage={storage!r} is not a storage URL: use sqlite:///PATH, postgresql://USER@HOST/DB, "
            "mysql+pymysql://USER@HOST/DB or journal:PATH"
        ) from None


def masked(storage: str) -> str:
    """The storage as it may be shown: its password as ***."""
    url = url_of(storage)
    return url.render_as_string(hide_password=True) if url is not None and url.password else storage


def take_password_out(storage: str) -> str:
    """The URL with its password replaced by ***, the password kept in this process's environment
    (inherited by the jobs it starts). A URL with *** as its password gets it back from there."""
    url = url_of(storage)
    if url is None or url.password in (None, MASK):
        return storage
    os.environ[PASSWORD_ENV] = url.password
    return url.set(password=MASK).render_as_string(hide_password=False)


def real_url(storage: str) -> str:
    url = url_of(storage)
    if url is None or url.password != MASK:
        return storage
    if PASSWORD_ENV not in os.environ:
        raise DigitrecError(f"hydra.sweeper.storage={storage} has *** for its password: set {PASSWORD_ENV}, or type the password in the URL")
    return url.set(password=os.environ[PASSWORD_ENV]).render_as_string(hide_password=False)


def journal_path(storage: str) -> Path:
    return Path(storage[len(JOURNAL) :]).expanduser()


def exists(storage: str) -> bool:
    """Whether opening the storage would only read: a SQLite or journal file that is not there yet
    would be created (with its folder, the sweep's)."""
    if storage.startswith(JOURNAL):
        return journal_path(storage).is_file()
    url = url_of(storage)
    if url.get_backend_name() == "sqlite":
        return bool(url.database) and url.database != ":memory:" and Path(url.database).is_file()
    return True


def open_storage(storage: str, heartbeat_interval: int | None = None, grace_period: int | None = None) -> optuna.storages.BaseStorage:
    """The Optuna storage, or one line saying why it cannot be opened (driver, URL, server, credentials).
    With a heartbeat interval: a worker's storage, which fails the stale trials of dead workers."""
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    shown = masked(storage)
    if storage.startswith(JOURNAL):
        path = journal_path(storage)
        if not path.parent.is_dir():
            raise DigitrecError(f"hydra.sweeper.storage={storage}: folder {path.parent} does not exist (a journal file on a shared filesystem)")
        return JournalStorage(JournalFileBackend(str(path)))
    url = url_of(storage)
    heartbeat = {}
    try:
        with heartbeat_warnings_off():
            if heartbeat_interval:
                retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
                heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period, "heartbeat_stale_trial_callback": retry}
            for attempt in range(5):
                try:
                    return RDBStorage(real_url(storage), engine_kwargs={"pool_pre_ping": True}, **heartbeat)
                except IntegrityError:
                    # Workers started together on an empty database both create Optuna's tables: the one that
                    # loses the race finds them made a moment later.
                    if attempt == 4:
                        raise
                    time.sleep(0.5 + attempt)
    except (ImportError, ModuleNotFoundError) as err:
        extra = "pip install -e '.[postgres]' (make install includes it)" if url.get_backend_name() == "postgresql" else f"install {err.name or 'it'}"
        raise DigitrecError(f"hydra.sweeper.storage={shown}: its database driver is not installed ({first_line(err)}): {extra}") from None
    except SQLAlchemyError as err:
        reason = first_line(getattr(err, "orig", None) or err, fallback=type(err).__name__)
        raise DigitrecError(f"hydra.sweeper.storage={shown}: cannot open the study's database: {reason}") from None
    except ValueError as err:  # Optuna's own refusals (an unknown schema version, ...)
        raise DigitrecError(f"hydra.sweeper.storage={shown}: {first_line(err)}") from None


# --- what a study's trials say --------------------------------------------------------------


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts towards n_trials: it ran to an outcome (ok, pruned, or a job that
    recorded its failure). Trials of dead workers and surplus ones do not: they ran nothing."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and RECORD_ATTR in trial.user_attrs


def trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def dead_here(trial: FrozenTrial) -> bool:
    """A RUNNING trial whose worker was a process on this machine that no longer exists."""
    host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def fail_dead_trials(study: optuna.Study, storage: optuna.storages.BaseStorage, grace_period: float) -> list[int]:
    """Fail the RUNNING trials of the study (held in `storage`) whose worker is gone and run their
    parameters again (once). Returns the numbers of the trials failed since the last look."""
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if isinstance(storage, RDBStorage):
        with heartbeat_warnings_off():
            optuna.storages.fail_stale_trials(study)  # the heartbeat: Optuna's own, with the retry callback
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        stale = not isinstance(storage, RDBStorage) and now - float(trial.user_attrs.get(HEARTBEAT_ATTR, now)) > grace_period
        if not (stale or dead_here(trial)):
            continue
        try:
            if not storage.set_trial_state_values(trial_id(storage, study.study_name, trial.number), state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
            continue
        with heartbeat_warnings_off():
            RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    return sorted(before & after)


class Heartbeat:
    """While a worker's trials run: their heartbeat, every interval, in a thread."""

    def __init__(self, storage: optuna.storages.BaseStorage, study_name: str, numbers: Iterable[int], interval: float) -> None:
        self.beats = [(storage, trial_id(storage, study_name, n)) for n in numbers]
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def beat(self) -> None:
        for storage, tid in self.beats:
            try:
                if isinstance(storage, RDBStorage):
                    storage.record_heartbeat(tid)
                else:
                    storage.set_trial_user_attr(tid, HEARTBEAT_ATTR, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # told already

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self.beat()
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


# --- the study as a sweep's jobs, for its summary ------------------------------------------------

OBJECTIVE_ATTR = "objective"  # the study's: the metric it optimises (optimized_metric)


def load(storage: str, study_name: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened = open_storage(storage)
    try:
        return optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(opened)) or "none"
        raise DigitrecError(f"no study {study_name} in {masked(storage)} (its studies: {names})") from None


def study_jobs(storage: str | optuna.Study, study_name: str = "") -> list:
    """Every trial of the study as a summary row, whichever worker ran it (surplus asks aside:
    they ran nothing). A dead worker's trial says which trial ran its parameters again."""
    from digitrec.sweeps.sweep import Job  # the summary's row; sweep.py reaches this module only when it has a study

    search = storage if isinstance(storage, optuna.Study) else load(storage, study_name)
    trials = search.get_trials(deepcopy=False)
    jobs = []
    for trial in trials:
        if trial.user_attrs.get(SURPLUS_ATTR):
            continue
        metrics = dict(trial.user_attrs.get(RECORD_ATTR) or {})
        if not metrics and trial.state == TrialState.FAIL:
            again = [t.number for t in trials if trial.number in t.system_attrs.get("retry_history", ())]
            rerun = f": its parameters ran again as trial {again[0]}" if again else " (retried once already: not again)"
            metrics = {"status": "interrupted", "reason": f"its worker stopped mid-trial{rerun}"}
        elif trial.state == TrialState.WAITING:
            metrics = {"status": "running", "reason": "waiting for a worker"}
        folder = str(trial.user_attrs.get(FOLDER_ATTR, ""))
        overrides = [f"{key}={value}" for key, value in trial.params.items()]
        jobs.append(Job(trial.number, Path(folder).name or str(trial.number), overrides, metrics, str(trial.user_attrs.get(WORKER_ATTR, "")), folder))
    return jobs
