"""Your own digits: data=folder, init_from=CKPT, and eval on a folder, with real image files of
every kind predict reads, in real folders, through the real `digitrec` command.

The "writer" here slants every digit the same way (MNIST digits rotated by SLANT degrees, dark ink
on white paper): a shift the preprocessing does not undo, which a tiny fine-tune on his own digits
measurably learns.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_TRAIN, run_digitrec
from predict_fixtures import model_ckpt  # noqa: F401

SLANT = 40  # degrees, counter-clockwise
# Every image kind the folder accepts that the tests write: (extension, Pillow mode written).
KINDS = (("png", "L"), ("jpg", "RGB"), ("png", "RGBA"), ("png", "P"), ("png", "I;16"), ("bmp", "RGB"))


def on_paper(digit28: np.ndarray, angle: float, mode: str) -> Image.Image:
    """An MNIST digit as the writer puts it on paper: dark ink on white, 3x larger, slanted by angle."""
    ink = Image.fromarray(digit28).resize((84, 84), Image.Resampling.BICUBIC).rotate(angle, Image.Resampling.BICUBIC)
    paper = 255 - np.asarray(ink)
    if mode == "RGBA":  # black ink whose opacity is the stroke, on a transparent sheet
        return Image.fromarray(np.dstack([np.zeros((84, 84, 3), np.uint8), np.asarray(ink)]), "RGBA")
    if mode == "I;16":
        return Image.fromarray(paper.astype(np.uint16) * 257)
    return Image.fromarray(paper).convert(mode)


def write_folder(root: Path, images: torch.Tensor, labels: torch.Tensor, per_digit: int, angle: float = SLANT) -> Path:
    """root/0/ ... root/9/, per_digit images each, the image kinds taken in turn."""
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True, exist_ok=True)
        for i, index in enumerate((labels == digit).nonzero().flatten()[:per_digit].tolist()):
            kind = KINDS[i % len(KINDS)]
            on_paper(images[index].numpy(), angle, kind[1]).save(root / str(digit) / f"{i:03d}-{kind[1].replace(';', '')}.{kind[0]}")
    return root


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Everything in a folder: each path's bytes and modification time."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert result.stderr.startswith("digitrec: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr, result.stderr


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """The prepared-images cache, kept to this test (digitrec.data.folder.cache_dir follows XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "digitrec" / "folders"


# --- preparation: predict's preprocessing, once, cached by content --------------------------------


def test_each_kind_of_image_is_prepared_exactly_as_predict_prepares_it(mnist, tmp_path, cache):
    from digitrec.data.folder import prepare_folder
    from digitrec.inference.preprocess import preprocess

    root = write_folder(tmp_path / "digits", mnist.test_images, mnist.test_labels, per_digit=len(KINDS))
    before = snapshot(root)
    folder = prepare_folder(root)
    assert len(folder.files) == 10 * len(KINDS) and not folder.bad
    assert {Path(f).suffix for f in folder.files} == {".png", ".jpg", ".bmp"}
    for image, label, name in zip(folder.images, folder.labels, folder.files, strict=True):
        assert int(label) == int(name.split("/")[0])
        assert torch.equal(image, torch.from_numpy(preprocess(root / name))), name
    assert snapshot(root) == before, "the folder is only read"


def test_a_second_preparation_reads_the_cache_and_a_changed_file_prepares_again(mnist, tmp_path, cache, monkeypatch):
    from digitrec.data import folder as folder_module

    root = write_folder(tmp_path / "digits", mnist.test_images, mnist.test_labels, per_digit=2)
    calls = []
    preprocess = folder_module.preprocessing.preprocess
    monkeypatch.setattr(folder_module.preprocessing, "preprocess", lambda path: calls.append(path) or preprocess(path))

    first = folder_module.prepare_folder(root)
    assert len(calls) == 20 and len(list(cache.glob("*.pt"))) == 1
    second = folder_module.prepare_folder(root)
    assert len(calls) == 20, "nothing prepared again"
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels) and first.files == second.files

    # Another digit's image under the same name: the content changed, so the folder is prepared again.
    changed = root / first.files[0]
    on_paper(mnist.test_images[int((mnist.test_labels == 1).nonzero()[5])].numpy(), SLANT, "L").save(changed, format="PNG")
    third = folder_module.prepare_folder(root)
    assert len(calls) == 40 and len(list(cache.glob("*.pt"))) == 2
    assert not torch.equal(third.images[0], first.images[0]) and torch.equal(third.images[1:], first.images[1:])


