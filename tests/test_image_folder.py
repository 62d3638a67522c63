"""dataset=image_folder and the DataLoader path: PNG folders give the IDX path's tensors, bad
folders are one line before training, and a run through worker processes resumes mid-epoch
with the very next batch, bit for bit."""

import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from conftest import (
    assert_same_run,
    compose_config,
    dataset_source,
    final_state,
    idx_bytes,
    metrics_of,
    start_run,
    when_started,
    write_idx,
)
from mnistlab import SettingError
from mnistlab.config import checks
from mnistlab.config.schemas import LoaderSettings
from mnistlab.data.folders import image_folder
from mnistlab.data.mnist import FILES, idx
from mnistlab.data.pillow import write_png
from mnistlab.data.splits import Splits, TensorPairs, batches, check_mode
from mnistlab.data.stream import Stream
from mnistlab.run import checkpoint
from mnistlab.run.training import run_training


def bright_bands(n: int, classes: int, size: tuple[int, int], seed: int):
    """Noise images whose label is a bright band of rows (as conftest's IDX datasets)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 40, (n, *size)).astype(np.uint8)
    for image, label in zip(images, labels, strict=True):
        image[label * 3 : label * 3 + 3] = 250
    return images, labels


def write_pngs(root: Path, images: np.ndarray, labels: np.ndarray, classes: int) -> None:
    """root/<label>/<index>.png, numbered as scripts/mnist_to_png.py numbers them."""
    for label in range(classes):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        write_png(root / str(label) / f"{index:05d}.png", image)


def write_both(root: Path, n_train: int = 60, n_test: int = 20, classes: int = 3) -> None:
    """The same small dataset as IDX files (root/idx) and as PNG folders (root/png)."""
    (root / "idx").mkdir(parents=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = bright_bands(n, classes, (12, 10), seed)
        write_pngs(root / "png" / split, images, labels, classes)
        name = FILES[0] if split == "train" else FILES[2]
        write_idx(root / "idx" / name, idx_bytes(images), gz=False)
        write_idx(
            root / "idx" / name.replace("images-idx3", "labels-idx1"), idx_bytes(labels), False
        )


def folder(root: Path, **changes):
    """dataset=image_folder's builder, as shipped, on `root`'s PNG folders."""
    source = dataset_source("image_folder", root=str(root / "png" / "train"), **changes)
    return image_folder(**source)


def test_png_folders_give_the_idx_paths_tensors_bit_for_bit(tmp_path):
    write_both(tmp_path)
    test_root = str(tmp_path / "png" / "test")
    pngs = folder(tmp_path, test_root=test_root, num_val_samples=10)
    ours = dataset_source("idx", root=str(tmp_path / "idx"), num_val_samples=10)
    files = idx(**ours)
    assert pngs.num_classes == files.num_classes == 3
    assert pngs.scale == files.scale  # what mnistlab-predict standardises images with
    assert pngs.input_shape == files.input_shape == (12, 10)
    for name in ("train", "val", "test"):
        streamed, held = getattr(pngs, name), getattr(files, name)
        assert len(streamed) == len(held), name
        inputs = torch.stack([streamed[i][0] for i in range(len(streamed))])
        targets = torch.stack([streamed[i][1] for i in range(len(streamed))])
        assert torch.equal(inputs, held.inputs), name
        assert torch.equal(targets, held.targets) and torch.equal(streamed.targets, held.targets)


def test_given_mean_and_std_skip_the_measuring_pass(tmp_path):
    write_both(tmp_path)
    data = folder(tmp_path, num_val_samples=10, mean=0.5, std=0.25)
    image, _ = data.train[0]
    raw = torch.from_numpy(np.asarray(bright_bands(60, 3, (12, 10), 0)[0]))
    index = int(data.train.found.paths[0].stem)
    assert torch.allclose(image, (raw[index].float() / 255 - 0.5) / 0.25)


def bad_folder(tmp_path: Path, case: str) -> Path:
    """A PNG training root with one thing wrong, named by `case`."""
    write_both(tmp_path)
    train = tmp_path / "png" / "train"
    if case == "empty class folder":
        (train / "3").mkdir()
    elif case == "not an image":
        (train / "1" / "notes.png").write_text("not a picture")
    elif case == "other file":
        (train / "1" / "notes.txt").write_text("not a picture")
    elif case == "mixed sizes":
        write_png(train / "2" / "99999.png", np.zeros((28, 28), dtype=np.uint8))
    elif case == "no class folders":
        train = tmp_path / "png" / "train" / "0"
    return train


BAD = [
    ("missing root", "dataset.source.root=", "does not exist: point it at a folder"),
    ("no class folders", "dataset.source.root=", "holds no class folders"),
    ("empty class folder", "dataset.source.root", "holds no PNG or JPEG files"),
    ("not an image", "dataset.source.root", "notes.png is not an image Pillow can read"),
    ("other file", "dataset.source.root", "notes.txt is not a PNG or JPEG file"),
    ("mixed sizes", "dataset.source.root", "must have one size; resize them"),
]


@pytest.mark.parametrize(("case", "key", "says"), BAD, ids=[b[0] for b in BAD])
def test_bad_folders_are_one_line_naming_the_setting(tmp_path, case, key, says):
    train = tmp_path / "nowhere" if case == "missing root" else bad_folder(tmp_path, case)
    with pytest.raises(SettingError) as caught:
        image_folder(**dataset_source("image_folder", root=str(train), num_val_samples=10))
    message = str(caught.value)
    assert says in message and key in message and "\n" not in message
    if case == "mixed sizes":  # the odd one and one of the others, in either order
        assert "99999.png is 28x28" in message and "is 12x10" in message


def test_a_test_root_with_an_unknown_class_or_no_root_is_refused(tmp_path):
    write_both(tmp_path)
    (tmp_path / "png" / "test" / "7").mkdir()
    with pytest.raises(SettingError, match=r"test_root=.* has class folders .* lacks \(7\)"):
        folder(tmp_path, test_root=str(tmp_path / "png" / "test"), num_val_samples=10)
    with pytest.raises(SettingError, match="dataset.source.root is required"):
        image_folder(**dataset_source("image_folder"))


def test_tensor_mode_is_refused_for_files_loaded_per_item(tmp_path):
    write_both(tmp_path)
    cfg = compose_config("dataset=image_folder", "dataset.loader.mode=tensor")
    with pytest.raises(SettingError, match="use dataset.loader.mode=dataloader"):
        check_mode(
            folder(tmp_path, num_val_samples=10), checks.check(cfg).loader, cfg.dataset.source
        )


class Noisy(Dataset):
    """Each item: its index and two numbers drawn in `__getitem__` (an augmentation's draws);
    every index it was asked for is recorded (in the process that loads it)."""

    def __init__(self, count: int) -> None:
        self.count, self.asked = count, []

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        self.asked.append(index)
        return torch.rand(2), torch.tensor(index)


def loader(workers: int, batch_size: int = 8, mode: str = "dataloader") -> LoaderSettings:
    return LoaderSettings(batch_size=batch_size, shuffle=True, mode=mode, num_workers=workers)


def test_a_started_epoch_skips_its_first_batches_without_loading_them():
    data = Noisy(100)
    stream = Stream(data, loader(0), seed=3)
    whole = list(stream.epoch(2))
    data.asked.clear()
    rest = list(stream.epoch(2, start=5))
    assert len(whole) == 13 and len(rest) == 8
    assert sorted(data.asked) == sorted(int(i) for _, t in whole[5:] for i in t)  # none skipped
    for ours, theirs in zip(rest, whole[5:], strict=True):
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    pairs = TensorPairs(torch.zeros(100, 2), torch.arange(100))
    in_memory = [t for _, t in batches(pairs, loader(0, mode="tensor"), seed=3, epoch=2)]
    assert all(torch.equal(a[1], b) for a, b in zip(whole, in_memory, strict=True))


def test_draws_in_workers_repeat_for_a_batch_whichever_worker_loads_it():
    """Two workers, resumed at batch 5: every batch's draws as in the whole epoch with none."""
    whole = list(Stream(Noisy(100), loader(0), seed=1).epoch(0))
    before = torch.get_rng_state()
    resumed = list(Stream(Noisy(100), loader(2), seed=1).epoch(0, start=5))
    assert torch.equal(torch.get_rng_state(), before)  # the run's own generator is untouched
    assert len({tuple(x[0].tolist()) for x, _ in whole}) == len(whole)  # batches differ
    for ours, theirs in zip(resumed, whole[5:], strict=True):
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    torch.manual_seed(0)
    list(Stream(Noisy(100), loader(0), seed=1).epoch(0))
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())  # in-process too


