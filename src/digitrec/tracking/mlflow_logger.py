"""logger=mlflow: one MLflow run per digitrec run, in a local SQLite store under outputs/ (no server),
or on a tracking server (logger.mlflow.tracking_uri=http://host:5000) shared by many machines.

Lightning's MLFlowLogger does the logging (every metric, as Lightning logs it); this adds what a
run needs to be found and compared later: the run's whole config, flattened, as params; the run
directory's name as the run name (what differs, then the time); one experiment per sweep or Optuna
study; the test figures come as artifacts from digitrec.tracking.tensorboard.TestFigures. Imported only with
logger=mlflow, and MLflow itself only when the logger starts.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf

from digitrec.errors import DigitrecError

SQLITE = "sqlite:///"
# MLflow 3's UI opens an experiment on its GenAI overview (traces, latency) unless the experiment says
# it is model training: then on its runs table. The tag and value are those the UI reads.
CLASSIC_ML = {"mlflow.experimentKind": "custom_model_development"}


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"optimizer": {"lr": 0.001}}} -> {"model.optimizer.lr": 0.001}: the keys as they are
    written as overrides. A record inside a section (model.net, model.optimizer, data.augment) also
    gets its class's readable name, as in TensorBoard's HParams tab: model.optimizer=RMSprop."""
    from digitrec.tracking.tensorboard import record_name

    flat: dict[str, Any] = {}
    for key, value in config.items():
        if str(key).startswith("_"):  # _target_ and friends say how, not what
            continue
        if isinstance(value, Mapping):
            if prefix and "_target_" in value:
                flat[f"{prefix}{key}"] = record_name(value)
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@contextmanager
def store_lock(db: Path):
    """Jobs of a parallel sweep start together: one at a time creates the store and the experiment."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock (jobs of a sequential sweep need none)
        yield
        return
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class MLflowLogger(MLFlowLogger):
    def __init__(
        self,
        tracking_uri: str,
        artifact_location: str,
        experiment_name: str,
        config: DictConfig | Mapping[str, Any],
        run_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise DigitrecError("logger=mlflow needs MLflow: pip install -e '.[mlflow]' (make install includes it)")
        # MLflow would otherwise report usage over the network.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        hydra = HydraConfig.get() if HydraConfig.initialized() else None
        if hydra is not None and hydra.mode == RunMode.MULTIRUN:
            # One experiment per sweep, named as its folder (what it sweeps, the time, an id: lr,bs_<time>_<id>)
            # or its Optuna study (search_<the command's overrides>): MLflow's list shows ~20 characters.
            experiment_name = Path(hydra.sweep.dir).name
        run_dir = Path(hydra.runtime.output_dir) if hydra is not None else None
        if run_name is None and run_dir is not None:
            run_name = run_dir.name
        if tracking_uri.startswith(SQLITE):  # absolute, so that the store is the same from anywhere
            db = Path(tracking_uri[len(SQLITE) :]).resolve()
            db.parent.mkdir(parents=True, exist_ok=True)
            tracking_uri = SQLITE + str(db)
        else:
            db = None
        # A local store keeps artifacts under outputs/; a tracking server (http://host:5000) keeps its own,
        # reachable from every machine of a search (mlflow server --serve-artifacts, its default).
        artifact_location = None if tracking_uri.startswith(("http://", "https://")) else str(Path(artifact_location).resolve())
        container = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else dict(config)
        self.params = {k: str(v) if isinstance(v, (list, tuple)) else v for k, v in flatten(container).items()}
        if hydra is not None:
            self.params["experiment"] = hydra.runtime.choices.get("experiment") or "none"
        tags = {"digitrec.overrides": " ".join(hydra.overrides.task) if hydra is not None else ""}
        if run_dir is not None:
            tags["digitrec.run_dir"] = str(run_dir)
        tags.update(kwargs.pop("tags", None) or {})

        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        with store_lock(db) if db is not None else _no_lock(), quiet_store_setup():
            client = MlflowClient(tracking_uri)
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is None:
                try:
                    client.create_experiment(experiment_name, artifact_location=artifact_location, tags=CLASSIC_ML)
                except MlflowException:  # another machine's worker of the same search made it a moment ago
                    if client.get_experiment_by_name(experiment_name) is None:
                        raise
            elif any(experiment.tags.get(k) != v for k, v in CLASSIC_ML.items()):
                for key, value in CLASSIC_ML.items():
                    client.set_experiment_tag(experiment.experiment_id, key, value)
        super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri, tags=tags, **kwargs)
        self.params_logged = False

    def log_hyperparams(self, params: Any) -> None:
        # The run's config instead of the LightningModule's arguments (the same values, but under
        # other names, and MLflow refuses a param logged twice with different values).
        if not self.params_logged:
            super().log_hyperparams(self.params)
            self.params_logged = True

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)


@contextmanager
def _no_lock():
    yield


@contextmanager
def quiet_store_setup():
    """A new SQLite store is set up by database migrations that log a dozen INFO lines (alembic's and
    MLflow's own): not news for a user, who asked for a run. Warnings and errors still show."""
    loggers = [logging.getLogger(name) for name in ("alembic", "mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
