"""The data module: seeded 55k/5k split of the official training set, the official 10k test set."""

import torch

from digitrec.data import MNISTDataModule, TensorBatches


def make_datamodule(mnist_dir, **kwargs):
    datamodule = MNISTDataModule(data_dir=str(mnist_dir), download=False, **kwargs)
    datamodule.setup("fit")
    return datamodule


def test_split_sizes_and_disjointness(mnist_dir):
    dm = make_datamodule(mnist_dir)
    train_images, _ = dm.train_split
    val_images, _ = dm.val_split
    assert len(train_images) == 55000 and len(val_images) == 5000
    # No image of the validation split is also in the training split (compare by content hash).
    train_rows = {row.numpy().tobytes() for row in train_images.flatten(1)}
    assert sum(row.numpy().tobytes() in train_rows for row in val_images.flatten(1)) < 10  # MNIST has a few duplicates


def test_split_is_seeded(mnist_dir):
    a, b, c = make_datamodule(mnist_dir, seed=1), make_datamodule(mnist_dir, seed=1), make_datamodule(mnist_dir, seed=2)
    assert torch.equal(a.val_split[1], b.val_split[1])
    assert not torch.equal(a.val_split[0], c.val_split[0])


def test_test_split_is_the_official_test_set(mnist_dir, mnist):
    dm = make_datamodule(mnist_dir)
    assert torch.equal(dm.test_split[0], mnist.test_images)
    assert torch.equal(dm.test_split[1], mnist.test_labels)
    batches = list(dm.test_dataloader())
    assert sum(len(labels) for _, labels in batches) == 10000


def test_batches_cover_every_item_once_and_reshuffle():
    images = torch.arange(250).view(250, 1).to(torch.uint8)
    labels = torch.arange(250)
    loader = TensorBatches(images, labels, batch_size=100, shuffle=True, seed=0)
    assert len(loader) == 3
    first = [labels for _, labels in loader]
    assert [len(b) for b in first] == [100, 100, 50]
    assert sorted(torch.cat(first).tolist()) == list(range(250))
    second = torch.cat([labels for _, labels in loader])
    assert not torch.equal(torch.cat(first), second), "each epoch must be shuffled anew"
    for images_batch, labels_batch in loader:
        assert torch.equal(images_batch.view(-1).long(), labels_batch)  # images and labels stay paired


def test_eval_batches_keep_order():
    labels = torch.arange(10)
    loader = TensorBatches(labels.view(10, 1), labels, batch_size=4, shuffle=False)
    assert torch.cat([b for _, b in loader]).tolist() == list(range(10))