# --- real runs ------------------------------------------------------------------------------

KILL_RUN = (
    "device.threads=1",  # one thread: sums in one order in every process compared
    "dataset=image_folder",
    "dataset.source.num_val_samples=200",
    "dataset.loader.batch_size=8",
    "dataset.loader.num_workers=2",  # worker processes decode; dropout draws in the main one
    "model.hidden=256",
    "model.dropout=0.1",
    "loop.epochs=1",  # any interruption is mid-epoch
    "loop.log_every_n_batches=10",
)


@pytest.mark.slow
def test_image_folder_killed_mid_epoch_resumes_bit_exactly(tmp_path):
    images, labels = bright_bands(3000, 3, (12, 10), 0)
    write_pngs(tmp_path / "png", images, labels, 3)
    run = (*KILL_RUN, f"dataset.source.root={tmp_path / 'png'}")
    reference = start_run(tmp_path, tmp_path / "reference", *run)
    assert reference.wait(300) == 0, reference.stderr.read()
    process = start_run(tmp_path, tmp_path / "run", *run)
    when_started(tmp_path / "run", process, settle=1.0)
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 143, process.stderr.read()
    assert metrics_of(tmp_path / "run")["status"] == "interrupted"
    progress = checkpoint.load(tmp_path / "run" / checkpoint.FILENAME)["progress"]
    assert 0 < progress["epoch_step"] < 350 and progress["epoch"] == 0, progress  # 2800 / 8
    # Another worker count (a resume may change it): which worker loads a batch changes nothing.
    again = (f"loop.resume={tmp_path / 'run'}", "dataset.loader.num_workers=1")
    resumed = start_run(tmp_path, tmp_path / "resume", *again)
    assert resumed.wait(300) == 0, resumed.stderr.read()
    assert_same_run(final_state(tmp_path / "run"), final_state(tmp_path / "reference"))


