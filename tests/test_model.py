"""The classifier (the tutorial's MLP by default) and its self-describing checkpoints."""

import pickle

import pytest
import torch

from digitrec.errors import DigitrecError
from digitrec.nets.checkpoint import export_model, load_checkpoint
from digitrec.training.classifier import DigitClassifier, load_model


def mlp(*hidden_sizes: int) -> dict:
    """A network record for an MLP of these hidden widths (the tutorial's other settings)."""
    return {"_target_": "digitrec.nets.MLP", "hidden_sizes": list(hidden_sizes)}


def test_shapes_and_layers():
    model = DigitClassifier()
    sizes = [(m.in_features, m.out_features) for m in model.net.layers if isinstance(m, torch.nn.Linear)]
    assert sizes == [(784, 500), (500, 100), (100, 10)]
    assert model(torch.zeros(7, 28, 28)).shape == (7, 10)
    assert model(torch.zeros(3, 784)).shape == (3, 10)


def test_pool_first_pools_before_the_norm_and_activation_and_rebuilds_from_its_record(tmp_path):
    from digitrec.nets import CNN

    layer_kinds = lambda net: [type(m).__name__ for m in net.features]  # noqa: E731
    assert layer_kinds(CNN(channels=[4, 8], convs_per_block=2))[:7] == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    first = CNN(channels=[4, 8], convs_per_block=2, pool_first=True)
    assert layer_kinds(first)[:6] == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "MaxPool2d", "BatchNorm2d"]
    assert first(torch.zeros(3, 28, 28)).shape == (3, 10)
    # The setting is part of the checkpoint's record: the file alone rebuilds the same layers.
    record = {"_target_": "digitrec.nets.CNN", "channels": [4, 8], "hidden_size": 16, "pool_first": True}
    model = DigitClassifier(net=record).eval()
    export_model(model, tmp_path / "model.ckpt")
    loaded = load_model(tmp_path / "model.ckpt")
    assert layer_kinds(loaded.net) == layer_kinds(model.net)
    images = torch.rand(4, 28, 28)
    torch.testing.assert_close(loaded(images), model(images))


def test_uint8_and_unit_float_inputs_agree():
    model = DigitClassifier().eval()
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    torch.testing.assert_close(model(images), model(images.float() / 255))


def test_hyperparameters_are_plain_types():
    from omegaconf import ListConfig, OmegaConf

    net = OmegaConf.create({"_target_": "digitrec.nets.MLP", "hidden_sizes": ListConfig([64, 32])})
    optimizer = OmegaConf.create({"_target_": "torch.optim.Adam", "_partial_": True, "lr": 3e-4})
    model = DigitClassifier(net=net, optimizer=optimizer)
    assert model.hparams.net["hidden_sizes"] == [64, 32] and type(model.hparams.net["hidden_sizes"]) is list
    assert type(model.hparams.net) is dict and type(model.hparams.optimizer) is dict and model.hparams.scheduler is None
    assert model.lr == 3e-4 and model.num_classes == 10


def test_the_defaults_are_the_tutorials():
    model = DigitClassifier()
    hp = model.hparams
    # The network's record is written out from the MLP's own defaults; the optimiser's are torch's.
    assert hp.net["_target_"] == "digitrec.nets.MLP" and hp.net["hidden_sizes"] == [500, 100]
    assert (hp.net["input_size"], hp.net["num_classes"], hp.net["dropout"], hp.net["norm"], hp.net["activation"]) == (784, 10, 0.0, "none", "relu")
    assert hp.optimizer == {"_target_": "torch.optim.Adam", "_partial_": True} and model.lr == 1e-3
    assert hp.scheduler is None and hp.label_smoothing == 0.0
    optimizer = model.configure_optimizers()["optimizer"]
    assert (optimizer.defaults["lr"], optimizer.defaults["weight_decay"]) == (1e-3, 0)


def test_exported_model_rebuilds_from_the_file_alone(tmp_path):
    model = DigitClassifier(net=mlp(32, 16)).eval()
    path = export_model(model, tmp_path / "model.ckpt")
    raw = torch.load(path, weights_only=True)  # plain types only
    assert raw["format"] == "digitrec.model/2" and raw["hyper_parameters"]["net"]["hidden_sizes"] == [32, 16]
    rebuilt = load_model(path)
    images = torch.rand(4, 28, 28)
    torch.testing.assert_close(rebuilt(images), model(images))


class Payload:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['DIGITREC_TEST_MARKER'], 'w').write('ran')",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("DIGITREC_TEST_MARKER", str(marker))
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "x": Payload()}, evil)
    with pytest.raises(DigitrecError, match=r"refused: it asks to run code \(builtins.exec\)"):
        load_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable PyTorch file"),
        (b"not a checkpoint at all", "not a readable PyTorch file"),
    ],
)
def test_corrupt_checkpoints(tmp_path, content, message):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(DigitrecError, match=message):
        load_checkpoint(path)


