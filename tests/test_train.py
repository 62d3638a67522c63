"""run_training() into tmp_path: metrics, TensorBoard events, chance level, reproducibility."""

import math
import subprocess
import sys

import pytest
import torch

from conftest import compose_config, dataset_source, events, metrics_of
from mnistlab.config import checks
from mnistlab.data.splits import batches, random_dataset
from mnistlab.run.training import run_training

SMALL_SYNTHETIC = (
    "dataset.source.num_samples=3000",
    "loop.epochs=2",
    "loop.log_every_n_batches=10",
)


@pytest.mark.parametrize(
    "overrides",
    [
        SMALL_SYNTHETIC,
        ("dataset=fake_mnist", "loop.epochs=1", "loop.log_every_n_batches=5"),
        ("dataset=random", "loop.epochs=2", "loop.log_every_n_batches=1"),
        (*SMALL_SYNTHETIC, "dataset.loader.mode=dataloader"),
    ],
    ids=["synthetic", "fake_mnist", "random", "synthetic-dataloader"],
)
def test_train_writes_metrics_and_events(tmp_path, overrides):
    metrics = run_training(compose_config(*overrides), tmp_path)
    saved = metrics_of(tmp_path)
    assert saved == metrics  # floats survive JSON exactly
    assert saved["status"] == "completed"
    for key in ("train_loss", "val_loss", "val_accuracy", "samples_per_second", "wall_time_s"):
        assert math.isfinite(saved[key]), key
    assert saved["device"].endswith("threads)")  # the CPU, by name
    tags = events(tmp_path).Tags()["scalars"]
    assert {"train/loss", "val/loss", "val/accuracy"} <= set(tags)


def test_train_loss_is_logged_at_every_nth_batch_and_at_each_epochs_end(tmp_path):
    cfg = compose_config(
        "dataset.source.num_samples=2000", "loop.epochs=2", "loop.log_every_n_batches=7"
    )
    metrics = run_training(cfg, tmp_path)
    run = events(tmp_path)
    assert metrics["steps"] == 2 * math.ceil(1800 / 64)
    # Every 7th batch, and the last, partial window of each epoch (steps 29 and 58).
    expected = sorted({*range(7, metrics["steps"] + 1, 7), 29, 58})
    for tag in ("train/batch_loss", "train/batch_accuracy", "train/lr"):
        assert [event.step for event in run.Scalars(tag)] == expected, tag
    for tag in ("train/loss", "train/accuracy", "val/loss", "val/accuracy"):
        assert [event.step for event in run.Scalars(tag)] == [29, 58], tag
    # The epoch's train/loss is the number metrics.json holds (float32 in the event file).
    assert run.Scalars("train/loss")[-1].value == pytest.approx(metrics["train_loss"], rel=1e-6)
    assert run.Scalars("train/accuracy")[-1].value == pytest.approx(metrics["train_accuracy"])


def test_hparams_live_in_the_same_run_as_the_scalars(tmp_path):
    cfg = compose_config(*SMALL_SYNTHETIC, "optimizer=sgd", "optimizer.lr=0.05")
    run_training(cfg, tmp_path)
    event_files = list(tmp_path.rglob("events.out.tfevents.*"))
    assert [path.parent for path in event_files] == [tmp_path]  # no add_hparams sub-folder
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = events(tmp_path)
    content = run.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["optimizer"].string_value == "SGD"
    assert start.hparams["optimizer.lr"].number_value == pytest.approx(0.05)
    assert start.hparams["dataset.loader.batch_size"].number_value == 64
    assert start.hparams["loop.seed"].number_value == 0


def test_fake_mnist_stays_at_chance_after_the_lessons_three_epochs(tmp_path):
    metrics = run_training(compose_config("dataset=fake_mnist"), tmp_path)
    assert metrics["epochs"] == 3
    assert abs(metrics["val_loss"] - math.log(10)) < 0.05
    assert abs(metrics["train_loss"] - math.log(10)) < 0.1


