"""Real multi-process training on the CPU (trainer=ddp_cpu: 2 processes, gloo)."""

import json

import pytest
import torch

from conftest import TESTS_ON_PATH, run_digitrec

TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=10", "trainer.limit_val_batches=2", "progress=lines"]


@pytest.mark.slow
def test_each_process_trains_on_its_own_half_and_metrics_are_reduced(tmp_path, mnist):
    env = {**TESTS_ON_PATH, "DIGITREC_PROBE_DIR": str(tmp_path)}
    result = run_digitrec(
        "train", "trainer=ddp_cpu", *TINY, "+callbacks.probe._target_=ddp_probe.BatchProbe", "hydra.run.dir=ddp", cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("epoch 1/1") == 1, "one line per epoch, from rank 0 only"
    assert result.stdout.count("digitrec: training done") == 1

    ranks = [torch.load(tmp_path / f"train_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [len(images) for images in ranks] == [1000, 1000], "10 batches of 100 on each process"
    seen = [{row.numpy().tobytes() for row in images} for images in ranks]
    assert not seen[0] & seen[1], "the two processes never train on the same image"
    training_images = {row.numpy().tobytes() for row in mnist.train_images.reshape(-1, 784)}
    assert seen[0] <= training_images and seen[1] <= training_images

    confusion = torch.load(tmp_path / "test_confusion.pt", weights_only=True)
    assert int(confusion.sum()) == 10000, "the confusion matrix counts every test image once, over both processes"
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["test/acc"] == pytest.approx(float(confusion.trace()) / 10000)

    # The same checkpoint tested by one process and by two gives the same accuracy: every test
    # image counted exactly once, the counts summed over the processes.
    accuracies = []
    for trainer in ("trainer=cpu", "trainer=ddp_cpu"):
        evaluated = run_digitrec("eval", trainer, f"ckpt_path={tmp_path / 'ddp' / 'model.ckpt'}", f"hydra.run.dir=eval_{trainer[8:]}", cwd=tmp_path)
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        accuracies.append(json.loads((tmp_path / f"eval_{trainer[8:]}" / "metrics.json").read_text())["test/acc"])
    assert accuracies[0] == accuracies[1] == metrics["test/acc"]
