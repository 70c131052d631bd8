"""The fault suite: every way a user (or the world) can make a run go wrong, through the real command.

The promises (README, "Errors and exit codes"): a user mistake is one line `digitrec: error: ...`
and exit code 2, before any run directory or training; a run that fails is exit 1 and says so in
its metrics.json; Ctrl-C is 130 with the command that resumes; nothing is lost, nothing fetched.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import TINY_TRAIN, find_mnist_dir, run_digitrec
from digitrec.data.mnist import SHA256
from digitrec.nets.checkpoint import load_checkpoint

BAD_OVERRIDES = [
    # model
    ("model.optimizer.lr=-1", "config error at model.optimizer.lr: got -1, expected a positive number"),
    ("model.optimizer.lr=0", "config error at model.optimizer.lr"),
    ("model.optimizer.lr=fast", "config error at model.optimizer.lr"),
    ("model.optimizer.lr=null", "config error at model.optimizer"),
    ("model.net.hidden_sizes=[]", "config error at model.net.hidden_sizes"),
    ("model.net.hidden_sizes=[500,0]", "config error at model.net.hidden_sizes"),
    ("model.net.hidden_sizes=[-5]", "config error at model.net.hidden_sizes"),
    ("model.net.hidden_sizes=abc", "config error at model.net.hidden_sizes"),
    ("model.net.hidden_sizes=[100000000]", "parameters"),
    ("model.net.hidden_sizes=[1000000,1000000]", "parameters"),
    ("model.optimizer=rmsprop", "config error at model.optimizer"),
    ("model/optimizer=rmsprop", "Could not find 'model/optimizer/rmsprop'"),
    ("model.optimizer._target_=torch.optim.Adamm", "config error at model.optimizer._target_: no class torch.optim.Adamm"),
    ("model.optimizer.weight_decay=-1", "config error at model.optimizer.weight_decay"),
    ("model/optimizer=sgd model.optimizer.momentum=1.5", "config error at model.optimizer.momentum"),
    ("+model.optimizer.momentum=0.9", "config error at model.optimizer.momentum: torch.optim.Adam takes no argument momentum"),
    ("model/scheduler=cosine model.scheduler.interval=batch", "config error at model.scheduler.interval"),
    ("model/scheduler=nope", "Could not find 'model/scheduler/nope'"),
    ("model.net.input_size=100", "config error at model.net.input_size"),
    ("model.net.num_classes=5", "config error at model.net.num_classes"),
    ("model.net.std=0", "config error at model.net.std"),
    ("model.net.dropout=1.5", "config error at model.net.dropout"),
    ("model/net=cnn model.net.channels=[]", "config error at model.net.channels"),
    ("model/net=custom", "config error at model.net._target_: missing"),
    ("model.label_smoothing=1.5", "config error at model.label_smoothing"),
    ("data/augment=affine data.augment.p=2", "config error at data.augment.p"),
    ("+model.dropout=0.5", "config error at model.dropout: digitrec.training.classifier.DigitClassifier takes no argument dropout"),
    ("model.foo=1", "bad override: Could not override 'model.foo'"),
    ("model.lr=0.001", "bad override: Could not override 'model.lr'"),
    ("model=transformer", "Could not find 'model/transformer'"),
    ("model.optimizer.lr=[", "bad override"),
    # data
    ("data.batch_size=0", "config error at data.batch_size"),
    ("data.batch_size=-5", "config error at data.batch_size"),
    ("data.batch_size=1.5", "config error at data.batch_size"),
    ("data.eval_batch_size=0", "config error at data.eval_batch_size"),
    ("data.val_size=0", "config error at data.val_size"),
    ("data.val_size=60000", "config error at data.val_size"),
    ("+data.foo=1", "config error at data.foo: digitrec.data.datamodule.MNISTDataModule takes no argument foo"),
    ("data.data_dir=/nonexistent/mnist", "MNIST folder /nonexistent/mnist does not exist"),
    # top level
    ("seed=abc", "config error at seed"),
    ("seed=-1", "config error at seed: got -1, expected an integer from 0 to 4294967295"),
    ("seed=99999999999999", "config error at seed"),
    ("seed=1.5", "config error at seed"),
    ("threads=0", "config error at threads"),
    ("progress=fancy", "config error at progress"),
    ("optimized_metric=val/f1", "config error at optimized_metric"),
    ("+foo=1", "config error at foo: unknown key (known keys: task_name, seed,"),
    ("+seeed=1", "config error at seeed: unknown key"),
    ("+paths.foo=1", "config error at paths.foo: unknown key (known keys: data_dir, output_root, output_dir)"),
    ("experiment=nope", "Could not find 'experiment/nope'"),
    ("logger=nope", "Could not find 'logger/nope'"),
    ("hparams_search=nope", "Could not find 'hparams_search/nope'"),
    ("debug=nope", "Could not find 'debug/nope'"),
    ("paths.output_root=/proc/digitrec", "config error at paths.output_root: cannot write runs into /proc/digitrec"),
    ("paths.output_root=/sys/digitrec", "config error at paths.output_root"),
    # callbacks and loggers
    ("+callbacks.foo=1", "config error at callbacks.foo: got 1, expected a callback config with a _target_"),
    ("callbacks.model_checkpoint=5", "config error at callbacks.model_checkpoint"),
    ("+logger.foo=1", "config error at logger.foo: got 1, expected a logger config with a _target_"),
    # Trainer options (++: whether or not configs/trainer/default.yaml lists the key)
    ("trainer.max_epochs=0", "config error at trainer.max_epochs"),
    ("trainer.max_epochs=abc", "config error at trainer.max_epochs"),
    ("trainer.devices=-3", "config error at trainer: `devices` selected with `CPUAccelerator` should be an int > 0"),
    ("trainer.devices=abc", "config error at trainer: `devices` selected with `CPUAccelerator`"),
    ("trainer.devices=0", "config error at trainer: `Trainer(devices=0)` value is not a valid input"),
    ("trainer.devices=[]", "config error at trainer: `Trainer(devices=[])` value is not a valid input"),
    ("trainer.accelerator=banana", "config error at trainer: You selected an invalid accelerator name: `accelerator='banana'`"),
    ("trainer.log_every_n_steps=-1", "config error at trainer.log_every_n_steps"),
    ("++trainer.precision=banana", "config error at trainer.precision: got 'banana', expected 64, 32, 16,"),
    ("++trainer.precision=8", "config error at trainer.precision"),
    ("++trainer.max_time=abc", "config error at trainer: `Timer(duration='abc')` is not a valid duration"),
    ("trainer.limit_train_batches=-1", "config error at trainer: You have passed invalid value -1 for limit_train_batches"),
    ("trainer.limit_val_batches=1.5", "config error at trainer: You have passed invalid value 1.5 for limit_val_batches"),
    ("++trainer.gradient_clip_val=abc", "config error at trainer.gradient_clip_val"),
    ("++trainer.gradient_clip_val=-1", "config error at trainer.gradient_clip_val"),
    ("++trainer.gradient_clip_algorithm=banana", "config error at trainer: `gradient_clip_algorithm` banana is invalid"),
    ("++trainer.accumulate_grad_batches=0", "config error at trainer.accumulate_grad_batches: got 0"),
    ("++trainer.val_check_interval=0", "config error at trainer.val_check_interval"),
    ("++trainer.deterministic=banana", "config error at trainer.deterministic"),
    ("++trainer.num_sanity_val_steps=-5", "config error at trainer.num_sanity_val_steps"),
    ("+trainer.max_epoch=3", "config error at trainer.max_epoch: lightning.pytorch.Trainer takes no argument max_epoch (did you mean max_epochs?)"),
    ("trainer=tpu_pod", "Could not find 'trainer/tpu_pod'"),
    # the command line itself
    ("--shell-completion", "shell completion is not available"),
]

# What only Lightning can judge: each of these imports it (a few seconds) before refusing.
LIGHTNING_JUDGED = [
    ("trainer.accelerator=tpu", "config error at trainer"),
    ("++trainer.strategy=banana", "config error at trainer: You selected an invalid strategy name"),
    # 64 GPUs: a machine without a GPU refuses the GPU, one with a few refuses the count.
    ("trainer=gpu trainer.devices=64", "config error at trainer"),
]


def assert_refused(result: subprocess.CompletedProcess, expected: str, cwd: Path) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert result.stderr.startswith("digitrec: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr, result.stderr
    assert "epoch" not in result.stdout, "no training may start"
    assert not (cwd / "outputs").exists(), "no run directory may be made"


def test_the_fault_suite_has_at_least_60_bad_overrides():
    assert len(BAD_OVERRIDES) + len(LIGHTNING_JUDGED) >= 60


@pytest.mark.parametrize("override, expected", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_is_one_line_exit_2_and_no_run(override, expected, tmp_path):
    assert_refused(run_digitrec("train", *override.split(), cwd=tmp_path, timeout=120), expected, tmp_path)


@pytest.mark.parametrize("override, expected", LIGHTNING_JUDGED, ids=[o for o, _ in LIGHTNING_JUDGED])
def test_trainer_options_only_lightning_can_judge_are_refused_before_the_run(override, expected, tmp_path):
    assert_refused(run_digitrec("train", *override.split(), cwd=tmp_path, timeout=180), expected, tmp_path)


def test_output_root_under_a_file_is_refused(tmp_path):
    (tmp_path / "a_file").write_text("x")
    result = run_digitrec("train", f"paths.output_root={tmp_path / 'a_file' / 'out'}", cwd=tmp_path, timeout=120)
    assert_refused(result, "is not a folder", tmp_path)


@pytest.mark.parametrize("command", [["-m", "model.optimizer.lr=1e-3,3e-4"], ["hparams_search=optuna"]], ids=["sweep", "optuna"])
def test_an_unwritable_output_folder_is_one_line_for_sweeps_and_searches_too(command, tmp_path):
    result = run_digitrec("train", *command, "paths.output_root=/proc/digitrec", cwd=tmp_path, timeout=120)
    assert_refused(result, "config error at paths.output_root: cannot write runs into /proc/digitrec", tmp_path)


def test_a_sweep_with_an_unknown_added_key_stops_before_its_first_job(tmp_path):
    result = run_digitrec("train", "-m", "+seeed=1", "model.optimizer.lr=1e-3,3e-4", cwd=tmp_path, timeout=120)
    assert_refused(result, "config error at seeed: unknown key", tmp_path)


def test_missing_mnist_files_are_one_line_before_the_run(tmp_path):
    empty = tmp_path / "mnist"
    empty.mkdir()
    result = run_digitrec("train", cwd=tmp_path, env={"DIGITREC_MNIST_DIR": str(empty)}, timeout=120)
    assert_refused(result, "MNIST file train-images-idx3-ubyte[.gz] is missing from", tmp_path)


# --- one exit code for one mistake, whichever command --------------------------------------------


@pytest.fixture
def hello(tmp_path) -> Path:
    path = tmp_path / "hello.ckpt"
    path.write_text("hello\n")
    return path


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_an_unreadable_checkpoint_is_exit_2_for_every_command(command, hello, tmp_path):
    (tmp_path / "digit.png").write_bytes(b"not really")
    args = {
        "eval": ["eval", f"ckpt_path={hello}"],
        "predict": ["predict", "--ckpt", str(hello), "digit.png"],
        "export": ["export", "--ckpt", str(hello), "--format", "onnx", "--out", "x.onnx"],
    }[command]
    result = run_digitrec(*args, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"digitrec: error: checkpoint {hello} is not a readable PyTorch file (") and result.stderr.count("\n") == 1
    assert not (tmp_path / "outputs").exists()


def test_resuming_from_an_unreadable_checkpoint_is_exit_2(hello, tmp_path):
    result = run_digitrec("train", f"ckpt_path={hello}", *TINY_TRAIN, cwd=tmp_path, timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"digitrec: error: checkpoint {hello} is not a readable PyTorch file")
    assert "Traceback" not in result.stderr


def test_version_and_help(tmp_path):
    version = run_digitrec("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("digitrec ")
    data_help = run_digitrec("data", "--help", cwd=tmp_path)
    assert data_help.returncode == 0 and data_help.stdout.startswith("usage: digitrec data")
    usage = run_digitrec("--help", cwd=tmp_path)
    assert "--version" in usage.stdout and "completion" not in usage.stdout


# --- runs that go wrong ---------------------------------------------------------------------------


def answer_ctrl_c() -> None:
    """Ctrl-C as a terminal delivers it, even when pytest itself runs in the background: a shell
    starts background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_training(cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir()), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "digitrec", "train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=answer_ctrl_c,
    )