@pytest.mark.slow
def test_synthetic_digits_are_learned_far_above_chance(tmp_path):
    cfg = compose_config("dataset.source.num_samples=12000", "loop.epochs=2")
    metrics = run_training(cfg, tmp_path)
    assert metrics["val_accuracy"] > 0.8
    assert metrics["val_loss"] < 1.0


def test_random_dataset_yields_batches_of_4_4_2():
    cfg = compose_config("dataset=random")
    settings = checks.check(cfg)
    split = random_dataset(**dataset_source("random")).train
    for mode in ("tensor", "dataloader"):
        loader = type(settings.loader)(**{**vars(settings.loader), "mode": mode})
        sizes = [len(targets) for _, targets in batches(split, loader, seed=0, epoch=0)]
        assert sizes == [4, 4, 2], mode
        assert all(
            inputs.shape[1:] == (3,) for inputs, _ in batches(split, loader, seed=0, epoch=0)
        )


def test_shuffle_changes_every_epoch_and_repeats_for_the_same_seed():
    cfg = compose_config("dataset=random")
    loader = checks.check(cfg).loader
    split = random_dataset(**dataset_source("random")).train

    def order(seed, epoch):
        return torch.cat([targets for _, targets in batches(split, loader, seed=seed, epoch=epoch)])

    epochs = [torch.cat([x for x, _ in batches(split, loader, seed=0, epoch=e)]) for e in range(3)]
    assert not torch.equal(epochs[0], epochs[1])
    assert torch.equal(order(0, 1), order(0, 1))


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tmp_path):
    overrides = (*SMALL_SYNTHETIC, "model.dropout=0.2")
    first = run_training(compose_config(*overrides), tmp_path / "a")
    second = run_training(compose_config(*overrides), tmp_path / "b")
    other_seed = run_training(compose_config(*overrides, "loop.seed=1"), tmp_path / "c")
    keys = ("train_loss", "val_loss", "val_accuracy", "steps")
    assert [first[k] for k in keys] == [second[k] for k in keys]
    assert first["train_loss"] != other_seed["train_loss"]


def test_gradient_clipping_runs(tmp_path):
    metrics = run_training(compose_config(*SMALL_SYNTHETIC, "loop.grad_clip_norm=0.5"), tmp_path)
    assert metrics["val_accuracy"] > 0.5


def flushes_denormals() -> bool:
    """Whether torch's CPU kernels currently turn a denormal float32 into zero."""
    return (torch.tensor([1e-40]) * 1.0).item() == 0.0


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush denormals")
def test_device_flush_denormal_reaches_torch_and_keeps_the_results(tmp_path):
    metrics = {}
    try:
        for flush in (False, True):
            overrides = (*SMALL_SYNTHETIC, f"device.flush_denormal={str(flush).lower()}")
            metrics[flush] = run_training(compose_config(*overrides), tmp_path / str(flush))
            assert flushes_denormals() is flush
    finally:
        torch.set_flush_denormal(False)  # torch's default, for the tests that follow
    # Values below 1.2e-38 do not move this training: the same losses either way.
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert metrics[True][key] == pytest.approx(metrics[False][key], rel=1e-4)


LATE = "threads started before the setting"
SCRIPT = """
import torch
from mnistlab.parts.device import denormals
torch.set_num_threads(2)
torch.set_flush_denormal({first})
print(denormals())  # torch's worker threads start here and copy the flag
torch.set_flush_denormal({then})
print(denormals())
"""


@pytest.mark.slow  # a child process
@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush denormals")
@pytest.mark.parametrize(
    ("first", "then", "reports"),
    [
        (True, True, ["flushed to zero", "flushed to zero"]),
        (False, False, ["kept", "kept"]),
        (False, True, ["kept", f"flushed on 50% of the work only ({LATE})"]),
    ],
)
def test_denormals_reports_what_every_thread_does(first, then, reports):
    script = SCRIPT.format(first=first, then=then)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    # Two threads split the multiply in halves; a late flag reaches the main thread's half.
    assert result.stdout.splitlines() == reports
