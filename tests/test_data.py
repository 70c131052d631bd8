"""The data module: seeded 55k/5k split of the official training set, the official 10k test set."""

import torch

from digitrec.data.datamodule import BatchIndexSampler, MNISTDataModule, TensorLoader, TensorSplit


def make_datamodule(mnist_dir, **kwargs):
    datamodule = MNISTDataModule(data_dir=str(mnist_dir), download=False, **kwargs)
    datamodule.setup("fit")
    return datamodule


def test_split_sizes_and_disjointness(mnist_dir):
    dm = make_datamodule(mnist_dir)
    train_images, val_images = dm.train_split.images, dm.val_split.images
    assert len(train_images) == 55000 and len(val_images) == 5000
    # No image of the validation split is also in the training split (compare by content hash).
    train_rows = {row.numpy().tobytes() for row in train_images.flatten(1)}
    assert sum(row.numpy().tobytes() in train_rows for row in val_images.flatten(1)) < 10  # MNIST has a few duplicates


def test_split_is_seeded(mnist_dir):
    a, b, c = make_datamodule(mnist_dir, seed=1), make_datamodule(mnist_dir, seed=1), make_datamodule(mnist_dir, seed=2)
    assert torch.equal(a.val_split.labels, b.val_split.labels)
    assert not torch.equal(a.val_split.images, c.val_split.images)


def test_test_split_is_the_official_test_set(mnist_dir, mnist):
    dm = make_datamodule(mnist_dir)
    assert torch.equal(dm.test_split.images, mnist.test_images)
    assert torch.equal(dm.test_split.labels, mnist.test_labels)
    batches = list(dm.test_dataloader())
    assert sum(len(labels) for _, labels in batches) == 10000


def test_batches_cover_every_item_once_and_reshuffle():
    images = torch.arange(250).view(250, 1).to(torch.uint8)
    labels = torch.arange(250)
    split = TensorSplit(images, labels)
    sampler = BatchIndexSampler(split, batch_size=100, shuffle=True, seed=0)
    loader = TensorLoader(split, sampler)
    assert len(loader) == 3
    sampler.set_epoch(0)
    first = [labels for _, labels in loader]
    assert [len(b) for b in first] == [100, 100, 50]
    assert sorted(torch.cat(first).tolist()) == list(range(250))
    sampler.set_epoch(1)  # Lightning does this before every epoch
    second = torch.cat([labels for _, labels in loader])
    assert not torch.equal(torch.cat(first), second), "each epoch must be shuffled anew"
    for images_batch, labels_batch in loader:
        assert torch.equal(images_batch.view(-1).long(), labels_batch)  # images and labels stay paired


def test_eval_batches_keep_order():
    labels = torch.arange(10)
    split = TensorSplit(labels.view(10, 1), labels)
    loader = TensorLoader(split, BatchIndexSampler(split, batch_size=4, shuffle=False))
    assert torch.cat([b for _, b in loader]).tolist() == list(range(10))


def test_batch_sampler_shards_disjoint_halves_that_cover_every_sample_once():
    split = TensorSplit(torch.zeros(1001, 28, 28, dtype=torch.uint8), torch.zeros(1001, dtype=torch.long))
    for shuffle in (True, False):
        shards = [BatchIndexSampler(split, 100, shuffle=shuffle, seed=7, num_replicas=2, rank=r, pad=shuffle) for r in (0, 1)]
        for sampler in shards:
            sampler.set_epoch(3)
        batches = [list(sampler) for sampler in shards]
        assert [len(b) for b in batches] == [len(s) for s in shards]
        indices = [torch.cat(b).tolist() for b in batches]
        if shuffle:  # training: padded so both take 6 steps; 1001 + 1 padding sample
            assert len(indices[0]) == len(indices[1]) == 501
            assert len(set(indices[0]) | set(indices[1])) == 1001
        else:  # evaluation: no padding, every sample exactly once
            assert sorted(indices[0] + indices[1]) == list(range(1001))
            assert not set(indices[0]) & set(indices[1])


def test_batch_sampler_order_depends_on_seed_and_epoch_and_resumes_mid_epoch():
    split = TensorSplit(torch.zeros(500, 28, 28, dtype=torch.uint8), torch.zeros(500, dtype=torch.long))
    sampler = BatchIndexSampler(split, 50, shuffle=True, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(3)
    assert not torch.equal(torch.cat(list(sampler)), torch.cat(full)), "a new order each epoch"

    interrupted = BatchIndexSampler(split, 50, shuffle=True, seed=1)
    interrupted.set_epoch(2)
    taken = iter(interrupted)
    for _ in range(4):
        next(taken)
    saved = interrupted.state_dict()
    assert saved["batches_done"] == 4
    resumed = BatchIndexSampler(split, 50, shuffle=True, seed=1)
    resumed.load_state_dict(saved)
    resumed.set_epoch(2)
    rest = list(resumed)
    assert len(rest) == 6 and all(torch.equal(a, b) for a, b in zip(rest, full[4:]))
    assert len(list(resumed)) == 10, "the epoch after the resumed one starts from its first batch"
