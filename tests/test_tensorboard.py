"""A real TensorBoard server over real runs, read over HTTP as its web page does."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, TINY_TRAIN, run_digitrec
from digitrec.tracking.figures import confusion_matrix_figure, misclassified_grid
from digitrec.tracking.tensorboard import hparam_value, tensorboard_tag

STEPS = [*TINY_TRAIN, "trainer.log_every_n_steps=5"]
# The training and validation curves under curves/ (the first card group of Time Series), by metric then stage.
SCALARS = {
    "curves/loss/train_step",
    "curves/loss/train",
    "curves/acc/train",
    "curves/loss/val",
    "curves/acc/val",
    "curves/acc/val_best",
    "curves/lr/train",
}
SCALARS |= {"test/acc", "test/loss"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TensorBoard:
    def __init__(self, logdir: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1]]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def get(self, path: str, **params):
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=30) as response:
            body = response.read()
        return body if path.endswith("individualImage") else json.loads(body)

    def post(self, path: str, request: dict):
        data = json.dumps(request).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read())

    def wait_for_runs(self, count: int, timeout: float = 120) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"TensorBoard exited: {self.process.stderr.read()[-2000:]}"
            try:
                runs = self.get("/data/runs")
                tags = self.get("/data/plugin/scalars/tags")
                # Loaded when every run shows its last scalar (test/acc, written at the end).
                if len(runs) >= count and all("test/acc" in tags.get(run, {}) for run in runs):
                    return runs
            except OSError:
                pass  # not listening yet
            time.sleep(0.5)
        raise AssertionError(f"TensorBoard did not list {count} runs within {timeout} s")

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """One single run and a 2-job sweep, under one TensorBoard root (outputs/), served for real."""
    cwd = tmp_path_factory.mktemp("tensorboard")
    single = run_digitrec("train", *STEPS, cwd=cwd)
    assert single.returncode == 0, single.stderr[-3000:]
    sweep = run_digitrec("train", "-m", "model.optimizer.lr=1e-3,3e-4", *STEPS, cwd=cwd)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    server = TensorBoard(cwd / "outputs")
    try:
        runs = server.wait_for_runs(3)
        yield server, runs, cwd / "outputs"
    finally:
        server.stop()
    assert server.process.returncode is not None, "the server is stopped"


@pytest.mark.slow
def test_runs_share_one_root_and_are_named_by_what_differs(board):
    _, runs, _ = board
    assert len(runs) == 3
    (single,) = [r for r in runs if r.startswith("train/runs/")]
    # What differs first, in short (TensorBoard's run list cuts long names at the end), then time and random id.
    # (Longer than 60 characters: cut, with a hash of the whole.)
    pattern = r"train/runs/epochs=1,limit_train_batches=20,limit_val_batches=2~[0-9a-f]{8}_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}"
    assert re.fullmatch(pattern, single), single
    swept = sorted(r for r in runs if r.startswith("train/multiruns/"))
    assert [r.rsplit("/", 1)[1] for r in swept] == ["0_lr=1e-3", "1_lr=3e-4"]
    assert re.fullmatch(r"train/multiruns/lr_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}", swept[0].rsplit("/", 1)[0]), "the sweep says what it sweeps"
    assert len({r.rsplit("/", 1)[0] for r in swept}) == 1, "one sweep directory: its curves overlay"


@pytest.mark.slow
def test_scalars_list_the_training_curves_and_return_points(board):
    server, runs, _ = board
    tags = server.get("/data/plugin/scalars/tags")
    for run in runs:
        assert SCALARS <= set(tags[run]), SCALARS - set(tags[run])
        assert "epoch" not in tags[run], "no epoch counter as the first card group, above the curves"
    run = runs[0]
    val_acc = server.get("/data/plugin/scalars/scalars", run=run, tag="curves/acc/val")
    assert len(val_acc) == 1 and 0.5 < val_acc[0][2] <= 1, "one epoch: one point of [wall time, step, value]"
    loss = server.get("/data/plugin/scalars/scalars", run=run, tag="curves/loss/train_step")
    assert [step for _, step, _ in loss] == [4, 9, 14, 19], "every 5 steps of 20"
    lr = server.get("/data/plugin/scalars/scalars", run=run, tag="curves/lr/train")
    assert lr and all(value == pytest.approx(1e-3 if "3e-4" not in run else 3e-4) for _, _, value in lr)


@pytest.mark.slow
def test_custom_scalars_put_training_and_validation_in_one_chart(board):
    server, _, _ = board
    layout = server.get("/data/plugin/custom_scalars/layout")
    (category,) = layout["category"]
    charts = {chart["title"]: chart["multiline"]["tag"] for chart in category["chart"]}
    assert charts == {
        "loss": ["^curves/loss/train$", "^curves/loss/val$"],
        "accuracy": ["^curves/acc/train$", "^curves/acc/val$", "^curves/acc/val_best$"],
    }


@pytest.mark.slow
def test_hparams_tab_has_each_runs_settings_and_results(board):
    server, runs, outputs = board
    request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 100,
    }
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    shown = {m["name"]["tag"]: m.get("displayName") for m in experiment["metricInfos"]}
    assert shown == {"curves/acc/val_best": "val/acc_best", "test/acc": "test/acc"}, "the metrics by their names everywhere else"
    groups = server.post("/data/plugin/hparams/session_groups", request)["sessionGroups"]
    by_run = {g["sessions"][0]["name"]: g for g in groups}
    assert set(by_run) == set(runs)
    for run, group in by_run.items():
        hparams = group["hparams"]
        assert hparams["model.optimizer.lr"] == pytest.approx(3e-4 if "3e-4" in run else 1e-3)
        assert hparams["model.net.hidden_sizes"] == "[500, 100]" and hparams["data.batch_size"] == "100"
        assert hparams["experiment"] == "none" and hparams["model.optimizer"] == "Adam" and hparams["model.net"] == "MLP"
        assert hparams["model.scheduler"] == "none" and hparams["data.augment"] == "none" and hparams["model.net.dropout"] == 0.0
        metrics = json.loads((outputs / run / "metrics.json").read_text())
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert set(values) == {"curves/acc/val_best", "test/acc"}
        assert values["test/acc"] == pytest.approx(metrics["test/acc"]) and values["curves/acc/val_best"] == pytest.approx(metrics["val/acc_best"])


@pytest.mark.slow
def test_images_tab_has_the_misclassified_digits_and_the_confusion_matrix(board):
    server, runs, _ = board
    tags = server.get("/data/plugin/images/tags")
    for run in runs:
        assert {"test/misclassified", "test/confusion_matrix", "train/images"} <= set(tags[run])
    (image,) = server.get("/data/plugin/images/images", run=runs[0], tag="test/misclassified")
    png = server.get("/data/plugin/images/individualImage", **dict(urllib.parse.parse_qsl(image["query"])))
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.size == (484, 24 + 8 * 76), "64 digits, 8 by 8"
    (batch,) = server.get("/data/plugin/images/images", run=runs[0], tag="train/images")
    png = server.get("/data/plugin/images/individualImage", **dict(urllib.parse.parse_qsl(batch["query"])))
    assert Image.open(io.BytesIO(png)).format == "PNG", "the first training batch, once per run"


def test_make_tensorboard_serves_outputs_on_loopback_only():
    if shutil.which("make") is None:
        pytest.fail("make is needed to check the Makefile's tensorboard target")
    dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", "tensorboard"], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    (command,) = [line for line in dry.stdout.splitlines() if "tensorboard --logdir" in line]
    assert "--logdir outputs" in command and "--host 127.0.0.1" in command and "bind_all" not in command


# --- the pictures and values themselves --------------------------------------------------------


def test_confusion_matrix_figure_is_an_rgb_image_with_the_diagonal_in_blue():
    matrix = np.diag([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    matrix[4, 9] = 60
    picture = confusion_matrix_figure(matrix)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    cell, left, top = 40, 64, 70
    blue = picture[top + 3, left + 3]  # cell (0, 0), away from its number
    assert blue[2] > blue[0] + 100
    red = picture[top + 4 * cell + 3, left + 9 * cell + 3]  # 6% of the 4s read as 9: strong red
    assert red[0] > red[2] + 80


def test_misclassified_grid_shows_each_digit_with_its_labels():
    images = np.zeros((10, 28, 28), dtype=np.uint8)
    images[:, 10:18, 10:18] = 255
    picture = misclassified_grid(images, np.arange(10), (np.arange(10) + 1) % 10, total=37)
    assert picture.shape == (24 + 2 * (56 + 16 + 4), 8 * 60 + 4, 3)
    assert picture[24 + 28, 4 + 28].tolist() == [255, 255, 255], "the digit, scaled 2x"


@pytest.mark.parametrize(
    "name, tag",
    [("train/loss_epoch", "curves/loss/train"), ("train/loss_step", "curves/loss/train_step"), ("train/acc", "curves/acc/train"),
     ("val/loss", "curves/loss/val"), ("val/acc", "curves/acc/val"), ("val/acc_best", "curves/acc/val_best"), ("train/lr", "curves/lr/train"),
     ("test/acc", "test/acc"), ("test/loss", "test/loss"), ("epoch", "epoch")],
)  # fmt: skip
def test_the_curves_are_one_card_group_and_sort_before_the_test_points(name, tag):
    """TensorBoard's Time Series shows one card group per tag prefix, sorted by name: curves/ first."""
    assert tensorboard_tag(name) == tag
    assert tensorboard_tag(name).split("/")[0] <= "test" or name == "epoch"


@pytest.mark.parametrize("value, shown", [([500, 100], "[500, 100]"), (None, "none"), (100, "100"), (1e-3, 1e-3), ("adam", "adam"), (True, True)])
def test_hparam_values_are_numbers_strings_or_booleans(value, shown):
    assert hparam_value(value) == shown
