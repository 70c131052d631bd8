"""The command layer: `digitrec describe`, each command's --help, "did you mean", and the folder
digitrec runs in importable for the user's own classes."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_TRAIN, find_mnist_dir, run_digitrec
from digitrec.command.main import USAGE
from digitrec.nets import CNN


def test_describe_lists_every_group_with_a_description_per_option(tmp_path):
    result = run_digitrec("describe", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "model/net:" in lines and "trainer:" in lines and "hydra/launcher:" in lines and "hydra:" not in lines
    # The first sentence of each option's YAML comment.
    assert "  limit     A small slice of each split: a real run in seconds." in lines
    assert any(line.startswith("  cnn     A small convolutional net (LeNet-5 / PyTorch's MNIST example in spirit)") for line in lines)
    configs = Path(__file__).resolve().parents[1] / "configs"
    options = [p.stem for p in configs.glob("*/**/*.yaml") if p.parent.name != "hydra"]
    assert len([line for line in lines if line.startswith("  ")]) == len(options)


def test_describe_an_option_shows_the_class_signature_and_the_yaml_values(tmp_path):
    result = run_digitrec("describe", "model/net=cnn", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "class: digitrec.nets.CNN" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    # Every argument of the class's own signature, with its type and default; the YAML's value beside it.
    for name, parameter in inspect.signature(CNN).parameters.items():
        assert name in rows, name
        assert str(parameter.annotation) in rows[name]
    assert rows["channels"].split()[1:] == ["Sequence[int]", "[32,", "64]", "[32,", "64]"]
    assert rows["norm"].split()[1:] == ["str", "batch", "batch", "batch,", "layer", "or", "none"], "the YAML's own comment on the key"

    optimizer = run_digitrec("describe", "model/optimizer=adam", cwd=tmp_path, timeout=120).stdout
    assert "class: torch.optim.Adam" in optimizer and "  params " not in optimizer, "the parameters are digitrec's to give"
    assert [line.split()[:2] for line in optimizer.splitlines() if line.startswith("  lr ")] == [["lr", "float"]]


@pytest.mark.parametrize(
    "args, message",
    [
        (["mdel/net=cnn"], "no config group 'mdel/net': did you mean model/net?"),
        (["model/net=cnm"], "no option 'cnm' in model/net: choose one of cnn, custom, mlp"),
        (["nosuch"], "no config group 'nosuch'"),
        (["model/net=cnn", "extra"], "describe takes one GROUP or GROUP=OPTION"),
    ],
)
def test_describe_mistakes_are_one_line(args, message, tmp_path):
    result = run_digitrec("describe", *args, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith(f"digitrec: error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_the_usage_example_of_describe_works():
    (example,) = [line.split("#")[0].split() for line in USAGE.splitlines() if line.strip().startswith("digitrec describe")]
    result = run_digitrec(*example[1:], cwd=Path.cwd(), timeout=120)
    assert result.returncode == 0 and "class: digitrec.nets.CNN" in result.stdout, result.stderr


def test_eval_help_lists_only_what_eval_uses(tmp_path):
    result = run_digitrec("eval", "--help", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    groups = {line[:-1] for line in result.stdout.splitlines() if line.endswith(":") and " " not in line}
    # logger: eval draws the confusion matrix and logs each digit's accuracy (TensorBoard by default).
    assert groups == {"data", "data/augment", "logger", "paths", "trainer"}, groups
    assert "  ckpt_path  ???" in result.stdout and "net_class" in result.stdout
    train = run_digitrec("train", "--help", cwd=tmp_path, timeout=120).stdout
    assert {"model/net:", "logger:", "experiment:", "callbacks:"} <= set(train.splitlines())
    assert "  optimized_metric  val/acc_best" in train


def test_a_mistyped_command_gets_a_suggestion(tmp_path):
    result = run_digitrec("trian", cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "unknown command 'trian'; did you mean train?" in result.stderr


def test_a_folder_of_the_users_own_classes_is_importable_as_with_python_m(tmp_path):
    """Run through the `digitrec` script: `python -m digitrec` would put the folder on sys.path itself."""
    (tmp_path / "my_package").mkdir()
    (tmp_path / "my_package" / "__init__.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class MyNet(nn.Module):\n"
        "    def __init__(self, width: int = 32, num_classes: int = 10) -> None:\n"
        "        super().__init__()\n"
        "        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, num_classes))\n\n"
        "    def forward(self, images: torch.Tensor) -> torch.Tensor:\n"
        "        return self.layers(images.float())\n"
    )
    script = Path(sys.executable).parent / "digitrec"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["DIGITREC_MNIST_DIR"] = str(find_mnist_dir())
    args = ["train", "model/net=custom", "model.net._target_=my_package.MyNet", "+model.net.width=64", *TINY_TRAIN, "trainer.limit_test_batches=1"]
    result = subprocess.run([str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["test/images"] == 1000
