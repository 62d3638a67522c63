"""The `scheduler` group: each option composes, sets the lr curve it promises, logs it, resumes."""

import math
import re
import signal

import pytest
import torch

from conftest import SMALL_RANDOM, compose_config, metrics_of, start_run, when_started
from mnistlab import SettingError
from mnistlab.config import checks
from mnistlab.parts import schedulers
from mnistlab.run import checkpoint
from mnistlab.run.scalars import read_scalars
from mnistlab.run.training import run_training

LR, TOTAL, PER_EPOCH = 0.01, 20, 5


def lr_curve(*overrides: str) -> list[float]:
    """The lr of each of TOTAL steps under the composed scheduler (before each step)."""
    cfg = compose_config(*overrides)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    scheduler = schedulers.build(cfg.scheduler, optimizer, TOTAL, PER_EPOCH)
    curve = []
    for _ in range(TOTAL):
        curve.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return curve


def test_none_keeps_the_optimizer_lr():
    assert lr_curve(f"optimizer.lr={LR}") == [LR] * TOTAL


def test_onecycle_warms_up_to_the_lr_then_anneals_far_below_it():
    curve = lr_curve("scheduler=onecycle", f"optimizer.lr={LR}", "scheduler.pct_start=0.25")
    peak = curve.index(max(curve))
    assert curve[0] == pytest.approx(LR / 25)
    assert max(curve) == pytest.approx(LR) and peak == round(0.25 * TOTAL) - 1
    assert all(a < b for a, b in zip(curve[: peak + 1], curve[1 : peak + 1], strict=False))
    assert all(a > b for a, b in zip(curve[peak:], curve[peak + 1 :], strict=False))
    assert curve[-1] < LR / 1000


def test_cosine_warms_up_linearly_then_decays_to_its_floor():
    curve = lr_curve("scheduler=cosine", "scheduler.warmup_epochs=1", "scheduler.min_factor=0.1")
    assert curve[:PER_EPOCH] == pytest.approx([LR * (n + 1) / PER_EPOCH for n in range(PER_EPOCH)])
    decay = curve[PER_EPOCH:]
    expected = [
        LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * n / (TOTAL - PER_EPOCH))))
        for n in range(len(decay))
    ]
    assert decay == pytest.approx(expected)


