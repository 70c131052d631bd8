"""hparams_search=optuna: digitrec's Optuna sweeper, on Optuna's public API, and its pruning callback.

The sweeper asks the study for trials, launches one Hydra job per trial (the job's number is the
trial's number) and tells the study each job's outcome. The study lives in SQLite beside the trials'
directories, so the same command continues the same study: `n_trials` is the study's size in all,
and a trial that an interruption cut off is marked failed and its parameters run again.

Pruning happens inside the job, which may run in another process (hydra/launcher=parallel): the
OptunaPruning callback opens the same storage, finds its trial by the job's number, reports val/acc
after every epoch and asks the pruner whether to go on. A pruned job ends with JobPruned, which
the job records as "pruned" and the sweeper tells the study as TrialState.PRUNED.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from digitrec.errors import BadOverride, DigitrecError
from digitrec.sweeps import study
from digitrec.sweeps.sweep import JobPruned, short_params
from digitrec.tracking import record

# How often a worker with nothing left to ask looks whether the others' last trials ended: a
# one-query look, so often enough that a finished search is not held up by its slowest poll.
WAIT_POLL_SECONDS = 1.0

log = logging.getLogger(__name__)


# --- the search space: Hydra's sweep syntax as Optuna distributions ----------------------------


def override_value(value: Any) -> str:
    """A sampled value as Hydra override syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def distribution(override: Override) -> BaseDistribution:
    """choice(...) -> categorical; range(a,b[,step]) -> a, a+step, ... < b (as Hydra counts it);
    interval(a,b) -> floats in [a, b]; tag(log, ...) -> log scale."""
    value = override.value()
    log_scale = "log" in getattr(value, "tags", ())
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        # Lists and dicts (model.hidden_sizes) become their override text; numbers and strings stay.
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if all(isinstance(x, int) for x in (start, stop, step)) and step > 0 and stop > start:
            return IntDistribution(start, start + (stop - start - 1) // step * step, step=step, log=log_scale)
        last = start + math.floor((stop - start) / step - 1e-9) * step
        return FloatDistribution(start, last, step=step)
    if isinstance(value, IntervalSweep):  # Hydra reads interval ends as floats: range() is for integers
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise BadOverride(f"{override.input_line}: an Optuna search takes choice(), range() or interval() (glob and sweeps of lists are for -m)")


@dataclass
class SearchSpace:
    dimensions: dict[str, BaseDistribution]  # by override key (e.g. model.lr, +trainer.foo)
    fixed: list[str]  # overrides every trial gets as they are

    def overrides(self, params: dict[str, Any]) -> list[str]:
        return [*self.fixed, *(f"{key}={override_value(params[key])}" for key in self.dimensions)]


def search_space(params: dict[str, str] | None, arguments: Sequence[str]) -> SearchSpace:
    """hydra.sweeper.params, then the command line: a later override of the same key replaces an
    earlier one (KEY=VALUE fixes a dimension, a sweep adds or replaces one, ~KEY drops one of
    hydra.sweeper.params from the space)."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except HydraException as err:
        raise DigitrecError(f"bad override in the search space: {' '.join(str(err).split())}") from None
    by_key: dict[str, Override] = {}
    searched = {o.key_or_group for o in parsed[: len(params or {})]}
    for index, override in enumerate(parsed):
        if index >= len(params or {}) and override.is_delete() and override.key_or_group in searched:
            by_key.pop(override.key_or_group, None)  # a dimension left out, not a key deleted
            continue
        by_key.pop(override.key_or_group, None)  # the later one wins, in its own place
        by_key[override.key_or_group] = override
    dimensions, fixed = {}, []
    for override in by_key.values():
        if override.is_sweep_override():
            dimensions[override.get_key_element()] = distribution(override)
        else:
            fixed.append(override.input_line)
    return SearchSpace(dimensions, fixed)


# --- the sweeper ---------------------------------------------------------------------------------


def consecutive_runs(numbers: list[int]) -> list[list[int]]:
    """[3, 4, 5, 9] -> [[3, 4, 5], [9]]: a launch numbers its jobs from one start index."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return runs


class OptunaSearch:
    """The work of hydra_plugins.digitrec_optuna_sweeper.ResumableOptunaSweeper (see its config,
    configs/hydra/sweeper/resumable_optuna.yaml). Any number of workers may run it on one study at
    once (digitrec.sweeps.study): each asks for trials until the study has n_trials that ran."""

    def __init__(
        self,
        study_name: str,
        storage: str,
        sampler: Any,
        n_trials: int,
        direction: str | None = None,
        n_jobs: int = 1,
        params: DictConfig | dict | None = None,
        heartbeat_interval: int = 10,
        grace_period: int = 60,
    ) -> None:
        self.study_name = study_name
        self.storage = storage
        self.sampler = sampler
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = max(1, n_jobs)
        self.params = OmegaConf.to_container(params) if OmegaConf.is_config(params) else params
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def make_sampler(self, trials_so_far: int) -> optuna.samplers.BaseSampler:
        # Seeded with seed + trials so far, so that a continued search (or another worker) draws new points.
        sampler = self.sampler
        if callable(sampler) and not isinstance(sampler, optuna.samplers.BaseSampler):  # _partial_: true
            seed = getattr(sampler, "keywords", {}).get("seed")
            return sampler(seed=None if seed is None else seed + trials_so_far)
        return sampler

    def sweep(self, arguments: list[str]) -> None:
        direction = study_direction(self.config, self.direction)
        space = search_space(self.params, arguments)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)  # a SQLite file goes there, before any job
        # As Hydra's own sweeper does: the folder says it is a sweep (digitrec predict looks for it).
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = study.open_storage(self.storage, self.heartbeat_interval, self.grace_period)
        search = optuna.create_study(study_name=self.study_name, storage=storage, direction=direction, load_if_exists=True)
        check_same_search(search, self.storage, direction, space)
        search.set_user_attr(study.OBJECTIVE_ATTR, record.config_objective(self.config))  # for digitrec sweep-report --study
        for number in study.fail_dead_trials(search, storage, self.grace_period):
            log.info(f"trial {number} was cut off (its worker stopped): its parameters run again")
        trials = search.get_trials(deepcopy=False)
        done = sum(map(study.counts, trials))
        if done >= self.n_trials:
            log.info(f"study {self.study_name}: all {self.n_trials} trials done (hydra.sweeper.n_trials=N makes it N in all)")
        elif trials:
            log.info(f"study {self.study_name}: {done} of {self.n_trials} trials done, running the rest")
        search = optuna.load_study(study_name=self.study_name, storage=storage, sampler=self.make_sampler(len(trials)))
        waiting_said = False
        while True:
            study.fail_dead_trials(search, storage, self.grace_period)
            trials = search.get_trials(deepcopy=False)
            done = sum(map(study.counts, trials))
            free = self.n_trials - done - sum(t.state == TrialState.RUNNING for t in trials)
            if done >= self.n_trials:
                break
            if free <= 0:
                # Other workers run the last trials; if one of them dies, its trial comes back here.
                if not waiting_said:
                    log.info(f"study {self.study_name}: the last trials run on other workers; waiting for them to finish")
                    waiting_said = True
                time.sleep(WAIT_POLL_SECONDS)
                continue
            batch = self.within_the_study(search, [self.ask(search, space) for _ in range(min(self.n_jobs, free))])
            by_number = {trial.number: trial for trial in batch}
            with study.Heartbeat(storage, self.study_name, by_number, self.heartbeat_interval):
                for numbers in consecutive_runs(sorted(by_number)):
                    # Job folders are numbered by trial: unique in the study, so never shared by two workers.
                    returns = self.launcher.launch([space.overrides(by_number[n].params) for n in numbers], initial_job_idx=numbers[0])
                    for number, job in zip(numbers, returns):
                        self.tell(search, by_number[number], job)
        self.report(search)

    def ask(self, search: optuna.Study, space: SearchSpace) -> optuna.Trial:
        """A trial for this worker. Workers started together seed their samplers alike and would draw
        the same points: a point another worker runs or ran is dropped (failed as surplus, never
        counted nor shown) and this worker's sampler reseeded, twice at most."""
        for attempt in range(3):
            queued = {t.number for t in search.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
            with study.heartbeat_warnings_off():
                trial = search.ask(space.dimensions)
            trial.set_user_attr(study.WORKER_ATTR, study.WORKER)
            if trial.number in queued:  # a dead worker's trial run again, or one enqueued by hand: it runs as it is
                break
            others = search.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED))
            theirs = [t.params for t in others if t.number != trial.number and t.user_attrs.get(study.WORKER_ATTR) != study.WORKER]
            if trial.params in theirs and attempt < 2:  # a small space may hold no other point: then it runs
                trial.set_user_attr(study.SURPLUS_ATTR, True)
                search.tell(trial, state=TrialState.FAIL)
                search.sampler.reseed_rng()
                continue
            break
        return trial

    def within_the_study(self, search: optuna.Study, batch: list[optuna.Trial]) -> list[optuna.Trial]:
        """Two workers asking at once may take more trials than the study lacks: the trials past
        n_trials (by number, counting those that ran, run or wait to run) are failed as surplus."""
        live = sorted(t.number for t in search.get_trials(deepcopy=False) if study.counts(t) or t.state in (TrialState.RUNNING, TrialState.WAITING))
        allowed = set(live[: self.n_trials])
        for trial in batch:
            if trial.number not in allowed:
                trial.set_user_attr(study.SURPLUS_ATTR, True)
                search.tell(trial, state=TrialState.FAIL)
        return [trial for trial in batch if trial.number in allowed]

    def tell(self, search: optuna.Study, trial: optuna.Trial, job: Any) -> None:
        """The job's outcome, from the metrics.json it wrote (any launcher, any process), also kept
        in the study, which is the record of a search on many machines."""
        run_dir = Path(job.hydra_cfg.hydra.runtime.output_dir) if job.hydra_cfg is not None else None
        metrics = (record.read_record(run_dir) if run_dir else None) or {record.STATUS: record.FAILED, record.REASON: "the job recorded no outcome"}
        status = record.status(metrics)
        try:
            value = float(job.return_value)
        except Exception:  # noqa: BLE001  (a crashed job re-raises here; None: it recorded a failure)
            value = None
        shown = [record.STATUS, record.REASON, "epochs", "train_seconds", *record.OBJECTIVES]
        trial.set_user_attr(study.RECORD_ATTR, {k: metrics[k] for k in shown if metrics.get(k) is not None})
        if run_dir is not None:
            trial.set_user_attr(study.FOLDER_ATTR, str(run_dir.resolve()))
        if status == record.PRUNED:
            search.tell(trial, state=TrialState.PRUNED)
        elif status == record.OK and value is not None and math.isfinite(value):
            search.tell(trial, value)
        else:
            trial.set_user_attr("reason", str(metrics.get(record.REASON, "the job recorded no outcome")))
            search.tell(trial, state=TrialState.FAIL)

    def report(self, search: optuna.Study) -> None:
        complete = search.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            log.warning("no trial of the study completed: see the sweep summary for the reasons")
            return
        best = search.best_trial
        log.info(f"best trial {best.number}: {record.config_objective(self.config)} {best.value:.4g} with {short_params(best.params)}")
        results = {"name": "optuna", "study_name": self.study_name, "best_trial": best.number, "best_params": best.params, "best_value": best.value}
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")


