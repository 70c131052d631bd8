"""The experiment surface: networks, optimisers, schedules and augmentation chosen by config, checked
before the run, recorded in the checkpoint, and rebuilt from the file alone without running its code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import TESTS_ON_PATH, TINY_TRAIN, check_command, run_digitrec
from digitrec.data.datamodule import batch_generator
from digitrec.errors import DigitrecError
from digitrec.nets.checkpoint import EXPORT_FORMAT, export_model
from digitrec.training.classifier import load_model

SMALL_CNN = {"_target_": "digitrec.nets.CNN", "channels": [4, 8], "hidden_size": 16, "dropout": 0.0}


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def only_run(cwd: Path) -> Path:
    (run_dir,) = (cwd / "outputs" / "train" / "runs").iterdir()
    return run_dir


def event_data(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    """A run's TensorBoard event file: its scalar curves by tag ([(step, value), ...]) and its image tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}, events.Tags()["images"]


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert result.stderr.startswith("digitrec: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr, result.stderr


# --- every group swapped on the command line, in one real short run ------------------------------


@pytest.fixture(scope="module")
def swapped_run(tmp_path_factory):
    """A CNN, RMSprop, a one-cycle schedule and elastic augmentation, all chosen on the command line."""
    cwd = tmp_path_factory.mktemp("swapped")
    result = run_digitrec(
        "train",
        "model/net=cnn",
        "model.net.channels=[4,8]",
        "model.net.hidden_size=16",
        "model.optimizer._target_=torch.optim.RMSprop",
        "model/scheduler=onecycle",
        "data/augment=elastic",
        "trainer.log_every_n_steps=2",
        *TINY_TRAIN,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, only_run(cwd)


def test_the_checkpoint_records_each_choice(swapped_run):
    _, run_dir = swapped_run
    exported = torch.load(run_dir / "model.ckpt", weights_only=True)
    assert exported["format"] == EXPORT_FORMAT
    hp = exported["hyper_parameters"]
    assert hp["net"]["_target_"] == "digitrec.nets.CNN" and hp["net"]["channels"] == [4, 8] and hp["net"]["hidden_size"] == 16
    assert hp["optimizer"] == {"_target_": "torch.optim.RMSprop", "_partial_": True, "lr": 0.001, "weight_decay": 0.0}
    assert hp["scheduler"]["_target_"] == "torch.optim.lr_scheduler.OneCycleLR" and hp["scheduler"]["interval"] == "step"
    assert hp["scheduler"]["max_lr"] == 0.003 and hp["scheduler"]["total_steps"] is None, "the length comes from the Trainer at run time"
    assert exported["state_dict"]["net.features.0.weight"].shape == (4, 1, 3, 3)
    lightning = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert lightning["hyper_parameters"] == hp
    assert [group["lr"] for group in lightning["optimizer_states"][0]["param_groups"]] != [0.001], "the schedule moved the rate"
    augment = load_yaml(run_dir / ".hydra" / "config.yaml")["data"]["augment"]
    assert augment["_target_"] == "digitrec.data.augment.RandomWarp" and augment["elastic_alpha"] == 34.0


def load_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_the_one_cycle_rate_rises_then_falls_per_step(swapped_run):
    _, run_dir = swapped_run
    curves, images = event_data(run_dir)
    lr = curves["curves/lr/train"]
    steps = [step for step, _ in lr]
    values = [value for _, value in lr]
    assert len(lr) >= 8 and steps == sorted(steps), "logged per step (every 2 of 20), not per epoch"
    peak = values.index(max(values))
    assert max(values) == pytest.approx(0.003, rel=0.15) and 0 < peak < len(values) - 1
    assert values[0] < max(values) / 3 and values[-1] < max(values) / 100, values
    assert "train/images" in images, "the first (augmented) training batch is in the Images tab"
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "ok" and 0 <= metrics["test/acc"] <= 1 and curves["test/acc"][-1][1] == pytest.approx(metrics["test/acc"])


def test_eval_rebuilds_the_cnn_from_the_file_alone(swapped_run):
    cwd, run_dir = swapped_run
    result = run_digitrec("eval", f"ckpt_path={run_dir / 'model.ckpt'}", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (eval_dir,) = (cwd / "outputs" / "eval" / "runs").iterdir()
    evaluated = read_metrics(eval_dir)
    assert evaluated["test/acc"] == read_metrics(run_dir)["test/acc"]
    assert evaluated["hyper_parameters"]["net"]["_target_"] == "digitrec.nets.CNN"


def test_sgd_warmup_affine_and_early_stopping_train_too(tmp_path):
    result = run_digitrec(
        "train",
        "model/optimizer=sgd",
        "model/scheduler=cosine_warmup",
        "data/augment=affine",
        "callbacks/early_stopping=default",
        "model.net.hidden_sizes=[64]",
        "model.net.norm=batch",
        "model.net.dropout=0.1",
        "model.label_smoothing=0.1",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=10",
        "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=2",
        "progress=lines",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run(tmp_path)
    hp = torch.load(run_dir / "model.ckpt", weights_only=True)["hyper_parameters"]
    assert hp["optimizer"]["_target_"] == "torch.optim.SGD" and hp["optimizer"]["momentum"] == 0.9 and hp["optimizer"]["nesterov"] is True
    assert hp["scheduler"]["_target_"] == "digitrec.training.classifier.cosine_warmup" and hp["label_smoothing"] == 0.1
    assert hp["net"]["norm"] == "batch" and hp["net"]["hidden_sizes"] == [64]
    config = load_yaml(run_dir / ".hydra" / "config.yaml")
    assert config["callbacks"]["early_stopping"]["_target_"] == "lightning.pytorch.callbacks.EarlyStopping"
    assert config["data"]["augment"]["elastic_alpha"] == 0.0
    lr = event_data(run_dir)[0]["curves/lr/train"]
    assert len({round(v, 8) for _, v in lr}) > 3 and max(v for _, v in lr) <= 0.05 + 1e-9


# --- a network class of the user's own ---------------------------------------------------------


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("user_net")
    result = run_digitrec(
        "train", "model/net=custom", "model.net._target_=user_nets.TinyNet", "+model.net.width=16", *TINY_TRAIN, cwd=cwd, env=TESTS_ON_PATH
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, only_run(cwd)


def test_a_users_network_trains_and_is_recorded_by_name(user_run):
    _, run_dir = user_run
    exported = torch.load(run_dir / "model.ckpt", weights_only=True)
    assert exported["hyper_parameters"]["net"] == {"_target_": "user_nets.TinyNet", "width": 16}
    assert exported["state_dict"]["net.net.layers.1.weight"].shape == (16, 784)
    assert 0.3 < read_metrics(run_dir)["test/acc"] <= 1, "20 steps of a 16-unit MLP beat chance"


def test_a_users_network_loads_only_when_named(user_run, mnist, tmp_path, capsys):
    from digitrec.inference import export, predict

    _, run_dir = user_run
    ckpt = str(run_dir / "model.ckpt")
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(mnist.test_images[0].numpy()).save(image)
    # tests/ is on sys.path here, as PYTHONPATH puts it for the real command.
    assert predict.main(["--ckpt", ckpt, str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot make digitrec import code" in err and "--net-class user_nets.TinyNet" in err
    assert predict.main(["--ckpt", ckpt, "--net-class", "user_nets.TinyNet", "--json", str(image)]) == 0
    assert json.loads(capsys.readouterr().out)["digit"] in range(10)
    assert export.main(["--ckpt", ckpt, "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "cannot make digitrec import code" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
    assert export.main(["--ckpt", ckpt, "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--net-class", "user_nets.TinyNet"]) == 0
    assert export.main(["--ckpt", ckpt, "--format", "state_dict", "--out", str(tmp_path / "m.ckpt"), "--net-class", "user_nets.TinyNet"]) == 0
    with pytest.raises(DigitrecError, match="cannot make digitrec import code"):
        load_model(tmp_path / "m.ckpt", trusted=["user_nets.OtherNet"])
    assert load_model(tmp_path / "m.ckpt", trusted=["user_nets.TinyNet"]).hparams.net["width"] == 16


def test_eval_of_a_users_network_needs_net_class(user_run):
    cwd, run_dir = user_run
    ckpt = run_dir / "model.ckpt"
    refused = run_digitrec("eval", f"ckpt_path={ckpt}", cwd=cwd, env=TESTS_ON_PATH, timeout=120)
    assert_one_line_error(refused, "cannot make digitrec import code")
    assert "net_class=user_nets.TinyNet" in refused.stderr and not (cwd / "outputs" / "eval").exists()
    result = run_digitrec("eval", f"ckpt_path={ckpt}", "net_class=user_nets.TinyNet", cwd=cwd, env=TESTS_ON_PATH)
    assert result.returncode == 0, result.stderr[-3000:]
    (eval_dir,) = (cwd / "outputs" / "eval" / "runs").iterdir()
    assert read_metrics(eval_dir)["test/acc"] == read_metrics(run_dir)["test/acc"]


def test_serve_rebuilds_a_users_network_only_when_named(user_run):
    from digitrec.inference.serve import DigitService

    _, run_dir = user_run
    with pytest.raises(DigitrecError, match="cannot make digitrec import code"):
        DigitService.from_checkpoint(run_dir / "model.ckpt")
    service = DigitService.from_checkpoint(run_dir / "model.ckpt", ["user_nets.TinyNet"])
    assert service.model_info["architecture"] == "TinyNet" and service.model_info["parameters"] == 784 * 16 + 16 + 16 * 10 + 10


# --- a checkpoint never makes digitrec import the code it names ----------------------------------


@pytest.fixture
def sneaky_module(tmp_path):
    """A module that writes a marker file when imported, on PYTHONPATH."""
    folder = tmp_path / "sneaky_path"
    folder.mkdir()
    marker = tmp_path / "imported"
    (folder / "sneaky.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n\nclass Net:\n    def __init__(self, **kwargs):\n        pass\n"
    )
    return folder, marker


def named_checkpoint(path: Path, net: dict, optimizer: dict | None = None, scheduler: dict | None = None) -> Path:
    optimizer = optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001}
    hyper_parameters = {"net": net, "optimizer": optimizer, "scheduler": scheduler, "label_smoothing": 0.0}
    torch.save({"format": EXPORT_FORMAT, "hyper_parameters": hyper_parameters, "state_dict": {}}, path)
    return path


NAMED_TARGETS = [
    {"_target_": "sneaky.Net"},
    {"_target_": "os.system", "command": "touch {marker}"},
    {"_target_": "subprocess.Popen", "args": ["touch", "{marker}"]},
]


def fill_marker(record: dict, marker: Path) -> dict:
    text = json.dumps(record).replace("{marker}", str(marker))
    return json.loads(text)


@pytest.mark.parametrize("net", NAMED_TARGETS, ids=[n["_target_"] for n in NAMED_TARGETS])
def test_a_named_class_is_refused_by_predict_eval_and_export_and_never_imported(net, sneaky_module, tmp_path):
    folder, marker = sneaky_module
    ckpt = named_checkpoint(tmp_path / "named.ckpt", fill_marker(net, marker))
    (tmp_path / "digit.png").write_bytes(b"not read: the model is refused first")
    env = {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    for args in (
        ["predict", "--ckpt", str(ckpt), "digit.png"],
        ["eval", f"ckpt_path={ckpt}"],
        ["export", "--ckpt", str(ckpt), "--format", "onnx", "--out", "m.onnx"],
    ):
        result = run_digitrec(*args, cwd=tmp_path, env=env, timeout=120)
        assert_one_line_error(result, "cannot make digitrec import code")
        assert net["_target_"] in result.stderr
    assert not marker.exists(), "the named code ran"
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "m.onnx").exists()


def test_in_process_loading_never_imports_a_named_class(sneaky_module, tmp_path, monkeypatch):
    from digitrec.inference.predict import Predictor
    from digitrec.inference.serve import DigitService

    folder, marker = sneaky_module
    monkeypatch.syspath_prepend(str(folder))
    ckpt = named_checkpoint(tmp_path / "named.ckpt", {"_target_": "sneaky.Net"})
    for load in (Predictor.from_checkpoint, load_model, DigitService.from_checkpoint):
        with pytest.raises(DigitrecError, match="cannot make digitrec import code"):
            load(ckpt)
    with pytest.raises(DigitrecError, match="cannot make digitrec import code"):
        load_model(ckpt, trusted=["sneaky.Other"])
    assert "sneaky" not in sys.modules and not marker.exists()


def test_optimizer_and_schedule_records_of_a_file_are_never_imported_when_loading(sneaky_module, tmp_path, monkeypatch):
    """Only training builds the optimiser and schedule, from the config: a file's own records are data."""
    from digitrec.inference import export
    from digitrec.inference.predict import Predictor
    from digitrec.training.classifier import DigitClassifier

    folder, marker = sneaky_module
    monkeypatch.syspath_prepend(str(folder))
    model = DigitClassifier(net={"_target_": "digitrec.nets.MLP", "hidden_sizes": [8]}).eval()
    checkpoint = {"format": EXPORT_FORMAT, "state_dict": model.state_dict()}
    checkpoint["hyper_parameters"] = {
        "net": dict(model.hparams.net),
        "optimizer": {"_target_": "sneaky.Net", "_partial_": True},
        "scheduler": {"_target_": "sneaky.Net", "interval": "step"},
        "label_smoothing": 0.0,
    }
    path = tmp_path / "odd.ckpt"
    torch.save(checkpoint, path)
    images = torch.rand(3, 28, 28)
    torch.testing.assert_close(load_model(path)(images), model(images))
    torch.testing.assert_close(Predictor.from_checkpoint(path).net(images), model(images))
    assert export.main(["--ckpt", str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert "sneaky" not in sys.modules and not marker.exists()


# --- every bad value of the new surface is one line before the run --------------------------------

BAD_SURFACE = [
    ("model.optimizer._target_=torch.optim.Adamm", "config error at model.optimizer._target_: no class torch.optim.Adamm: torch.optim has no Adamm"),
    ("model.optimizer._target_=Adam", "config error at model.optimizer._target_: got 'Adam', expected a dotted class path"),
    ("+model.net.foo=1", "config error at model.net.foo: digitrec.nets.MLP takes no argument foo (it takes: input_size, hidden_sizes,"),
    ("model/net=cnn +model.net.hidden_sizes=[10]", "config error at model.net.hidden_sizes: digitrec.nets.CNN takes no argument hidden_sizes"),
    ("+model.optimizer.momentum=0.9", "config error at model.optimizer.momentum: torch.optim.Adam takes no argument momentum"),
    ("model.net.dropout=1.5", "config error at model.net.dropout: got 1.5, expected a probability from 0 to below 1"),
    ("model/net=cnn model.net.dropout=-0.1", "config error at model.net.dropout: got -0.1"),
    ("model.net.norm=group", "config error at model.net.norm: got 'group', expected one of none, batch, layer"),
    ("model.net.activation=swish", "config error at model.net.activation: got 'swish', expected one of relu, gelu"),
    ("model/net=cnn model.net.channels=[]", "config error at model.net.channels: got [], expected 1 to 4 positive widths"),
    ("model/net=cnn model.net.channels=[8,8,8,8,8]", "config error at model.net.channels"),
    ("model/net=cnn model.net.kernel_size=4", "config error at model.net.kernel_size: got 4, expected an odd integer"),
    ("model/net=cnn model.net.hidden_size=0", "config error at model.net.hidden_size: got 0"),
    ("model/scheduler=cosine model.scheduler.interval=batch", "config error at model.scheduler.interval: got 'batch', expected step or epoch"),
    ("model/scheduler=onecycle model.scheduler.pct_start=1.5", "config error at model.scheduler.pct_start: got 1.5"),
    ("model/scheduler=cosine_warmup model.scheduler.warmup_fraction=1", "config error at model.scheduler.warmup_fraction"),
    ("model/scheduler=step model.scheduler.gamma=0", "config error at model.scheduler.gamma: got 0"),
    ("data/augment=affine data.augment.scale=[1.2,0.8]", "config error at data.augment.scale: got [1.2, 0.8], expected [low, high]"),
    ("data/augment=affine data.augment.scale=[0.9]", "config error at data.augment.scale"),
    ("data/augment=affine data.augment.degrees=200", "config error at data.augment.degrees: got 200"),
    ("data/augment=affine data.augment.p=2", "config error at data.augment.p: got 2, expected a probability from 0 to 1"),
    ("data/augment=elastic data.augment.elastic_sigma=0", "config error at data.augment.elastic_sigma: got 0"),
    ("data/augment=affine +data.augment.angle=5", "config error at data.augment.angle: digitrec.data.augment.RandomWarp takes no argument angle"),
    ("model.label_smoothing=1.5", "config error at model.label_smoothing: got 1.5, expected a number from 0 (none) to below 1"),
    ("model/net=custom", "config error at model.net._target_: missing: name the class, e.g. model.net._target_=my_package.MyNet"),
    ("model.net=null", "config error at model.net: got None, expected a network config with a _target_, e.g. model/net=cnn"),
    ("model.optimizer._partial_=false", "config error at model.optimizer._partial_: must be true"),
    ("model.optimizer.lr=null", "config error at model.optimizer.lr: got None, expected a positive number"),
    ("model.optimizer=sgd", "config error at model.optimizer: got 'sgd', expected an optimiser config with a _target_"),
    ("model/scheduler=step ~model.scheduler.step_size", "config error at model.scheduler: torch.optim.lr_scheduler.StepLR needs step_size"),
    ("+model.scheduler._target_=torch.optim.lr_scheduler.StepLR", "config error at model.scheduler: torch.optim.lr_scheduler.StepLR needs step_size"),
    ("model/scheduler=cosine model.scheduler._target_=torch.optim.lr_scheduler.StepLR", "config error at model.scheduler.T_max: "),
    ("experiment=cnn data/augment=none", "config error at data.augment: got {'degrees': 10.0,"),
    ("experiment=cnn model/net=mlp", "config error at model.net.channels: digitrec.nets.MLP takes no argument channels"),
    ("model/net=custom model.net._target_=user_nets.Nope", "config error at model.net._target_: no class user_nets.Nope: user_nets has no Nope"),
    (
        "model/net=custom model.net._target_=user_nets.TinyNet +model.net.depth=2",
        "config error at model.net.depth: user_nets.TinyNet takes no argument",
    ),
    ("model/net=custom model.net._target_=nowhere.Net", "config error at model.net._target_: no class nowhere.Net: cannot import nowhere"),
]


@pytest.mark.parametrize("overrides, expected", BAD_SURFACE, ids=[o for o, _ in BAD_SURFACE])
def test_bad_surface_values_are_one_line(overrides, expected):
    with pytest.raises(DigitrecError) as error:
        check_command(overrides.split())
    message = str(error.value)
    assert message.startswith(expected) and "\n" not in message, message


@pytest.mark.parametrize(
    "overrides",
    [
        "model/net=cnn model/optimizer=adamw model/scheduler=onecycle data/augment=elastic",
        "model.optimizer._target_=torch.optim.RMSprop +model.optimizer.momentum=0.5",
        "model/scheduler=step model.scheduler.step_size=2",
        "model/scheduler=cosine model.scheduler.interval=epoch",
        "model/net=cnn model.net.norm=layer model.net.activation=gelu model.net.convs_per_block=1 model.net.kernel_size=5",
        "model.net.norm=batch model.net.dropout=0.2 model.net.activation=silu",
        "model/net=custom model.net._target_=user_nets.TinyNet +model.net.width=16",
        "experiment=cnn data.augment=null model.scheduler=null",
        "callbacks/early_stopping=default callbacks.early_stopping.patience=2",
    ],
)
def test_good_surface_values_pass(overrides):
    check_command(overrides.split())


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model/net=custom", "config error at model.net._target_: missing"),
        ("model.optimizer._target_=torch.optim.Adamm", "config error at model.optimizer._target_: no class torch.optim.Adamm"),
    ],
)
def test_the_real_command_refuses_them_with_exit_2(override, expected, tmp_path):
    result = run_digitrec("train", override, cwd=tmp_path, timeout=120)
    assert_one_line_error(result, expected)
    assert "Traceback" not in result.stdout + result.stderr and not (tmp_path / "outputs").exists()


# --- augmentation -----------------------------------------------------------------------------


def warp(**settings):
    from digitrec.data.augment import RandomWarp

    return RandomWarp(**settings)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("settings", [{}, {"elastic_alpha": 34.0}, {"degrees": 30.0, "shear": 20.0, "translate": 0.2, "p": 0.5}])
def test_a_warp_keeps_shapes_and_gives_float_images_in_unit_range(mnist, settings):
    images = mnist.train_images[:64]
    out = warp(**settings)(images, generator(0))
    assert out.shape == (64, 28, 28) and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.allclose(out, images.float() / 255), "the images did change"
    same_as_float = warp(**settings)(images.float() / 255, generator(0))
    torch.testing.assert_close(out, same_as_float)  # uint8 and float input: the same warp
    assert warp(**settings)(images.reshape(64, 1, 28, 28), generator(0)).shape == (64, 28, 28)


def test_an_identity_warp_leaves_the_images_as_they_are(mnist):
    images = mnist.train_images[:32]
    identity = warp(degrees=0.0, scale=[1.0, 1.0], shear=0.0, translate=0.0, elastic_alpha=0.0)
    torch.testing.assert_close(identity(images, generator(3)), images.float() / 255, atol=1e-5, rtol=0)


def test_with_p_0_no_image_is_warped(mnist):
    images = mnist.train_images[:32]
    for elastic in (0.0, 34.0):
        out = warp(p=0.0, elastic_alpha=elastic)(images, generator(3))
        torch.testing.assert_close(out, images.float() / 255, atol=1e-5, rtol=0)


def test_the_warps_sampling_grid_is_torchs_affine_grid():
    from digitrec.data.augment import affine_grid

    matrices = warp(degrees=30.0, shear=20.0, translate=0.2).affine_matrices(50, generator(1), torch.device("cpu"))
    for size in (28, 9):
        expected = torch.nn.functional.affine_grid(matrices, [50, 1, size, size], align_corners=False)
        torch.testing.assert_close(affine_grid(matrices, size), expected, atol=1e-6, rtol=0)


def test_a_warp_is_seeded_by_its_generator(mnist):
    images = mnist.train_images[:16]
    elastic = warp(elastic_alpha=34.0)
    torch.testing.assert_close(elastic(images, generator(7)), elastic(images, generator(7)), atol=0, rtol=0)
    assert not torch.allclose(elastic(images, generator(7)), elastic(images, generator(8)))


def training_batches(seed: int, augment, count: int = 2, training: bool = True):
    """The first `count` batches as a training step sees them (after on_after_batch_transfer)."""
    from digitrec.data.datamodule import MNISTDataModule

    datamodule = MNISTDataModule(data_dir=os.environ.get("DIGITREC_MNIST_DIR") or None, download=False, seed=seed, augment=augment)
    datamodule.setup()
    datamodule.trainer = SimpleNamespace(training=training, overfit_batches=0, distributed_sampler_kwargs=None)
    loader = datamodule.train_dataloader() if training else datamodule.val_dataloader()
    batches = []
    for _, batch in zip(range(count), loader):
        batches.append((batch, datamodule.on_after_batch_transfer(batch, 0)))
    return datamodule, batches


@pytest.fixture
def mnist_env(mnist_dir, monkeypatch):
    monkeypatch.setenv("DIGITREC_MNIST_DIR", str(mnist_dir))


def test_training_batches_are_augmented_with_labels_kept_and_seeded(mnist_env):
    _, first = training_batches(1, warp(elastic_alpha=34.0))
    _, again = training_batches(1, warp(elastic_alpha=34.0))
    for (raw, augmented), (_, augmented_again) in zip(first, again):
        images, labels = augmented
        assert images.shape == raw[0].shape and images.dtype == torch.float32 and float(images.max()) <= 1
        assert torch.equal(labels, raw[1]), "labels are untouched"
        assert torch.equal(images, augmented_again[0]), "the same seed gives the same augmented batch"
    assert not torch.allclose(first[0][1][0], first[1][1][0][: len(first[0][1][0])]), "each batch its own images"
    datamodule, _ = training_batches(1, warp(elastic_alpha=34.0), count=0)
    other, _ = training_batches(2, warp(elastic_alpha=34.0), count=0)
    images = first[0][0][0]
    same = [dm.augment(images, batch_generator(dm.batch_key(), torch.device("cpu"))) for dm in (datamodule, other)]
    assert not torch.allclose(same[0], same[1]), "another seed gives other warps of the same images"


def test_validation_and_test_batches_are_never_augmented(mnist_env):
    _, batches = training_batches(1, warp(elastic_alpha=34.0), training=False)
    for raw, passed in batches:
        assert passed is raw, "validation batches pass through untouched"
    _, plain = training_batches(1, None)
    for raw, passed in plain:
        assert passed is raw, "without an augmentation, training batches are untouched too"


# --- checkpoints of digitrec.model/1 still load -------------------------------------------------


@pytest.fixture
def v1_checkpoint(tmp_path):
    torch.manual_seed(0)
    weights = {
        "net.layers.0.weight": torch.randn(32, 784) * 0.05,
        "net.layers.0.bias": torch.randn(32) * 0.05,
        "net.layers.2.weight": torch.randn(10, 32) * 0.2,
        "net.layers.2.bias": torch.randn(10) * 0.1,
    }
    hyper_parameters = {
        "input_size": 784,
        "hidden_sizes": [32],
        "num_classes": 10,
        "lr": 0.001,
        "mean": 0.1307,
        "std": 0.3081,
        "optimizer": "adam",
        "weight_decay": 0.0,
        "momentum": 0.9,
        "lr_schedule": "constant",
    }
    state = {**weights, "net.mean": torch.tensor(0.1307), "net.std": torch.tensor(0.3081)}
    path = tmp_path / "v1.ckpt"
    torch.save({"format": "digitrec.model/1", "hyper_parameters": hyper_parameters, "state_dict": state}, path)
    return path, weights


def by_hand(weights: dict, images: torch.Tensor) -> torch.Tensor:
    """The v1 MLP's forward pass, written out: normalise, Linear, ReLU, Linear."""
    x = (images.reshape(len(images), 784).float() - 0.1307) / 0.3081
    hidden = torch.relu(x @ weights["net.layers.0.weight"].T + weights["net.layers.0.bias"])
    return hidden @ weights["net.layers.2.weight"].T + weights["net.layers.2.bias"]


def test_a_v1_checkpoint_loads_everywhere_with_the_same_logits(v1_checkpoint, mnist, tmp_path):
    from digitrec.inference import export
    from digitrec.inference.predict import Predictor

    path, weights = v1_checkpoint
    images = mnist.test_images[:20].float() / 255
    expected = by_hand(weights, images)
    with torch.inference_mode():
        torch.testing.assert_close(Predictor.from_checkpoint(path).net(images), expected, atol=1e-4, rtol=1e-4)
        model = load_model(path)
        torch.testing.assert_close(model(images), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model(mnist.test_images[:20]), expected, atol=1e-4, rtol=1e-4)
    assert model.hparams.net["hidden_sizes"] == [32] and model.hparams.optimizer["_target_"] == "torch.optim.Adam" and model.lr == 0.001
    out = tmp_path / "v1.onnx"
    assert export.main(["--ckpt", str(path), "--format", "onnx", "--out", str(out)]) == 0
    assert_onnx_agrees(out, images.numpy(), expected.numpy())
    # Exported again, it becomes a digitrec.model/2 file with the same weights.
    again = tmp_path / "v2.ckpt"
    assert export.main(["--ckpt", str(path), "--format", "state_dict", "--out", str(again)]) == 0
    saved = torch.load(again, weights_only=True)
    assert saved["format"] == "digitrec.model/2" and saved["hyper_parameters"]["net"]["hidden_sizes"] == [32]
    assert set(saved["state_dict"]) >= {"net.normalize.mean", "net.normalize.std"} and "net.mean" not in saved["state_dict"]
    torch.testing.assert_close(Predictor.from_checkpoint(again).net(images), expected, atol=1e-4, rtol=1e-4)


def test_v1_hyper_parameters_become_records():
    from digitrec.nets.checkpoint import upgrade_hyper_parameters

    old = {"input_size": 784, "hidden_sizes": [64], "num_classes": 10, "lr": 0.05, "mean": 0.1, "std": 0.3}
    upgraded = upgrade_hyper_parameters({**old, "optimizer": "sgd", "weight_decay": 5e-4, "momentum": 0.9, "lr_schedule": "cosine"})
    assert upgraded["net"] == {"_target_": "digitrec.nets.MLP", "input_size": 784, "hidden_sizes": [64], "num_classes": 10, "mean": 0.1, "std": 0.3}
    assert upgraded["optimizer"] == {
        "_target_": "torch.optim.SGD",
        "_partial_": True,
        "lr": 0.05,
        "weight_decay": 5e-4,
        "momentum": 0.9,
        "nesterov": True,
    }
    assert upgraded["scheduler"]["_target_"] == "torch.optim.lr_scheduler.CosineAnnealingLR" and upgraded["scheduler"]["interval"] == "step"
    constant = upgrade_hyper_parameters({**old, "optimizer": "adam", "lr_schedule": "constant"})
    assert constant["scheduler"] is None and constant["optimizer"]["_target_"] == "torch.optim.Adam"


def test_a_v1_run_can_be_resumed_with_the_same_network(v1_checkpoint):
    from omegaconf import OmegaConf

    from digitrec.command.main import compose
    from digitrec.nets.checkpoint import load_checkpoint
    from digitrec.training.checks import check_same_network

    path, _ = v1_checkpoint
    saved = load_checkpoint(path)["hyper_parameters"]
    check_same_network(str(path), saved, OmegaConf.to_container(compose("train", ["model.net.hidden_sizes=[32]"]).model.net))
    wider = OmegaConf.to_container(compose("train", ["model.net.hidden_sizes=[64]"]).model.net)
    with pytest.raises(DigitrecError, match=r"has model.net.hidden_sizes=\[32\], but the config says \[64\]"):
        check_same_network(str(path), saved, wider)


def test_resuming_from_an_exported_model_says_what_to_use(v1_checkpoint, tmp_path):
    path, _ = v1_checkpoint
    result = run_digitrec("train", f"ckpt_path={path}", "model.net.hidden_sizes=[32]", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith(f"digitrec: error: ckpt_path={path} holds a trained model's weights only") and result.stderr.count("\n") == 1
    assert "checkpoints/last.ckpt" in result.stderr and not (tmp_path / "outputs").exists()


def test_serve_describes_a_v1_checkpoint(v1_checkpoint):
    from digitrec.inference.serve import DigitService

    path, _ = v1_checkpoint
    assert DigitService.from_checkpoint(path).model_info["architecture"] == "MLP 784-32-10 (relu)"


V1_TODAY = {
    "net": {"_target_": "digitrec.nets.MLP", "input_size": 784, "hidden_sizes": [32], "num_classes": 10, "mean": 0.1307, "std": 0.3081},
    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001, "weight_decay": 0.0},
    "scheduler": None,
    "label_smoothing": 0.0,
}


def test_every_loader_gets_todays_form_from_a_v1_file(v1_checkpoint, mnist, tmp_path):
    """The upgrade is load_checkpoint's alone: eval, predict, export, serve, resume and Lightning's
    own reads (through digitrec's CheckpointIO) all see a digitrec.model/2 checkpoint."""
    import lightning as L
    import onnx

    from digitrec.inference import export
    from digitrec.inference.serve import DigitService
    from digitrec.nets.checkpoint import load_checkpoint
    from digitrec.training.checkpoints import AtomicCheckpointIO
    from digitrec.training.classifier import DigitClassifier

    path, weights = v1_checkpoint
    for loaded in (load_checkpoint(path), AtomicCheckpointIO().load_checkpoint(path)):
        assert loaded["format"] == "digitrec.model/2" and loaded["hyper_parameters"] == V1_TODAY
        assert {"net.normalize.mean", "net.normalize.std"} <= set(loaded["state_dict"]) and "net.mean" not in loaded["state_dict"]
    assert load_model(path).hparams == V1_TODAY  # digitrec eval
    assert DigitService.from_checkpoint(path).hyper_parameters == V1_TODAY  # digitrec serve
    out = tmp_path / "v1.onnx"
    assert export.main(["--ckpt", str(path), "--format", "onnx", "--out", str(out)]) == 0
    assert json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["hyper_parameters"]) == V1_TODAY

    # A Lightning checkpoint of v1's time (no format tag), read by Lightning itself: a test run here,
    # a resume in `digitrec train ckpt_path=...`; its net.mean/net.std load as net.normalize's.
    lightning_v1 = tmp_path / "epoch=0.ckpt"
    saved = torch.load(path, weights_only=True)
    torch.save(
        {"pytorch-lightning_version": L.__version__, "hyper_parameters": saved["hyper_parameters"], "state_dict": saved["state_dict"]}, lightning_v1
    )
    model = DigitClassifier(net=V1_TODAY["net"])
    images, labels = mnist.test_images[:64], mnist.test_labels[:64]
    trainer = L.Trainer(plugins=[AtomicCheckpointIO()], accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=64)
    trainer.test(model, dataloaders=batches, ckpt_path=str(lightning_v1), weights_only=True, verbose=False)
    with torch.inference_mode():
        torch.testing.assert_close(model.eval()(images), by_hand(weights, images.float() / 255), atol=1e-4, rtol=1e-4)


# --- a CNN rebuilt from the file alone ----------------------------------------------------------


def assert_onnx_agrees(onnx_file: Path, images: np.ndarray, expected: np.ndarray) -> None:
    import onnx

    onnx.checker.check_model(onnx.load(str(onnx_file)))
    try:
        import onnxruntime
    except ImportError:
        return
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for batch in (images[:1], images):
        logits, probabilities = session.run(["logits", "probabilities"], {"images": batch.astype(np.float32)})
        np.testing.assert_allclose(logits, expected[: len(batch)], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_predict_and_export_rebuild_a_cnn_from_the_file_alone(norm, mnist, tmp_path):
    from digitrec.inference import export
    from digitrec.inference.predict import Predictor
    from digitrec.training.classifier import DigitClassifier

    torch.manual_seed(0)
    model = DigitClassifier(net={**SMALL_CNN, "norm": norm, "kernel_size": 5, "convs_per_block": 1})
    model(mnist.train_images[:50])  # batch norm statistics of its own, not the initial ones
    model.eval()
    path = export_model(model, tmp_path / "cnn.ckpt")
    images = mnist.test_images[:9].float() / 255
    with torch.inference_mode():
        expected = model(images)
        torch.testing.assert_close(Predictor.from_checkpoint(path).net(images), expected)
        torch.testing.assert_close(load_model(path)(images), expected)
    out = tmp_path / "cnn.onnx"
    assert export.main(["--ckpt", str(path), "--format", "onnx", "--out", str(out)]) == 0
    assert_onnx_agrees(out, images.numpy(), expected.numpy())


def test_prediction_of_every_kind_of_file_imports_no_lightning_hydra_or_torchvision(v1_checkpoint, tmp_path):
    from digitrec.training.classifier import DigitClassifier

    cnn = export_model(DigitClassifier(net=SMALL_CNN), tmp_path / "cnn.ckpt")
    v1, _ = v1_checkpoint
    code = (
        "import sys, torch\n"
        "from digitrec.inference.predict import Predictor\n"
        f"for path in ({str(cnn)!r}, {str(v1)!r}):\n"
        "    assert Predictor.from_checkpoint(path).probabilities(torch.zeros(2, 28, 28).numpy()).shape == (2, 10)\n"
        "print(sorted({'lightning', 'hydra', 'torchvision', 'torchmetrics', 'omegaconf'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- readable names: HParams columns and run names ---------------------------------------------


def test_hparam_columns_name_each_record_and_its_arguments():
    from omegaconf import OmegaConf

    from digitrec.tracking.tensorboard import hparam_columns

    hparams = OmegaConf.create(
        {
            "model.net": {**SMALL_CNN, "num_classes": 10, "mean": 0.1307, "std": 0.3081},
            "model.optimizer": {"_target_": "torch.optim.RMSprop", "_partial_": True, "lr": 0.001},
            "model.scheduler": None,
            "data.augment": {"_target_": "digitrec.data.augment.RandomWarp", "degrees": 10.0, "elastic_alpha": 34.0},
            "data.batch_size": 100,
        }
    )
    columns = hparam_columns(hparams)
    assert columns == {
        "model.net": "CNN",
        "model.net.channels": "[4, 8]",
        "model.net.hidden_size": "16",
        "model.net.dropout": 0.0,
        "model.optimizer": "RMSprop",
        "model.optimizer.lr": 0.001,
        "model.scheduler": "none",
        "data.augment": "elastic",
        "data.augment.degrees": 10.0,
        "data.augment.elastic_alpha": 34.0,
        "data.batch_size": "100",
    }
    affine = hparam_columns(
        {"data.augment": {"_target_": "digitrec.data.augment.RandomWarp", "elastic_alpha": 0.0}, "model.net": {"_target_": "user_nets.TinyNet"}}
    )
    assert affine == {"data.augment": "affine", "data.augment.elastic_alpha": 0.0, "model.net": "TinyNet"}
    assert all(isinstance(v, (int, float, str, bool)) for v in columns.values())


def test_run_and_job_names_stay_readable_with_groups_and_targets():
    from digitrec.config.naming import short_overrides

    name = short_overrides(["model.optimizer._target_=torch.optim.RMSprop", "model/net=cnn"])
    assert name == "optimizer=RMSprop,net=cnn" and "/" not in name
    assert short_overrides(["data/augment=elastic", "model.net.channels=[8,16]"]) == "augment=elastic,channels=[8,16]"


@pytest.mark.slow
def test_a_sweep_over_groups_names_its_jobs_by_them(tmp_path):
    result = run_digitrec(
        "train", "-m", "model/net=mlp,cnn", "model.optimizer._target_=torch.optim.RMSprop", "trainer.fast_dev_run=true", "progress=lines",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["0_net=mlp", "1_net=cnn"], "what every job shares is left out of the job names"
