"""`digitrec predict` and the Predictor API: accuracy on foreign images, output, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import foreign_set
from conftest import TINY_TRAIN, run_digitrec
from digitrec.errors import DigitrecError
from digitrec.inference.predict import ImageError, Predictor, main
from predict_fixtures import (  # noqa: F401
    crafted_png,
    lightning_style_checkpoint,
    malicious_checkpoint,
    mnist_digit_png,
    model_ckpt,
    predictor,
)

# --- accuracy on foreign images --------------------------------------------------------------


def correct(predictor, paths, labels) -> np.ndarray:
    return np.array([p.digit for p in predictor.predict(paths)]) == np.asarray(labels)


def naive_correct(predictor, paths, labels) -> np.ndarray:
    naive = np.stack([foreign_set.naive_preprocess(image) for image in foreign_set.iter_images(paths)])
    return np.array([p.digit for p in predictor.classify(naive)]) == np.asarray(labels)


@pytest.fixture(scope="module")
def photo_results(predictor, mnist, tmp_path_factory):
    """For 80 MNIST test digits (writers unseen in training) per photo variant, written as
    files: which ones digitrec and the naive pipeline get right."""
    folder = tmp_path_factory.mktemp("photos")
    images, labels = mnist.test_images[:80].numpy(), mnist.test_labels[:80].numpy()
    results = {}
    for variant in foreign_set.MNIST_VARIANTS:
        paths, labels_ = zip(*foreign_set.write_mnist_photos(folder / variant, images, labels, variant))
        results[variant] = correct(predictor, paths, labels_), naive_correct(predictor, paths, labels_)
    return results


@pytest.mark.parametrize("variant", foreign_set.MNIST_VARIANTS)
def test_mnist_photos_are_read_like_mnist(photo_results, variant):
    ours, naive = (r.mean() for r in photo_results[variant])
    # The fixture model reads ~97% of MNIST's own test digits; 80 photos leave a few % of noise.
    assert ours >= 0.9, f"{variant}: {ours:.3f}"
    assert ours - naive >= 0.5, f"{variant}: digitrec {ours:.3f} vs naive {naive:.3f}"


def test_mnist_photos_overall(photo_results):
    """The issue's set: dark on light, off-centre on tinted canvases, JPEG, RGBA."""
    ours, naive = (np.concatenate([photo_results[v][k] for v in ("dark_on_light", "jpeg", "rgba")]).mean() for k in (0, 1))
    assert ours >= 0.95 and naive <= 0.3


def test_font_digits(predictor, tmp_path):
    """Digits typed in every font found (Pillow's built-in font is always among them)."""
    fonts = foreign_set.find_fonts()
    written = foreign_set.write_font_digits(tmp_path, fonts, copies=2)
    paths, labels, names = zip(*written)
    names = np.array(names)
    ours = correct(predictor, paths, labels)
    assert ours.mean() >= 0.85, {n: ours[names == n].mean() for n in dict.fromkeys(names)}
    assert ours[names == foreign_set.BUILTIN_FONT].mean() >= 0.7
    assert naive_correct(predictor, paths, labels).mean() <= ours.mean() - 0.4


# --- the Python API --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_files(mnist, tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    return [mnist_digit_png(mnist, i, folder / f"digit-{i}.png") for i in range(6)], mnist.test_labels[:6].tolist()


def test_paths_pil_images_and_arrays_give_the_same_answer(predictor, photo_files):
    paths, labels = photo_files
    by_path = predictor.predict(paths)
    assert [p.digit for p in by_path] == labels
    pictures = [Image.open(path) for path in paths]
    arrays = [np.asarray(picture) for picture in pictures]
    for other in (
        predictor.predict(pictures),
        predictor.predict(arrays),
        predictor.predict(np.stack(arrays)),
        predictor.predict(torch.from_numpy(np.stack(arrays))),
    ):
        assert [p.digit for p in other] == labels
        assert np.allclose([p.probability for p in other], [p.probability for p in by_path], atol=1e-5)
    single = predictor.predict_one(str(paths[0]))
    assert single.digit == labels[0] and predictor.predict(arrays[0])[0].digit == labels[0]


