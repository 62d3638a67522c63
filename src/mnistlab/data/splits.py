"""Datasets (synthetic digits, fake MNIST noise, the lesson's RandomDataset) and batching.

Every dataset builder returns `Splits`: of `TensorPairs` (in-memory tensors, a plain
`torch.utils.data.Dataset` with `__len__`/`__getitem__`), or of any map-style `Dataset` that
loads its items as they are asked for (image files: mnistlab.data.folders). Batches come either
from a `DataLoader` over the dataset (mnistlab.data.stream; the only way for a streamed one)
or, by default, by slicing the in-memory tensors on the device after one shuffle per epoch,
which skips per-sample indexing and collation. Both draw an epoch's order the same way
(mnistlab.data.order).
"""

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch.utils.data import Dataset

from mnistlab import SettingError
from mnistlab.config.schemas import LoaderSettings
from mnistlab.data.order import epoch_order
from mnistlab.data.stream import Stream
from mnistlab.private.torch import version

Batch = tuple[torch.Tensor, torch.Tensor]


class TensorPairs(Dataset):
    """Inputs and integer labels held in memory; one sample per `__getitem__`."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Batch:
        return self.inputs[index], self.targets[index]

    def to(self, device: torch.device) -> "TensorPairs":
        return TensorPairs(self.inputs.to(device), self.targets.to(device))

    def clone(self) -> "TensorPairs":
        return TensorPairs(self.inputs.clone(), self.targets.clone())


@dataclass(frozen=True)
class Origin:
    """What a builder made its splits from: named in messages, and part of the fingerprint."""

    what: str  # in words: "the IDX files in /data/mnist", "synthetic_digits(seed=0, ...)"
    # Inputs drawn from a seeded generator: their float values may differ in the last bit
    # between machines (vector widths change the order of sums), so the fingerprint takes
    # `what` (the recipe and its settings), the labels and the shapes instead of the inputs.
    drawn: bool = False


@runtime_checkable
class Streamed(Protocol):
    """A dataset that loads its items as they are asked for, and can say what it holds."""

    targets: torch.Tensor  # every item's label, in item order (without loading the items)

    def fingerprint(self) -> str:
        """A digest of what the items are (e.g. the files' names, sizes and labels)."""
        ...


@dataclass
class Splits:
    """The data of a run: training, validation and (where there is one) test samples.

    Each split is `TensorPairs` (in memory) or any map-style `Dataset` (loaded per item,
    through a DataLoader); `Streamed` ones say cheaply what they hold.
    """

    train: Dataset
    val: Dataset
    num_classes: int
    test: Dataset | None = None
    origin: Origin | None = None  # what the builder made them from; None: a user's builder
    # (mean, std) that `normalize` standardised the inputs with: mnistlab-predict's images too
    scale: tuple[float, float] | None = None
    # (the tensors' state, the fingerprint of that state): see `fingerprint`
    known: tuple[tuple, str] | None = field(default=None, init=False, repr=False, compare=False)

    def to(self, device: torch.device) -> "Splits":
        test = None if self.test is None else self.test.to(device)
        parts = (self.train.to(device), self.val.to(device))
        return Splits(*parts, self.num_classes, test, self.origin, self.scale)

    def clone(self) -> "Splits":
        """A copy whose tensors are the splits' own (a run may change these in place)."""
        test = None if self.test is None else self.test.clone()
        parts = (self.train.clone(), self.val.clone())
        return Splits(*parts, self.num_classes, test, self.origin, self.scale)

    @property
    def input_shape(self) -> tuple[int, ...]:
        if isinstance(self.train, TensorPairs):
            return tuple(self.train.inputs.shape[1:])
        return tuple(self.train[0][0].shape)  # one item loaded: what every batch will hold

    @property
    def in_memory(self) -> bool:
        """Whether every split is tensors in memory (dataset.loader.mode=tensor can slice them)."""
        return all(isinstance(part, TensorPairs) for part in parts(self))


def fingerprint(data: Splits) -> str:
    """A SHA-256 of what the run trains on: every split's values (or, for drawn data, its
    recipe), labels and shapes. A resume checks it: the same settings may name other data.

    About 0.12 s for MNIST's 220 MB of float splits (one core), against 0.3 s to load them:
    the splits keep it, with the state of their tensors (which tensors, where, and torch's
    count of in-place changes to each), for the next job of a sweep that gets them again
    (`remembered`). Changed in place by torch, or given other tensors, they are hashed again.
    """
    state = tensors_state(data)
    if data.known is not None and data.known[0] == state:
        return data.known[1]
    found = sha256_of(data)
    data.known = (state, found)
    return found


def tensors_state(data: Splits) -> tuple:
    """Which tensors the splits hold, where their values are, and how often torch changed them;
    for a split that is no tensors, which dataset object it is and its length."""
    tensors = [tensor for part in parts(data) for tensor in tensors_of(part)]
    held = tuple((id(t), t.data_ptr(), version(t), tuple(t.shape), t.dtype) for t in tensors)
    others = tuple((id(part), len(part)) for part in parts(data) if not tensors_of(part))
    return held, others, data.num_classes, data.origin


def tensors_of(part: Dataset) -> tuple[torch.Tensor, ...]:
    """An in-memory split's inputs and targets; nothing for a streamed one."""
    return (part.inputs, part.targets) if isinstance(part, TensorPairs) else ()


def sha256_of(data: Splits) -> str:
    """`fingerprint`'s hash, computed."""
    drawn = data.origin is not None and data.origin.drawn
    digest = hashlib.sha256(f"classes={data.num_classes}".encode())
    if drawn:
        digest.update(data.origin.what.encode())
    for name, part in (("train", data.train), ("val", data.val), ("test", data.test)):
        if part is None:
            continue
        if not isinstance(part, TensorPairs):
            digest.update(f"{name}={streamed_digest(part)}".encode())
            continue
        shapes = (tuple(part.inputs.shape), str(part.inputs.dtype), tuple(part.targets.shape))
        digest.update(f"{name}={shapes}".encode())
        digest.update(raw_bytes(part.targets))
        if not drawn:
            digest.update(raw_bytes(part.inputs))
    return digest.hexdigest()


def streamed_digest(part: Dataset) -> str:
    """What a split loaded per item holds: its own fingerprint, or (a user's dataset that has
    none) only its type and length: a resume cannot see its items change."""
    if isinstance(part, Streamed):
        return part.fingerprint()
    return f"{type(part).__module__}.{type(part).__qualname__}, {len(part)} items"


def labels(part: Dataset) -> torch.Tensor:
    """A split's labels in item order: kept ones where it has them, else read item by item."""
    if isinstance(part, (TensorPairs, Streamed)):
        return part.targets
    return torch.stack([torch.as_tensor(part[index][1]) for index in range(len(part))])


def raw_bytes(tensor: torch.Tensor) -> memoryview:
    """A tensor's values as bytes, whatever its dtype (bfloat16 included) and device."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


# The jobs of a sweep that run in one process (the basic launcher, a joblib worker) mostly ask
# for the same data: the process keeps the last splits a builder made, by how they were made,
# with a digest of their bytes as made. The next job gets the same splits again where they
# still have that digest; where a run (or a user's builder wrapping ours) changed them in
# place, they are made again. The digest: torch's change counter of each tensor (any in-place
# change through torch, a reorder included, views' too) and a sum of its bytes as 64-bit words
# (any change of values made past torch, through .numpy() or .data). 0.02 s for MNIST's 220 MB
# of splits, where a CRC-32 took 0.065 s a job and a copy to compare with would double the
# process's data (issue 29); drawing the synthetic digits again takes seconds. Only the last is
# kept: a sweep over datasets holds one at a time.
_last: dict[tuple, tuple[tuple, Splits]] = {}  # key -> (the digest as made, the splits)


def remembered(key: tuple, make: Callable[[], Splits]) -> Splits:
    """The splits made as `key` says: this process's last ones where they are those and
    unchanged, or else what `make()` returns."""
    if key in _last:
        made, data = _last[key]
        if digest(data) == made:
            return data
    forget()  # the old splits go before new ones are made: one set in memory at a time
    data = make()
    _last[key] = (digest(data), data)
    return data


def digest(data: Splits) -> tuple:
    """Which tensors the splits hold, torch's change counters, and a sum of every byte."""
    tensors = [tensor for part in parts(data) for tensor in tensors_of(part)]
    return tensors_state(data), tuple(word_sum(raw_bytes(tensor)) for tensor in tensors)


def word_sum(values: memoryview) -> tuple[int, bytes]:
    """The bytes' sum as 64-bit words (wrapping around), and the bytes left after the last."""
    whole = len(values) // 8 * 8
    words = np.frombuffer(values[:whole], dtype=np.uint64)
    return int(words.sum(dtype=np.uint64)), bytes(values[whole:])


def parts(data: Splits) -> list[Dataset]:
    """The splits there are: training, validation and, where there is one, test."""
    return [part for part in (data.train, data.val, data.test) if part is not None]


def forget() -> None:
    """Let go of this process's last splits: the next build makes them again."""
    _last.clear()


def build(source: Any) -> Splits:
    """Instantiate a dataset's `source` node; a bad setting inside the builder stays one line."""
    try:
        return instantiate(source)
    except InstantiationException as err:
        # Hydra wraps what the builder raised (missing files, bad sizes...): unwrap ours.
        if isinstance(err.__cause__, SettingError):
            raise err.__cause__ from None
        raise


# The size settings of the dataset builders, named when a split comes out too small.
SIZE_KEYS = ("root", "num_samples", "val_fraction", "num_val_samples", "num_train_samples")


def check_sizes(data: Splits, source: Any, batch_size: int, ranks: int) -> None:
    """Refuse an empty split, or a training split smaller than one batch per rank."""
    given = [
        f"dataset.source.{k}={source[k]}"
        for k in SIZE_KEYS
        if k in source and source[k] is not None
    ]
    sizes = ", ".join(given) or f"dataset.source._target_={source._target_}"
    for name, part in (("training", data.train), ("validation", data.val), ("test", data.test)):
        if part is not None and len(part) == 0:
            raise SettingError(
                f"the dataset has 0 {name} samples with {sizes}: every split needs at least "
                "one sample; change these settings (or the files)"
            )
    per_rank = len(data.train) // ranks
    if per_rank == 0:
        raise SettingError(
            f"the dataset has {len(data.train)} training samples for {ranks} ranks ({sizes}): "
            "every rank needs one; use more data or fewer ranks"
        )
    if batch_size > per_rank:
        each = f" per rank ({ranks} ranks)" if ranks > 1 else ""
        raise SettingError(
            f"dataset.loader.batch_size={batch_size} is more than the {per_rank} training "
            f"samples{each} ({sizes}): use at most {per_rank}, or more data"
        )


def num_batches(num_samples: int, batch_size: int) -> int:
    return math.ceil(num_samples / batch_size)


def check_mode(data: Splits, loader: LoaderSettings, source: Any) -> None:
    """Refuse tensor mode for splits that are not tensors in memory (files loaded per item)."""
    if loader.mode == "tensor" and not data.in_memory:
        raise SettingError(
            f"dataset.loader.mode=tensor slices tensors in memory, but {source._target_} loads "
            "its samples as they are asked for: use dataset.loader.mode=dataloader"
        )


def batches(
    data: Dataset,
    loader: LoaderSettings,
    *,
    seed: int,
    epoch: int,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[Batch]:
    """The batches of one epoch for one rank, from batch index `start` on.

    With several ranks every rank draws the same permutation and takes its own slice of it,
    so the ranks see disjoint samples, and a different split every epoch. Either mode gives the
    same batches. A run keeps one `Stream` per split instead (its workers live on).
    """
    if loader.mode == "dataloader":
        stream = Stream(data, loader, seed, rank, world_size, persistent=False)
        yield from stream.epoch(epoch, start)
        return
    inputs, targets = data.inputs, data.targets
    size = loader.batch_size
    if not loader.shuffle and world_size == 1:
        for first in range(start * size, len(targets), size):
            yield inputs[first : first + size], targets[first : first + size]  # views: no copy
        return
    order = epoch_order(len(data), loader.shuffle, seed, epoch, rank, world_size)
    order = order.to(inputs.device)
    # Each batch gathers its own rows: no shuffled second copy of the whole split (140 MB for
    # MNIST), and no slower either (54,000 images, batch 64 to 256, one thread: 0.12-0.20 s
    # per epoch against 0.38-0.49 s for one big gather and slices).
    for first in range(start * size, len(order), size):
        index = order[first : first + size]
        yield inputs[index], targets[index]


def fake_mnist(num_samples: int, num_val_samples: int, seed: int) -> Splits:
    """The lesson's noise: `torch.rand(28, 28)` images, uniform labels 0-9. Nothing to learn."""
    generator = torch.Generator().manual_seed(seed)

    def noise(n: int) -> TensorPairs:
        return TensorPairs(
            torch.rand(n, 28, 28, generator=generator),
            torch.randint(0, 10, (n,), generator=generator),
        )

    origin = Origin(
        f"fake_mnist(num_samples={num_samples}, num_val_samples={num_val_samples}, seed={seed})",
        drawn=True,
    )
    return Splits(noise(num_samples), noise(num_val_samples), 10, origin=origin)


def random_dataset(num_samples: int, num_val_samples: int, seed: int) -> Splits:
    """The lesson's RandomDataset: features of shape (3,), labels 0/1."""
    generator = torch.Generator().manual_seed(seed)

    def draw(n: int) -> TensorPairs:
        return TensorPairs(
            torch.randn(n, 3, generator=generator), torch.randint(0, 2, (n,), generator=generator)
        )

    recipe = f"random_dataset(num_samples={num_samples}, num_val_samples={num_val_samples}, "
    origin = Origin(f"{recipe}seed={seed})", drawn=True)
    return Splits(draw(num_samples), draw(num_val_samples), 2, origin=origin)


def normalize(splits: Splits, std_mean: tuple[torch.Tensor, torch.Tensor] | None = None) -> Splits:
    """Scale every split, in place, with the std and mean of the training inputs.

    In place because the builders hand over freshly made tensors, and a copy of every split
    would cost more than loading MNIST from the cache does. A builder that knows the figures
    more cheaply than `torch.std_mean` (a pass over every value) passes them.
    """
    std, mean = torch.std_mean(splits.train.inputs) if std_mean is None else std_mean
    for part in (splits.train, splits.val, splits.test):
        if part is not None:
            part.inputs.sub_(mean).div_(std)
    splits.scale = (float(mean), float(std))  # float32 values: exact as Python floats
    return splits
