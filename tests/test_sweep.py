"""Sweeps from the command line: one directory per job, failures recorded, a summary at the end."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY_TRAIN, find_mnist_dir, run_digitrec
from digitrec.config.naming import safe, short_number, short_overrides, study_name, swept_keys
from digitrec.sweeps.sweep import write_summary

# --- the summary, from job directories written here -----------------------------------------


def fake_job(sweep_dir: Path, name: str, overrides: list[str], metrics: dict | None) -> None:
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"optimized_metric": "val/acc_best"}))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def past_sweep(tmp_path) -> Path:
    sweep = tmp_path / "2024-01-01_00-00-00_abcdef"
    ok = {"status": "ok", "test/acc": 0.97, "test/loss": 0.1, "epochs": 5, "train_seconds": 12.5}
    fake_job(sweep, "0_model.optimizer.lr=0.1", ["model.optimizer.lr=0.1", "trainer.max_epochs=5"], {**ok, "val/acc_best": 0.95})
    fake_job(
        sweep,
        "1_model.optimizer.lr=-1",
        ["model.optimizer.lr=-1", "trainer.max_epochs=5"],
        {"status": "failed", "reason": "config error at model.optimizer.lr: got -1"},
    )
    fake_job(sweep, "2_model.optimizer.lr=0.001", ["model.optimizer.lr=0.001", "trainer.max_epochs=5"], {**ok, "val/acc_best": 0.98})
    fake_job(sweep, "3_model.optimizer.lr=0.01", ["model.optimizer.lr=0.01", "trainer.max_epochs=5"], None)  # killed mid-run
    return sweep


def test_summary_ranks_by_objective_marks_best_and_keeps_failures(past_sweep):
    text = write_summary(past_sweep)
    rows = list(csv.DictReader((past_sweep / "summary.csv").open()))
    assert [r["job"] for r in rows] == ["2", "0", "1", "3"], "best first, then failed, then unfinished"
    assert rows[0]["best"] == "yes" and rows[0]["rank"] == "1" and rows[1]["best"] == ""
    assert rows[2]["status"] == "failed" and rows[2]["reason"] == "config error at model.optimizer.lr: got -1"
    assert rows[3]["status"] == "unfinished"
    assert float(rows[0]["val/acc_best"]) == 0.98 and rows[0]["overrides"] == "model.optimizer.lr=0.001 trainer.max_epochs=5"

    assert (past_sweep / "summary.md").read_text() == text
    lines = text.splitlines()
    assert "4 jobs: 2 ok, 1 failed, 1 unfinished. Sorted by val/acc_best (higher is better)." in lines
    assert "Overrides of every job: trainer.max_epochs=5" in lines
    table = [line for line in lines if line.startswith("| ")]
    assert table[1].startswith("| 1 best | 2 ") and "model.optimizer.lr=0.001 " in table[1] and "| 12.5 s" in table[1]
    assert "failed: config error at model.optimizer.lr: got -1" in table[3]


def test_sweep_report_recreates_the_summary_of_a_past_sweep(past_sweep, tmp_path):
    result = run_digitrec("sweep-report", str(past_sweep), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| 1 best | 2 " in result.stdout
    assert (past_sweep / "summary.csv").is_file() and (past_sweep / "summary.md").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "no sweep under outputs/"),
        (["a", "b"], "usage: digitrec sweep-report [SWEEP_DIR]"),
        (["nowhere"], "sweep directory nowhere does not exist"),
    ],
)
def test_sweep_report_mistakes_are_one_line(args, message, tmp_path):
    result = run_digitrec("sweep-report", *args, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_sweep_report_without_a_folder_takes_the_newest_sweep_and_says_which(tmp_path):
    ok = {"status": "ok", "test/acc": 0.97, "test/loss": 0.1, "val/acc_best": 0.95}
    older, newer = tmp_path / "outputs" / "train" / "multiruns" / "older", tmp_path / "outputs" / "train" / "optuna" / "newer"
    fake_job(older, "0_model.optimizer.lr=0.1", ["model.optimizer.lr=0.1"], ok)
    fake_job(newer, "0_model.optimizer.lr=0.2", ["model.optimizer.lr=0.2"], ok)
    os.utime(older, (1_700_000_000, 1_700_000_000))
    result = run_digitrec("sweep-report", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "digitrec: the newest sweep under outputs/: outputs/train/optuna/newer"
    assert "# Sweep summary: outputs/train/optuna/newer" in result.stdout and (newer / "summary.md").is_file()
    assert not (older / "summary.md").exists()


def test_summary_numbers_show_4_significant_digits_and_the_csv_keeps_them_all(tmp_path):
    lr = "model.optimizer.lr=0.007231563192959944"
    ok = {"status": "ok", "test/acc": 0.9412999749183655, "test/loss": 0.19134, "epochs": 5, "train_seconds": 12.5}
    fake_job(tmp_path, "0_a", [lr, "data.batch_size=64"], {**ok, "val/acc_best": 0.9455000162124634})
    reason = "config error at model.optimizer.lr: " + "a long reason " * 20
    fake_job(tmp_path, "1_b", ["model.optimizer.lr=-1", "data.batch_size=64"], {"status": "failed", "reason": reason})
    text = write_summary(tmp_path)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert "model.optimizer.lr=0.007232 " in table[1] and "| 0.9455 " in table[1] and "| 0.9413 " in table[1]
    assert "0.0072315" not in text and "0.94550" not in text
    assert "a long reason" in table[2] and reason.strip() not in table[2] and table[2].rstrip(" |").endswith("…")
    assert max(len(line) for line in table) < 220
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert rows[0]["val/acc_best"] == "0.9455000162124634" and rows[0]["overrides"] == f"{lr} data.batch_size=64"
    assert rows[1]["reason"] == reason


def test_directory_names_say_what_differs_in_short_without_nesting_or_overflowing():
    assert short_overrides([]) == ""
    assert short_overrides(["model.optimizer.lr=0.0003", "data.batch_size=64"]) == "lr=3e-4,bs=64", "in the command's order"
    assert short_overrides(["data.data_dir=/some/where", "seed=1"], exclude=["data.data_dir"]) == "seed=1", "excluded keys left out"
    assert "/" not in short_overrides(["+data.foo=/some/where"])
    long_a, long_b = safe("x" * 300 + "a"), safe("x" * 300 + "b")
    assert len(long_a) <= 60 and long_a != long_b


SAMPLED = {"0.007231563192959944", "0.0011558454526180016", "123456.5", "0.1234567"}


@pytest.mark.parametrize(
    "typed, shown",
    [("0.0003", "3e-4"), ("3e-4", "3e-4"), ("0.001", "1e-3"), ("1000000.0", "1e6"), ("0.01", "0.01"), ("0.5", "0.5"), ("100", "100"), ("-1", "-1"),
     ("1e-05", "1e-5"), ("0.007231563192959944", "7.232e-3"), ("0.0011558454526180016", "1.156e-3"), ("123456.5", "1.235e5"), ("0.1234567", "0.1235"), ("12345.5", "12345.5"), ("2.5e-4", "2.5e-4"), ("nan", "nan"), ("adam", "adam")],
)  # fmt: skip
def test_numbers_in_names_take_their_shortest_exact_form(typed, shown):
    """Exact as typed; a sampled number (7 significant digits or more) to 4 of them."""
    assert short_number(typed) == shown
    if shown not in ("nan", "adam") and typed not in SAMPLED:
        assert float(shown) == float(typed), "exact: the same number"


def test_keys_are_named_by_their_last_part_unless_two_would_read_alike():
    name = short_overrides(
        ["model.optimizer._target_=torch.optim.RMSprop", "model/net=cnn", "model.net.hidden_sizes=[500,100]", "trainer.max_epochs=3"]
    )
    assert name == "optimizer=RMSprop,net=cnn,hidden=[500,100],epochs=3"
    assert short_overrides(["model.net.dropout=0.1", "data.augment.dropout=0.2"]) == "net.dropout=0.1,augment.dropout=0.2"
    assert swept_keys(["model.optimizer.lr=1e-3,3e-4", "data.batch_size=64,128", "trainer.max_epochs=1"], exclude=["trainer.max_epochs"]) == "lr,bs"


def test_a_study_is_named_by_its_command_and_two_commands_never_share_one():
    assert study_name([]) == "search"
    assert study_name(["trainer.max_epochs=3", "seed=1"]) == study_name(["seed=1", "trainer.max_epochs=3"]), "the same command, any order"
    assert study_name(["trainer.max_epochs=3"]).startswith("search_epochs=3_")
    # Two keys whose short names read alike: still two studies.
    assert study_name(["model.net.dropout=0.1"]) != study_name(["data.augment.dropout=0.1"])


# --- pre-checks of a sweep: one line, before any job ------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.optimizer.lrr=1e-3,3e-4", "bad override: Could not override 'model.optimizer.lrr'"),
        ("model=default,transformer", "Could not find 'model/transformer'"),
        ("model/net=mlp,transformer", "Could not find 'model/net/transformer'"),
        ("hydra/launcher=slurmm", "Could not find 'hydra/launcher/slurmm'"),
    ],
)
def test_a_sweep_with_a_bad_key_or_config_name_stops_before_its_first_job(override, message, tmp_path):
    result = run_digitrec("train", "-m", override, *TINY_TRAIN, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()


# --- real sweeps --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real 3-job sweep: one good job, one bad value, one that diverges to NaN."""
    cwd = tmp_path_factory.mktemp("sweep")
    result = run_digitrec("train", "-m", "model/optimizer=sgd", "model.optimizer.lr=0.1,-1,1e6", *TINY_TRAIN, cwd=cwd)
    # Failed jobs: the summary is still printed, then the sweep exits 1.
    assert result.returncode == 1 and "3 jobs: 1 ok, 2 failed" in result.stdout, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == "digitrec: error: 2 of the sweep's jobs failed (see the status column above)"
    (sweep_dir,) = (cwd / "outputs" / "train" / "multiruns").iterdir()
    return cwd, sweep_dir, result


