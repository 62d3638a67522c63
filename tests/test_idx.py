"""IDX parsing and the `idx` dataset, on small IDX files written by the tests themselves."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (
    compose_config,
    dataset_source,
    events,
    idx_bytes,
    metrics_of,
    write_idx,
    write_idx_dataset,
)
from mnistlab import SettingError
from mnistlab.data.idx import parse_idx, read_idx, read_pair
from mnistlab.data.mnist import FILES, idx
from mnistlab.parts.models import ConvNet
from mnistlab.run.training import run_training


def test_parses_images_and_labels() -> None:
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    parsed = parse_idx(idx_bytes(images), "x", 2051)
    assert parsed.shape == (2, 3, 4) and parsed.dtype == np.uint8
    assert (parsed == images).all()
    assert (parse_idx(idx_bytes(np.array([7, 1, 9])), "y", 2049) == [7, 1, 9]).all()


def test_sizes_are_big_endian() -> None:
    # 300 images of 1 x 2: a little-endian reader would see 738,263,040 images.
    parsed = parse_idx(idx_bytes(np.zeros((300, 1, 2))), "x", 2051)
    assert parsed.shape == (300, 1, 2)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (idx_bytes(np.zeros(5)), "magic number 2049, expected 2051"),  # labels as images
        (b"\x00\x00", "magic number nothing"),
        (idx_bytes(np.zeros((4, 3, 3)))[:10], "truncated"),  # header cut short
        (idx_bytes(np.zeros((4, 3, 3)))[:-1], "has 51 bytes but its header (4, 3, 3) says 52"),
        (idx_bytes(np.zeros((4, 3, 3))) + b"\x00", "says 52"),  # trailing junk
    ],
)
def test_bad_files_are_refused_by_name(raw: bytes, message: str) -> None:
    with pytest.raises(SettingError, match="images.bin") as error:
        parse_idx(raw, "images.bin", 2051)
    assert message in str(error.value)


def test_reads_gzipped_and_plain_files(tmp_path: Path) -> None:
    labels = np.array([3, 1, 4, 1, 5])
    write_idx(tmp_path / "plain", idx_bytes(labels), gz=False)
    write_idx(tmp_path / "packed", idx_bytes(labels), gz=True)
    assert (read_idx(tmp_path / "plain", 2049) == labels).all()
    assert (read_idx(tmp_path / "packed.gz", 2049) == labels).all()


def test_a_cut_gzip_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(1000) % 10))[:-20])
    with pytest.raises(SettingError, match=f"{path} is not a complete gzip file"):
        read_idx(path, 2049)


def test_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    write_idx(tmp_path / "images", idx_bytes(np.zeros((4, 2, 2))), gz=False)
    write_idx(tmp_path / "labels", idx_bytes(np.zeros(3)), gz=False)
    with pytest.raises(SettingError, match="holds 4 images but .*labels holds 3 labels"):
        read_pair(tmp_path / "images", tmp_path / "labels")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reads_size_and_classes_from_the_files(tmp_path: Path, gz: bool) -> None:
    write_idx_dataset(tmp_path, gz=gz)
    data = idx(**dataset_source("idx", root=str(tmp_path), num_val_samples=10))
    assert (len(data.train), len(data.val), len(data.test)) == (50, 10, 20)
    assert data.input_shape == (12, 10) and data.num_classes == 3
    # normalised with training statistics; the other splits use the same scale
    assert abs(data.train.inputs.mean().item()) < 1e-5
    assert abs(data.train.inputs.std().item() - 1) < 1e-5
    assert data.train.targets.dtype == torch.int64


def test_split_is_seeded_and_disjoint(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    first, again = (
        idx(**dataset_source("idx", root=str(tmp_path), num_val_samples=10)),
        idx(**dataset_source("idx", root=str(tmp_path), num_val_samples=10)),
    )
    other = idx(**dataset_source("idx", root=str(tmp_path), num_val_samples=10, seed=1))
    assert torch.equal(first.val.inputs, again.val.inputs)
    assert not torch.equal(first.val.inputs, other.val.inputs)
    train_rows = {tuple(row.tolist()) for row in first.train.inputs.flatten(1)}
    assert not any(tuple(row.tolist()) in train_rows for row in first.val.inputs.flatten(1))


def test_num_train_samples_and_bad_split_sizes(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    assert (
        len(
            idx(
                **dataset_source("idx", root=str(tmp_path), num_val_samples=10, num_train_samples=7)
            ).train
        )
        == 7
    )
    with pytest.raises(SettingError, match="num_val_samples=60 must be between 1 and 59"):
        idx(**dataset_source("idx", root=str(tmp_path), num_val_samples=60))


def test_test_images_must_match_training_images(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    write_idx(tmp_path / FILES[2], idx_bytes(np.zeros((20, 5, 5))), gz=True)
    with pytest.raises(SettingError, match=r"holds images of \(12, 10\) but .* holds \(5, 5\)"):
        idx(**dataset_source("idx", root=str(tmp_path), num_val_samples=10))


def test_missing_files_name_the_folder_and_all_four_files(tmp_path: Path) -> None:
    with pytest.raises(SettingError) as error:
        idx(**dataset_source("idx", root=str(tmp_path / "nowhere")))
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message
    assert all(name in message for name in FILES)


@pytest.mark.parametrize("input_shape", [(12, 10), (1, 12, 10), (3, 8, 8)])
def test_cnn_takes_images_with_or_without_a_channel(input_shape: tuple[int, ...]) -> None:
    model = ConvNet(
        input_shape,
        3,
        channels=(16, 32),
        hidden=128,
        dropout=0.5,
        kernel_sizes=(3, 3),
        padding="same",
        shift=0,
    )
    batch = torch.randn(4, *input_shape)
    assert model(batch).shape == (4, 3)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["tensor", "dataloader"])
def test_idx_dataset_trains_the_cnn(tmp_path: Path, mode: str) -> None:
    write_idx_dataset(tmp_path / "data", n_train=300, n_test=100)
    cfg = compose_config(
        "dataset=idx",
        f"dataset.source.root={tmp_path / 'data'}",
        "dataset.source.num_val_samples=50",
        f"dataset.loader.mode={mode}",
        "dataset.loader.batch_size=25",
        "model=cnn",
        "model.channels=[4,8]",
        "loop.epochs=4",
        "optimizer.lr=0.01",
        "device=cpu",
    )
    metrics = run_training(cfg, tmp_path)
    assert metrics["test_accuracy"] > 0.9  # the label is the bright band: easy when it learns
    assert metrics_of(tmp_path)["test_accuracy"] > 0.9


def test_idx_needs_a_root() -> None:
    with pytest.raises(SettingError, match="dataset.source.root is required"):
        idx(**dataset_source("idx"))


@pytest.mark.parametrize(
    "extra",
    [
        ("loop.precision=32",),
        ("loop.precision=bf16",),
        ("loop.target.metric=test_accuracy", "loop.target.value=0.5"),
    ],
    ids=["float32", "bf16", "test_figures_reused"],
)
def test_the_confusion_matrix_counts_what_the_final_test_scored(
    tmp_path: Path, extra, monkeypatch
) -> None:
    # Gathered from the final test's own batches (bf16 included), or from a pass of their own
    # where the test's figures were measured at the last evaluation and reused.
    write_idx_dataset(tmp_path / "data", n_train=90, n_test=37)
    cfg = compose_config(
        "dataset=idx",
        f"dataset.source.root={tmp_path / 'data'}",
        "dataset.source.num_val_samples=30",
        "dataset.loader.batch_size=20",
        "loop.epochs=1",
        "device=cpu",
        "device.threads=1",
        *extra,
    )
    from mnistlab.run import board

    passes = []  # the passes of their own over the test split
    own_pass = board.predictions
    monkeypatch.setattr(board, "predictions", lambda *args: passes.append(1) or own_pass(*args))
    metrics = run_training(cfg, tmp_path)
    assert len(passes) == ("loop.target.value=0.5" in extra)
    (text,) = events(tmp_path).Tensors("test/confusion_counts")
    rows = text.tensor_proto.string_val[0].decode().splitlines()[2:]  # the header and rule
    counts = [[int(cell) for cell in row.split("|")[2:-1]] for row in rows]
    assert sum(map(sum, counts)) == 37
    assert sum(counts[n][n] for n in range(3)) == round(metrics["test_accuracy"] * 37)
