"""A search that outgrows one machine: many workers on one Optuna study in a real PostgreSQL server
(tests/conftest.py, postgres_server) or a journal file, a worker killed mid-trial, its trial run
again, pruning across workers, one-line refusals of bad storages."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from benchmarks.postgres import PASSWORD as POSTGRES_PASSWORD
from benchmarks.postgres import free_port
from conftest import find_mnist_dir, run_digitrec
from digitrec.inference.predict import choose_checkpoint
from digitrec.sweeps import study as studies

# Only the learning rate varies; trials are tiny (2 epochs of 5 batches, 2 test batches).
TINY_SEARCH = [
    "hparams_search=optuna",
    "model.optimizer.lr=choice(3e-4,1e-3,2e-3,3e-3,1e-6)",
    "data.batch_size=100",
    "model.net.hidden_sizes=[500,100]",
    "model.net.dropout=0.0",
    "model.net.norm=none",
    "model/optimizer=adam",
    "model.optimizer.weight_decay=0.0",
    "model/scheduler=none",
    "data/augment=none",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "progress=lines",
    "callbacks.optuna_pruning.pruner.n_startup_trials=1",
    "hydra.sweeper.heartbeat_interval=1",
    "hydra.sweeper.grace_period=3",
]


def storage_url(kind: str, request, tmp_path: Path) -> str:
    return request.getfixturevalue("postgres_db") if kind == "postgresql" else f"journal:{tmp_path / 'search.log'}"


def load(storage: str, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=studies.open_storage(storage))


@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_a_dead_workers_trial_is_failed_by_its_heartbeat_and_run_again_once(kind, request, tmp_path):
    """A worker on another machine (no process here to look at) stops beating: after the grace
    period its trial is failed and its parameters wait to run again, once."""
    import optuna
    from optuna.distributions import FloatDistribution

    url = storage_url(kind, request, tmp_path)
    storage = studies.open_storage(url, heartbeat_interval=1, grace_period=2)
    search = optuna.create_study(study_name="beats", storage=storage, direction="maximize")
    trial = search.ask({"x": FloatDistribution(0, 1)})
    trial.set_user_attr(studies.WORKER_ATTR, "another-machine:1")
    studies.Heartbeat(storage, "beats", [trial.number], 1).beat()
    assert studies.fail_dead_trials(search, storage, 2) == [], "alive within its grace period"
    time.sleep(3.5)
    assert studies.fail_dead_trials(search, storage, 2) == [trial.number]
    dead, again = search.get_trials(deepcopy=False)
    assert dead.state.name == "FAIL" and again.state.name == "WAITING" and again.params == dead.params
    assert again.system_attrs["failed_trial"] == dead.number
    # The retry dies too: failed, not retried a second time.
    rerun = search.ask({"x": FloatDistribution(0, 1)})
    assert rerun.number == again.number
    studies.Heartbeat(storage, "beats", [rerun.number], 1).beat()
    time.sleep(3.5)
    assert studies.fail_dead_trials(search, storage, 2) == [rerun.number]
    assert [t.state.name for t in search.get_trials(deepcopy=False)] == ["FAIL", "FAIL"]


def test_bad_storages_are_refused_in_one_line_with_nothing_created(postgres_server, postgres_db, tmp_path):
    import optuna
    from optuna.distributions import FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="minimising", storage=postgres_db, direction="minimize")
    other = optuna.create_study(study_name="other-space", storage=postgres_db, direction="maximize")
    other.enqueue_trial({"x": 0.5})
    other.tell(other.ask({"x": FloatDistribution(0, 1)}), 0.5)
    host_port = postgres_server.rpartition("@")[2]
    cases = {
        "unreachable": (f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/db", "cannot open the study's database"),
        "credentials": (f"postgresql://postgres:hunter2@{host_port}/postgres", "password authentication failed"),
        "driver": ("mysql+pymysql://postgres:hunter2@127.0.0.1/db", "database driver is not installed"),
        "malformed": ("not-a-url", "is not a storage URL"),
        "direction": (postgres_db, "is minimized, this search would maximize"),
        "space": (postgres_db, "searches another space"),
    }
    names = {"direction": "minimising", "space": "other-space"}
    env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir())}
    runs = {}
    for case, (url, _) in cases.items():
        (tmp_path / case).mkdir()
        name = [f"hydra.sweeper.study_name={names[case]}"] if case in names else []
        command = [sys.executable, "-m", "digitrec", "train", *TINY_SEARCH, f"hydra.sweeper.storage={url}", *name]
        runs[case] = subprocess.Popen(command, cwd=tmp_path / case, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for case, (_, expected) in cases.items():
        out, err = runs[case].communicate(timeout=300)
        assert runs[case].returncode == 2, (case, err[-2000:])
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("digitrec: error:") and expected in lines[0], (case, err)
        assert "hunter2" not in err + out and POSTGRES_PASSWORD not in err + out, "the password is masked"
        assert list((tmp_path / case).iterdir()) == [], f"{case}: nothing created"


def trial_of(search, pid: int):
    worker = f"{socket.gethostname()}:{pid}"
    return [t for t in search.get_trials(deepcopy=False) if t.state.name == "RUNNING" and t.user_attrs.get(studies.WORKER_ATTR) == worker]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_three_workers_share_one_study_and_a_killed_ones_trial_runs_again(kind, request, tmp_path):
    """Three real workers (the same command) on one study, in one folder (a shared filesystem):
    one is killed mid-trial. The study ends with n_trials that ran, none running, the killed trial
    failed and its parameters run again; a trial is pruned against trials of other workers."""
    url = storage_url(kind, request, tmp_path)
    n_trials = 12  # room for the queued point after the first completed trials of two workers
    command = [sys.executable, "-m", "digitrec", "train", *TINY_SEARCH, f"hydra.sweeper.storage={url}", "hydra.sweeper.study_name=many"]
    command.append(f"hydra.sweeper.n_trials={n_trials}")
    env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir()), "PYTHONUNBUFFERED": "1"}
    workers = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    victim, survivors = workers[2], workers[:2]
    study_dir = tmp_path / "outputs" / "train" / "optuna" / "many"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # the study exists once a worker asked its first trial
            try:
                search = load(url, "many")
                break
            except Exception:  # noqa: BLE001  (not there yet)
                time.sleep(0.5)
        killed = None
        while time.monotonic() < deadline and victim.poll() is None:
            running = trial_of(search, victim.pid)
            if running and list(study_dir.glob(f"{running[0].number}_*/.hydra")):
                killed = running[0]
                victim.send_signal(signal.SIGKILL)
                break
            time.sleep(0.1)
        assert killed is not None, "the victim was killed mid-trial"
        # A hopeless point, queued by hand once both other workers completed trials: whichever of them
        # runs it prunes it against the other's trials too, read from the shared storage.
        while time.monotonic() < deadline:
            trials = search.get_trials(deepcopy=False)
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            if len({t.user_attrs.get(studies.WORKER_ATTR) for t in complete}) >= 2:
                break
            time.sleep(0.2)
        # Room for it: a point queued once the study has all its trials would wait for ever, by design.
        free = n_trials - sum(map(studies.counts, trials)) - sum(t.state == TrialState.RUNNING for t in trials)
        assert free >= 2, f"the study filled up before two workers completed a trial: {[(t.number, t.state.name) for t in trials]}"
        search.enqueue_trial({"model.optimizer.lr": 1e-6})
        victim.wait(timeout=60)
        outputs = [w.communicate(timeout=400)[0] for w in survivors]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert [w.returncode for w in survivors] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]

    search = load(url, "many")
    trials = search.get_trials(deepcopy=False)
    ran = [t for t in trials if studies.counts(t)]
    assert len(ran) == n_trials, [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    dead = trials[killed.number]
    assert dead.state.name == "FAIL" and studies.RECORD_ATTR not in dead.user_attrs
    (again,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert again.params == killed.params and studies.counts(again), "the killed trial's parameters ran again"
    # Job folders: one per trial that ran here, named by the trial's number, none shared.
    folders = [p for p in study_dir.iterdir() if (p / ".hydra").is_dir()]
    numbers = [int(p.name.split("_")[0]) for p in folders]
    assert len(numbers) == len(set(numbers)) and {t.number for t in ran} <= set(numbers)
    assert all(Path(t.user_attrs[studies.FOLDER_ATTR]).name.startswith(f"{t.number}_") for t in ran)
    workers_of = {t.user_attrs[studies.WORKER_ATTR] for t in ran}
    assert len(workers_of) >= 2 and workers_of <= {f"{socket.gethostname()}:{w.pid}" for w in workers}
    # Pruning across workers: the queued hopeless point, pruned after its first epoch against the
    # median of completed trials, at least one of them another worker's.
    (pruned,) = [t for t in ran if t.params["model.optimizer.lr"] == 1e-6 and t.system_attrs.get("fixed_params")]
    assert pruned.state.name == "PRUNED" and list(pruned.intermediate_values) == [0]
    before = [t for t in trials if t.state.name == "COMPLETE" and t.datetime_complete < pruned.datetime_complete]
    assert {t.user_attrs[studies.WORKER_ATTR] for t in before} - {pruned.user_attrs[studies.WORKER_ATTR]}
    # digitrec predict without --ckpt takes the study's best job, the study in a database or a journal.
    ckpt, where = choose_checkpoint(tmp_path / "outputs" / "train")
    assert ckpt.is_relative_to(study_dir) and f"sweep {study_dir}" in where, where
    # Each worker's closing summary and sweep-report show every trial of the study, with its worker.
    for output in outputs:
        assert f"{n_trials + 1} jobs:" in output and "its worker stopped mid-trial: its parameters ran again" in output
    report = run_digitrec("sweep-report", "--storage", url, "--study", "many", cwd=tmp_path, timeout=120)
    assert report.returncode == 0, report.stderr
    assert all(f"| {t.user_attrs[studies.WORKER_ATTR]}" in report.stdout for t in ran)
    assert report.stdout.index("| 1 best") < report.stdout.index("pruned after epoch 1")
    # The password of the database never reaches a file or a log.
    for file in tmp_path.rglob("*"):
        if file.is_file() and file.suffix in (".yaml", ".log", ".json", ".md", ".csv", ".txt"):
            assert POSTGRES_PASSWORD not in file.read_text(errors="replace"), file
    assert POSTGRES_PASSWORD not in "".join(outputs) + report.stdout
