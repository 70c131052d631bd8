"""Optuna searches that survive an interruption: the same command continues the same study.

Hydra's Optuna sweeper already loads an existing study, but then runs n_trials more, numbers
its jobs from 0 again (overwriting the directories of the earlier session's trials) and leaves
the trials a kill interrupted as RUNNING forever. This sweeper fixes the three.
"""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from optuna.trial import TrialState

from digitrec.sweep import read_jobs

log = logging.getLogger(__name__)


class ResumableStudySweeper(OptunaSweeperImpl):
    """`n_trials` is the study's size in all, not per session.

    At the start of a session: trials left running by an interrupted session are marked failed
    and their parameters queued to run again; only the missing trials run; job directories are
    numbered by trial (job 7 is trial 7); the sampler is seeded with seed + trials so far.
    Assumes one session per study at a time (a second one would see the first's trials as stale).
    """

    def sweep(self, arguments: list[str]) -> None:
        sweep_dir = Path(self.sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # the SQLite file goes there, before any job
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # enqueue_trial
            study = optuna.create_study(
                study_name=self.study_name, storage=self.storage, directions=self._get_directions(), load_if_exists=True
            )
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                study.tell(trial.number, state=TrialState.FAIL)
                study.enqueue_trial(trial.params)
                log.info(f"trial {trial.number} was interrupted: its parameters run again")

        # A trial is done when its job recorded an outcome (ok or failed) in the sweep directory.
        recorded = {job.num for job in read_jobs(sweep_dir) if job.status != "unfinished"}
        trials = study.get_trials(deepcopy=False)
        done = sum(t.number in recorded and t.state.is_finished() for t in trials)
        waiting = [t.number for t in trials if t.state == TrialState.WAITING]
        self.job_idx = min(waiting, default=len(trials))
        if done >= self.n_trials:
            log.info(f"study {self.study_name}: all {self.n_trials} trials done (hydra.sweeper.n_trials=N makes it N in all)")
        elif trials:
            log.info(f"study {self.study_name}: {done} of {self.n_trials} trials done, running the rest")
        self.n_trials = max(0, self.n_trials - done)

        if isinstance(self.sampler, functools.partial) and self.sampler.func is not optuna.samplers.GridSampler:
            seed = self.sampler.keywords.get("seed")
            self.sampler = self.sampler(seed=None if seed is None else seed + len(trials))

        try:
            super().sweep(arguments)
        except ValueError:
            # The stock sweeper ends by reporting the best trial, and fails when none completed.
            if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
                raise
            log.warning("no trial of the study completed: see the sweep summary for the reasons")
