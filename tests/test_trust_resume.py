"""The resume contract: what a resuming command may change, what it may not, and run folders.

The saved config is the base; the command's explicit overrides apply on top where they do not
change what the checkpoint is (mnistlab.config.changeable.RESUME_MAY_CHANGE), and stop the run
in one line where they would. A new run never replaces another run's folder unless told to.
"""

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import (
    TINY_RUN,
    compose_config,
    metrics_of,
    paste,
    resume_in_process,
    run_cli,
    start_cli,
    when_started,
    write_idx_dataset,
)
from mnistlab import SettingError
from mnistlab.run import checkpoint
from mnistlab.run.training import run_training

SMALL = (
    "device.threads=1",
    "dataset.source.num_samples=600",
    "dataset.loader.batch_size=32",
    "model.hidden=32",
    "model.dropout=0.1",  # draws from the RNG: a resume must restore it exactly
    "loop.log_every_n_batches=5",
)


def outputs_of(run: Path) -> dict[str, bytes]:
    """Every file of a run folder, by relative path, with its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """A finished 1-epoch run; tests copy it before changing it."""
    run = tmp_path_factory.mktemp("one_epoch") / "run"
    run_training(compose_config(*SMALL, "loop.epochs=1"), run)
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    subprocess.run(["cp", "-r", str(run), str(target)], check=True)
    return target


def test_extending_a_finished_run_matches_an_uninterrupted_one_bit_for_bit(tmp_path, one_epoch):
    first_part = metrics_of(one_epoch)
    run = copy_of(one_epoch, tmp_path)
    metrics = resume_in_process(run, "loop.epochs=2")
    whole = run_training(compose_config(*SMALL, "loop.epochs=2"), tmp_path / "whole")

    weights = checkpoint.load(run / checkpoint.FILENAME)["model"]
    reference = checkpoint.load(tmp_path / "whole" / checkpoint.FILENAME)["model"]
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[key], reference[key]) for key in weights)
    for key in ("train_loss", "val_loss", "val_accuracy", "epochs", "steps", "status"):
        assert metrics[key] == whole[key], key
    assert metrics["resumes"] == [{"at_step": first_part["steps"], "overrides": ["loop.epochs=2"]}]
    assert metrics_of(run)["resumes"] == metrics["resumes"]
    # The run's wall time covers both of its parts.
    assert metrics["wall_time_s"] > first_part["wall_time_s"]


def test_a_lower_learning_rate_and_other_allowed_settings_apply(tmp_path, one_epoch):
    run = copy_of(one_epoch, tmp_path)
    changed = ("loop.epochs=2", "optimizer.lr=0.0001", "loop.log_every_n_batches=3", "device=cpu")
    metrics = resume_in_process(run, *changed)
    state = checkpoint.load(run / checkpoint.FILENAME)
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.0001  # not the saved 0.001
    saved = checkpoint.config_of(state)
    assert (saved.optimizer.lr, saved.loop.log_every_n_batches) == (0.0001, 3)
    assert (saved.device.name, saved.model.hidden) == ("cpu", 32)  # the rest is the saved run's
    (record,) = metrics["resumes"]
    assert record["overrides"][:3] == [
        "loop.epochs=2",
        "optimizer.lr=0.0001",
        "loop.log_every_n_batches=3",
    ]
    assert "device.name=cpu" in record["overrides"]


def test_a_gpu_run_continues_on_a_cpu_machine_with_device_cpu(tmp_path, one_epoch):
    run = copy_of(one_epoch, tmp_path)
    state = checkpoint.load(run / checkpoint.FILENAME)
    # What a CUDA run saves: device=cuda, and the GPU's random generator states.
    state["config"] = state["config"].replace("name: auto", "name: cuda")
    state["rng"]["cuda"] = [torch.get_rng_state()]
    assert "name: cuda" in state["config"]
    torch.save(state, run / checkpoint.FILENAME)
    if not torch.cuda.is_available():
        with pytest.raises(SettingError, match="device=cuda but CUDA is not available"):
            resume_in_process(run, "loop.epochs=2")
    metrics = resume_in_process(run, "loop.epochs=2", "device=cpu")
    assert (metrics["status"], metrics["epochs"]) == ("completed", 2)
    assert "device.name=cpu" in metrics["resumes"][0]["overrides"]


def test_a_diverged_run_is_resumed_with_the_lower_rate_its_message_suggests(tmp_path):
    diverging = ("optimizer=sgd", "optimizer.lr=1e3", "loop.log_every_n_batches=1")
    run = tmp_path / "run"
    cfg = compose_config(*SMALL, *diverging, "loop.checkpoint_every_n_steps=1", "loop.epochs=1")
    with pytest.raises(SettingError, match="became nan") as divergence:
        run_training(cfg, run)
    hint = r"continue from it with a lower rate, (.*) optimizer.lr=<lower>"
    (command,) = re.findall(hint, str(divergence.value))
    assert command == f"mnistlab-train 'loop.resume=\"{run}\"'"
    # Here the weights had blown up before the loss did, so it fails again; with the new rate.
    with pytest.raises(SettingError, match=r"became nan with optimizer.lr=0.0001: "):
        resume_in_process(run, "optimizer.lr=0.0001")


REFUSED = [
    ("model.hidden=64", "model.hidden", "saved 32, given 64"),
    ("model=cnn", "model._target_", "saved mnistlab.parts.models.MNISTClassifier"),
    ("dataset=fake_mnist", "dataset.source._target_", "given mnistlab.data.splits.fake_mnist"),
    ("dataset.source.seed=1", "dataset.source.seed", "saved 0, given 1"),
    ("dataset.source.num_samples=900", "dataset.source.num_samples", "saved 600, given 900"),
    ("dataset.loader.batch_size=64", "dataset.loader.batch_size", "saved 32, given 64"),
    ("dataset.loader.shuffle=false", "dataset.loader.shuffle", "saved true, given false"),
    ("optimizer=sgd", "optimizer._target_", "given torch.optim.SGD"),
    ("+optimizer.amsgrad=true", "optimizer.amsgrad", "saved unset, given true"),
    ("loop.seed=3", "loop.seed", "saved 0, given 3"),
    ("experiment=mnist_mlp", "experiment", "single settings only"),
]


@pytest.mark.parametrize(("override", "key", "values"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_change_that_would_change_what_the_checkpoint_is_is_refused(
    tmp_path, one_epoch, override, key, values
):
    run = copy_of(one_epoch, tmp_path)
    before = outputs_of(run)
    with pytest.raises(SettingError) as refusal:
        resume_in_process(run, "loop.epochs=2", override)
    message = str(refusal.value)
    assert message.startswith(key) and values in message and "\n" not in message
    assert outputs_of(run) == before


@pytest.mark.slow  # the real CLI
def test_a_refused_resume_through_the_cli_leaves_the_run_as_it_was(tmp_path, one_epoch):
    run = copy_of(one_epoch, tmp_path)
    (run / "train.log").write_text("the first part's log\n")  # as mnistlab-train leaves it
    before = outputs_of(run)
    time.sleep(2)  # what the run wrote is older than this command
    result = run_cli("mnistlab.cli.train", f"loop.resume={run}", "model.hidden=64", cwd=tmp_path)
    assert result.returncode == 1
    assert "model.hidden cannot change when resuming (saved 32, given 64)" in result.stderr
    assert outputs_of(run) == before  # no .hydra/resumed_<time>/ left either


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path, one_epoch, caplog):
    run = copy_of(one_epoch, tmp_path)
    before = outputs_of(run)
    metrics = resume_in_process(run)
    assert metrics == json.loads(before["metrics.json"])
    assert outputs_of(run) == before
    (line,) = [r.getMessage() for r in caplog.records if r.name.startswith("mnistlab")]
    assert "finished all its 1 epochs already: nothing changed" in line


@pytest.mark.slow  # the real CLI
def test_moved_data_is_found_with_dataset_source_root_on_the_command_line(tmp_path):
    write_idx_dataset(tmp_path / "data", n_train=120, n_test=20)
    idx = ("dataset=idx", "dataset.source.num_val_samples=20", "dataset.loader.batch_size=20")
    run = tmp_path / "run"
    run_training(
        compose_config(
            *idx, f"dataset.source.root={tmp_path / 'data'}", "device.threads=1", "loop.epochs=1"
        ),
        run,
    )
    (tmp_path / "data").rename(tmp_path / "moved")
    # The default composition (dataset=synthetic) has no dataset.source.root: mnistlab-train
    # still takes it, as a setting of the resumed idx run.
    result = run_cli(
        "mnistlab.cli.train",
        f"loop.resume={run}",
        f"dataset.source.root={tmp_path / 'moved'}",
        "loop.epochs=2",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    metrics = metrics_of(run)
    assert (metrics["status"], metrics["epochs"]) == ("completed", 2)
    (record,) = (run / ".hydra").glob("resumed_*/config.yaml")  # the config it continued with
    resumed = OmegaConf.load(record)
    assert (resumed.dataset.source.root, resumed.loop.epochs) == (str(tmp_path / "moved"), 2)
    assert resumed.dataset.source._target_ == "mnistlab.data.mnist.idx"
    assert (
        f"resuming {run} with dataset.source.root={tmp_path / 'moved'}, loop.epochs=2"
        in result.stdout  # the log goes to the terminal's standard output
    )


# --- the resume command printed after an interrupt ---------------------------------------------


@pytest.mark.slow  # the real CLI
def test_the_printed_resume_command_works_when_pasted_for_a_sweep_job_folder(tmp_path):
    run = tmp_path / "sweep" / "4_optimizer.lr=0.01,optimizer=adam"
    process = start_cli(
        "mnistlab.cli.train",
        f"hydra.run.dir='{run}'",
        *SMALL,
        "loop.epochs=200",
        cwd=tmp_path,
        stdout=subprocess.PIPE,  # where the log goes
        stderr=subprocess.STDOUT,
        text=True,
    )
    when_started(run, process, settle=0.5)
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 130
    (command,) = re.findall(r"continue with: (.*)", process.stdout.read())
    assert command.startswith("mnistlab-train ")

    # Pasted into a shell, with one more setting so that it ends one epoch later.
    epochs = checkpoint.load(run / checkpoint.FILENAME)["progress"]["epoch"] + 1
    pasted = paste(f"{command} loop.epochs={epochs}", tmp_path, timeout=120)
    assert pasted.returncode == 0, pasted.stderr
    metrics = metrics_of(run)
    assert (metrics["status"], metrics["epochs"]) == ("completed", epochs)
    assert metrics["resumes"][0]["overrides"] == [f"loop.epochs={epochs}"]


# --- run folders ----------------------------------------------------------------------------


@pytest.mark.slow  # the real CLI
def test_a_new_run_does_not_replace_a_run_unless_told_to_overwrite(tmp_path, one_epoch):
    run = copy_of(one_epoch, tmp_path)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("the first run's record\n")
    before = outputs_of(run)
    result = run_cli("mnistlab.cli.train", f"hydra.run.dir={run}", "dataset=random", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"hydra.run.dir={run} already holds a run: continue it with 'loop.resume=\"{run}\"', "
        "choose another hydra.run.dir, or replace it with loop.overwrite=true"
    ]
    assert outputs_of(run) == before

    again = run_cli(
        "mnistlab.cli.train",
        f"hydra.run.dir={run}",
        *TINY_RUN,
        "loop.overwrite=true",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # the old run's events are gone
    assert metrics_of(run)["steps"] == 3  # dataset=random's


@pytest.mark.slow  # the real CLI
@pytest.mark.parametrize("where", ["file", "below a file"])
def test_a_run_folder_that_is_a_file_is_refused_in_one_line(tmp_path, where):
    file = tmp_path / "notes.txt"
    file.write_text("keep me\n")
    folder = file if where == "file" else file / "run"
    result = run_cli("mnistlab.cli.train", f"hydra.run.dir={folder}", cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"hydra.run.dir={folder} ") and "choose a folder" in line
    assert file.read_text() == "keep me\n"


@pytest.mark.slow  # the real CLI
def test_a_refused_run_leaves_no_new_folder_behind(tmp_path):
    result = run_cli("mnistlab.cli.train", "model.dropout=1.5", cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and "model.dropout" in result.stderr
    assert list(tmp_path.iterdir()) == []  # not even outputs/
