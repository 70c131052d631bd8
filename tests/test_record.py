"""The run record (metrics.json): one writer, one reader, one choice of objective and direction."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from digitrec.inference.predict import best_sweep_job, choose_checkpoint
from digitrec.nets.checkpoint import export_model
from digitrec.sweeps.sweep import read_jobs, write_summary
from digitrec.tracking import record
from digitrec.training.classifier import DigitClassifier

# --- the writer --------------------------------------------------------------------------------


def test_a_record_is_written_whole_and_read_back(tmp_path):
    written = record.write_record(tmp_path, {record.STATUS: record.OK, record.TEST_ACC: 0.98, "nan": float("nan")})
    assert written == tmp_path / record.FILE_NAME
    back = record.read_record(tmp_path)
    assert back[record.TEST_ACC] == 0.98 and back["nan"] != back["nan"]
    assert [p.name for p in tmp_path.iterdir()] == [record.FILE_NAME], "no temporary file is left behind"


def test_a_rewrite_replaces_the_file_and_never_changes_it_in_place(tmp_path):
    record.write_record(tmp_path, {record.STATUS: record.RUNNING, record.REASON: "started"})
    with (tmp_path / record.FILE_NAME).open() as old:  # a reader that opened the record before the rewrite
        record.write_record(tmp_path, {record.STATUS: record.OK, record.TEST_ACC: 0.97})
        assert json.loads(old.read())[record.STATUS] == record.RUNNING, "the reader still sees the whole old record"
    assert record.read_record(tmp_path)[record.STATUS] == record.OK


def test_a_write_that_fails_midway_leaves_the_old_record_whole(tmp_path):
    """A file-size limit stops the new record partway through (as a full disk would)."""
    record.write_record(tmp_path, {record.STATUS: record.RUNNING})
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from digitrec.tracking import record\n"
        "try:\n"
        f"    record.write_record({str(tmp_path)!r}, {{'status': 'ok', 'overrides': ['x' * 100] * 1000}})\n"
        "except OSError as err:\n"
        "    sys.exit(f'refused: {err.strerror}')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "refused: File too large" in result.stderr, result.stderr
    assert record.read_record(tmp_path) == {record.STATUS: record.RUNNING}
    assert [p.name for p in tmp_path.iterdir()] == [record.FILE_NAME], "the partial file is removed"


# --- the reader --------------------------------------------------------------------------------


def test_no_record_reads_as_none_and_counts_as_unfinished(tmp_path):
    assert record.read_record(tmp_path) is None and record.read_record(tmp_path / "nowhere") is None
    assert record.is_unfinished(None) and record.status(None) is None


@pytest.mark.parametrize(
    "content, problem",
    [(b'{"status": "ok", "test/a', "is not valid JSON"), (b"\x00\xff\x00", "is not valid JSON"), (b"[0.98]", "holds a JSON list")],
    ids=["truncated", "binary", "list"],
)
def test_a_damaged_record_reads_as_a_failed_run_saying_why(tmp_path, content, problem):
    (tmp_path / record.FILE_NAME).write_bytes(content)
    damaged = record.read_record(tmp_path)
    assert record.status(damaged) == record.FAILED and problem in damaged[record.REASON]
    assert str(tmp_path / record.FILE_NAME) in damaged[record.REASON]


def test_a_record_without_status_is_an_evaluations_ok(tmp_path):
    record.write_record(tmp_path, {record.TEST_ACC: 0.9, record.CKPT_PATH: "x.ckpt"})
    assert record.status(record.read_record(tmp_path)) == record.OK


# --- one objective, one direction, for the sweep summary and predict's choice ---------------------


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    return export_model(DigitClassifier(net={"_target_": "digitrec.nets.MLP", "hidden_sizes": [8]}), tmp_path_factory.mktemp("model") / "model.ckpt")


def training_job(sweep_dir: Path, num: int, config: dict, metrics: dict, model: Path) -> Path:
    """A sweep job's directory as a training job leaves it: Hydra's files, its model, its record."""
    job = sweep_dir / f"{num}_model.optimizer.lr={num}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model.optimizer.lr={num}"]))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (job / "model.ckpt").write_bytes(model.read_bytes())
    record.write_record(job, {record.STATUS: record.OK, **metrics, record.MODEL_PATH: str(job / "model.ckpt"), record.RUN_DIR: str(job)})
    return job


def ranked_jobs(sweep_dir: Path) -> list[str]:
    write_summary(sweep_dir)
    return [r["job"] for r in csv.DictReader((sweep_dir / "summary.csv").open()) if r["rank"]]


def test_a_sweep_without_an_objective_is_ranked_by_test_acc_by_the_summary_and_by_predict(tmp_path, small_model):
    """The summary used to fall back to test/acc and predict to val/acc_best: they chose different jobs."""
    sweep = tmp_path / "outputs" / "train" / "multiruns" / "sweep"
    no_objective = {"task_name": "train", "optimized_metric": None}
    training_job(sweep, 0, no_objective, {record.VAL_ACC_BEST: 0.99, record.TEST_ACC: 0.90}, small_model)
    best = training_job(sweep, 1, no_objective, {record.VAL_ACC_BEST: 0.95, record.TEST_ACC: 0.97}, small_model)
    (sweep / "multirun.yaml").write_text("{}\n")

    assert record.objective_of(sweep) == record.TEST_ACC
    assert ranked_jobs(sweep) == ["1", "0"]
    assert "Sorted by test/acc (higher is better)" in (sweep / "summary.md").read_text()
    ckpt, source = best_sweep_job(sweep)
    assert ckpt == best / "model.ckpt" and "(test/acc 0.9700)" in source
    assert choose_checkpoint(tmp_path / "outputs")[0] == best / "model.ckpt"


def test_a_loss_objective_puts_the_lowest_first_in_the_summary_and_in_predict(tmp_path, small_model):
    loss = {"optimized_metric": record.TEST_LOSS}
    training_job(tmp_path, 0, loss, {record.TEST_LOSS: 0.30, record.TEST_ACC: 0.99}, small_model)
    best = training_job(tmp_path, 1, loss, {record.TEST_LOSS: 0.05, record.TEST_ACC: 0.90}, small_model)
    training_job(tmp_path, 2, loss, {record.TEST_LOSS: float("nan"), record.TEST_ACC: 0.10}, small_model)  # diverged: ranks nowhere

    assert not record.higher_is_better(record.TEST_LOSS) and all(record.higher_is_better(o) for o in (record.VAL_ACC_BEST, record.TEST_ACC))
    assert ranked_jobs(tmp_path) == ["1", "0"]
    assert "Sorted by test/loss (lower is better)" in (tmp_path / "summary.md").read_text()
    assert best_sweep_job(tmp_path)[0] == best / "model.ckpt"


def test_the_optuna_study_takes_the_objectives_direction():
    from digitrec.errors import DigitrecError
    from digitrec.sweeps.optuna_search import study_direction

    for objective, direction in ((record.VAL_ACC_BEST, "maximize"), (record.TEST_LOSS, "minimize"), (None, "maximize")):
        assert study_direction({"optimized_metric": objective}, None) == direction
    with pytest.raises(DigitrecError, match="contradicts optimized_metric=test/loss"):
        study_direction({"optimized_metric": record.TEST_LOSS}, "maximize")


def test_a_damaged_job_record_shows_as_failed_in_the_summary_and_is_never_chosen(tmp_path, small_model):
    good = training_job(tmp_path, 0, {"optimized_metric": record.VAL_ACC_BEST}, {record.VAL_ACC_BEST: 0.9}, small_model)
    damaged = training_job(tmp_path, 1, {"optimized_metric": record.VAL_ACC_BEST}, {record.VAL_ACC_BEST: 0.99}, small_model)
    (damaged / record.FILE_NAME).write_text('{"status": "ok", "val/acc_best": 0.99, "mod')
    jobs = {job.num: job for job in read_jobs(tmp_path)}
    assert jobs[1].status == record.FAILED and "is not valid JSON" in jobs[1].metrics[record.REASON]
    assert ranked_jobs(tmp_path) == ["0"]
    assert best_sweep_job(tmp_path)[0] == good / "model.ckpt"
