"""Which samples an epoch visits, in which order: one rule for every way batches are drawn.

The in-memory path (`mnistlab.data.splits.batches`) and the DataLoader path
(`mnistlab.data.stream`) both take an epoch's order from here, so a dataset trains on the same
batches either way, and a resumed run finds the rest of its epoch from the seed, the epoch and
the batch index alone.
"""

import hashlib

import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one epoch: derived, so a resumed run replays the same order."""
    return seed * 100_003 + epoch


def epoch_order(
    count: int, shuffle: bool, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """This rank's sample indices for one epoch: a permutation drawn from (seed, epoch), or
    0..count-1 unshuffled; with several ranks every rank takes its own slice of the same one
    (the last count % world_size samples sit the epoch out)."""
    if shuffle:
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(count, generator=generator)
    else:
        order = torch.arange(count)
    return order[: count - count % world_size][rank::world_size]


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """The seed a batch's samples are loaded under (random augmentation in a dataset's
    `__getitem__`): the same for a batch whichever worker loads it, and whenever."""
    key = f"{seed},{epoch},{batch}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1
