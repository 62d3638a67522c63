"""Reliability: bad settings fail early and clearly, runs survive signals and resume exactly,
a diverging loss stops cleanly, and checkpoints load safely."""

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from conftest import (
    TINY_RUN,
    assert_same_run,
    compose_config,
    final_state,
    metrics_of,
    only_run,
    resume_in_process,
    run_cli,
    start_run,
    wait_for,
    when_started,
)
from mnistlab import SettingError
from mnistlab.config import checks
from mnistlab.data.splits import batches
from mnistlab.data.synthetic import synthetic_digits
from mnistlab.loop.step import NonFiniteLoss
from mnistlab.run import checkpoint
from mnistlab.run.training import run_training

BAD_COMMAND_LINES = [
    ("optimizer.lr=abc", "optimizer.lr"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.lr=-1", "optimizer.lr"),
    ("optimizer.momentum=-0.5", "optimizer.momentum"),
    ("+optimizer.betas2=1", "optimizer.betas2"),
    ("dataset.loader.batch_size=0", "dataset.loader.batch_size"),
    ("dataset.loader.mode=fast", "dataset.loader.mode"),
    ("dataset.source.val_fraction=1.5", "dataset.source.val_fraction"),
    ("dataset.source.val_fraction=0", "dataset.source.val_fraction"),
    ("dataset.source.num_samples=0", "dataset.source.num_samples"),
    ("loop.epochs=0", "loop.epochs"),
    ("loop.epochs=abc", "loop.epochs"),
    ("loop.epoch=3", "loop.epoch"),
    ("+loop.speed=3", "loop.speed"),
    ("loop.log_every_n_batches=0", "loop.log_every_n_batches"),
    ("loop.grad_clip_norm=0", "loop.grad_clip_norm"),
    ("loop.nan_policy=ignore", "loop.nan_policy"),
    ("loop.checkpoint_every_n_steps=0", "loop.checkpoint_every_n_steps"),
    ("loop.resume=/nonexistent/run", "loop.resume"),
    ("device.name=tpu", "device.name"),
    ("device=tpu", "device"),
    ("model.hidden=abc", "model.hidden"),
    ("model.dropout=1.5", "model.dropout"),
    ("objective=accuracy", "objective"),
    ("+epochs=5", "epochs is not a setting of mnistlab-train"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "key"), BAD_COMMAND_LINES, ids=[o for o, _ in BAD_COMMAND_LINES]
)
def test_bad_command_line_fails_early_and_clearly(tmp_path, override, key):
    result = run_cli("mnistlab.cli.train", override, cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert key in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "data:" not in result.stderr + result.stdout  # stopped before loading data
    assert list(tmp_path.iterdir()) == []  # no run folder is left behind, nor outputs/


# --- kill and resume ------------------------------------------------------------------------

KILL_RUN = (
    # One thread: the math library then has no thread-count choice that could change a sum's
    # order between the processes compared (seen once in CI: a resumed run drifted with two).
    "device.threads=1",
    # Noise images (made in milliseconds; the synthetic digits take a second a process) in
    # epochs of 625 steps, about 0.75 s each on an idle machine: longer than the waits below,
    # so every signal lands mid-run, in the epoch it is named after. Dropout: the restored RNG
    # states must reproduce its masks.
    "dataset=fake_mnist",
    "dataset.source.num_samples=10000",
    "dataset.loader.batch_size=16",
    "model.hidden=512",
    "model.dropout=0.1",
    "loop.epochs=3",
    "loop.log_every_n_batches=20",
)


def epoch_logged(run_dir: Path, epoch: int) -> bool:
    log = run_dir / "train.log"
    return log.exists() and f"epoch {epoch}/" in log.read_text()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, dict, list]:
    """The uninterrupted run every interrupted one must match, bit for bit."""
    cwd = tmp_path_factory.mktemp("reference")
    process = start_run(cwd, cwd / "run", *KILL_RUN)
    assert process.wait(300) == 0, process.stderr.read()
    return final_state(cwd / "run")


def at_epoch_boundary(run_dir: Path) -> None:
    wait_for(lambda: epoch_logged(run_dir, 1), timeout=300)


def mid_second_epoch(run_dir: Path) -> None:
    at_epoch_boundary(run_dir)
    time.sleep(0.5)


KILL_POINTS = [
    ("sigterm-mid-epoch-1", signal.SIGTERM, when_started, 143, ()),
    ("sigterm-at-epoch-boundary", signal.SIGTERM, at_epoch_boundary, 143, ()),
    ("sigint-mid-epoch-2", signal.SIGINT, mid_second_epoch, 130, ()),
    # Checkpointing every step, a hard kill most likely lands while one is being written. The
    # resume checkpoints at epoch ends only (a resume may change that): it does not write a
    # 5 MB checkpoint a thousand times.
    (
        "sigkill-while-checkpointing",
        signal.SIGKILL,
        when_started,
        -9,
        ("loop.checkpoint_every_n_steps=1",),
    ),
]


@pytest.mark.slow
@pytest.mark.xdist_group("kill_and_resume")  # on one worker: the reference run is made once
@pytest.mark.parametrize(
    ("name", "signum", "when", "code", "extra"), KILL_POINTS, ids=[k[0] for k in KILL_POINTS]
)
def test_killed_and_resumed_run_matches_an_uninterrupted_one(
    tmp_path, reference, name, signum, when, code, extra
):
    run_dir = tmp_path / "run"
    process = start_run(tmp_path, run_dir, *KILL_RUN, *extra)
    when(run_dir)
    process.send_signal(signum)
    assert process.wait(120) == code, process.stderr.read()
    if signum != signal.SIGKILL:
        assert metrics_of(run_dir)["status"] == "interrupted"
    interrupted_at = checkpoint.load(run_dir / checkpoint.FILENAME)["progress"]["step"]
    assert 0 < interrupted_at < reference[1]["steps"], "the signal did not land mid-run"

    lighter = ("loop.checkpoint_every_n_steps=null",) if extra else ()
    resumed = start_run(tmp_path, tmp_path / "resume", f"loop.resume={run_dir}", *lighter)
    assert resumed.wait(300) == 0, resumed.stderr.read()
    assert_same_run(final_state(run_dir), reference)


# --- non-finite losses ----------------------------------------------------------------------


def poisoned_digits(num_samples: int, val_fraction: float, seed: int, every: int = 500):
    """Synthetic digits where every `every`-th training image is NaN."""
    splits = synthetic_digits(num_samples, val_fraction, seed)
    splits.train.inputs[::every] = float("nan")
    return splits


POISONED = (
    "dataset.source._target_=test_reliability.poisoned_digits",
    "dataset.source.num_samples=3000",
)


@pytest.mark.slow
def test_nan_loss_stops_the_run_naming_step_and_lr(tmp_path):
    result = run_cli(
        "mnistlab.cli.train",
        "optimizer=sgd",
        "optimizer.lr=1e3",
        "dataset.source.num_samples=3000",
        "loop.log_every_n_batches=5",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "the training loss at steps 6-10 became nan with optimizer.lr=1000" in result.stderr
    metrics = metrics_of(tmp_path / "run")
    assert metrics["status"] == "failed" and "optimizer.lr=1000" in metrics["error"]


@pytest.mark.slow
def test_nan_loss_keeps_the_last_good_checkpoint(tmp_path):
    # One NaN image, somewhere in the first epoch's shuffled order; checkpoints every step.
    cfg = compose_config(
        *POISONED,
        "+dataset.source.every=100000",
        "loop.log_every_n_batches=1",
        "loop.checkpoint_every_n_steps=1",
    )
    with pytest.raises(NonFiniteLoss, match=r"at step \d+ became nan"):
        run_training(cfg, tmp_path)
    bad_step = metrics_of(tmp_path)["step"]
    assert bad_step > 1, "the poisoned image should not be in the very first batch"
    state = checkpoint.load(tmp_path / checkpoint.FILENAME)
    assert state["progress"]["step"] == bad_step - 1  # the last good step, not the bad one
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert metrics_of(tmp_path)["status"] == "failed"


@pytest.mark.slow
def test_skip_policy_drops_bad_batches_and_finishes(tmp_path):
    cfg = compose_config(
        *POISONED, "loop.nan_policy=skip", "loop.epochs=2", "loop.log_every_n_batches=7"
    )
    metrics = run_training(cfg, tmp_path)
    assert metrics["status"] == "completed"
    assert metrics["val_accuracy"] > 0.5
    settings, data = checks.check(cfg), poisoned_digits(3000, 0.1, 0)
    poisoned_batches = sum(
        bool(torch.isnan(inputs).any())
        for epoch in range(2)
        for inputs, _ in batches(data.train, settings.loader, seed=0, epoch=epoch)
    )
    assert poisoned_batches >= 6
    assert (
        checkpoint.load(tmp_path / checkpoint.FILENAME)["progress"]["skipped"] == poisoned_batches
    )


# --- safe loading ---------------------------------------------------------------------------


def finished_run(tmp_path: Path) -> Path:
    run_training(compose_config(*TINY_RUN), tmp_path / "run")
    return tmp_path / "run" / checkpoint.FILENAME


def test_truncated_checkpoint_is_refused_and_nothing_is_overwritten(tmp_path):
    path = finished_run(tmp_path)
    path.write_bytes(path.read_bytes()[:500])
    before = {p.name: p.read_bytes() for p in path.parent.iterdir() if p.is_file()}
    with pytest.raises(SettingError, match="is not a readable mnistlab checkpoint"):
        resume_in_process(path)
    assert {p.name: p.read_bytes() for p in path.parent.iterdir() if p.is_file()} == before


def test_foreign_file_is_refused(tmp_path):
    foreign = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(SettingError, match="is not an mnistlab checkpoint"):
        resume_in_process(foreign)


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "payload": RunsCode(marker)}, evil)
    with pytest.raises(SettingError, match="is not a readable mnistlab checkpoint"):
        resume_in_process(evil)
    assert not marker.exists()
    with open(evil, "rb") as file:  # the file really does run code when unpickled naively
        torch.load(file, weights_only=False)
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["folder", "checkpoint file"])
def test_a_resumed_run_continues_in_its_own_folder(tmp_path, name):
    first = run_cli("mnistlab.cli.train", *TINY_RUN, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run = only_run(tmp_path)
    saved_config = (run / ".hydra" / "config.yaml").read_text()
    target = run if name == "folder" else run / checkpoint.FILENAME

    # A finished run does nothing on resume (test_trust_resume): this one trains on.
    resumed = run_cli("mnistlab.cli.train", f"loop.resume={target}", "loop.epochs=2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert list((tmp_path / "outputs" / "runs").iterdir()) == [run]  # no second folder
    log = (run / "train.log").read_text()
    assert log.index("epoch 1/1") < log.index(f"resuming {run} ")
    assert (run / ".hydra" / "config.yaml").read_text() == saved_config  # the first stays
    (again,) = (run / ".hydra").glob("resumed_*")
    assert f"loop.resume={target}" in (again / "overrides.yaml").read_text()