def test_batches_give_the_same_answer_as_one_call(predictor, photo_files):
    paths, _ = photo_files
    whole = predictor.predict(paths, top_k=3)
    in_twos = predictor.predict(paths, top_k=3, batch_size=2)
    for a, b in zip(whole, in_twos):
        assert [d for d, _ in a.top_k] == [d for d, _ in b.top_k] and np.array_equal(a.image, b.image)
        assert [q for _, q in a.top_k] == pytest.approx([q for _, q in b.top_k], abs=1e-6)


def test_top_k_is_ordered_and_sums_below_one(predictor, photo_files):
    prediction = predictor.predict_one(photo_files[0][0], top_k=10)
    probabilities = [q for _, q in prediction.top_k]
    assert sorted(d for d, _ in prediction.top_k) == list(range(10))
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1, abs=1e-5)
    assert prediction.top_k[0] == (prediction.digit, prediction.probability)


def test_mnist_tensors_are_classified_directly(predictor, mnist):
    predictions = predictor.classify(mnist.test_images[:500].numpy() / 255.0)
    assert np.mean([p.digit for p in predictions] == mnist.test_labels[:500].numpy()) >= 0.95


def test_a_bad_image_names_itself(predictor, photo_files, tmp_path):
    empty = tmp_path / "empty.png"
    empty.touch()
    with pytest.raises(ImageError, match=r"empty\.png: the file is empty"):
        predictor.predict([photo_files[0][0], empty])
    with pytest.raises(DigitrecError, match="image 1: no digit found"):
        predictor.predict([np.asarray(Image.open(photo_files[0][0])), np.full((50, 50), 128, np.uint8)])
    (first, second, *_), labels = photo_files
    outcomes = list(predictor.predict_each([first, empty, second], batch_size=2))
    assert isinstance(outcomes[1], ImageError) and outcomes[1].problem == "the file is empty"
    assert (outcomes[0].digit, outcomes[2].digit) == (labels[0], labels[1])


def test_lightning_and_exported_checkpoints_give_the_same_model(model_ckpt, tmp_path, photo_files):
    lightning = lightning_style_checkpoint(model_ckpt, tmp_path / "epoch=1-step=1100.ckpt")
    a = Predictor.from_checkpoint(model_ckpt).predict(photo_files[0])
    b = Predictor.from_checkpoint(lightning).predict(photo_files[0])
    assert [p.probability for p in a] == [p.probability for p in b]


# --- the command line ------------------------------------------------------------------------


