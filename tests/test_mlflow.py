"""logger=mlflow and logger=many: real runs read back from the real SQLite store through MlflowClient."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY_TRAIN, run_digitrec

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One single run with logger=mlflow and a 2-job sweep with logger=many, in one store."""
    cwd = tmp_path_factory.mktemp("mlflow")
    single = run_digitrec("train", "logger=mlflow", *TINY_TRAIN, cwd=cwd)
    assert single.returncode == 0, single.stderr[-3000:]
    printed = single.stdout + single.stderr
    assert "database tables" not in printed and "alembic" not in printed, "a new store is set up quietly"
    sweep = run_digitrec("train", "-m", "logger=many", "model.optimizer.lr=1e-3,3e-4", *TINY_TRAIN, cwd=cwd)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    from mlflow import MlflowClient

    db = cwd / "outputs" / "mlflow.db"
    assert db.is_file(), "the store lives under outputs/"
    return MlflowClient(f"sqlite:///{db}"), cwd / "outputs"


def runs_of(client, experiment_name: str):
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, [e.name for e in client.search_experiments()]
    # MLflow 3's UI opens the experiment on its runs table, not on the GenAI overview (traces).
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    return client.search_runs([experiment.experiment_id])


@pytest.mark.slow
def test_a_run_has_its_config_metrics_and_test_figures_in_mlflow(store):
    client, outputs = store
    (run,) = runs_of(client, "train")
    (run_dir,) = (outputs / "train" / "runs").iterdir()
    assert run.info.run_name == run_dir.name, "named by its directory: what differs, then the time"
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.optimizer.lr"] == "0.001" and params["model.net.hidden_sizes"] == "[500, 100]"
    assert params["model.net"] == "MLP" and params["model.optimizer"] == "Adam" and params["model.scheduler"] == "None"
    assert params["data.batch_size"] == "100" and params["trainer.max_epochs"] == "1" and params["seed"] == "12345"
    assert params["trainer.limit_train_batches"] == "20" and params["experiment"] == "none"
    assert not any(key.startswith("_") or "._" in key for key in params), "no _target_ keys"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    assert run.data.metrics["val/acc_best"] == pytest.approx(metrics["val/acc_best"])
    assert {"train/loss_epoch", "train/acc", "val/loss", "val/acc", "train/lr", "test/loss"} <= set(run.data.metrics)
    assert "epoch" not in run.data.metrics
    val_acc = client.get_metric_history(run.info.run_id, "val/acc")
    assert len(val_acc) == 1 and 0.5 < val_acc[0].value <= 1, "one epoch: one point"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "test")}
    assert artifacts == {"test/confusion_matrix.png", "test/misclassified.png", "test/metrics.json"}
    local = Path(client.download_artifacts(run.info.run_id, "test/metrics.json"))
    assert json.loads(local.read_text())["test/acc"] == pytest.approx(metrics["test/acc"])
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(outputs), "artifacts under outputs/ too"
    assert run.data.tags["digitrec.run_dir"] == str(run_dir.resolve())


@pytest.mark.slow
def test_each_job_of_a_sweep_is_a_run_of_the_sweeps_own_experiment(store):
    client, outputs = store
    (sweep_dir,) = (outputs / "train" / "multiruns").iterdir()
    runs = runs_of(client, sweep_dir.name)
    assert sweep_dir.name.startswith("lr_"), "the experiment is named as the sweep's folder: what it sweeps, then the time"
    assert sorted(r.info.run_name for r in runs) == ["0_lr=1e-3", "1_lr=3e-4"]
    for run in runs:
        job_dir = sweep_dir / run.info.run_name
        metrics = json.loads((job_dir / "metrics.json").read_text())
        assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
        assert float(run.data.params["model.optimizer.lr"]) == pytest.approx(3e-4 if "3e-4" in run.info.run_name else 1e-3)
        # logger=many: TensorBoard and CSV beside MLflow.
        assert list(job_dir.glob("events.out.tfevents.*")) and (job_dir / "csv" / "metrics.csv").is_file()


def test_tensorboard_stays_the_default_and_mlflow_is_not_imported_without_it(tmp_path):
    result = run_digitrec("train", "--cfg", "job", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert list(yaml.safe_load(result.stdout)["logger"]) == ["tensorboard"]
    code = "import sys, digitrec.training.train, digitrec.tracking.tensorboard, digitrec.sweeps.sweep; print('mlflow' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "False"


def test_many_is_tensorboard_csv_and_mlflow(tmp_path):
    result = run_digitrec("train", "logger=many", "--cfg", "job", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    loggers = yaml.safe_load(result.stdout)["logger"]
    assert sorted(loggers) == ["csv", "mlflow", "tensorboard"]
    assert loggers["mlflow"]["tracking_uri"] == "sqlite:///${paths.output_root}/mlflow.db"


def test_make_mlflow_serves_the_store_on_loopback_only():
    if shutil.which("make") is None:
        pytest.fail("make is needed to check the Makefile's mlflow target")
    dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", "mlflow"], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    (command,) = [line for line in dry.stdout.splitlines() if "mlflow ui" in line]
    assert re.search(r"--backend-store-uri sqlite:///outputs/mlflow\.db\b", command) and "--host 127.0.0.1" in command
    assert "--workers 1" in command and "PYTHONWARNINGS='ignore:starlette.middleware.wsgi is deprecated'" in command, "quick and quiet"


@pytest.mark.slow
def test_four_parallel_jobs_writing_the_local_store_lose_no_run(tmp_path):
    """hydra/launcher=parallel: four job processes start together on one SQLite store; every run is there."""
    lrs = ["1e-3", "2e-3", "3e-3", "4e-3"]
    result = run_digitrec(
        "train",
        "-m",
        "logger=mlflow",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=4",
        f"model.optimizer.lr={','.join(lrs)}",
        *TINY_TRAIN,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "database is locked" not in result.stdout + result.stderr
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    runs = runs_of(client, sweep_dir.name)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    assert sorted(float(r.data.params["model.optimizer.lr"]) for r in runs) == [float(lr) for lr in lrs]
    assert all("test/acc" in r.data.metrics for r in runs)


@pytest.fixture
def mlflow_server(postgres_db, tmp_path):
    """A real `mlflow server` on loopback over a PostgreSQL backend store (artifacts served by it)."""
    import time
    import urllib.request

    from benchmarks.postgres import free_port

    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", postgres_db, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--artifacts-destination", str(tmp_path / "server-artifacts")]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"mlflow server did not start: {server.stderr.read()[-2000:]}")
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.slow
def test_two_workers_of_a_search_log_to_one_experiment_on_an_mlflow_server(mlflow_server, tmp_path):
    """Two workers of one Optuna search (a journal file), each in its own folder as on its own machine,
    logging to a real MLflow server backed by PostgreSQL: both runs in the study's one experiment."""
    from mlflow import MlflowClient

    journal = tmp_path / "search.log"
    command = [
        sys.executable,
        "-m",
        "digitrec",
        "train",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage=journal:{journal}",
    ]
    command += [
        "hydra.sweeper.study_name=shared",
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={mlflow_server}",
        *TINY_TRAIN,
        "trainer.limit_test_batches=2",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    workers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        workers.append(subprocess.Popen(command, cwd=tmp_path / name, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [w.communicate(timeout=400)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    client = MlflowClient(mlflow_server)
    runs = runs_of(client, "shared")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert all("test/acc" in r.data.metrics for r in runs)
    assert {r.data.tags["digitrec.run_dir"].split("/")[-6] for r in runs} <= {"a", "b"}
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "test")}
    assert "test/metrics.json" in artifacts, "artifacts go to the server"
