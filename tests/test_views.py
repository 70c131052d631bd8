"""What a user sees first in TensorBoard and MLflow, in a real browser (Debian's chromium through
Playwright), over a real small sweep: TensorBoard opens on the curves, names say what differs,
HParams ticks the swept keys and the metrics, MLflow's experiment page shows its runs table.

DIGITREC_SCREENSHOTS=docs keeps the README's screenshots (docs/tensorboard.png,
docs/tensorboard-hparams.png, docs/mlflow.png)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import TINY_TRAIN, run_digitrec
from test_tensorboard import TensorBoard, free_port

pytestmark = pytest.mark.slow
JOBS = ["0_lr=1e-3,bs=64", "1_lr=1e-3,bs=128", "2_lr=3e-4,bs=64", "3_lr=3e-4,bs=128"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The issue's 4-job sweep, tiny: 2 epochs of 20 batches, TensorBoard, CSV and MLflow (logger=many)."""
    cwd = tmp_path_factory.mktemp("views")
    tiny = [a.replace("max_epochs=1", "max_epochs=2") for a in TINY_TRAIN]
    result = run_digitrec("train", "-m", "logger=many", "model.optimizer.lr=1e-3,3e-4", "data.batch_size=64,128", *tiny, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (cwd / "outputs" / "train" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == JOBS
    return cwd / "outputs", sweep_dir


def keep(page, name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path))
    if os.environ.get("DIGITREC_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["DIGITREC_SCREENSHOTS"]) / name)


def wait_for(page, script: str, timeout: float = 60):
    """The value of a page expression once it is truthy (TensorBoard and MLflow load their data after the page)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(script)
        if value:
            return value
        page.wait_for_timeout(250)
    raise AssertionError(f"not shown within {timeout} s: {script}")


@pytest.fixture(scope="module")
def tensorboard(sweep):
    _, sweep_dir = sweep
    server = TensorBoard(sweep_dir)
    try:
        server.wait_for_runs(len(JOBS))
        yield server
    finally:
        server.stop()


def test_tensorboard_opens_on_the_curves_with_runs_named_by_what_differs(tensorboard, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{tensorboard.url}/#timeseries")
    # Time Series: one card group per tag prefix, each headed by its name, its cards by their tags.
    groups = wait_for(page, "() => Array.from(document.querySelectorAll('metrics-card-groups .group-title')).map(e => e.textContent.trim())")
    assert groups[0] == "curves" and "test" in groups[1:], groups
    script = "() => Array.from(document.querySelector('metrics-card-groups .card-group').querySelectorAll('tb-truncated-path.tag')).map(e => e.title)"
    titles = wait_for(page, script)
    assert {"curves/acc/train", "curves/acc/val", "curves/acc/val_best", "curves/loss/train", "curves/loss/val"} <= set(titles), titles
    assert page.locator("metrics-card-groups .card-group").first.is_visible()
    runs = wait_for(page, "() => Array.from(document.querySelectorAll('tb-data-table-content-cell.table-column-run')).map(e => e.textContent.trim())")
    assert sorted(set(runs)) == JOBS, "the run list shows each job by what differs, whole"
    assert all(len(run) <= 30 for run in JOBS)
    page.wait_for_timeout(1000)  # the charts' lines
    keep(page, "tensorboard.png", tmp_path)


def test_hparams_shows_the_swept_keys_and_the_metrics_by_default(tensorboard, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1800, "height": 560})
    page.goto(f"{tensorboard.url}/#hparams")
    script = "() => Array.from(document.querySelector('tf-hparams-dashboard') ? document.querySelectorAll('*') : []).filter(e => e.shadowRoot).length"
    wait_for(page, script)
    # The HParams tab is Polymer: its table's column headers sit in shadow roots (Playwright's text selectors pierce them).
    for column in ("model.optimizer.lr", "data.batch_size", "val/acc_best", "test/acc"):
        assert page.get_by_text(column, exact=True).first.is_visible(), column
    for run in JOBS:
        assert page.get_by_text(run, exact=True).first.is_visible(), run
    keep(page, "tensorboard-hparams.png", tmp_path)


@pytest.fixture(scope="module")
def mlflow_ui(sweep):
    """`make mlflow`'s command (one worker, loopback only) on a free port, stopped with its workers."""
    outputs, _ = sweep
    port = free_port()
    command = [Path(sys.executable).with_name("mlflow"), "ui", "--backend-store-uri", f"sqlite:///{outputs / 'mlflow.db'}"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore:starlette.middleware.wsgi is deprecated"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow ui did not start within 120 s"
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    stderr = process.stderr.read()
    assert "DeprecationWarning" not in stderr, stderr[-2000:]


def test_mlflow_opens_the_sweeps_experiment_on_its_runs_table(sweep, mlflow_ui, browser, tmp_path):
    from digitrec.tracking.viewers import viewer_commands

    outputs, sweep_dir = sweep
    config = {"mlflow": {"_target_": "digitrec.tracking.mlflow_logger.MLflowLogger", "tracking_uri": f"sqlite:///{outputs / 'mlflow.db'}"}}
    # The link the sweep summary prints, on the port of this test's server.
    (url,) = [command for label, command in viewer_commands(config, sweep_dir, sweep=True) if label == "open"]
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    page.goto(url.replace("http://127.0.0.1:5000", mlflow_ui))
    wait_for(page, "() => location.hash.includes('/runs')")
    for job in JOBS:
        page.get_by_text(job, exact=True).first.wait_for(timeout=60_000)
    assert sweep_dir.name.startswith("lr,bs_") and page.get_by_text(sweep_dir.name).first.is_visible(), "the experiment: the sweep's folder"
    assert "/overview" not in page.evaluate("() => location.hash") and not page.get_by_text("Token Usage").count(), "not the GenAI overview"
    close = page.get_by_role("button", name="Close")  # MLflow's assistant panel, opened on a first visit
    if close.count():
        close.first.click()
    page.wait_for_timeout(500)
    keep(page, "mlflow.png", tmp_path)
    experiments = json.loads(
        urllib.request.urlopen(urllib.request.Request(f"{mlflow_ui}/ajax-api/2.0/mlflow/experiments/search?max_results=10")).read()
    )
    kinds = {e["name"]: {t["key"]: t["value"] for t in e.get("tags", [])}.get("mlflow.experimentKind") for e in experiments["experiments"]}
    assert kinds[sweep_dir.name] == "custom_model_development"