def study_direction(config: DictConfig, direction: str | None) -> str:
    """The objective's own direction (digitrec.tracking.record.higher_is_better); a `direction` set by hand must agree."""
    objective = record.config_objective(config)
    own = "maximize" if record.higher_is_better(objective) else "minimize"
    if direction not in (None, own):
        raise DigitrecError(f"hydra.sweeper.direction={direction} contradicts optimized_metric={objective}: leave the direction out ({own})")
    return own


def check_same_search(search: optuna.Study, storage: str, direction: str, space: SearchSpace) -> None:
    """A study that exists must be this search: same direction, same dimensions."""
    where = f"study {search.study_name} in {study.masked(storage)}"
    fix = "name another study with hydra.sweeper.study_name=NAME"
    if search.direction.name.lower() != direction:
        raise DigitrecError(f"{where} is {search.direction.name.lower()}d, this search would {direction}: {fix}")
    for trial in search.get_trials(deepcopy=False):
        if trial.distributions:
            if trial.distributions != space.dimensions:
                theirs, ours = sorted(trial.distributions), sorted(space.dimensions)
                differ = sorted(set(theirs) ^ set(ours)) or [k for k in ours if trial.distributions[k] != space.dimensions[k]]
                raise DigitrecError(f"{where} searches another space (differs in {', '.join(differ)}): {fix}")
            return


