"""Early stopping, targets and the best checkpoint: when a run stops, and what it keeps."""

import pytest
import torch

from conftest import SMALL_RANDOM, compose_config, write_idx_dataset
from mnistlab import SettingError
from mnistlab.names import BEST_FILE
from mnistlab.run import checkpoint
from mnistlab.run.scalars import read_scalars
from mnistlab.run.training import run_training


def test_early_stopping_stops_after_patience_evaluations_without_improvement(tmp_path):
    # A plateau: with a tiny lr no epoch improves val_loss by min_delta after the first.
    cfg = compose_config(
        *SMALL_RANDOM,
        "optimizer.lr=1e-9",
        "loop.epochs=10",
        "loop.early_stopping.patience=2",
        "loop.early_stopping.min_delta=0.01",
    )
    metrics = run_training(cfg, tmp_path)
    assert metrics["stop_reason"] == "early_stopping"
    assert metrics["epochs"] == 3  # the best at epoch 1, then two epochs without improving
    assert metrics["best_step"] == 8  # the end of epoch 1
    assert read_scalars(tmp_path)["val/loss"][0] == [8, 16, 24]


def test_the_target_stop_records_the_step_that_reached_it(tmp_path):
    evaluated = ("loop.epochs=3", "loop.eval_every_n_steps=1", "optimizer.lr=0.05")
    run_training(compose_config(*SMALL_RANDOM, *evaluated), tmp_path / "reference")
    steps, accuracies = read_scalars(tmp_path / "reference")["val/accuracy"]
    goal = max(accuracies[:12])  # reached somewhere in the first 12 steps, not at step 1
    first = steps[next(n for n, value in enumerate(accuracies) if value >= goal)]
    assert first > 1
    targeted = ("loop.target.metric=val_accuracy", f"loop.target.value={goal}")
    metrics = run_training(compose_config(*SMALL_RANDOM, *evaluated, *targeted), tmp_path / "run")
    assert metrics["stop_reason"] == "target_reached"
    assert metrics["steps"] == first
    assert metrics["target_reached"] and metrics["target_step"] == first
    assert 0 < metrics["target_seconds"] <= metrics["wall_time_s"]


def test_a_missed_target_says_so(tmp_path):
    targeted = ("loop.epochs=1", "loop.target.metric=val_loss", "loop.target.value=0")
    metrics = run_training(compose_config(*SMALL_RANDOM, *targeted), tmp_path)
    assert metrics["stop_reason"] == "completed"
    assert metrics["target_reached"] is False and "target_step" not in metrics


def test_best_pt_holds_the_best_epochs_weights_and_test_on_best_tests_them(tmp_path):
    write_idx_dataset(tmp_path / "data", n_train=80, n_test=20)
    data = (
        "dataset=idx",
        f"dataset.source.root={tmp_path / 'data'}",
        "dataset.source.num_val_samples=20",
        "dataset.loader.batch_size=20",
        "device.threads=1",
        "optimizer.lr=0.5",  # too high: validation loss goes up and down between epochs
    )
    metrics = run_training(
        compose_config(*data, "loop.epochs=6", "loop.test_on=best"), tmp_path / "run"
    )
    steps, losses = read_scalars(tmp_path / "run")["val/loss"]
    best_epoch = losses.index(min(losses)) + 1
    assert best_epoch < 6, "the run did not make the test meaningful: its last epoch was best"
    assert metrics["best_value"] == min(losses) and metrics["best_step"] == steps[best_epoch - 1]
    # The same run stopped after its best epoch: its final weights are the best ones.
    shorter = run_training(compose_config(*data, f"loop.epochs={best_epoch}"), tmp_path / "short")
    best = checkpoint.load(tmp_path / "run" / BEST_FILE)["model"]
    final = checkpoint.load(tmp_path / "short" / checkpoint.FILENAME)["model"]
    for key, tensor in final.items():
        assert torch.equal(best[key], tensor), key
    assert metrics["tested_on"] == "best"
    assert metrics["test_loss"] == shorter["test_loss"]
    assert metrics["test_accuracy"] == shorter["test_accuracy"]


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (("loop.early_stopping.patience=0",), "loop.early_stopping.patience=0 must be >= 1"),
        (("loop.target.metric=val_accuracy",), "loop.target needs both a metric and a value"),
        (
            ("loop.target.metric=accuracy", "loop.target.value=0.9"),
            "loop.target.metric='accuracy' is unknown",
        ),
        (("loop.test_on=worst",), "loop.test_on='worst' is unknown: use final or best"),
        (("loop.eval_every_n_steps=0",), "loop.eval_every_n_steps=0 must be >= 1"),
        (
            ("loop.test_on=best", "objective=test_accuracy"),
            "loop.test_on=best chooses the model by objective=test_accuracy, the test split",
        ),
        (
            ("loop.target.metric=test_accuracy", "loop.target.value=0.9"),
            "loop.target.metric=test_accuracy needs a test split",
        ),
    ],
)
def test_bad_stopping_settings_are_refused_in_one_line(tmp_path, overrides, says):
    with pytest.raises(SettingError, match=says) as refused:
        run_training(compose_config(*SMALL_RANDOM, *overrides), tmp_path)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "metrics.json").exists()


def test_resuming_a_run_that_stopped_early_changes_nothing(tmp_path):
    stopped = ("optimizer.lr=1e-9", "loop.epochs=10", "loop.early_stopping.patience=1")
    stopped += ("loop.early_stopping.min_delta=0.01",)
    first = run_training(compose_config(*SMALL_RANDOM, *stopped), tmp_path / "run")
    assert first["stop_reason"] == "early_stopping" and first["epochs"] == 2
    before = (tmp_path / "run" / checkpoint.FILENAME).stat().st_mtime_ns
    again = run_training(
        compose_config(*SMALL_RANDOM, f"loop.resume={tmp_path / 'run'}"), tmp_path / "other"
    )
    assert again == first  # its metrics, as they were: no epoch 3 was trained
    assert (tmp_path / "run" / checkpoint.FILENAME).stat().st_mtime_ns == before
