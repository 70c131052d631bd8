"""hparams_search=optuna: a real TPE search whose study survives a kill and continues, records
failed trials and prunes hopeless ones (in this process and in parallel job processes)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import TINY_TRAIN, find_mnist_dir, run_digitrec
from digitrec.config.naming import study_name

SEARCH = ["hparams_search=optuna", "hydra.sweeper.n_trials=3", *TINY_TRAIN]


def load_study(study_dir: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{study_dir / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def job_metrics(study_dir: Path) -> dict[int, str]:
    """Trial number -> its metrics.json text, for every job that recorded an outcome."""
    return {int(p.parent.name.split("_")[0]): p.read_text() for p in study_dir.glob("*/metrics.json")}


def test_the_search_config_composes_with_a_stored_seeded_study(tmp_path):
    result = run_digitrec("train", "hparams_search=optuna", "--cfg", "hydra", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    hydra = yaml.safe_load(result.stdout)["hydra"]
    sweeper = hydra["sweeper"]
    assert hydra["mode"] == "MULTIRUN"
    assert sweeper["_target_"] == "hydra_plugins.digitrec_optuna_sweeper.ResumableOptunaSweeper"
    assert sweeper["direction"] is None and sweeper["sampler"]["_target_"] == "optuna.samplers.TPESampler"
    assert sweeper["sampler"]["seed"] == "${seed}"
    assert sweeper["storage"] == "sqlite:///${hydra.sweep.dir}/optuna.db"
    assert hydra["sweep"]["dir"] == "${paths.output_root}/${task_name}/optuna/${hydra.sweeper.study_name}"
    assert {"model.optimizer.lr", "data.batch_size", "model.net.hidden_sizes", "model/optimizer"} <= set(sweeper["params"])
    assert {"model.net.dropout", "model.net.norm", "model/scheduler", "data/augment"} <= set(sweeper["params"])


def test_the_search_prunes_by_val_acc_with_a_median_pruner(tmp_path):
    result = run_digitrec("train", "hparams_search=optuna", "--cfg", "job", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    pruning = yaml.safe_load(result.stdout)["callbacks"]["optuna_pruning"]
    assert pruning["_target_"] == "digitrec.sweeps.optuna_search.OptunaPruning" and pruning["monitor"] == "val/acc"
    assert pruning["pruner"]["_target_"] == "optuna.pruners.MedianPruner"
    assert pruning["trial"] == "${hydra:job.num}", "the job finds its trial by its number"


def test_the_search_space_speaks_hydras_sweep_syntax():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from digitrec.sweeps.optuna_search import search_space

    params = {
        "model.optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
        "data.batch_size": "choice(32, 64)",
        "model.net.hidden_sizes": "choice([500,100], [800])",
        "model/scheduler": "choice(none, cosine)",
    }
    space = search_space(params, ["trainer.max_epochs=range(3,11)", "+model.optimizer.momentum=interval(0, 0.5)", "data.batch_size=128"])
    dims = space.dimensions
    assert dims["model.optimizer.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert dims["model.net.hidden_sizes"] == CategoricalDistribution(["[500,100]", "[800]"])
    assert dims["model/scheduler"] == CategoricalDistribution(["none", "cosine"]), "a config group is a dimension like any key"
    assert dims["trainer.max_epochs"] == IntDistribution(3, 10), "range stops before its end, as in Hydra"
    assert dims["+model.optimizer.momentum"] == FloatDistribution(0.0, 0.5), "interval: floats, as in Hydra"
    assert "data.batch_size" not in dims and space.fixed == ["data.batch_size=128"], "KEY=VALUE fixes a dimension"
    params = {"model.optimizer.lr": 0.001, "model.net.hidden_sizes": "[800]", "model/scheduler": "cosine", "trainer.max_epochs": 4}
    params["+model.optimizer.momentum"] = 0.25
    assert space.overrides(params) == [
        "data.batch_size=128",
        "model.optimizer.lr=0.001",
        "model.net.hidden_sizes=[800]",
        "model/scheduler=cosine",
        "trainer.max_epochs=4",
        "+model.optimizer.momentum=0.25",
    ]
    # ~KEY leaves a dimension of hydra.sweeper.params out, e.g. hidden_sizes when searching over CNNs.
    searched = {"model.optimizer.lr": "tag(log, interval(1e-4, 1e-2))", "model.net.hidden_sizes": "choice([500,100], [800])"}
    space = search_space(searched, ["model/net=choice(mlp,cnn)", "~model.net.hidden_sizes"])
    assert "model.net.hidden_sizes" not in space.dimensions and "~model.net.hidden_sizes" not in space.fixed
    assert space.dimensions["model/net"] == CategoricalDistribution(["mlp", "cnn"]) and "model.optimizer.lr" in space.dimensions
    assert search_space({"data.batch_size": "choice(32, 64)"}, ["data.batch_size=choice(16,32)"]).dimensions == {
        "data.batch_size": CategoricalDistribution([16, 32])
    }, "a sweep on the command line replaces the config's"


def test_a_search_rejects_what_it_cannot_sample(tmp_path):
    result = run_digitrec("train", "hparams_search=optuna", "experiment=glob(*)", *TINY_TRAIN, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("digitrec: error:") and "choice(), range() or interval()" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_search_stores_its_study_and_continues_it_after_a_kill(tmp_path):
    env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir()), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "digitrec", "train", *SEARCH]

    # 1. A complete search of 3 trials.
    first = run_digitrec("train", *SEARCH, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (study_dir,) = (tmp_path / "outputs" / "train" / "optuna").iterdir()
    named_by = sorted(a for a in TINY_TRAIN if not a.startswith("progress="))
    assert study_dir.name == study_name(named_by), "named by the command's overrides"
    assert study_dir.name.startswith("search_limit_train_batches=20,limit_val_batches=2,epochs=1_"), "in short"
    # Each trial's folder leads with the searched lr, in short (TensorBoard shows ~30 characters of a name).
    assert all(re.match(r"\d+_lr=[\d.e-]+,bs=\d+,hidden=", p.name) for p in study_dir.glob("*_*") if p.is_dir()), list(study_dir.iterdir())
    study = load_study(study_dir)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    recorded = job_metrics(study_dir)
    for trial in study.trials:
        assert trial.value == json.loads(recorded[trial.number])["val/acc_best"], "Optuna maximises val/acc_best"
    assert len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 3
    assert "3 jobs: 3 ok." in first.stdout

    # 2. The same search made longer, killed while its 5th trial runs.
    longer = [*command, "hydra.sweeper.n_trials=6"]
    run = subprocess.Popen(longer, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(study_dir.glob("4_*/.hydra")) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.1)
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=60)
    assert list(study_dir.glob("4_*/.hydra")), "the 5th trial had started"
    before = job_metrics(study_dir)
    killed = [t for t in load_study(study_dir).trials if t.state.name == "RUNNING"]
    assert [t.number for t in killed] == [4] and 4 not in before

    # 3. The same command again: the study continues where it stopped.
    again = subprocess.run(longer, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    study = load_study(study_dir)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 6, "n_trials counts the whole study: only the missing trials ran"
    after = job_metrics(study_dir)
    assert all(after[number] == text for number, text in before.items()), "earlier trials' jobs are untouched"
    # The interrupted trial failed, and its parameters ran again as the next trial.
    assert study.trials[4].state.name == "FAIL" and study.trials[5].params == killed[0].params
    assert sorted(after) == sorted(t.number for t in complete), "job directories are numbered by trial"
    assert "6 ok" in again.stdout


FIXED_DIMENSIONS = (
    "data.batch_size=100",
    "model.net.hidden_sizes=[500,100]",
    "model.net.dropout=0.0",
    "model.net.norm=none",
    "model/optimizer=adam",
    "model.optimizer.weight_decay=0.0",
    "model/scheduler=none",
    "data/augment=none",
)


@pytest.mark.slow
def test_failed_and_pruned_trials_are_recorded_with_jobs_in_other_processes(tmp_path):
    """lr -1 fails its job; lr 1e-6 is hopeless after one epoch; jobs run two at a time in
    separate processes (hydra/launcher=parallel), each reaching its trial through the SQLite file."""
    search = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=6",
        "seed=3",  # a sampler seed that draws all three learning rates within 6 trials
        "model.optimizer.lr=choice(-1.0,1e-6,1e-3)",
        # Only the learning rate varies: the space's other dimensions fixed (KEY=VALUE).
        *FIXED_DIMENSIONS,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=2",
        "progress=lines",
        "callbacks.optuna_pruning.pruner.n_startup_trials=1",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
    ]
    result = run_digitrec("train", *search, cwd=tmp_path)
    # Failed trials make the search exit 1, after its summary.
    assert result.returncode == 1 and "| 1 best |" in result.stdout, result.stderr[-3000:]
    (study_dir,) = (tmp_path / "outputs" / "train" / "optuna").iterdir()
    study = load_study(study_dir)
    recorded = {number: json.loads(text) for number, text in job_metrics(study_dir).items()}
    states = {t.state.name for t in study.trials}
    assert {"COMPLETE", "PRUNED", "FAIL"} <= states, states
    for trial in study.trials:
        job = recorded[trial.number]
        if trial.params["model.optimizer.lr"] == -1.0:
            assert trial.state.name == "FAIL" and job["status"] == "failed"
            assert "config error at model.optimizer.lr" in job["reason"] and trial.user_attrs["reason"] == job["reason"]
        elif trial.state.name == "PRUNED":
            assert trial.params["model.optimizer.lr"] == 1e-6, "only the hopeless learning rate is pruned"
            assert list(trial.intermediate_values) == [0], "stopped after its first epoch"
            assert job["status"] == "pruned" and job["epochs"] == 1 and "below the median" in job["reason"]
        else:
            assert trial.state.name == "COMPLETE" and job["status"] == "ok"
            assert list(trial.intermediate_values) == [0, 1], "val/acc reported after each epoch"
    summary = (study_dir / "summary.md").read_text()
    counts = {s: sum(t.state.name == s for t in study.trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    assert f"6 jobs: {counts['COMPLETE']} ok, {counts['PRUNED']} pruned, {counts['FAIL']} failed." in summary
    assert "pruned after epoch 1: val/acc" in summary
    assert "Traceback" not in result.stderr


def test_the_best_trial_is_reported_with_4_significant_digits():
    from digitrec.sweeps.sweep import short_params

    params = {"model.optimizer.lr": 0.007231563192959944, "data.batch_size": 64, "model/optimizer": "adamw", "model.net.hidden_sizes": "[256,128]"}
    assert short_params(params) == "model.optimizer.lr=0.007232 data.batch_size=64 model/optimizer=adamw model.net.hidden_sizes=[256,128]"