@pytest.mark.slow
def test_png_folders_train_as_the_idx_files_do(tmp_path):
    """The same images as IDX files (tensor mode) and as PNGs (workers): the same weights."""
    write_both(tmp_path, n_train=300, n_test=60)
    common = ("device=cpu", "device.threads=1", "dataset.source.num_val_samples=50")
    common += ("dataset.loader.batch_size=25", "model.dropout=0.1", "loop.epochs=2")
    png = (f"dataset.source.root={tmp_path / 'png' / 'train'}", "dataset.loader.num_workers=1")
    png += (f"dataset.source.test_root={tmp_path / 'png' / 'test'}",)
    ours = run_training(compose_config("dataset=image_folder", *png, *common), tmp_path / "p")
    theirs = run_training(
        compose_config("dataset=idx", f"dataset.source.root={tmp_path / 'idx'}", *common),
        tmp_path / "i",
    )
    for key in ("val_accuracy", "val_loss", "test_accuracy", "train_loss"):
        assert ours[key] == theirs[key], key
    weights = checkpoint.load(tmp_path / "p" / checkpoint.FILENAME)["model"]
    reference = checkpoint.load(tmp_path / "i" / checkpoint.FILENAME)["model"]
    assert all(torch.equal(weights[key], reference[key]) for key in reference)


class Plain(Dataset):
    """A user's dataset as the lesson writes one: no `targets`, no fingerprint, items made
    when asked for (a band of rows bright for its label)."""

    def __init__(self, count: int, seed: int) -> None:
        self.labels = torch.randint(0, 3, (count,), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        label = int(self.labels[index])
        image = torch.zeros(12, 10)
        image[label * 3 : label * 3 + 3] = 1.0
        return image + 0.1 * torch.rand(12, 10), label


def plain_splits(num_samples: int, val_fraction: float, seed: int) -> Splits:
    """`Plain` datasets as a builder's splits (the synthetic config's arguments)."""
    val = int(num_samples * val_fraction)
    return Splits(Plain(num_samples - val, seed), Plain(val, seed + 1), 3)


@pytest.mark.slow
def test_a_plain_dataset_trains_through_the_dataloader_and_not_in_tensor_mode(tmp_path):
    plain = ("dataset.source._target_=test_image_folder.plain_splits", "device=cpu")
    plain += ("dataset.source.num_samples=600", "loop.epochs=2")
    cfg = compose_config(*plain, "dataset.loader.mode=dataloader", "dataset.loader.num_workers=1")
    metrics = run_training(cfg, tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["val_accuracy"] > 0.9
    assert metrics["data_fingerprint"]  # its type and length: no more is known
    with pytest.raises(SettingError, match="use dataset.loader.mode=dataloader"):
        run_training(compose_config(*plain), tmp_path / "tensor")


class Batched(Noisy):
    """A dataset that reads a batch at once (`__getitems__`, as torch's own datasets may)."""

    def __getitems__(self, indices: list[int]) -> list:
        self.asked.append(tuple(indices))
        return [(torch.rand(2), torch.tensor(index)) for index in indices]


def test_a_dataset_that_reads_whole_batches_gets_them_whole():
    data = Batched(20)
    first = list(Stream(data, loader(0, batch_size=8), seed=0).epoch(0))
    assert [len(asked) for asked in data.asked] == [8, 8, 4]
    assert [tuple(t.tolist()) for _, t in first] == data.asked
