"""The decoded copy of an IDX dataset: used when it matches the files, rebuilt when not."""

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import dataset_source, idx_bytes, metrics_of, run_cli, write_idx, write_idx_dataset
from mnistlab.data import splits as datasets
from mnistlab.data import synthetic
from mnistlab.data.decoded import CACHE_FILE
from mnistlab.data.idx import read_pair
from mnistlab.data.mnist import FILES, idx, split_order, to_pairs
from mnistlab.data.splits import Splits
from mnistlab.data.synthetic import synthetic_digits

READ = "read the decoded dataset from"
WROTE = "later runs read it instead of decoding"


def build(root: Path, caplog: pytest.LogCaptureFixture) -> tuple[Splits, str]:
    """The idx dataset in `root` built from disk, and what the cache logged while it was built."""
    datasets.forget()  # not the splits this process made last: the files and their copy
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="mnistlab.data.decoded"):
        data = idx(**dataset_source("idx", root=str(root), num_val_samples=10))
    return data, caplog.text


def same(a: Splits, b: Splits) -> bool:
    parts = [(a.train, b.train), (a.val, b.val), (a.test, b.test)]
    return all(
        torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets) for x, y in parts
    )


def test_second_build_reads_the_cache_and_gives_the_same_data(tmp_path, caplog) -> None:
    write_idx_dataset(tmp_path)
    first, log = build(tmp_path, caplog)
    assert WROTE in log and READ not in log
    written = (tmp_path / CACHE_FILE).stat().st_mtime_ns
    second, log = build(tmp_path, caplog)
    assert READ in log and WROTE not in log  # the IDX files were not parsed again
    assert (tmp_path / CACHE_FILE).stat().st_mtime_ns == written
    assert same(first, second)


def test_a_replaced_file_of_the_same_size_and_time_is_not_served_stale(tmp_path, caplog) -> None:
    write_idx_dataset(tmp_path, gz=False)
    first, _ = build(tmp_path, caplog)
    labels = tmp_path / FILES[1]
    before = labels.stat()
    # Other labels, same byte count, modification time put back: only the content tells.
    new_labels = (2 - np.frombuffer(labels.read_bytes()[8:], np.uint8)) % 3
    write_idx(labels, idx_bytes(new_labels), gz=False)
    os.utime(labels, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert labels.stat().st_size == before.st_size
    second, log = build(tmp_path, caplog)
    assert READ not in log and WROTE in log
    assert torch.equal(second.train.targets, (2 - first.train.targets) % 3)  # the new labels


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_bytes(b"not a zip"), id="garbage"),
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[:-100]), id="truncated"),
        pytest.param(lambda path: path.write_bytes(b""), id="empty"),
        pytest.param(
            lambda path: torch.save({**torch.load(path), "labels": torch.zeros(3)}, path),
            id="wrong-dtype",
        ),
        pytest.param(
            lambda path: torch.save(
                {**torch.load(path), "pixel_counts": torch.ones(256).long()}, path
            ),
            id="wrong-counts",
        ),
    ],
)
def test_a_damaged_cache_is_ignored_and_rewritten(tmp_path, caplog, damage) -> None:
    write_idx_dataset(tmp_path)
    first, _ = build(tmp_path, caplog)
    damage(tmp_path / CACHE_FILE)
    second, log = build(tmp_path, caplog)
    assert "ignoring" in log and WROTE in log
    assert same(first, second)
    _, log = build(tmp_path, caplog)
    assert READ in log


