"""MNIST as a LightningDataModule: official files in, whole batches of tensors out of a real DataLoader.

The splits stay as tensors on the training device. A sampler draws one whole batch of indices at
a time (a seeded permutation per epoch, this process's share of it under DDP), and the dataset
gathers that batch with one `index_select`: no per-image Python work, no collation. Because the
loader is a `DataLoader` and its sampler a `DistributedSampler`, Lightning treats it as its own:
it sets the epoch before each epoch. The training loader's position is part of the datamodule's
state in checkpoints (`state_dict`/`load_state_dict`), so a resumed run sees the batches it would
have seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from digitrec.data.mnist import download_mnist, load_mnist


def seed_of(key: tuple[int, ...]) -> int:
    """A generator seed from a tuple of ints (hash() of ints is the same in every process)."""
    return hash(key) % (2**63)


def batch_generator(key: tuple[int, ...], device: torch.device) -> torch.Generator:
    """A generator for one training batch's warps, seeded by the batch's key (`MNISTDataModule.batch_key`)."""
    return torch.Generator(device=device).manual_seed(seed_of(key))


class TensorSplit(Dataset):
    """One split held as two tensors, indexed by a whole batch of indices at once."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # index_select, not images[index]: for uint8 images it is ~15x faster on a CPU.
        return self.images.index_select(0, index), self.labels.index_select(0, index)