def test_prints_digit_and_probability_per_file(model_ckpt, photo_files, capsys):
    paths, labels = photo_files
    assert main(["--ckpt", str(model_ckpt), *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(paths)
    for line, path, label in zip(lines, paths, labels):
        name, answer = line.rsplit(": ", 1)
        digit, probability = answer.split(" ")
        assert name == str(path) and int(digit) == label and 0.1 <= float(probability.strip("()")) <= 1.0


def test_json_records_with_top_k(model_ckpt, photo_files, capsys):
    paths, labels = photo_files
    assert main(["--ckpt", str(model_ckpt), "--json", "--top-k", "3", str(paths[0]), str(paths[1])]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in records] == [str(paths[0]), str(paths[1])]
    assert [r["digit"] for r in records] == labels[:2]
    for record in records:
        assert len(record["top_k"]) == 3 and record["top_k"][0] == {"digit": record["digit"], "probability": record["probability"]}


def test_save_preprocessed_writes_what_the_model_saw(model_ckpt, predictor, photo_files, tmp_path, capsys):
    paths, _ = photo_files
    out = tmp_path / "seen"
    assert main(["--ckpt", str(model_ckpt), "--json", "--save-preprocessed", str(out), str(paths[0]), str(paths[0])]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    saved = [out / "digit-0.png", out / "digit-0-2.png"]  # the same name twice is numbered
    assert [r["preprocessed"] for r in records] == [str(s) for s in saved]
    seen = np.asarray(Image.open(saved[0]), dtype=np.float32) / 255
    assert seen.shape == (28, 28)
    assert np.abs(seen - predictor.predict_one(paths[0]).image).max() <= 0.5 / 255 + 1e-6


def write_bad_inputs(folder, mnist) -> dict[str, str]:
    """One file per way an input can be bad, with the problem its line must name."""
    good = mnist_digit_png(mnist, 0, folder / "good.png")
    (folder / "empty.png").touch()
    (folder / "notes.png").write_text("this is not an image\n")
    png = bytearray(good.read_bytes())
    png[60:160] = bytes(100)  # inside the pixel data: the header still says PNG
    (folder / "corrupt.png").write_bytes(bytes(png))
    jpeg = folder / "cut.jpg"
    Image.open(good).convert("RGB").save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    Image.new("RGB", (400, 300), (240, 235, 220)).save(folder / "blank.png")
    Image.new("L", (1, 1), 0).save(folder / "dot.png")
    (folder / "folder.png").mkdir()
    (folder / "giant.png").write_bytes(crafted_png(40000, 40000))
    return {
        "empty.png": "the file is empty",
        "notes.png": "not an image file",
        "corrupt.png": "truncated or corrupt",
        "cut.jpg": "truncated or corrupt",
        "blank.png": "no digit found",
        "dot.png": "too small to hold a digit",
        "folder.png": "is a directory",
        "giant.png": "too large",
        "missing.png": "no such file",
    }


@pytest.fixture(scope="module")
def bad_inputs(mnist, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    return folder, write_bad_inputs(folder, mnist)


@pytest.mark.parametrize(
    "name", ["empty.png", "notes.png", "corrupt.png", "cut.jpg", "blank.png", "dot.png", "folder.png", "giant.png", "missing.png"]
)
def test_each_bad_file_gets_one_line_and_the_rest_go_on(model_ckpt, bad_inputs, name, capsys):
    folder, problems = bad_inputs
    bad, good = str(folder / name), str(folder / "good.png")
    assert main(["--ckpt", str(model_ckpt), bad, good]) == 1
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(f"{bad}: error: ") and problems[name] in line
    [answer] = captured.out.splitlines()
    assert answer.startswith(f"{good}: 7 (")
    assert main(["--ckpt", str(model_ckpt), "--json", bad]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["path"] == bad and problems[name] in record["error"] and "digit" not in record


def test_real_command_with_bad_files_never_shows_a_traceback(model_ckpt, bad_inputs):
    folder, problems = bad_inputs
    names = sorted(problems)
    started = time.perf_counter()
    result = run_digitrec("predict", "--ckpt", str(model_ckpt), *names, "good.png", cwd=folder)
    seconds = time.perf_counter() - started
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = result.stderr.splitlines()
    assert len(errors) == len(names)
    for line, name in zip(errors, names):
        assert line.startswith(f"{name}: error: ") and problems[name] in line
    assert result.stdout.startswith("good.png: 7 (")
    assert seconds < 60


def test_real_command_one_image(model_ckpt, photo_files):
    paths, labels = photo_files
    result = run_digitrec("predict", "--ckpt", str(model_ckpt), str(paths[1]), cwd=paths[1].parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{paths[1]}: {labels[1]} (") and result.stderr == ""


def test_prediction_does_not_import_lightning_hydra_or_torchvision():
    code = "import sys, digitrec.inference.predict, digitrec.command.main; print(sorted({'lightning', 'hydra', 'torchvision', 'torchmetrics'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- which model ------------------------------------------------------------------------------


def make_run(root, name, model_ckpt, best: str | None, mtime: float):
    run = root / "outputs" / "train" / "runs" / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "model.ckpt").write_bytes(model_ckpt.read_bytes())
    if best:
        (run / "checkpoints" / best).write_bytes(model_ckpt.read_bytes())
    metrics = run / "metrics.json"
    metrics.write_text(
        json.dumps({"status": "ok", "model_path": str(run / "model.ckpt"), "best_ckpt_path": str(run / "checkpoints" / best) if best else None})
    )
    os.utime(metrics, (mtime, mtime))
    return run


def test_without_ckpt_the_newest_runs_best_checkpoint_is_used(model_ckpt, photo_files, tmp_path, monkeypatch, capsys):
    make_run(tmp_path, "2024-01-01_old", model_ckpt, "epoch=0.ckpt", mtime=1_000_000)
    newest = make_run(tmp_path, "2024-02-02_new", model_ckpt, "epoch=4-val_acc=0.97.ckpt", mtime=2_000_000)
    monkeypatch.chdir(tmp_path)
    assert main([str(photo_files[0][0])]) == 0
    err = capsys.readouterr().err
    assert str(newest / "checkpoints" / "epoch=4-val_acc=0.97.ckpt") in err and "--ckpt" in err


def test_without_a_best_checkpoint_the_runs_model_ckpt_is_used(model_ckpt, photo_files, tmp_path, monkeypatch, capsys):
    make_run(tmp_path, "run", model_ckpt, None, mtime=1_000_000)
    monkeypatch.chdir(tmp_path)
    assert main([str(photo_files[0][0])]) == 0
    assert "using outputs/train/runs/run/model.ckpt, from the newest successful training run" in capsys.readouterr().err


def test_without_any_run_the_user_is_told_to_train(photo_files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([str(photo_files[0][0])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "digitrec train" in err and "--ckpt" in err


# --- checkpoints that must be refused ---------------------------------------------------------


def test_a_malicious_checkpoint_is_refused_and_never_runs(photo_files, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    assert main(["--ckpt", str(evil), str(photo_files[0][0])]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and err.count("\n") == 1
    assert not marker.exists()
    # The payload is real: loading the file unsafely does run it.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_a_malicious_checkpoint_through_the_real_command(photo_files, tmp_path):
    marker = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    result = run_digitrec("predict", "--ckpt", str(evil), str(photo_files[0][0]), cwd=tmp_path)
    assert result.returncode == 2 and "refused" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable PyTorch file"),
        (b"PK\x03\x04 garbage that is not a zip", "not a readable PyTorch file"),
        ({"weights": torch.zeros(3)}, "not a digitrec model"),
        ({"state_dict": {"net.layers.0.weight": torch.zeros(2, 2)}, "hyper_parameters": {"input_size": 784}}, "does not match"),
        (
            {"state_dict": {}, "hyper_parameters": {"input_size": 10, "hidden_sizes": [4], "num_classes": 2, "mean": 0.0, "std": 1.0, "lr": 0.1}},
            "it expects 10 inputs, not 28x28 images",
        ),
        (
            {"state_dict": {}, "hyper_parameters": {"net": {"_target_": "digitrec.nets.CNN", "channels": [4]}, "optimizer": {}, "scheduler": None}},
            "does not match",
        ),
    ],
    ids=["empty", "corrupt", "foreign", "incomplete", "other-inputs", "cnn-without-weights"],
)
def test_checkpoints_that_are_not_digitrec_models(photo_files, tmp_path, content, message, capsys):
    path = tmp_path / "model.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    assert main(["--ckpt", str(path), str(photo_files[0][0])]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_usage_errors(capsys):
    assert main([]) == 2
    assert "IMAGE" in capsys.readouterr().err
    assert main(["--top-k", "0", "x.png"]) == 2
    assert "--top-k" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "--save-preprocessed" in capsys.readouterr().out


@pytest.mark.slow
def test_after_a_real_training_run_predict_finds_its_best_checkpoint(mnist, tmp_path):
    """End to end: `digitrec train`, then `digitrec predict` without --ckpt in the same folder,
    then `digitrec export` of the run's real Lightning checkpoint."""
    trained = run_digitrec("train", *TINY_TRAIN, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    image = mnist_digit_png(mnist, 1, tmp_path / "two.png")
    result = run_digitrec("predict", "--json", str(image), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    best = json.loads((run_dir / "metrics.json").read_text())["best_ckpt_path"]
    assert f"using {best}" in result.stderr
    assert set(json.loads(result.stdout)) >= {"path", "digit", "probability", "top_k"}
    exported = run_digitrec("export", "--ckpt", best, "--format", "state_dict", "--out", "plain.ckpt", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    plain = run_digitrec("predict", "--ckpt", "plain.ckpt", "--json", str(image), cwd=tmp_path)
    assert json.loads(plain.stdout)["probability"] == json.loads(result.stdout)["probability"]


# --- which model predict takes without --ckpt ------------------------------------------------------


def write_record(run, record, mtime):
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.json").write_text(json.dumps(record))
    os.utime(run / "metrics.json", (mtime, mtime))


def test_without_ckpt_evaluations_failed_and_unfinished_runs_are_skipped(model_ckpt, tmp_path):
    from digitrec.inference.predict import choose_checkpoint

    good = make_run(tmp_path, "2024-01-01_good", model_ckpt, None, mtime=1_000_000)
    runs = tmp_path / "outputs" / "train" / "runs"
    write_record(runs / "2024-01-02_failed", {"status": "failed", "reason": "training diverged"}, 2_000_000)
    (runs / "2024-01-02_failed" / "model.ckpt").write_bytes(model_ckpt.read_bytes())
    write_record(runs / "2024-01-03_killed", {"status": "running"}, 3_000_000)
    write_record(runs / "2024-01-03_interrupted", {"status": "interrupted"}, 3_500_000)
    write_record(tmp_path / "outputs" / "eval" / "runs" / "2024-01-04", {"test/acc": 0.9, "ckpt_path": "x.ckpt"}, 4_000_000)
    ckpt, source = choose_checkpoint(tmp_path / "outputs")
    assert ckpt == good / "model.ckpt" and "newest successful training run" in source


def test_without_ckpt_a_sweeps_best_job_is_used_not_its_last(model_ckpt, tmp_path):
    from digitrec.inference.predict import choose_checkpoint

    make_run(tmp_path, "2024-01-01_single", model_ckpt, None, mtime=1_000_000)
    sweep = tmp_path / "outputs" / "train" / "optuna" / "search"
    sweep.mkdir(parents=True)
    (sweep / "optuna.db").write_bytes(b"")
    for num, (acc, status, mtime) in enumerate([(0.93, "ok", 2_000_000), (0.97, "failed", 2_100_000), (0.79, "ok", 2_200_000)]):
        job = sweep / f"{num}_model.optimizer.lr={num}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text("optimized_metric: val/acc_best\n")
        (job / "model.ckpt").write_bytes(model_ckpt.read_bytes())
        write_record(job, {"status": status, "val/acc_best": acc, "model_path": str(job / "model.ckpt")}, mtime)
    ckpt, source = choose_checkpoint(tmp_path / "outputs")
    assert ckpt == sweep / "0_model.optimizer.lr=0" / "model.ckpt"
    assert "the best job (val/acc_best 0.9300) of the sweep" in source


def test_without_ckpt_and_only_failed_runs_the_user_is_told(tmp_path, monkeypatch, capsys, photo_files):
    write_record(tmp_path / "outputs" / "train" / "runs" / "x", {"status": "failed"}, 1_000_000)
    monkeypatch.chdir(tmp_path)
    assert main([str(photo_files[0][0])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no successful training run" in err