class Payload:
    """A pickle that would create a file if it were ever unpickled without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_cache_file_cannot_run_code(tmp_path, caplog) -> None:
    root, marker = tmp_path / "data", tmp_path / "ran"
    write_idx_dataset(root)
    build(root, caplog)
    torch.save({"format": Payload(marker)}, root / CACHE_FILE, pickle_module=pickle)
    _, log = build(root, caplog)
    assert not marker.exists()
    assert "ignoring" in log and WROTE in log


def test_a_read_only_folder_keeps_its_copy_in_the_user_cache(tmp_path, caplog, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_idx_dataset(data)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    data.chmod(0o555)  # read-only by its permissions: respected even when run as root
    try:
        first, log = build(data, caplog)
        assert f"is read-only: its decoded copy goes to {cache / 'mnistlab' / 'decoded'}" in log
        assert WROTE in log
        second, log = build(data, caplog)
        assert "read-only" not in log and READ in log
    finally:
        data.chmod(0o755)
    assert not list(data.glob("*.pt*"))  # nothing written beside the files
    (copy,) = (cache / "mnistlab" / "decoded").iterdir()
    assert copy.suffix == ".pt"
    assert same(first, second)


@pytest.mark.parametrize("num_train_samples", [None, 25])
def test_the_data_is_what_parsing_and_torch_std_mean_give(tmp_path, caplog, num_train_samples):
    write_idx_dataset(tmp_path)
    images, labels = read_pair(tmp_path / f"{FILES[0]}.gz", tmp_path / f"{FILES[1]}.gz")
    order = split_order(len(labels), 10, num_train_samples, seed=3)
    train = to_pairs(images[order.train], labels[order.train])
    std, mean = torch.std_mean(train.inputs)  # what normalize computes without the counts
    expected = train.inputs.sub(mean).div(std)
    for _ in ("parsed", "cached"):
        datasets.forget()
        data = idx(
            **dataset_source(
                "idx",
                root=str(tmp_path),
                num_val_samples=10,
                num_train_samples=num_train_samples,
                seed=3,
            )
        )
        assert torch.equal(data.train.inputs, expected)
        assert torch.equal(data.train.targets, train.targets)
    assert (tmp_path / CACHE_FILE).exists()


def test_the_next_job_in_a_process_gets_the_last_splits_while_the_files_are_the_same(
    tmp_path, caplog
) -> None:
    write_idx_dataset(tmp_path, gz=False)
    first, _ = build(tmp_path, caplog)
    with caplog.at_level(logging.DEBUG, logger="mnistlab.data.decoded"):
        caplog.clear()
        again = idx(**dataset_source("idx", root=str(tmp_path), num_val_samples=10))
        assert same(again, first) and READ not in caplog.text  # neither parsed nor read from disk
        made = again.clone()  # as made, to compare with
        first.train.inputs.add_(1)  # what a run does to its splits, the next one does not see
        assert same(idx(**dataset_source("idx", root=str(tmp_path), num_val_samples=10)), made)
        other_split = idx(**dataset_source("idx", root=str(tmp_path), num_val_samples=12))
        assert other_split is not first and len(other_split.val) == 12
        back = idx(
            **dataset_source("idx", root=str(tmp_path), num_val_samples=10)
        )  # only the last one is kept: read again
        assert READ in caplog.text and same(back, made)
    # Other labels in the same file, same size and time: its MD5 tells, not a stale answer.
    labels = tmp_path / FILES[1]
    before = labels.stat()
    write_idx(
        labels, idx_bytes((2 - np.frombuffer(labels.read_bytes()[8:], np.uint8)) % 3), gz=False
    )
    os.utime(labels, ns=(before.st_atime_ns, before.st_mtime_ns))
    changed = idx(**dataset_source("idx", root=str(tmp_path), num_val_samples=10))
    assert torch.equal(changed.train.targets, (2 - made.train.targets) % 3)


@pytest.mark.slow  # a real sweep and a real run
def test_a_sweeps_jobs_in_one_process_train_as_they_would_alone(tmp_path) -> None:
    """The basic launcher runs every job in one process: a job must not see what one before
    it did to the splits they share (an in-place change would alter the later jobs' figures)."""
    write_idx_dataset(tmp_path / "data", n_train=200, n_test=40)
    common = (
        "dataset=idx",
        f"dataset.source.root={tmp_path / 'data'}",
        "dataset.source.num_val_samples=40",
        "dataset.loader.batch_size=20",
        "loop.epochs=1",  # a loss short of 0: this easy task is learnt fully in two
        "device.threads=1",
    )
    swept = run_cli(
        "mnistlab.cli.train",
        "-m",
        "optimizer.lr=0.01,0.001",
        *common,
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert swept.returncode == 0, swept.stderr
    alone = run_cli(
        "mnistlab.cli.train", "optimizer.lr=0.001", *common, "hydra.run.dir=alone", cwd=tmp_path
    )
    assert alone.returncode == 0, alone.stderr
    (job,) = (tmp_path / "sweep").glob("1_*/metrics.json")
    in_sweep, by_itself = metrics_of(job.parent), metrics_of(tmp_path / "alone")
    for key in ("train_loss", "val_loss", "val_accuracy", "test_loss", "steps"):
        assert in_sweep[key] == by_itself[key], key


def test_the_next_job_in_a_process_gets_the_last_synthetic_digits() -> None:
    datasets.forget()
    first = synthetic_digits(**dataset_source("synthetic", num_samples=100, seed=1))
    kept = first.train.inputs.clone()
    first.train.inputs[::7] = float("nan")  # a user's builder wrapping ours may do this
    again = synthetic_digits(
        **dataset_source("synthetic", num_samples=100, seed=1)
    )  # not drawn again, and as first drawn
    assert torch.equal(again.train.inputs, kept)
    other = synthetic_digits(**dataset_source("synthetic", num_samples=100, seed=2))
    assert not torch.equal(other.train.inputs, kept)


def test_synthetic_digits_drawn_in_chunks_equal_one_draw(monkeypatch) -> None:
    # The glyphs, the warp and the noise are made a chunk at a time (memory); the digits must
    # be the very ones a single draw of every image gives, bit for bit, on any CPU.
    chunked = synthetic.generate(1000, seed=5)
    monkeypatch.setattr(synthetic, "CHUNK", 10**9)
    monkeypatch.setattr(synthetic, "WRITER_CHUNK", 10**9)
    whole = synthetic.generate(1000, seed=5)
    assert torch.equal(chunked.inputs, whole.inputs) and torch.equal(chunked.targets, whole.targets)
    monkeypatch.setattr(synthetic, "CHUNK", 96)  # chunks that do not divide the count
    monkeypatch.setattr(synthetic, "WRITER_CHUNK", 7)
    assert torch.equal(synthetic.generate(1000, seed=5).inputs, whole.inputs)


def test_the_fingerprint_is_kept_with_the_splits_until_their_tensors_change(monkeypatch) -> None:
    hashed = []
    sha256_of = datasets.sha256_of
    monkeypatch.setattr(datasets, "sha256_of", lambda data: hashed.append(1) or sha256_of(data))
    data = datasets.random_dataset(32, 8, seed=0)
    first = datasets.fingerprint(data)
    assert datasets.fingerprint(data) == first and len(hashed) == 1  # the next job's: kept
    data.train = datasets.TensorPairs(data.train.inputs.clone(), data.train.targets.clone())
    assert datasets.fingerprint(data) == first and len(hashed) == 2  # other tensors: hashed
    data.train.targets[0] = (data.train.targets[0] + 1) % 10  # changed in place by torch
    changed = datasets.fingerprint(data)
    assert changed != first and len(hashed) == 3
    assert datasets.fingerprint(data) == changed and len(hashed) == 3
