"""A real (tiny) training run through the command line, then eval and resume from its files."""

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_TRAIN, run_digitrec


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny real run shared by the tests below (training is the slow part)."""
    cwd = tmp_path_factory.mktemp("train")
    result = run_digitrec("train", *TINY_TRAIN, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (cwd / "outputs" / "train" / "runs").iterdir()
    return cwd, run_dir, result


def test_run_directory_holds_config_logs_checkpoints_and_metrics(tiny_run):
    _, run_dir, _ = tiny_run
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert list(run_dir.glob("**/events.out.tfevents.*")), "TensorBoard event files"
    checkpoints = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints and "epoch_000.ckpt" in checkpoints

    metrics = read_metrics(run_dir)
    assert metrics["status"] == "ok"
    assert 0.5 < metrics["test/acc"] <= 1.0, "20 batches of real training already beat chance by far"
    assert metrics["epochs"] == 1
    assert Path(metrics["best_ckpt_path"]).name == "epoch_000.ckpt"
    assert "trainer.max_epochs=1" in metrics["overrides"]


def test_exported_model_ckpt_is_plain_and_self_describing(tiny_run):
    _, run_dir, _ = tiny_run
    exported = torch.load(run_dir / "model.ckpt", weights_only=True)
    assert exported["format"] == "digitrec.model/2"
    hp = exported["hyper_parameters"]
    assert set(hp) == {"net", "optimizer", "scheduler", "label_smoothing"}
    assert hp["net"]["_target_"] == "digitrec.nets.MLP" and hp["net"]["hidden_sizes"] == [500, 100]
    assert hp["optimizer"] == {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001, "weight_decay": 0.0}
    assert hp["scheduler"] is None and hp["label_smoothing"] == 0.0
    assert exported["state_dict"]["net.layers.0.weight"].shape == (500, 784)
    lightning_ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert lightning_ckpt["hyper_parameters"] == hp


def test_output_is_short_without_a_terminal(tiny_run):
    _, run_dir, result = tiny_run
    assert "epoch 1/1  train/loss" in result.stdout
    assert "digitrec: training done" in result.stdout and str(run_dir) in result.stdout
    assert "\r" not in result.stdout + result.stderr, "no progress-bar redraws in logs"
    assert len((result.stdout + result.stderr).splitlines()) < 80


@pytest.mark.parametrize("which", ["best", "model.ckpt"])
def test_eval_from_the_checkpoint_alone_reproduces_test_acc(tiny_run, which):
    cwd, run_dir, _ = tiny_run
    metrics = read_metrics(run_dir)
    ckpt = metrics["best_ckpt_path"] if which == "best" else run_dir / "model.ckpt"
    result = run_digitrec("eval", f"ckpt_path={ckpt}", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    eval_dirs = sorted((cwd / "outputs" / "eval" / "runs").iterdir())
    evaluated = read_metrics(eval_dirs[-1])
    assert evaluated["test/acc"] == metrics["test/acc"]
    assert evaluated["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-6)


def test_resume_continues_from_last_checkpoint(tiny_run):
    cwd, run_dir, _ = tiny_run
    args = [a for a in TINY_TRAIN if not a.startswith("trainer.max_epochs")]
    result = run_digitrec("train", *args, "trainer.max_epochs=2", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 2/2" in result.stdout and "epoch 1/2" not in result.stdout, "only the remaining epoch runs"
    resumed = max((cwd / "outputs" / "train" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    assert read_metrics(resumed)["epochs"] == 2


def test_resume_refuses_another_architecture(tiny_run):
    cwd, run_dir, _ = tiny_run
    result = run_digitrec("train", "model.net.hidden_sizes=[64]", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", cwd=cwd)
    assert result.returncode != 0
    assert "has model.net.hidden_sizes=[500, 100], but the config says [64]" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_digitrec("train", "model/net=cnn", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", cwd=cwd)
    assert result.returncode == 2 and "has model.net=digitrec.nets.MLP, but the config says digitrec.nets.CNN" in result.stderr, result.stderr


def test_two_runs_started_together_get_their_own_directories(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import find_mnist_dir

    env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir())}
    command = [sys.executable, "-m", "digitrec", "train", "debug=fdr", "progress=lines"]
    runs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()[-2000:]
    run_dirs = list((tmp_path / "outputs" / "train" / "runs").iterdir())
    assert len(run_dirs) == 2
    assert all((d / "metrics.json").is_file() for d in run_dirs)


@pytest.mark.slow
def test_default_training_reaches_tutorial_accuracy(tmp_path):
    """The README's result: `digitrec train` with the defaults (5 epochs) on the official test set."""
    result = run_digitrec("train", "progress=lines", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    metrics = read_metrics(run_dir)
    assert metrics["epochs"] == 5
    assert metrics["test/acc"] >= 0.975