def test_the_split_holds_out_each_digits_share_seeded():
    from digitrec.data.folder import stratified_split

    labels = torch.arange(10).repeat_interleave(torch.tensor([10, 20, 30, 2, 5, 10, 10, 10, 10, 100]))
    train, val = stratified_split(labels, 0.2, seed=1)
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))
    assert torch.bincount(labels[val], minlength=10).tolist() == [2, 4, 6, 1, 1, 2, 2, 2, 2, 20]
    assert torch.equal(stratified_split(labels, 0.2, seed=1)[1], val)
    assert not torch.equal(stratified_split(labels, 0.2, seed=2)[1], val)


# --- fine-tuning on a writer's digits, with no tuning flags ----------------------------------------


@pytest.mark.slow
def test_fine_tuning_on_a_writers_folder_reads_his_other_digits_far_better_and_still_mnist(model_ckpt, mnist, tmp_path):
    own = write_folder(tmp_path / "my_digits", mnist.train_images, mnist.train_labels, per_digit=30)
    others = write_folder(tmp_path / "my_other_digits", mnist.test_images, mnist.test_labels, per_digit=30)
    untouched = snapshot(own), snapshot(others)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}

    before = run_digitrec("eval", f"ckpt_path={model_ckpt}", "data=folder", f"data.root={others}", "hydra.run.dir=before", cwd=tmp_path, env=env)
    assert before.returncode == 0, before.stderr[-3000:]
    tuned = run_digitrec(
        "train", "data=folder", f"data.root={own}", f"init_from={model_ckpt}", "progress=lines", "hydra.run.dir=tuned", cwd=tmp_path, env=env
    )
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    after = run_digitrec("eval", "ckpt_path=tuned/model.ckpt", "data=folder", f"data.root={others}", "hydra.run.dir=after", cwd=tmp_path, env=env)
    assert after.returncode == 0, after.stderr[-3000:]

    acc_before, acc_after, run = metrics(tmp_path / "before")["test/acc"], metrics(tmp_path / "after")["test/acc"], metrics(tmp_path / "tuned")
    assert acc_after >= acc_before + 0.1, (acc_before, acc_after)
    # The fine-tuning run's own test set is MNIST's: it still reads MNIST.
    assert run["test/images"] == 10_000 and run["test/acc"] >= 0.95, run
    # configs/recipe/folder.yaml's defaults, a fresh run of its own epochs.
    assert run["epochs"] == 10 and run["val/acc_best"] is not None
    assert torch.load(tmp_path / "tuned" / "model.ckpt", weights_only=True)["hyper_parameters"]["optimizer"]["lr"] == pytest.approx(3e-4)
    assert (untouched[0], untouched[1]) == (snapshot(own), snapshot(others)), "the folders are only read"

    # The evaluation's breakdown: printed, in metrics.json, in TensorBoard, and misread.csv.
    result = metrics(tmp_path / "after")
    matrix = np.array(result["test/confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 300 and (matrix.sum(axis=1) == 30).all()
    assert result["test/acc"] == pytest.approx(np.trace(matrix) / 300, abs=1e-6)
    assert result["test/acc_per_digit"] == {str(d): pytest.approx(matrix[d, d] / 30, abs=1e-4) for d in range(10)}
    assert "per digit (true rows, predicted columns)" in after.stdout and f"every image of {others}: 300" in after.stdout
    with open(tmp_path / "after" / "misread.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result["misread_count"] == 300 - np.trace(matrix)
    for row in rows:
        path = Path(row["path"])
        assert path.is_file() and path.parent.parent == others and int(row["true"]) == int(path.parent.name) != int(row["predicted"])
        assert matrix[int(row["true"]), int(row["predicted"])] > 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "after"), size_guidance={"scalars": 0})
    events.Reload()
    assert {f"test/acc_digit_{d}" for d in range(10)} <= set(events.Tags()["scalars"])


def test_eval_on_mnist_still_tests_the_official_test_set_with_the_breakdown(model_ckpt, tmp_path):
    result = run_digitrec("eval", f"ckpt_path={model_ckpt}", "trainer.limit_test_batches=2", "hydra.run.dir=ev", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    record = metrics(tmp_path / "ev")
    assert record["test/images"] == 2000 and sum(map(sum, record["test/confusion_matrix"])) == 2000
    assert "misread" not in record and not (tmp_path / "ev" / "misread.csv").exists()
    assert "per digit (true rows, predicted columns)" in result.stdout


# --- init_from: a new run from a checkpoint's network and weights ---------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A tiny real run of a network other than the default, to start from."""
    cwd = tmp_path_factory.mktemp("small")
    result = run_digitrec("train", *TINY_TRAIN, "trainer.limit_test_batches=1", "model.net.hidden_sizes=[32]", "hydra.run.dir=run", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "run"


SHORT = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "progress=lines"]


@pytest.mark.slow
def test_init_from_starts_a_new_run_with_the_checkpoints_network_and_weights(small_run, tmp_path):
    # A learning rate too small to move the weights: what the run saves is what it started from.
    result = run_digitrec("train", f"init_from={small_run / 'model.ckpt'}", "model.optimizer.lr=1e-12", *SHORT, "hydra.run.dir=new", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1/2" in result.stdout and "epoch 2/2" in result.stdout, "a fresh epoch count"
    started, saved = (torch.load(p, weights_only=True) for p in (small_run / "model.ckpt", tmp_path / "new" / "model.ckpt"))
    assert saved["hyper_parameters"]["net"] == started["hyper_parameters"]["net"]
    assert saved["hyper_parameters"]["net"]["hidden_sizes"] == [32]
    for key, weights in started["state_dict"].items():
        assert torch.allclose(saved["state_dict"][key], weights, atol=1e-6), key
    assert metrics(tmp_path / "new")["epochs"] == 2


@pytest.mark.slow
def test_ckpt_path_still_resumes_where_init_from_starts_afresh(small_run, tmp_path):
    last = small_run / "checkpoints" / "last.ckpt"
    resumed = run_digitrec("train", f"ckpt_path={last}", "model.net.hidden_sizes=[32]", *SHORT, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch 2/2" in resumed.stdout and "epoch 1/2" not in resumed.stdout, resumed.stdout
    fresh = run_digitrec("train", f"init_from={last}", *SHORT, "hydra.run.dir=fresh", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "epoch 1/2" in fresh.stdout and "epoch 2/2" in fresh.stdout


@pytest.mark.slow
def test_init_from_a_different_network_or_a_refused_file_is_one_line(small_run, tmp_path):
    ckpt = small_run / "model.ckpt"
    assert_one_line_error(run_digitrec("train", f"init_from={ckpt}", "model/net=cnn", cwd=tmp_path), "start from it with the same network settings")
    assert_one_line_error(
        run_digitrec("train", f"init_from={ckpt}", "model.net.hidden_sizes=[64]", cwd=tmp_path), "hidden_sizes=[32], but the config says [64]"
    )
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    assert_one_line_error(run_digitrec("train", "init_from=notes.ckpt", cwd=tmp_path), "notes.ckpt")
    assert_one_line_error(run_digitrec("train", "init_from=missing.ckpt", cwd=tmp_path), "does not exist")
    assert not (tmp_path / "outputs").exists(), "nothing made before the error"


# --- bad folders and files: one line each, exit 2, nothing changed ----------------------------------


def bad_folders(mnist, root: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of folder a run refuses: (data.root, what the error line says)."""

    def good(name: str) -> Path:
        return write_folder(root / name, mnist.test_images, mnist.test_labels, per_digit=2)

    (root / "a_file.png").write_bytes(b"")
    (root / "empty").mkdir()
    cats = good("cats")
    (cats / "cat").mkdir()
    (cats / "cat" / "x.png").write_bytes((cats / "1" / "000-L.png").read_bytes())
    hollow = good("hollow")
    for f in (hollow / "4").iterdir():
        f.unlink()
    unreadable = good("unreadable")
    (unreadable / "3" / "notes.png").write_text("not an image")
    (unreadable / "7" / "cut.png").write_bytes((unreadable / "7" / "000-L.png").read_bytes()[:100])
    blank = good("blank")
    Image.new("L", (64, 64), 255).save(blank / "5" / "white.png")
    return {
        "missing": (root / "nowhere", "does not exist"),
        "a file": (root / "a_file.png", "is a file, not a folder"),
        "no digit subfolders": (root / "empty", "has no digit subfolders"),
        "not digits": (cats, "has subfolders that are not digits 0-9 (cat)"),
        "an empty digit": (hollow, "the digit folder 4/ holds no image files"),
        "unreadable files": (unreadable, "2 of 22 files in"),
        "no digit in an image": (blank, "5/white.png: no digit found"),
    }


@pytest.fixture(scope="module")
def bad(mnist, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return bad_folders(mnist, tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize(
    "case", ["missing", "a file", "no digit subfolders", "not digits", "an empty digit", "unreadable files", "no digit in an image"]
)
def test_a_bad_folder_is_one_line_and_exit_2(bad, case, tmp_path):
    root, expected = bad[case]
    before = snapshot(root) if root.is_dir() else None
    result = run_digitrec("train", "data=folder", f"data.root={root}", cwd=tmp_path, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert_one_line_error(result, expected)
    assert not (tmp_path / "outputs").exists()
    if before is not None:
        assert snapshot(root) == before


def test_unreadable_files_are_named_and_counted_and_skipped_only_when_asked(model_ckpt, bad, tmp_path):
    root, _ = bad["unreadable files"]
    refused = run_digitrec(
        "eval", f"ckpt_path={model_ckpt}", "data=folder", f"data.root={root}", cwd=tmp_path, env={"XDG_CACHE_HOME": str(tmp_path / "c")}
    )
    assert_one_line_error(refused, "3/notes.png: not an image file")
    assert "7/cut.png: the image is truncated or corrupt" in refused.stderr and "data.skip_bad_images=true" in refused.stderr

    from digitrec.data.folder import prepare_folder

    kept = prepare_folder(root, skip_bad_images=True)
    assert len(kept.files) == 20 and {name for name, _ in kept.bad} == {"3/notes.png", "7/cut.png"}


@pytest.mark.slow
def test_skipping_bad_images_trains_on_the_rest_and_says_so_in_one_line(model_ckpt, bad, tmp_path):
    root, _ = bad["unreadable files"]
    before = snapshot(root)
    result = run_digitrec(
        "train",
        "data=folder",
        f"data.root={root}",
        "data.skip_bad_images=true",
        "data.replay_mnist=200",
        f"init_from={model_ckpt}",
        *SHORT,
        cwd=tmp_path,
        env={"XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    said = [line for line in (result.stdout + result.stderr).splitlines() if "cannot be used" in line]
    assert len(said) == 1 and "2 of 22 files" in said[0] and "left out (data.skip_bad_images=true)" in said[0], said
    assert snapshot(root) == before


@pytest.mark.slow
def test_a_folder_trains_any_network_optimiser_augmentation_and_sweep(mnist, tmp_path):
    root = write_folder(tmp_path / "digits", mnist.train_images, mnist.train_labels, per_digit=5)
    result = run_digitrec(
        "train",
        "-m",
        "data=folder",
        f"data.root={root}",
        "data.replay_mnist=100",
        "data/augment=elastic",
        "model/net=cnn",
        "model.net.channels=[4,8]",
        "model/optimizer=sgd",
        "model/scheduler=cosine",
        "model.optimizer.lr=0.01,0.003",
        *SHORT,
        cwd=tmp_path,
        env={"XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [metrics(p.parent) for p in (tmp_path / "outputs").rglob("metrics.json") if p.parent.name != "sweep"]
    jobs = [r for r in records if "epochs" in r]
    assert len(jobs) == 2 and all(r["status"] == "ok" and r["epochs"] == 2 for r in jobs), records