@pytest.mark.slow
def test_each_job_has_its_own_directory_named_by_what_differs(sweep):
    _, sweep_dir, _ = sweep
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert jobs == ["0_lr=0.1", "1_lr=-1", "2_lr=1e6"], "what differs, in short: the full overrides are in .hydra/"
    assert sweep_dir.name.startswith("lr_"), "the sweep's folder says what it sweeps"
    config = yaml.safe_load((sweep_dir / "0_lr=0.1" / ".hydra" / "config.yaml").read_text())
    optimizer = config["model"]["optimizer"]
    assert optimizer["lr"] == 0.1 and optimizer["_target_"] == "torch.optim.SGD" and config["trainer"]["max_epochs"] == 1
    assert (sweep_dir / "0_lr=0.1" / "checkpoints" / "last.ckpt").is_file()
    assert list((sweep_dir / "0_lr=0.1").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_failed_jobs_are_recorded_and_the_sweep_goes_on(sweep):
    _, sweep_dir, result = sweep
    good, bad, diverged = (json.loads((sweep_dir / name / "metrics.json").read_text()) for name in ("0_lr=0.1", "1_lr=-1", "2_lr=1e6"))
    assert good["status"] == "ok" and 0.5 < good["test/acc"] <= 1 and good["epochs"] == 1
    assert bad == {
        **bad,
        "status": "failed",
        "reason": "config error at model.optimizer.lr: got -1, expected a positive number, e.g. model.optimizer.lr=0.001",
    }
    assert diverged["status"] == "failed" and diverged["reason"].startswith("training diverged: train/loss is nan in epoch 1")
    assert "digitrec: job 1 failed: config error at model.optimizer.lr" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_summary_is_printed_and_written_at_the_end(sweep):
    _, sweep_dir, result = sweep
    assert f"# Sweep summary: {sweep_dir.relative_to(sweep[0])}" in result.stdout
    assert "3 jobs: 1 ok, 2 failed. Sorted by val/acc_best (higher is better)." in result.stdout
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert [(r["job"], r["best"], r["status"]) for r in rows] == [("0", "yes", "ok"), ("1", "", "failed"), ("2", "", "failed")]
    assert rows[0]["overrides"].split() == ["model/optimizer=sgd", "model.optimizer.lr=0.1", *TINY_TRAIN]
    printed = result.stdout[result.stdout.index("# Sweep summary") :].split("\nsummary: ")[0]
    assert (sweep_dir / "summary.md").read_text().strip() == printed.strip()


@pytest.mark.slow
def test_sweep_report_gives_the_same_summary_again(sweep):
    cwd, sweep_dir, _ = sweep
    before = (sweep_dir / "summary.md").read_text()
    (sweep_dir / "summary.md").unlink()
    (sweep_dir / "summary.csv").unlink()
    result = run_digitrec("sweep-report", str(sweep_dir.relative_to(cwd)), cwd=cwd, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (sweep_dir / "summary.md").read_text() == before and (sweep_dir / "summary.csv").is_file()


@pytest.mark.slow
def test_two_sweeps_started_in_the_same_second_get_their_own_directories(tmp_path):
    env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir())}
    command = [sys.executable, "-m", "digitrec", "train", "-m", "model.optimizer.lr=1e-3,3e-4", "debug=fdr", "progress=lines"]
    runs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
    sweeps = list((tmp_path / "outputs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 2
    for sweep_dir in sweeps:
        assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0_lr=1e-3", "1_lr=3e-4"]


@pytest.mark.slow
def test_the_parallel_launcher_runs_the_jobs_in_other_processes(tmp_path):
    result = run_digitrec(
        "train", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "model.optimizer.lr=1e-3,3e-4", *TINY_TRAIN, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert sorted(r["status"] for r in rows) == ["ok", "ok"]


def test_the_slurm_launcher_config_composes(tmp_path):
    result = run_digitrec("train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    launcher = yaml.safe_load(result.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["gpus_per_node"] == 1 and launcher["timeout_min"] == 60


@pytest.mark.slow
def test_ddp_in_a_sweep_runs_each_job_once_in_spawned_processes(tmp_path):
    """ddp re-runs the command line on each extra device: in a sweep, the whole sweep again."""
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    result = run_digitrec("train", "-m", "model.optimizer.lr=1e-3", *ddp, *TINY_TRAIN, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    (job,) = [p for p in sweep_dir.iterdir() if p.is_dir()]
    assert "ddp becomes ddp_spawn" in (job / "train.log").read_text()
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs"] == 1 and 0.5 < metrics["test/acc"] <= 1


def test_an_eval_sweep_is_ranked_by_test_acc(tmp_path):
    """digitrec eval -m ckpt_path=A,B: no objective in its config, and no status in its metrics."""
    for num, acc in ((0, 0.91), (1, 0.95)):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"ckpt_path=c{num}.ckpt"]))
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"task_name": "eval"}))
        (job / "metrics.json").write_text(json.dumps({"test/acc": acc, "test/loss": 0.2}))
    assert "Sorted by test/acc (higher is better)" in write_summary(tmp_path)
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [(r["job"], r["best"], r["status"]) for r in rows] == [("1", "yes", "ok"), ("0", "", "ok")]


@pytest.mark.slow
def test_the_submitit_launcher_runs_the_jobs_through_submitit(tmp_path):
    """hydra/launcher=slurm's code path (Hydra's submitit launcher: pickled jobs, submitit's job
    folders, results read back) with submitit's local executor in place of SLURM."""
    result = run_digitrec(
        "train",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "model.optimizer.lr=1e-3,3e-4",
        *TINY_TRAIN,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    assert list((sweep_dir / ".submitit").glob("*/*_submitted.pkl")), "the jobs went through submitit"
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert sorted(r["status"] for r in rows) == ["ok", "ok"]
    assert "| 1 best |" in result.stdout
