"""mnistlab-evaluate: a run's saved model measured again gives the figures the run recorded;
other data is evaluated beside the run, never over its metrics.json; bad input is one line."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ONE_CPU, imported_modules, metrics_of, run_cli, write_idx_dataset
from mnistlab import names
from mnistlab.run import checkpoint

EVALUATE = "mnistlab.cli.evaluate"


def train_on_idx(tmp_path: Path, name: str, *overrides: str) -> Path:
    """A short real run on a small IDX dataset with a test split (12x10 images, 3 classes)."""
    root = tmp_path / "idx"
    if not root.exists():
        write_idx_dataset(root)
    run = tmp_path / name
    data = ("dataset=idx", f"dataset.source.root={root}", "dataset.source.num_val_samples=20")
    done = run_cli(
        "mnistlab.cli.train",
        f"hydra.run.dir={run}",
        *data,
        "dataset.loader.batch_size=8",
        "loop.epochs=4",
        *ONE_CPU,
        *overrides,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return run


def evaluate(run: Path, *settings: str) -> dict:
    """mnistlab-evaluate as a user runs it; the record it wrote beside the run."""
    before = set((run / names.EVALUATIONS_DIR).glob("*.json"))
    done = run_cli(EVALUATE, str(run), *settings, cwd=run.parent)
    assert done.returncode == 0, done.stderr
    (written,) = set((run / names.EVALUATIONS_DIR).glob("*.json")) - before
    found = json.loads(written.read_text())
    assert f"written: {written}" in done.stdout
    split = found["split"]
    # Printed in full (repr): what a user compares with metrics.json by eye is the exact figure.
    assert f"{split}_loss {found[f'{split}_loss']!r}" in done.stdout
    return found


@pytest.mark.slow
def test_final_checkpoint_gives_the_test_and_val_figures_the_run_recorded(tmp_path):
    run = train_on_idx(tmp_path, "final", "loop.test_on=final")
    recorded = metrics_of(run)
    found = evaluate(run, "checkpoint=final", "split=test")
    # Exactly equal, not close: the same weights, batches, precision, layout and threads.
    assert (found["test_loss"], found["test_accuracy"]) == (
        recorded["test_loss"],
        recorded["test_accuracy"],
    )
    assert found["trained_on_this_data"] is True and found["samples"] == 20
    val = evaluate(run, "checkpoint=final", "split=val")
    keys = ("val_loss", "val_accuracy")
    assert [val[key] for key in keys] == [recorded[key] for key in keys]
    assert metrics_of(run) == recorded  # metrics.json untouched


@pytest.mark.slow
def test_best_checkpoint_gives_the_test_figures_of_a_run_tested_on_best(tmp_path):
    # val_accuracy reaches 100% within a few epochs and cannot improve on it: best.pt stays
    # the model of an earlier step than the final one.
    run = train_on_idx(tmp_path, "best", "loop.test_on=best", "objective=val_accuracy")
    recorded = metrics_of(run)
    assert recorded["tested_on"] == "best" and recorded["best_step"] < recorded["steps"]
    found = evaluate(run, "checkpoint=best")  # split=test is the default
    assert found["checkpoint"] == "best" and found["step"] == recorded["best_step"]
    assert (found["test_loss"], found["test_accuracy"]) == (
        recorded["test_loss"],
        recorded["test_accuracy"],
    )
    final = evaluate(run, "checkpoint=final")
    assert final["step"] == recorded["steps"] and final["test_loss"] != found["test_loss"]


@pytest.mark.slow
def test_other_data_is_evaluated_beside_the_run_and_data_that_does_not_fit_is_refused(tmp_path):
    run = train_on_idx(tmp_path, "run")
    recorded = (run / names.METRICS_FILE).read_bytes()
    other, more_classes = tmp_path / "other", tmp_path / "four"
    write_idx_dataset(other, n_train=40, n_test=30)
    write_idx_dataset(more_classes, classes=4)
    found = evaluate(run, f"dataset.source.root={other}")
    assert found["samples"] == 30 and found["trained_on_this_data"] is False
    assert found["overrides"] == [f"dataset.source.root={other}"]
    assert 0 <= found["test_accuracy"] <= 1
    done = run_cli(EVALUATE, str(run), f"dataset.source.root={more_classes}", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "3 classes" in done.stderr and "4 classes" in done.stderr
    done = run_cli(EVALUATE, str(run), "optimizer.lr=0.5", cwd=tmp_path)
    assert done.returncode == 2 and "drop optimizer.lr" in done.stderr
    assert (run / names.METRICS_FILE).read_bytes() == recorded


@pytest.mark.slow
def test_a_checkpoint_whose_config_calls_other_code_is_refused(tmp_path):
    run = train_on_idx(tmp_path, "run")
    state = checkpoint.load(run / names.BEST_FILE)
    config = yaml.safe_load(state["config"])
    config["model"]["_target_"] = "os.system"
    state["config"] = yaml.safe_dump(config)
    torch.save(state, run / names.BEST_FILE)
    done = run_cli(EVALUATE, str(run), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "model._target_=os.system" in done.stderr and "refused for safety" in done.stderr
    assert not (run / names.EVALUATIONS_DIR).exists()


def test_help_answers_without_importing_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    done = run_cli(EVALUATE, "--help", cwd=tmp_path)
    assert done.returncode == 0 and "checkpoint=final" in done.stdout
    assert not {"torch", "numpy"} & imported_modules(done.stderr)


@pytest.mark.parametrize(
    ("make", "settings", "says"),
    [
        (None, ("split=train",), "split=train is unknown: use split=test or split=val"),
        (None, ("checkpoint=last",), "use checkpoint=best or checkpoint=final"),
        ("empty", (), "is not a run folder"),
        ("metrics", (), "checkpoint=best: {run} has no best.pt"),
    ],
)
def test_bad_input_is_one_line_before_torch_loads(tmp_path, monkeypatch, make, settings, says):
    run = tmp_path / "run"
    run.mkdir()
    if make == "metrics":
        (run / names.METRICS_FILE).write_text("{}")
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    done = run_cli(EVALUATE, str(run), *settings, cwd=tmp_path)
    message = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2 and len(message) == 1, done.stderr
    assert says.format(run=run) in message[0]
    assert "torch" not in imported_modules(done.stderr)
