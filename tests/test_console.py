"""What a run prints, from real tiny runs of the command: each message once, a short model summary,
no library warnings, epochs counted from 1, the number of test images said; a sweep job in a few lines."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import TINY_TRAIN, run_digitrec

# 20 training batches (fewer than Lightning's log_every_n_steps, 50), 2 epochs, 2 of the 10 test batches.
SHORT = [*TINY_TRAIN, "trainer.max_epochs=2", "trainer.limit_test_batches=2"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("console")
    result = run_digitrec("train", *SHORT, "logger=many", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (cwd / "outputs" / "train" / "runs").iterdir()
    return run_dir, result


def test_each_lightning_message_is_printed_once_and_logged_once(short_run):
    run_dir, result = short_run
    console = result.stdout + result.stderr
    log = (run_dir / "train.log").read_text()
    for message in ("GPU available: False", "`Trainer.fit` stopped: `max_epochs=2` reached", "Loaded model weights from the checkpoint"):
        assert console.count(message) == 1, (message, console)
        assert log.count(message) == 1, (message, log)
    assert "INFO: " not in result.stderr, "Lightning's own console handler is gone"


def test_the_model_summary_is_short_and_has_no_empty_flops(short_run):
    _, result = short_run
    assert "FLOPs" not in result.stdout and "Flops" not in result.stdout
    lines = result.stdout.splitlines()
    start = lines.index("model: 443 K parameters, 1.8 MB")
    assert lines[start + 1].split() == ["Name", "Type", "Params"] and lines[start + 2].split() == ["net", "MLP", "443", "K"]
    assert lines[start + 3].startswith("epoch 1/2"), "modules without parameters (metrics, the loss) are not listed"


def test_a_short_run_writes_a_step_value_per_epoch_without_a_warning(short_run):
    run_dir, result = short_run
    assert "log_every_n_steps" not in result.stderr and "Warning" not in result.stderr, result.stderr
    # The logging interval became the epoch's 20 batches: train/loss is written at each epoch's last step.
    rows = list(csv.DictReader(next(run_dir.glob("csv/**/metrics.csv")).open()))
    steps = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert steps == [19, 39]


def test_the_summary_says_how_many_test_images_were_used(short_run):
    run_dir, result = short_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/images"] == 2000
    assert "(2,000 of the 10,000 official MNIST test images)" in result.stdout
    assert "official 10k MNIST test set" not in result.stdout


def test_the_bar_counts_epochs_from_one_as_the_lines_do(tmp_path):
    result = run_digitrec("train", *SHORT, "progress=bar", "trainer.limit_test_batches=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Epoch 2/2" in result.stdout
    assert "Epoch 0" not in result.stdout and "Epoch 1/1" not in result.stdout, "Lightning's own bar says Epoch 1/1 in the last epoch"


def test_a_sweep_prints_a_few_lines_per_job_then_one_summary(tmp_path):
    result = run_digitrec("train", "-m", "model.optimizer.lr=1e-3,3e-4", *SHORT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.count("# Sweep summary") == 1 and "digitrec: training done" not in out
    assert "digitrec: job 0 training done: val/acc_best" in out and "on 2,000 test images" in out
    assert out.count("model: 443 K parameters, 1.8 MB") == 2 and "GPU available" not in out + result.stderr
    before_summary = out[: out.index("# Sweep summary")].strip().splitlines()
    assert len(before_summary) <= 2 + 2 * 5, before_summary
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    job_log = next(sweep_dir.glob("0_*/train.log")).read_text()
    assert job_log.count("GPU available: False") == 1, "the job's own log keeps Lightning's messages"
