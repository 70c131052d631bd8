"""`digitrec export`: ONNX (checked with onnxruntime) and the plain state_dict model.ckpt."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from conftest import run_digitrec
from digitrec.inference.export import ONNX_FORMAT, main
from digitrec.inference.predict import Predictor
from digitrec.nets.checkpoint import EXPORT_FORMAT
from predict_fixtures import lightning_style_checkpoint, malicious_checkpoint, model_ckpt, predictor  # noqa: F401


@pytest.fixture(scope="module")
def digits(mnist):
    """Seven preprocessed-form test digits, float32 in [0, 1]."""
    return (mnist.test_images[:7].numpy() / 255.0).astype(np.float32)


@pytest.fixture(scope="module")
def onnx_file(model_ckpt, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    lightning = lightning_style_checkpoint(model_ckpt, folder / "last.ckpt")
    out = folder / "exported" / "digits.onnx"
    assert main(["--ckpt", str(lightning), "--format", "onnx", "--out", str(out)]) == 0
    return out


def test_onnx_runtime_agrees_with_pytorch(onnx_file, predictor, digits):
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    expected = predictor.probabilities(digits)
    for batch in (digits[:1], digits):  # the batch dimension is dynamic
        logits, probabilities = session.run(["logits", "probabilities"], {"images": batch})
        assert logits.shape == (len(batch), 10)
        assert np.allclose(probabilities, expected[: len(batch)], atol=1e-5)
        assert (logits.argmax(1) == expected[: len(batch)].argmax(1)).all()


def test_onnx_is_one_self_describing_file(onnx_file):
    assert [p.name for p in onnx_file.parent.iterdir()] == [onnx_file.name]  # no external data
    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["format"] == ONNX_FORMAT and json.loads(meta["hyper_parameters"])["net"]["hidden_sizes"] == [500, 100]
    assert "MLP 784-500-100-10" in model.doc_string
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_state_dict_export_from_a_lightning_checkpoint(model_ckpt, predictor, digits, tmp_path, capsys):
    lightning = lightning_style_checkpoint(model_ckpt, tmp_path / "epoch_003.ckpt")
    out = tmp_path / "model.ckpt"
    assert main(["--ckpt", str(lightning), "--format", "state_dict", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    saved = torch.load(out, weights_only=True)
    assert saved["format"] == EXPORT_FORMAT
    assert saved["hyper_parameters"]["net"] == {**saved["hyper_parameters"]["net"], "_target_": "digitrec.nets.MLP", "hidden_sizes": [500, 100]}
    assert saved["hyper_parameters"]["optimizer"]["_target_"] == "torch.optim.Adam" and saved["hyper_parameters"]["scheduler"] is None
    assert "optimizer_states" not in saved and set(saved) == {"format", "hyper_parameters", "state_dict"}
    assert np.array_equal(Predictor.from_checkpoint(out).probabilities(digits), predictor.probabilities(digits))


def test_a_malicious_checkpoint_is_not_exported(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    for fmt in ("onnx", "state_dict"):
        assert main(["--ckpt", str(evil), "--format", fmt, "--out", str(tmp_path / f"out.{fmt}")]) == 2
        assert "refused" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.onnx").exists()


def test_real_command(model_ckpt, tmp_path):
    result = run_digitrec("export", "--ckpt", str(model_ckpt), "--format", "onnx", "--out", "m.onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.onnx").stat().st_size > 1_000_000
    missing = run_digitrec("export", "--ckpt", "nope.ckpt", "--format", "onnx", "--out", "m.onnx", cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_usage_errors(model_ckpt, capsys):
    assert main(["--ckpt", str(model_ckpt), "--format", "tflite", "--out", "x"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["--format", "onnx", "--out", "x"]) == 2
    assert "--ckpt" in capsys.readouterr().err


def test_without_onnx_installed_the_fix_is_named(model_ckpt, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    assert main(["--ckpt", str(model_ckpt), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'digitrec[onnx]'" in capsys.readouterr().err