def test_foreign_checkpoint_is_not_a_digitrec_model(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(DigitrecError, match="not a digitrec model"):
        load_checkpoint(path)
    torch.save({"state_dict": {"w": torch.zeros(3)}, "hyper_parameters": {"hidden_sizes": [5]}}, path)
    with pytest.raises(DigitrecError, match="does not match the digitrec model"):
        load_model(path)


# --- the checkpoint zoo: every file that is not a digitrec checkpoint gives the one error --------


class SystemPayload:
    def __reduce__(self):
        import os

        return (os.system, ('touch "$DIGITREC_TEST_MARKER"',))


class EvalPayload:
    def __reduce__(self):
        return (eval, ("open(__import__('os').environ['DIGITREC_TEST_MARKER'], 'w')",))


class SubprocessPayload:
    def __reduce__(self):
        import subprocess

        return (subprocess.call, (["touch", __import__("os").environ.get("DIGITREC_TEST_MARKER", "/nonexistent")],))


def payload_files(folder):
    """Files that would run code when unpickled, in every way torch writes (zip, legacy) and raw pickle."""
    files = {}
    for name, payload in (("system", SystemPayload()), ("eval", EvalPayload()), ("subprocess", SubprocessPayload()), ("exec", Payload())):
        files[f"{name}.zip.ckpt"] = lambda p, payload=payload: torch.save({"state_dict": {}, "hyper_parameters": {}, "x": payload}, p)
        files[f"{name}.legacy.ckpt"] = lambda p, payload=payload: torch.save({"x": payload}, p, _use_new_zipfile_serialization=False)
        files[f"{name}.pickle"] = lambda p, payload=payload: p.write_bytes(pickle.dumps(payload, protocol=4))
        files[f"{name}.pickle2"] = lambda p, payload=payload: p.write_bytes(pickle.dumps({"state_dict": payload}, protocol=2))
    paths = []
    for name, write in files.items():
        path = folder / name
        write(path)
        paths.append(path)
    return paths


def test_every_payload_is_refused_as_asking_to_run_code_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("DIGITREC_TEST_MARKER", str(marker))
    paths = payload_files(tmp_path)
    assert len(paths) == 16
    for path in paths:
        with pytest.raises(DigitrecError, match=r"was refused: it asks to run code \([\w.]+\.(system|eval|exec|call)\)"):
            load_checkpoint(path)
    assert not marker.exists(), "a payload ran"


def small_text_files(folder, count=300):
    """Short text and byte files of every kind a user might pass by mistake (seeded)."""
    import random

    rng = random.Random(1234)
    files = [("hello", b"hello\n"), ("empty", b""), ("newline", b"\n"), ("json", b'{"state_dict": {}}'), ("zipmagic", b"PK\x03\x04garbage")]
    for i in range(count):
        alphabet = bytes(range(32, 127)) if i % 2 else bytes(range(256))
        files.append((f"file{i}", bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 120)))))
    paths = []
    for name, content in files:
        path = folder / name
        path.write_bytes(content)
        paths.append(path)
    return paths


def test_small_text_and_byte_files_are_one_clear_error(tmp_path):
    for path in small_text_files(tmp_path):
        with pytest.raises(DigitrecError, match=r"(is not a readable PyTorch file|was refused|is not a digitrec model)"):
            load_checkpoint(path)


def test_truncated_checkpoints_are_one_clear_error(tmp_path):
    good = export_model(DigitClassifier(net=mlp(16)), tmp_path / "model.ckpt")
    data = good.read_bytes()
    cut = tmp_path / "cut.ckpt"
    for length in [0, 1, 10, 100, 500, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1]:
        cut.write_bytes(data[:length])
        with pytest.raises(DigitrecError, match="is not a readable PyTorch file"):
            load_checkpoint(cut)


def test_other_architectures_are_refused_by_name(tmp_path):
    path = tmp_path / "conv.ckpt"
    conv = {"conv1.weight": torch.zeros(6, 1, 5, 5), "fc.weight": torch.zeros(10, 84)}
    torch.save({"state_dict": conv, "hyper_parameters": {"channels": 6}}, path)
    with pytest.raises(DigitrecError, match="does not match the digitrec model"):
        load_model(path)
    wider = export_model(DigitClassifier(net=mlp(64)), tmp_path / "wide.ckpt")
    checkpoint = load_checkpoint(wider)
    checkpoint["hyper_parameters"]["net"]["hidden_sizes"] = [32]
    torch.save(checkpoint, path)
    with pytest.raises(DigitrecError, match="does not match the digitrec model"):
        load_model(path)
    cnn = export_model(DigitClassifier(net={"_target_": "digitrec.nets.CNN", "channels": [4], "hidden_size": 8}), tmp_path / "cnn.ckpt")
    checkpoint = load_checkpoint(cnn)
    checkpoint["hyper_parameters"]["net"]["channels"] = [8]
    torch.save(checkpoint, path)
    with pytest.raises(DigitrecError, match="does not match the digitrec model"):
        load_model(path)