def check_search(config: DictConfig) -> None:
    """hparams_search=optuna, before anything is created: the storage opens (driver, URL, server,
    credentials) and a study of that name there, if any, is this search. A SQLite or journal file
    not there yet is left alone (opening it would create it)."""
    settings = config.hydra.sweeper
    direction = study_direction(config, settings.get("direction"))
    params = OmegaConf.to_container(settings.params) if settings.get("params") is not None else None
    space = search_space(params, list(config.hydra.overrides.task))
    storage = str(settings.storage)
    study.url_of(storage)
    if not study.exists(storage):
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened = study.open_storage(storage)
    try:
        search = optuna.load_study(study_name=str(settings.study_name), storage=opened)
    except KeyError:  # no such study yet
        return
    check_same_search(search, storage, direction, space)


# --- pruning, inside each trial's job ----------------------------------------------------------


class OptunaPruning(L.Callback):
    """After every validation: report `monitor` to this job's trial and stop the job when the
    pruner says it is hopeless (below the median of the finished trials at the same epoch, for
    MedianPruner). Never at the last epoch: the trial is complete by then and keeps its result.

    The job's number is its trial's number (the sweeper launches them so). Outside an Optuna
    search (no study in the storage) it does nothing.
    """

    def __init__(self, storage: str, study_name: str, trial: int, pruner: optuna.pruners.BasePruner, monitor: str = "val/acc") -> None:
        self.storage_url, self.study_name, self.trial_number = storage, study_name, int(trial)
        self.pruner, self.monitor = pruner, monitor
        self.trial_id: int | None = None
        # Built with the trainer, just after the run started: its time is the run's, as for a trial that completes.
        self.started = time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.storage = study.open_storage(self.storage_url)
        try:
            study_id = self.storage.get_study_id_from_name(self.study_name)
            self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
        except KeyError:
            log.warning(f"no trial {self.trial_number} in study {self.study_name}: this run is not pruned")
            return
        self.study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=self.pruner)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        value = trainer.callback_metrics.get(self.monitor)
        prune = False
        if trainer.is_global_zero and self.trial_id is not None and value is not None:
            self.storage.set_trial_intermediate_value(self.trial_id, epoch, float(value))
            last_epoch = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
            prune = not last_epoch and self.study.pruner.prune(self.study, self.storage.get_trial(self.trial_id))
        if trainer.world_size > 1:
            prune = trainer.strategy.broadcast(prune)
        if prune:
            best = trainer.callback_metrics.get("val/acc_best")
            why = "below the median of the finished trials" if isinstance(self.pruner, optuna.pruners.MedianPruner) else "unpromising"
            raise JobPruned(
                f"after epoch {epoch + 1}: {self.monitor} {float(value):.4f} is {why}",
                {
                    "val/acc_best": float(best) if best is not None else None,
                    "epochs": epoch + 1,
                    "train_seconds": round(time.perf_counter() - self.started, 2),
                },
            )