def test_step_multiplies_by_gamma_every_few_epochs():
    curve = lr_curve("scheduler=step", "scheduler.every_epochs=2", "scheduler.gamma=0.5")
    span = 2 * PER_EPOCH
    assert curve == pytest.approx([LR * 0.5 ** (n // span) for n in range(TOTAL)])


@pytest.mark.parametrize(
    ("option", "override", "says"),
    [
        ("onecycle", "scheduler.pct_start=1.5", "scheduler.pct_start=1.5 must be in (0, 1)"),
        ("cosine", "scheduler.warmup_epochs=5", "scheduler.warmup_epochs=5 must be >= 0 and"),
        ("step", "scheduler.gamma=0", "scheduler.gamma=0 must be in (0, 1)"),
        ("step", "scheduler.every_epochs=0", "scheduler.every_epochs=0 must be an integer >= 1"),
        ("onecycle", "scheduler.div_factor=0", "scheduler.div_factor=0 must be > 0"),
        ("cosine", "scheduler.min_factor=1.5", "scheduler.min_factor=1.5 must be in [0, 1]"),
    ],
)
def test_bad_settings_are_refused_before_data_loads(tmp_path, option, override, says):
    cfg = compose_config(f"scheduler={option}", override, "loop.epochs=2", "dataset=mnist")
    cfg.dataset.source.root = str(tmp_path / "nothing")  # loading data would fail differently
    cfg.dataset.source.download = False
    with pytest.raises(SettingError, match="^" + re.escape(says)):
        run_training(cfg, tmp_path / "run")


@pytest.mark.parametrize(
    ("option", "override"),
    [
        ("onecycle", "scheduler.pct_start=1.5"),
        ("step", "scheduler.gamma=2"),
        ("cosine", "scheduler.min_factor=-1"),
    ],
)
def test_scheduler_ranges_are_checked_with_every_components(option, override):
    cfg = compose_config(f"scheduler={option}", override)
    with pytest.raises(SettingError, match=f"^{re.escape(override)} must be in"):
        checks.check(cfg)  # the settings alone: nothing built, not even the scheduler


QUICK = (*SMALL_RANDOM, "loop.epochs=2")


def test_a_run_logs_the_schedule_as_train_lr(tmp_path):
    cfg = compose_config(*QUICK, "scheduler=cosine", f"optimizer.lr={LR}")
    run_training(cfg, tmp_path)
    steps, lrs = read_scalars(tmp_path)["train/lr"]
    assert steps == list(range(1, 17))  # every step: 8 batches x 2 epochs
    # Logged after each step: the lr the next step uses, down to 0 after the last one.
    expected = [LR * 0.5 * (1 + math.cos(math.pi * step / 16)) for step in steps]
    assert lrs == pytest.approx(expected, abs=1e-12)


def test_resume_refuses_what_would_change_a_whole_run_schedule(tmp_path):
    cfg = compose_config(*QUICK, "scheduler=onecycle", "loop.epochs=1")
    run_training(cfg, tmp_path / "run")
    for override, says in [
        ("loop.epochs=3", "loop.epochs cannot change when resuming a run with scheduler=onecycle"),
        ("optimizer.lr=0.1", "optimizer.lr cannot change when resuming a run with scheduler="),
        ("scheduler=cosine", "scheduler._target_ cannot change when resuming"),
    ]:
        resumed = compose_config(*QUICK, override, f"loop.resume={tmp_path / 'run'}")
        with pytest.raises(SettingError, match=says):
            run_training(resumed, tmp_path / "other", overrides=[override])


KILL_RUN = (
    "device.threads=1",  # one thread: no thread-count choice may change a sum's order
    # Noise images, made in milliseconds (the synthetic digits take a second a process): 675
    # steps an epoch, as with the 12000 synthetic digits' 10800 training samples.
    "dataset=fake_mnist",
    "dataset.source.num_samples=10800",
    "dataset.loader.batch_size=16",
    "loop.epochs=2",
    "loop.log_every_n_batches=20",
    "scheduler=onecycle",
)


@pytest.mark.slow
def test_a_killed_onecycle_run_resumes_bit_exactly(tmp_path):
    reference = start_run(tmp_path, tmp_path / "reference", *KILL_RUN)
    killed = start_run(tmp_path, tmp_path / "run", *KILL_RUN)
    when_started(tmp_path / "run")  # the events file, and a little more: the first steps
    killed.send_signal(signal.SIGTERM)
    assert killed.wait(120) == 143, killed.stderr.read()
    saved = checkpoint.load(tmp_path / "run" / checkpoint.FILENAME)
    assert saved["scheduler"]["_step_count"] > 1  # the schedule's place is in the checkpoint
    resumed = start_run(tmp_path, tmp_path / "resumed", f"loop.resume={tmp_path / 'run'}")
    assert resumed.wait(300) == 0, resumed.stderr.read()
    assert reference.wait(300) == 0, reference.stderr.read()
    ours, theirs = (
        checkpoint.load(tmp_path / d / checkpoint.FILENAME) for d in ("run", "reference")
    )
    assert 0 < saved["progress"]["step"] < theirs["progress"]["step"], "killed too late"
    for key, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][key], tensor), key
    assert ours["scheduler"] == theirs["scheduler"]
    assert (
        read_scalars(tmp_path / "run")["train/lr"]
        == read_scalars(tmp_path / "reference")["train/lr"]
    )
    metrics = [metrics_of(tmp_path / d) for d in ("run", "reference")]
    assert metrics[0]["val_loss"] == metrics[1]["val_loss"]