class BatchIndexSampler(DistributedSampler):
    """Yields this process's batches as index tensors: a share of a seeded permutation per epoch.

    A `DistributedSampler` so that Lightning leaves it in place under DDP (it replaces any other
    sampler with its own, per-sample one) and calls `set_epoch`. Like Lightning's, the order of an
    epoch depends only on (seed, epoch), and each of N processes takes every N-th index of it.
    `pad`: training pads the permutation (with its first indices) to a multiple of N so every process
    takes the same number of steps, which gradient synchronisation needs; evaluation does not pad,
    so every sample is counted exactly once.
    """

    def __init__(
        self, split: TensorSplit, batch_size: int, shuffle: bool, seed: int = 0, num_replicas: int = 1, rank: int = 0, pad: bool = True
    ) -> None:
        super().__init__(split, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.batch_size, self.pad = batch_size, pad
        # Where the current epoch stands, for checkpoints: (epoch, batches handed out).
        self.batches_done = 0
        self._resume_at: tuple[int, int] | None = None

    def shard(self) -> torch.Tensor:
        """This process's indices for the current epoch, in order."""
        size = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(size)
        if self.num_replicas > 1:
            if self.pad:
                order = torch.cat([order, order[: self.num_samples * self.num_replicas - size]])
            order = order[self.rank :: self.num_replicas]
        return order.to(self.dataset.labels.device)

    def __len__(self) -> int:
        size = len(self.dataset)
        share = self.num_samples if self.pad else len(range(self.rank, size, self.num_replicas))
        return math.ceil(share / self.batch_size)

    def __iter__(self):
        order = self.shard()
        start = 0
        if self._resume_at is not None and self._resume_at[0] == self.epoch:
            start = self._resume_at[1]
        self._resume_at, self.batches_done = None, start
        for batch in range(start, len(self)):
            # Counted as soon as it is handed out: a checkpoint written while it trains counts it done.
            self.batches_done = batch + 1
            yield order[batch * self.batch_size : (batch + 1) * self.batch_size]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_done": self.batches_done, "seed": self.seed, "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # Batches done at the epoch's end mean the next epoch starts from its first batch anyway.
        self._resume_at = (int(state["epoch"]), int(state["batches_done"]))


def keep_batch(batch: Any) -> Any:
    """The dataset returns a whole batch already: nothing to collate (a named function, so spawned processes can pickle it)."""
    return batch


class TensorLoader(DataLoader):
    """A DataLoader of whole tensor batches, resumable mid-epoch.

    Its position is saved with the datamodule (MNISTDataModule.state_dict), not here: the two
    methods below tell Lightning the loader is resumable, which it checks before a mid-epoch resume.
    """

    def __init__(self, split: TensorSplit, sampler: BatchIndexSampler) -> None:
        super().__init__(split, batch_size=None, sampler=sampler, collate_fn=keep_batch)

    def state_dict(self) -> dict[str, int]:
        return {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # Checkpoints written before 2026-12-06 kept the position here.
        if state:
            self.sampler.load_state_dict(state)


class MNISTDataModule(L.LightningDataModule):
    """Train/val split of the official training set (seeded), test on the official 10k test set."""

    def __init__(
        self,
        data_dir: str | None = None,
        download: bool = True,
        download_dir: str = "data",
        val_size: int = 5000,
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        seed: int = 12345,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.data_dir, self.download, self.download_dir = data_dir, download, download_dir
        self.val_size, self.batch_size, self.eval_batch_size, self.seed = val_size, batch_size, eval_batch_size, seed
        # Called as augment(images, generator) on training batches only, on the training device.
        self.augment = augment
        self.train_split = self.val_split = self.test_split = None
        self._train_sampler: BatchIndexSampler | None = None
        self._resume_position: dict[str, int] | None = None  # a checkpoint's, for the next training loader
        self._overfit_batches_seen = 0

    def folder(self) -> Path:
        """Where the four MNIST files are: the local copy if one is configured, else the download folder."""
        if self.data_dir:
            return Path(self.data_dir).expanduser()
        return Path(self.download_dir).expanduser() / "MNIST" / "raw"

    def prepare_data(self) -> None:
        if not self.data_dir and self.download:
            download_mnist(self.download_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.test_split is not None:
            return
        mnist = load_mnist(self.folder())
        order = torch.randperm(len(mnist.train_labels), generator=torch.Generator().manual_seed(self.seed))
        train_idx, val_idx = order[self.val_size :], order[: self.val_size]
        # On a GPU the whole data set (~55 MB as uint8) lives on the device: no per-step copies.
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        split = lambda images, labels: TensorSplit(images.to(device), labels.to(device))  # noqa: E731
        self.train_split = split(mnist.train_images[train_idx], mnist.train_labels[train_idx])
        self.val_split = split(mnist.train_images[val_idx], mnist.train_labels[val_idx])
        self.test_split = split(mnist.test_images, mnist.test_labels)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # setup() put the splits on the training device already: skip Lightning's generic walk
        # over the batch, a measurable share of a step this small.
        if all(t.device == device for t in batch):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return batch  # validation, test and prediction always see the images as they are
        key, device = self.batch_key(), batch[0].device
        # Dropout draws its masks from the device's global generator. Seeding it from the batch's key
        # too (tagged 1, so its numbers are not the warps') makes the masks, like the warps, a function
        # of (seed, epoch, batch, process): a run resumed mid-epoch draws the masks it would have drawn.
        # Only this device's generator: torch.manual_seed would queue a seed for CUDA as well, with a
        # stack trace, even on a machine without a GPU, ~0.4 ms a step.
        dropout_seed = seed_of((*key, 1))
        if device.type == "cpu":
            torch.default_generator.manual_seed(dropout_seed)
        else:
            torch.get_device_module(device).manual_seed(dropout_seed)
        if self.augment is None:
            return batch
        images, labels = batch
        return self.augment(images, batch_generator(key, device)), labels

    def batch_key(self) -> tuple[int, int, int, int]:
        """What this training batch's random numbers are seeded by: (seed, epoch, batch, process); called
        once per training batch. The same seed gives the same warps and dropout masks, each process of
        a DDP run its own, and a run resumed mid-epoch the very ones it would have drawn (no generator
        state to save)."""
        sampler = self._train_sampler
        if sampler is not None:
            return self.seed, sampler.epoch, sampler.batches_done, sampler.rank
        # overfit_batches: a stock DataLoader, its batches counted here
        self._overfit_batches_seen += 1
        return self.seed, 0, self._overfit_batches_seen - 1, 0

    def loader(self, split: TensorSplit, batch_size: int, shuffle: bool) -> DataLoader:
        trainer = self.trainer
        if trainer is not None and trainer.overfit_batches:
            # Lightning swaps in its own sequential sampler to overfit a few batches; a stock
            # DataLoader lets it (its per-sample collation costs nothing on 3 batches).
            return DataLoader(TensorDataset(split.images, split.labels), batch_size=batch_size)
        # This process's share under DDP, as Lightning's own sampler would take it.
        shards = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}
        sampler = BatchIndexSampler(split, batch_size, shuffle=shuffle, seed=self.seed, pad=shuffle, **shards)
        if shuffle:
            self._train_sampler = sampler
            if self._resume_position:
                sampler.load_state_dict(self._resume_position)
                self._resume_position = None
        return TensorLoader(split, sampler)

    def state_dict(self) -> dict[str, int]:
        # The training loader's position lives here, not in the loader's own state: Lightning restores
        # a datamodule before it builds any loader, but never hands its saved state to a training
        # loader built before the restore, as one is when configure_optimizers sizes a schedule with
        # trainer.estimated_stepping_batches (Lightning issue #20550).
        return self._train_sampler.state_dict() if self._train_sampler is not None else {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_position = dict(state)

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.train_split, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.val_split, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.test_split, self.eval_batch_size, shuffle=False)


class FolderDataModule(MNISTDataModule):
    """Your own labelled digits (digitrec.data.folder): train on them, optionally beside MNIST.

    Validation: val_fraction of each digit's images, held out (seeded). Training: the rest, and,
    with replay_mnist > 0, that many MNIST training images alongside (seeded), the folder's images
    repeated so they make about folder_share of each epoch: a model fine-tuned on a few hundred
    images keeps reading MNIST. Test: in `digitrec eval` (task=eval) every image of the folder; in
    `digitrec train` the official MNIST test set, so that test/acc says what the model still reads
    of MNIST (the folder's own images are trained on or held out for validation).
    """

    def __init__(
        self,
        root: str,
        val_fraction: float = 0.2,
        skip_bad_images: bool = False,
        replay_mnist: int = 0,
        folder_share: float = 0.5,
        task: str = "train",
        data_dir: str | None = None,
        download: bool = True,
        download_dir: str = "data",
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        seed: int = 12345,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(data_dir, download, download_dir, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, augment=augment)
        self.root, self.val_fraction, self.skip_bad_images = root, val_fraction, skip_bad_images
        self.replay_mnist, self.folder_share, self.task = replay_mnist, folder_share, task
        self.test_files: list[str] | None = None

    def needs_mnist(self) -> bool:
        return self.task != "eval"

    def prepare_data(self) -> None:
        if self.needs_mnist():
            super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.test_split is not None:
            return
        from digitrec.data.folder import prepare_folder, stratified_split

        folder = prepare_folder(self.root, self.skip_bad_images)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        split = lambda images, labels: TensorSplit(images.to(device), labels.to(device))  # noqa: E731
        if self.task == "eval":
            self.test_split, self.test_files = split(folder.images, folder.labels), folder.files
            return
        train_idx, val_idx = stratified_split(folder.labels, self.val_fraction, self.seed)
        images, labels = folder.images[train_idx], folder.labels[train_idx]
        mnist = load_mnist(self.folder())
        if self.replay_mnist:
            replay = torch.randperm(len(mnist.train_labels), generator=torch.Generator().manual_seed(self.seed))[: self.replay_mnist]
            # Repeat the folder's images so that they are about folder_share of every epoch.
            repeats = max(1, round(self.folder_share / (1 - self.folder_share) * len(replay) / len(labels)))
            images = torch.cat([images.repeat(repeats, 1, 1), mnist.train_images[replay].float() / 255.0])
            labels = torch.cat([labels.repeat(repeats), mnist.train_labels[replay]])
        self.train_split = split(images, labels)
        self.val_split = split(folder.images[val_idx], folder.labels[val_idx])
        self.test_split = split(mnist.test_images, mnist.test_labels)
