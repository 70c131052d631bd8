"""The official MNIST files: found raw or gzipped, verified by SHA-256, never deleted."""

import gzip
import shutil

import pytest
import torch

from digitrec.data.mnist import SHA256, load_mnist
from digitrec.errors import DigitrecError

TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_official_sets_have_published_shapes_and_label_counts(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == torch.uint8
    assert mnist.test_images.shape == (10000, 28, 28) and mnist.test_images.dtype == torch.uint8
    assert torch.bincount(mnist.train_labels).tolist() == TRAIN_LABEL_COUNTS
    assert torch.bincount(mnist.test_labels).tolist() == TEST_LABEL_COUNTS


def copy_uncompressed(src, dst):
    """The four files as raw (uncompressed) files, the other layout users have."""
    dst.mkdir()
    for name in SHA256:
        gz = src / f"{name}.gz"
        if gz.exists():
            (dst / name).write_bytes(gzip.decompress(gz.read_bytes()))
        else:
            shutil.copy(src / name, dst / name)
    return dst


def test_raw_files_load_the_same_as_gzipped(mnist_dir, mnist, tmp_path):
    raw = load_mnist(copy_uncompressed(mnist_dir, tmp_path / "raw"))
    assert torch.equal(raw.test_images, mnist.test_images)
    assert torch.equal(raw.train_labels, mnist.train_labels)


def test_checksum_mismatch_names_the_file_and_keeps_it(mnist_dir, tmp_path):
    folder = copy_uncompressed(mnist_dir, tmp_path / "bad")
    labels = folder / "t10k-labels-idx1-ubyte"
    corrupted = bytearray(labels.read_bytes())
    corrupted[100] ^= 0xFF
    labels.write_bytes(bytes(corrupted))

    with pytest.raises(DigitrecError) as err:
        load_mnist(folder)
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte" in message and SHA256["t10k-labels-idx1-ubyte"][:16] in message
    assert "DIGITREC_MNIST_DIR" in message and "\n" not in message
    assert labels.read_bytes() == bytes(corrupted), "the user's file must never be replaced or deleted"


def test_missing_file_says_which_and_how_to_provide(mnist_dir, tmp_path):
    folder = copy_uncompressed(mnist_dir, tmp_path / "partial")
    (folder / "train-images-idx3-ubyte").unlink()
    with pytest.raises(DigitrecError, match=r"train-images-idx3-ubyte\[\.gz\] is missing from .*DIGITREC_MNIST_DIR"):
        load_mnist(folder)


def test_truncated_gzip_is_a_clear_error(mnist_dir, tmp_path):
    folder = tmp_path / "trunc"
    folder.mkdir()
    for name in SHA256:
        shutil.copy(mnist_dir / f"{name}.gz", folder / f"{name}.gz")
    gz = folder / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:1000])
    with pytest.raises(DigitrecError, match=r"train-labels-idx1-ubyte\.gz cannot be read"):
        load_mnist(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(DigitrecError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


# --- a verified folder is remembered ---------------------------------------------------------------

from digitrec.data.mnist import is_remembered, memo_path, verify_folder  # noqa: E402


def test_a_verified_folder_is_remembered_outside_it_and_rechecked_when_a_file_changes(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = copy_uncompressed(mnist_dir, tmp_path / "copy")
    before = sorted(p.name for p in folder.iterdir())
    verify_folder(folder)
    assert memo_path().is_file() and str(tmp_path / "cache") in str(memo_path())
    assert sorted(p.name for p in folder.iterdir()) == before, "nothing is written into the data folder"
    labels = folder / "t10k-labels-idx1-ubyte"
    assert is_remembered(labels, labels.name, labels.stat())
    # Same size, other bytes, new mtime: no longer the file that passed, so it is hashed again.
    corrupted = bytearray(labels.read_bytes())
    corrupted[200] ^= 0xFF
    labels.write_bytes(bytes(corrupted))
    assert not is_remembered(labels, labels.name, labels.stat())
    with pytest.raises(DigitrecError, match="t10k-labels-idx1-ubyte has SHA-256"):
        verify_folder(folder)
    with pytest.raises(DigitrecError, match="t10k-labels-idx1-ubyte has SHA-256"):
        load_mnist(folder)


def test_an_unwritable_cache_only_costs_a_hash(mnist_dir, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # a file: the cache cannot be made
    verify_folder(mnist_dir)
    assert load_mnist(mnist_dir).test_labels.shape == (10000,)
