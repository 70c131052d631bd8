"""Exact resume: stop (cleanly or by SIGKILL) and resume gives the weights of an uninterrupted run.

Also: the best epoch survives a resume, a resume continues in its run's directory, only local
checked files are resumed from, and a checkpoint write that fails leaves the previous one intact.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TESTS_ON_PATH, find_mnist_dir, run_digitrec

# Small, but long enough per epoch that step checkpoints fall inside an epoch.
CHECKPOINT_EVERY = 7
RUN = [
    "trainer.limit_train_batches=30",
    "trainer.limit_val_batches=2",
    "progress=lines",
    f"callbacks.model_checkpoint.every_n_train_steps={CHECKPOINT_EVERY}",
]


def train(cwd: Path, run_dir: str | None, *args: str) -> subprocess.CompletedProcess:
    """A run in cwd/run_dir; run_dir None for a resume, which continues in its checkpoint's run."""
    result = run_digitrec("train", *RUN, *([f"hydra.run.dir={run_dir}"] if run_dir else []), *args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


def assert_same_training_state(a: Path, b: Path) -> None:
    first, second = state(a), state(b)
    assert first["global_step"] == second["global_step"]
    assert_same_weights(first["state_dict"], second["state_dict"])
    for x, y in zip(first["optimizer_states"], second["optimizer_states"]):
        for key in x["state"]:
            assert_same_weights(x["state"][key], y["state"][key])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run."""
    cwd = tmp_path_factory.mktemp("resume")
    train(cwd, "reference", "trainer.max_epochs=3")
    return cwd


def test_stop_after_an_epoch_and_resume_gives_identical_weights(reference):
    cwd = reference
    train(cwd, "stopped", "trainer.max_epochs=1")
    result = train(cwd, None, "trainer.max_epochs=3", f"ckpt_path={cwd / 'stopped' / 'checkpoints' / 'last.ckpt'}")
    assert "epoch 1/3" not in result.stdout and "epoch 2/3" in result.stdout and "epoch 3/3" in result.stdout
    # The resume continued in the run it resumes: one directory, with the final metrics.
    assert not (cwd / "outputs").exists()
    assert_same_training_state(cwd / "reference" / "checkpoints" / "last.ckpt", cwd / "stopped" / "checkpoints" / "last.ckpt")
    assert_same_weights(state(cwd / "reference" / "model.ckpt")["state_dict"], state(cwd / "stopped" / "model.ckpt")["state_dict"])
    reference_metrics = json.loads((cwd / "reference" / "metrics.json").read_text())
    resumed_metrics = json.loads((cwd / "stopped" / "metrics.json").read_text())
    assert resumed_metrics["epochs"] == 3
    for key in ("test/acc", "val/acc_best", "best_ckpt_path"):
        expected = reference_metrics[key].replace("/reference/", "/stopped/") if key == "best_ckpt_path" else reference_metrics[key]
        assert resumed_metrics[key] == expected, key
    # The original command's config stays; the resumed one is kept beside it.
    assert "trainer.max_epochs=1" in (cwd / "stopped" / ".hydra" / "overrides.yaml").read_text()
    (resumed_config,) = (cwd / "stopped" / ".hydra").glob("resumed_*/overrides.yaml")
    assert "trainer.max_epochs=3" in resumed_config.read_text()


def test_resume_from_a_mid_epoch_checkpoint_gives_identical_weights(reference):
    cwd = reference
    # A run stopped by max_steps in its second epoch leaves a mid-epoch last.ckpt.
    train(cwd, "steps", "trainer.max_epochs=3", "trainer.max_steps=44")
    saved = state(cwd / "steps" / "checkpoints" / "last.ckpt")
    step = saved["global_step"]
    assert 30 < step < 60, "inside the second epoch"
    assert saved["MNISTDataModule"]["batches_done"] == step - 30
    train(cwd, None, "trainer.max_epochs=3", f"ckpt_path={cwd / 'steps' / 'checkpoints' / 'last.ckpt'}")
    assert_same_training_state(cwd / "reference" / "checkpoints" / "last.ckpt", cwd / "steps" / "checkpoints" / "last.ckpt")


def test_bf16_the_pool_first_cnn_dropout_the_warps_and_one_cycle_resume_mid_epoch_to_identical_weights(tmp_path):
    # What experiment=speedrun adds to the resume path: bf16 autocast, the pool-first CNN with its
    # dropout, the affine warps, AdamW and its one-cycle schedule, batch 256.
    args = ["experiment=speedrun", "trainer.max_epochs=2"]
    train(tmp_path, "reference", *args)
    last = crash_then_resume(tmp_path, args, crash_after=44)
    assert_same_training_state(tmp_path / "reference" / "checkpoints" / "last.ckpt", last)
    hyper = state(tmp_path / "reference" / "model.ckpt")["hyper_parameters"]
    assert hyper["net"]["pool_first"] is True and hyper["optimizer"]["_target_"] == "torch.optim.AdamW"


def crash_then_resume(cwd: Path, args: list[str], crash_after: int) -> Path:
    """A run that dies after step crash_after, then its resume from the last step checkpoint before it."""
    crashed = run_digitrec(
        "train", *RUN, *args, "hydra.run.dir=crashed", "+callbacks.crash._target_=interrupt.CrashAfterStep", f"+callbacks.crash.step={crash_after}",
        cwd=cwd, env=TESTS_ON_PATH,
    )  # fmt: skip
    assert crashed.returncode == 3, crashed.stderr[-3000:]
    last = cwd / "crashed" / "checkpoints" / "last.ckpt"
    assert state(last)["global_step"] == crash_after // CHECKPOINT_EVERY * CHECKPOINT_EVERY, "the last step checkpoint, inside an epoch"
    train(cwd, None, *args, f"ckpt_path={last}")
    return last


@pytest.mark.parametrize(("scheduler", "crash_after"), [("onecycle", 16), ("cosine", 44)])
def test_a_per_step_schedule_resumes_mid_epoch_to_identical_weights(tmp_path, scheduler, crash_after):
    # A schedule sized by trainer.estimated_stepping_batches makes Lightning build the training
    # loader before it restores the checkpoint (Lightning issue #20550): the loader's position
    # must still be the checkpoint's, not the epoch's first batch.
    args = ["trainer.max_epochs=2", f"model/scheduler={scheduler}"]
    train(tmp_path, "reference", *args)
    last = crash_then_resume(tmp_path, args, crash_after)
    assert_same_training_state(tmp_path / "reference" / "checkpoints" / "last.ckpt", last)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path):
    args = ["trainer.max_epochs=2", "trainer.limit_train_batches=300", "trainer.limit_val_batches=2", "progress=lines"]
    args += ["callbacks.model_checkpoint.every_n_train_steps=20"]
    train(tmp_path, "reference", *args)

    env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir())}
    command = [sys.executable, "-m", "digitrec", "train", *args, "hydra.run.dir=killed"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            # Written atomically (renamed into place), so a read never sees half a file.
            if last.is_file() and state(last)["global_step"] >= 320:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed mid-epoch"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    killed_at = state(last)["global_step"]
    assert 300 < killed_at < 600, killed_at
    assert json.loads((tmp_path / "killed" / "metrics.json").read_text())["status"] == "running", "a killed run never says it finished"
    # A kill may leave a temp file beside them, but never a partial file under a final name.
    for ckpt in (tmp_path / "killed" / "checkpoints").glob("*.ckpt"):
        state(ckpt)  # every file under a final name is whole

    train(tmp_path, None, *args, f"ckpt_path={last}")
    assert_same_training_state(tmp_path / "reference" / "checkpoints" / "last.ckpt", last)
    assert_same_weights(state(tmp_path / "reference" / "model.ckpt")["state_dict"], state(tmp_path / "killed" / "model.ckpt")["state_dict"])


def test_the_best_epoch_before_a_resume_is_still_the_one_tested_and_exported(reference):
    cwd = reference
    train(cwd, "best", "trainer.max_epochs=1")
    # Make epoch 1 unbeatable in its checkpoint: whatever epoch 2 scores, epoch 1 stays the best.
    last = cwd / "best" / "checkpoints" / "last.ckpt"
    checkpoint = state(last)
    (key,) = [k for k in checkpoint["callbacks"] if k.startswith("RunCheckpoint")]
    saved = checkpoint["callbacks"][key]
    unbeatable = torch.tensor(0.999)
    saved["best_model_score"] = saved["kth_value"] = unbeatable
    saved["best_k_models"] = {path: unbeatable for path in saved["best_k_models"]}
    checkpoint["val_acc_best"] = 0.999
    torch.save(checkpoint, last)

    train(cwd, None, "trainer.max_epochs=2", f"ckpt_path={last}")
    metrics = json.loads((cwd / "best" / "metrics.json").read_text())
    assert metrics["val/acc_best"] == pytest.approx(0.999)
    assert Path(metrics["best_ckpt_path"]).name == "epoch_000.ckpt"
    assert_same_weights(state(cwd / "best" / "model.ckpt")["state_dict"], state(cwd / "best" / "checkpoints" / "epoch_000.ckpt")["state_dict"])


def test_a_best_model_path_inside_a_checkpoint_is_never_followed(reference, tmp_path):
    cwd = reference
    train(cwd, "done", "trainer.max_epochs=1")
    last = cwd / "done" / "checkpoints" / "last.ckpt"
    elsewhere = tmp_path / "other.ckpt"
    checkpoint = state(last)
    torch.save(checkpoint, elsewhere)
    (key,) = [k for k in checkpoint["callbacks"] if k.startswith("RunCheckpoint")]
    for path in (str(elsewhere), "http://127.0.0.1:9/evil.ckpt"):
        checkpoint["callbacks"][key]["best_model_path"] = path
        torch.save(checkpoint, last)
        # Already at max_epochs: nothing trains, and the test would use the stored best path.
        train(cwd, None, "trainer.max_epochs=1", f"ckpt_path={last}")
        metrics = json.loads((cwd / "done" / "metrics.json").read_text())
        assert metrics["best_ckpt_path"] is None, "a path from inside the file is not trusted"
        assert metrics["status"] == "ok"


def test_a_url_as_ckpt_path_is_refused_with_one_line(tmp_path):
    result = run_digitrec("train", "ckpt_path=http://127.0.0.1:9/model.ckpt", cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a URL" in lines[0], result.stderr[-2000:]
    assert result.returncode == 2 and not (tmp_path / "outputs").exists(), "refused before any run directory"


def test_a_checkpoint_write_that_fails_leaves_the_previous_one_loadable(reference):
    cwd = reference
    train(cwd, "limited", "trainer.max_epochs=1")
    last = cwd / "limited" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    def limit_file_size() -> None:
        # Writes past 1 MB fail with EFBIG (a checkpoint is ~5 MB) instead of killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir())}
    command = [sys.executable, "-m", "digitrec", "train", *RUN, "trainer.max_epochs=2", f"ckpt_path={last}"]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    assert result.returncode == 1, "a failed run (not a user mistake)"
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("digitrec: error:")]
    assert len(error) == 1 and "file size limit exceeded writing" in error[0] and str(last) in error[0], result.stderr[-2000:]
    assert last.read_bytes() == before, "the previous last.ckpt is untouched"
    state(last)
    checkpoints = cwd / "limited" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_000.ckpt", "last.ckpt"], "no partial file, no temp file"
