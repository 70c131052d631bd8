"""The tutorial's MLP and its self-describing checkpoints."""

import pickle

import pytest
import torch

from digitrec.checkpoint import export_model, load_checkpoint, load_model
from digitrec.errors import DigitrecError
from digitrec.model import DigitClassifier


def test_shapes_and_layers():
    model = DigitClassifier()
    sizes = [(m.in_features, m.out_features) for m in model.net.layers if isinstance(m, torch.nn.Linear)]
    assert sizes == [(784, 500), (500, 100), (100, 10)]
    assert model(torch.zeros(7, 28, 28)).shape == (7, 10)
    assert model(torch.zeros(3, 784)).shape == (3, 10)


def test_uint8_and_unit_float_inputs_agree():
    model = DigitClassifier().eval()
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    torch.testing.assert_close(model(images), model(images.float() / 255))


def test_hyperparameters_are_plain_types():
    from omegaconf import ListConfig

    model = DigitClassifier(hidden_sizes=ListConfig([64, 32]), lr=3e-4)
    assert model.hparams.hidden_sizes == [64, 32] and type(model.hparams.hidden_sizes) is list


def test_exported_model_rebuilds_from_the_file_alone(tmp_path):
    model = DigitClassifier(hidden_sizes=[32, 16]).eval()
    path = export_model(model, tmp_path / "model.ckpt")
    raw = torch.load(path, weights_only=True)  # plain types only
    assert raw["hyper_parameters"]["hidden_sizes"] == [32, 16]
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
    with pytest.raises(DigitrecError, match=r"refused: it holds a pickled object \(exec\)"):
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
