"""Experiments are short override files; `experiment=glob(*)` runs them all and compares them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import REPO, TINY_TRAIN, check_command, run_digitrec
from digitrec.command.main import compose

EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))


def test_there_is_the_tutorial_and_at_least_two_more():
    assert "tutorial" in EXPERIMENTS and len(EXPERIMENTS) >= 3


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_experiment_is_a_short_global_override_file_that_passes_the_checks(name):
    text = (REPO / "configs" / "experiment" / f"{name}.yaml").read_text()
    # Short: the recipes with augmentation and a schedule (cnn, mlp_augmented) spell out every value.
    assert text.startswith("# @package _global_\n") and len(text.splitlines()) <= 50
    check_command([f"experiment={name}"], until="config")  # sets the HydraConfig that paths.* read


def test_the_tutorial_experiment_is_the_tutorial():
    cfg = compose("train", ["experiment=tutorial"])
    net, optimizer = cfg.model.net, cfg.model.optimizer
    assert net._target_ == "digitrec.nets.MLP" and list(net.hidden_sizes) == [500, 100] and net.dropout == 0.0 and net.norm == "none"
    assert optimizer._target_ == "torch.optim.Adam" and optimizer.lr == 0.001 and optimizer.weight_decay == 0.0
    assert cfg.model.scheduler is None and cfg.data.augment is None and cfg.model.label_smoothing == 0.0
    assert cfg.data.batch_size == 100 and cfg.trainer.max_epochs == 5


def test_experiments_differ_in_what_they_say():
    wide, sgd = compose("train", ["experiment=wide"]), compose("train", ["experiment=sgd_cosine"])
    assert list(wide.model.net.hidden_sizes) == [1024, 1024] and wide.model.optimizer._target_ == "torch.optim.Adam"
    assert sgd.model.optimizer._target_ == "torch.optim.SGD" and sgd.model.optimizer.momentum == 0.9
    assert sgd.model.scheduler._target_ == "torch.optim.lr_scheduler.CosineAnnealingLR" and sgd.trainer.max_epochs == 10
    cnn = compose("train", ["experiment=cnn"])
    assert cnn.model.net._target_ == "digitrec.nets.CNN" and cnn.model.optimizer._target_ == "torch.optim.AdamW"
    assert cnn.model.scheduler._target_ == "torch.optim.lr_scheduler.OneCycleLR" and cnn.data.augment.elastic_alpha > 0


def test_command_line_overrides_win_over_the_experiment():
    cfg = compose("train", ["experiment=sgd_cosine", "trainer.max_epochs=1"])
    assert cfg.trainer.max_epochs == 1 and cfg.model.optimizer._target_ == "torch.optim.SGD"
    cfg = compose("train", ["experiment=cnn", "model.net.dropout=0.1", "data.augment=null"])
    assert cfg.model.net.dropout == 0.1 and cfg.model.net.kernel_size == 5 and cfg.data.augment is None


@pytest.mark.slow
def test_glob_runs_every_experiment_and_the_summary_compares_them(tmp_path: Path):
    result = run_digitrec("train", "-m", "experiment=glob(*)", *TINY_TRAIN, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == [f"{i}_experiment={name}" for i, name in enumerate(EXPERIMENTS)]
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert sorted(r["overrides"].split()[0] for r in rows) == [f"experiment={name}" for name in EXPERIMENTS]
    assert all(r["status"] == "ok" for r in rows) and rows[0]["best"] == "yes"
    values = [float(r["val/acc_best"]) for r in rows]
    assert values == sorted(values, reverse=True)
    for name in EXPERIMENTS:
        assert f"| experiment={name} " in result.stdout
