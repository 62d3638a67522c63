"""Batches from any map-style `Dataset` through a `DataLoader`, resumable at any batch.

`dataset.loader.mode=dataloader`. Three things make a run through worker processes exact, and
its resume continue with the very next batch:
- the order: `EpochBatches` draws each epoch's permutation from (seed, epoch) as the in-memory
  path does (mnistlab.data.order), and starts at a batch index, so the batches a resumed run
  skips are never loaded (the checkpoint's `Progress.epoch_step` is that index);
- the randomness of loading: every batch is loaded under a seed of its own, from (seed, epoch,
  batch), in whichever worker loads it (`Seeded`): augmentation drawn in `__getitem__` with
  torch, numpy or `random` repeats, and the main process's generators (dropout's) are left as
  they were;
- the workers' own seeds: from the DataLoader's generator, set per (seed, epoch) as each
  epoch starts (torch gives worker i that seed + i), never from the run's global generator.
"""

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mnistlab.config.schemas import LoaderSettings
from mnistlab.data.order import batch_seed, epoch_order, epoch_seed

Key = tuple[int, int]  # (the batch's seed, the sample's index)


class EpochBatches(Sampler[list[Key]]):
    """One rank's batches of an epoch, from batch `start` on: lists of (seed, index) keys."""

    def __init__(self, count: int, loader: LoaderSettings, seed: int, rank: int, size: int) -> None:
        self.count, self.batch_size, self.shuffle = count, loader.batch_size, loader.shuffle
        self.seed, self.rank, self.world_size = seed, rank, size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw `epoch`'s order next, skipping its first `start` batches."""
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[list[Key]]:
        order = epoch_order(
            self.count, self.shuffle, self.seed, self.epoch, self.rank, self.world_size
        )
        size = self.batch_size
        for batch in range(self.start, len(self)):
            seed = batch_seed(self.seed, self.epoch, batch)
            yield [(seed, index) for index in order[batch * size : (batch + 1) * size].tolist()]

    def __len__(self) -> int:
        """Batches in a whole epoch (a started one yields those from `start` on)."""
        return -(-(self.count // self.world_size) // self.batch_size)


class Seeded(Dataset):
    """`dataset`, its items fetched by (seed, index) keys under that seed (`seeded`)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> Any:
        with seeded(key[0]):
            return self.dataset[key[1]]

    def __getitems__(self, keys: list[Key]) -> list:
        """A batch's items (the DataLoader asks for a batch at once), loaded under its seed;
        by the dataset's own `__getitems__` where it has one (a batched read)."""
        indices = [index for _, index in keys]
        with seeded(keys[0][0]):
            if hasattr(self.dataset, "__getitems__"):
                return self.dataset.__getitems__(indices)
            return [self.dataset[index] for index in indices]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's CPU generator, numpy's and `random`'s seeded with `seed`, restored after."""
    saved = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):  # the CPU generator only: CUDA's is left alone
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])


class Stream:
    """One split's DataLoader, kept for a whole run (its workers, where persistent, too)."""

    def __init__(
        self,
        data: Dataset,
        loader: LoaderSettings,
        seed: int,
        rank: int = 0,
        size: int = 1,
        persistent: bool = True,
    ) -> None:
        self.seed = seed
        self.sampler = EpochBatches(len(data), loader, seed, rank, size)  # type: ignore[arg-type]
        self.generator = torch.Generator()
        workers = loader.num_workers
        self.loader = DataLoader(
            Seeded(data),
            batch_sampler=self.sampler,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),  # batches then copy to the GPU asynchronously
            persistent_workers=persistent and workers > 0,  # no new workers every epoch
            generator=self.generator,
        )

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """The batches of `epoch` from batch index `start` on."""
        self.sampler.set_epoch(epoch, start)
        self.generator.manual_seed(epoch_seed(self.seed, epoch))  # the workers' seeds
        return iter(self.loader)
