"""The benchmark harness (`make bench`) still runs end to end: its tiny setting, which measures nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, find_mnist_dir

VARIANTS = {"tutorial", "tensor", "digitrec", "ddp", "affine", "elastic"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir()), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--smoke", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "bench.json").read_text())


@pytest.mark.slow
def test_every_variant_ran_the_tiny_setting(smoke):
    _, results = smoke
    assert results["setting"] == {"rounds": 1, "epochs": 1, "steps_per_epoch": 5, "batch_size": 100, "hidden_sizes": [500, 100]}
    (only_round,) = results["rounds"]
    assert set(only_round) == VARIANTS
    for run in only_round.values():
        (epoch,) = run["epochs"]
        assert 0 < epoch["wall"] < run["process_wall_s"]
        assert epoch["cpu"] > 0
        assert run["peak_rss_mb"] > 100  # PyTorch alone takes more
        assert 0 <= run["test_acc"] <= 1
    # digitrec's validation is timed apart from its training steps.
    (with_validation,) = only_round["digitrec"]["epochs_with_validation"]
    assert with_validation["wall"] > only_round["digitrec"]["epochs"][0]["wall"]


@pytest.mark.slow
def test_summary_ratios_targets_and_floor_are_reported(smoke):
    _, results = smoke
    assert set(results["summary"]) == VARIANTS
    for summary in results["summary"].values():
        assert summary["epoch_s_min"] <= summary["epoch_s_median"] <= summary["epoch_s_max"]
        assert summary["ms_per_1000_samples"] > 0
    assert set(results["ratios"]) == {
        "digitrec/tensor",
        "tutorial/digitrec",
        "tutorial/tensor",
        "ddp/digitrec",
        "affine/digitrec",
        "elastic/digitrec",
    }
    ratio = results["ratios"]["digitrec/tensor"]
    expected = results["summary"]["digitrec"]["epoch_s_median"] / results["summary"]["tensor"]["epoch_s_median"]
    assert ratio["wall"]["median"] == pytest.approx(expected)  # one round: its ratio is the median's
    assert {t["target"] for t in results["targets"]} == {
        "digitrec epoch CPU time <= 1.0x tensor loop",
        "digitrec process <= 1.3x tensor loop",
        "digitrec epoch CPU time <= 1.5x GEMM floor",
        "digitrec test accuracy >= 0.9760",
        "ddp (2 processes) epoch <= 0.65x digitrec (1)",
        "digitrec >= 4x faster than tutorial",
        "digitrec peak RSS <= 1500 MB",
    }
    assert results["floor"]["gflops_per_s"] > 0 and results["floor"]["min_epoch_s"] > 0
    assert results["machine"]["threads"] >= 1 and results["scaling"] == []


@pytest.mark.slow
def test_markdown_has_the_table_the_ratios_and_the_command(smoke):
    out, results = smoke
    markdown = (out / "bench.md").read_text()
    assert results["command"] in markdown
    assert "| | tutorial loop | tensor loop | digitrec | digitrec ddp_cpu (2 processes) |" in markdown
    for row in ("epoch, median (min–max)", "per 1,000 samples", "whole process, median", "peak RSS", "test accuracy"):
        assert f"| {row} |" in markdown
    assert "| digitrec / tensor loop |" in markdown and "Arithmetic floor" in markdown


@pytest.mark.slow
def test_time_to_accuracy_records_curves_and_keeps_one_run_per_recipe_and_seed(tmp_path):
    env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir()), "PYTHONUNBUFFERED": "1"}
    tiny = ["trainer.max_epochs=2", "trainer.limit_train_batches=5", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]

    def bench(*recipes: str) -> None:
        command = [sys.executable, "-m", "benchmarks.time_to_accuracy", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")]
        command += [f"--recipe={r}" for r in recipes] + ["--seed", "3", *tiny]
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    bench("default", "speedrun")
    bench("default")  # measured again: replaces the first default run, keeps the speedrun
    runs = json.loads((tmp_path / "time_to_accuracy.json").read_text())["runs"]
    assert sorted(r["recipe"] for r in runs) == ["default", "speedrun"]
    for run in runs:
        assert run["seed"] == 3 and run["epochs"] == 2 and 0 <= run["test_acc"] <= 1
        first, second = run["curve"]
        # Seconds since launch: start-up before the first validation, the test after the last.
        assert 0 < first["seconds"] < second["seconds"] < run["wall_s"]
    speedrun = next(r for r in runs if r["recipe"] == "speedrun")
    assert speedrun["threads"] == 2 and speedrun["command"].startswith("digitrec train experiment=speedrun seed=3")
    table = (tmp_path / "time_to_accuracy.md").read_text()
    assert "| default | 3 |" in table and "| speedrun | 3 |" in table and "x default's" in table
    assert (tmp_path / "time_to_accuracy.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs the whole measurement")
def test_the_gpu_script_refuses_a_machine_without_a_gpu_in_one_line():
    result = subprocess.run(
        ["bash", "benchmarks/gpu.sh"], cwd=REPO, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no CUDA GPU" in result.stderr