def wait_for_epochs(process: subprocess.Popen, epochs: int) -> None:
    seen = 0
    for line in process.stdout:
        seen += line.startswith("epoch ")
        if seen == epochs:
            return
    pytest.fail(f"the run ended before {epochs} epochs: {process.stderr.read()[-2000:]}")


LONG_RUN = ["trainer.max_epochs=100", "trainer.limit_train_batches=30", "++trainer.limit_val_batches=2", "progress=lines"]


@pytest.mark.slow
def test_ctrl_c_mid_run_exits_130_with_the_real_resume_command(tmp_path):
    process = start_training(tmp_path, *LONG_RUN)
    wait_for_epochs(process, 2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("digitrec: interrupted; resume with: digitrec train trainer.max_epochs=100"), last
    ckpt = Path(last.split("ckpt_path=")[1])
    assert ckpt.name == "last.ckpt" and ckpt.is_file()
    assert load_checkpoint(ckpt)["state_dict"], "the resume checkpoint is intact"
    metrics = json.loads((ckpt.parent.parent / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["resume_from"] == str(ckpt)
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_killed_run_shows_as_unfinished_and_damages_nothing(tmp_path):
    process = start_training(tmp_path, *LONG_RUN)
    wait_for_epochs(process, 2)
    process.kill()
    process.communicate(timeout=60)
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "running" and "not finished" in metrics["reason"]
    assert not (run_dir / "model.ckpt").exists()
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        assert load_checkpoint(ckpt)["state_dict"], f"{ckpt} damaged"
    # predict does not mistake it for a result
    result = run_digitrec("predict", "x.png", cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "no successful training run" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "lr, reason",
    [("1000", "training diverged: val/loss is"), ("1e-9", "training stopped learning: val/acc is")],
)
def test_a_run_that_stopped_learning_fails_with_exit_1_and_says_why(lr, reason, tmp_path):
    result = run_digitrec(
        "train",
        f"model.optimizer.lr={lr}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=120",
        "trainer.limit_val_batches=2",
        "progress=lines",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"digitrec: error: {reason}") and "model.optimizer.lr" in last, last
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["reason"] == last.removeprefix("digitrec: error: ")
    log = (run_dir / "train.log").read_text()
    assert "epoch 1/1" in log and last in log, "train.log holds the run's output"
    assert not (run_dir / "model.ckpt").exists()


@pytest.mark.slow
def test_a_divergent_lr_in_a_sweep_is_a_failed_job_and_the_sweep_exits_1_after_its_summary(tmp_path):
    result = run_digitrec(
        "train",
        "-m",
        "model.optimizer.lr=0.001,1000",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=120",
        "trainer.limit_val_batches=2",
        "progress=lines",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "2 jobs: 1 ok, 1 failed" in result.stdout
    assert "failed: training " in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "digitrec: error: 1 of the sweep's jobs failed (see the status column above)"
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    failed = json.loads((sweep_dir / "1_lr=1000" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "model.optimizer.lr" in failed["reason"]


# --- MNIST downloads, for real, from a local mirror -------------------------------------------------


class Mirror:
    """A real HTTP server on 127.0.0.1 serving a folder, counting the files it sent."""

    def __init__(self, folder: Path, delay: float = 0.0) -> None:
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                time.sleep(delay)
                mirror.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.requests: list[str] = []
        self.served = folder
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(mnist_dir, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    for name in SHA256:
        source = mnist_dir / f"{name}.gz"
        if source.is_file():
            shutil.copy(source, served / source.name)
        else:
            (served / f"{name}.gz").write_bytes(gzip.compress((mnist_dir / name).read_bytes()))
    server = Mirror(served)
    yield server
    server.close()


def download(tmp_path: Path, mirror_url: str, folder: Path) -> subprocess.CompletedProcess:
    env = {"DIGITREC_MNIST_DIR": "", "DIGITREC_MNIST_MIRRORS": mirror_url, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return run_digitrec("data", f"paths.data_dir={folder}", cwd=tmp_path, env=env, timeout=180)


def test_no_network_says_why_and_leaves_nothing(tmp_path):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = download(tmp_path, f"http://127.0.0.1:{port}/", tmp_path / "data")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "MNIST download failed" in result.stderr and "no connection (Connection refused)" in result.stderr
    assert not list((tmp_path / "data" / "MNIST" / "raw").iterdir())


def test_an_http_error_and_a_bad_file_are_named(mirror, tmp_path):
    missing = download(tmp_path, mirror.url + "nothing-here/", tmp_path / "data")
    assert missing.returncode == 2 and "HTTP 404" in missing.stderr and missing.stderr.count("\n") == 1, missing.stderr
    bad = tmp_path / "bad-mirror"
    bad.mkdir()
    (bad / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not MNIST"))
    server = Mirror(bad)
    try:
        result = download(tmp_path, server.url, tmp_path / "data")
    finally:
        server.close()
    assert result.returncode == 2 and "fails its checksum" in result.stderr, result.stderr
    assert not list((tmp_path / "data" / "MNIST" / "raw").iterdir()), "nothing left under an official name, no temp files"


def test_a_partial_download_folder_is_set_aside_and_fetched_again(mirror, tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in SHA256:
        shutil.copy(mirror.served / f"{name}.gz", raw)
    truncated = raw / "train-images-idx3-ubyte.gz"
    cut = truncated.read_bytes()[:100_000]
    truncated.write_bytes(cut)
    result = download(tmp_path, mirror.url, tmp_path / "data")
    assert result.returncode == 0, result.stderr
    assert mirror.requests == ["/train-images-idx3-ubyte.gz"], "only the bad file is fetched again"
    (kept,) = raw.glob("train-images-idx3-ubyte.gz.corrupt-*")
    assert kept.read_bytes() == cut, "the bad file is set aside, never deleted"
    assert "failed its checksum: kept as" in result.stderr
    again = download(tmp_path, mirror.url, tmp_path / "data")
    assert again.returncode == 0 and len(mirror.requests) == 1, "a verified folder is not fetched again"


def test_two_processes_preparing_one_folder_download_each_file_once(mnist_dir, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    for name in SHA256:
        shutil.copy(mnist_dir / f"{name}.gz", served)
    server = Mirror(served, delay=0.5)
    env = {**os.environ, "DIGITREC_MNIST_DIR": "", "DIGITREC_MNIST_MIRRORS": server.url, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "digitrec", "data", f"paths.data_dir={tmp_path / 'data'}"]
    try:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        second = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        results = [p.communicate(timeout=300) for p in (first, second)]
    finally:
        server.close()
    assert first.returncode == 0 and second.returncode == 0, results
    assert sorted(server.requests) == sorted(f"/{name}.gz" for name in SHA256), "each file fetched once: the lock held"
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{name}.gz" for name in SHA256), "no temp files left"


@pytest.mark.slow
def test_ctrl_c_in_a_sweep_exits_130(tmp_path):
    process = start_training(tmp_path, "-m", "model.optimizer.lr=1e-3,3e-4", *LONG_RUN)
    wait_for_epochs(process, 2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("digitrec: interrupted (the sweep's finished jobs are kept")
    assert "Traceback" not in err
