"""Optuna sweeps that resume and prune (issue 15): real CLI sweeps, a real Ctrl-C, a real study.

The study is read back from the sweep folder's optuna.db with Optuna itself.
"""

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from hydra.core.hydra_config import HydraConfig

from conftest import TESTS, child_env, metrics_of, run_cli
from mnistlab.parts.models import MNISTClassifier

optuna = pytest.importorskip("optuna")  # the `optuna` extra; CI installs it

MARKER = "MNISTLAB_TEST_CTRL_C"  # the file CtrlCOnJob1 creates once it has pressed Ctrl-C
TINY = ("dataset=random", "loop.epochs=2", "device.threads=1", "hydra/sweeper=optuna_resumable")


class CtrlCOnJob1(MNISTClassifier):
    """The lesson MLP; in sweep job 1 it presses Ctrl-C (SIGINT to its process group) once,
    in epoch 2, after epoch 1's checkpoint: random's epochs are batches of 4, 4 and 2."""

    full_batches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        marker = Path(os.environ[MARKER])
        if self.training and len(x) == 4 and HydraConfig.get().job.num == 1:
            self.full_batches += 1
            if self.full_batches == 3 and not marker.exists():
                marker.touch()
                os.killpg(os.getpgid(0), signal.SIGINT)
        return super().forward(x)


def sweep(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`mnistlab-train -m` in a session of its own, as a terminal runs it (Ctrl-C: the group)."""
    env = child_env(TESTS) | {MARKER: str(cwd / "pressed")}
    return run_cli(
        "mnistlab.cli.train", "-m", *TINY, *args, cwd=cwd, env=env, start_new_session=True
    )


def study_in(folder: Path, name: str = "mnistlab") -> "optuna.Study":
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}")


def jobs_in(folder: Path) -> dict[int, Path]:
    """The job folders by job number."""
    jobs = [path for path in folder.iterdir() if path.is_dir() and path.name[0].isdigit()]
    return {int(path.name.split("_")[0]): path for path in jobs}


def job_lr(job: Path) -> float:
    """The learning rate the sweeper gave the job, from Hydra's record of its overrides."""
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    return float(next(o for o in overrides if o.startswith("optimizer.lr=")).split("=")[1])


def fingerprint(job: Path) -> dict[str, tuple[str, int]]:
    """Every file of a job folder: its content hash and modification time."""
    files = [path for path in sorted(job.rglob("*")) if path.is_file()]
    return {
        str(path.relative_to(job)): (
            hashlib.md5(path.read_bytes()).hexdigest(),
            path.stat().st_mtime_ns,
        )
        for path in files
    }


@pytest.mark.slow
def test_interrupted_optuna_sweep_resumes_to_n_trials_without_repeating_one(tmp_path):
    folder = tmp_path / "sweep"
    command = (
        "hydra.sweeper.n_trials=4",
        "optimizer.lr=tag(log, interval(0.001, 0.1))",
        "model._target_=test_optuna.CtrlCOnJob1",
        f"hydra.sweep.dir={folder}",
    )
    first = sweep(tmp_path, *command)
    assert first.returncode == 130, first.stderr
    states = {trial.number: trial.state for trial in study_in(folder).trials}
    assert states == {0: optuna.trial.TrialState.COMPLETE, 1: optuna.trial.TrialState.RUNNING}
    assert metrics_of(jobs_in(folder)[1])["status"] == "interrupted"
    lr_before = {num: job_lr(job) for num, job in jobs_in(folder).items()}
    job0 = fingerprint(jobs_in(folder)[0])

    resumed = sweep(tmp_path, *command)
    assert resumed.returncode == 0, resumed.stderr
    trials = study_in(folder).trials
    jobs = jobs_in(folder)
    assert [trial.number for trial in trials] == [0, 1, 2, 3] and sorted(jobs) == [0, 1, 2, 3]
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials)
    for trial in trials:  # job number == trial number, with the trial's own parameters
        assert job_lr(jobs[trial.number]) == trial.params["optimizer.lr"]
        metrics = metrics_of(jobs[trial.number])
        assert trial.value == metrics["val_loss"]
        # each epoch's objective reported to the trial (the last one is the trial's value)
        assert trial.intermediate_values == {1: metrics["per_epoch"]["val_loss"][0]}
    assert {num: job_lr(jobs[num]) for num in lr_before} == lr_before  # trials not re-chosen
    assert fingerprint(jobs[0]) == job0  # the completed job was not run again
    assert "resumed at epoch 1" in (jobs[1] / "train.log").read_text()
    assert len({trial.params["optimizer.lr"] for trial in trials}) == 4


@pytest.mark.slow
def test_optuna_pruner_prunes_a_hopeless_trial(tmp_path):
    folder = tmp_path / "sweep"
    result = sweep(
        tmp_path,
        "hydra/sweeper/sampler=grid",  # both values, in any order
        "optimizer.lr=choice(0.01, 100)",  # Adam at lr 100: a loss in the thousands
        "hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner, upper: 5.0}",
        f"hydra.sweep.dir={folder}",
    )
    assert result.returncode == 0, result.stderr
    trials = {trial.params["optimizer.lr"]: trial for trial in study_in(folder).trials}
    assert trials[100].state == optuna.trial.TrialState.PRUNED
    assert trials[0.01].state == optuna.trial.TrialState.COMPLETE
    metrics = metrics_of(jobs_in(folder)[trials[100].number])
    assert metrics["status"] == "pruned" and metrics["pruned_at_epoch"] == 1
    assert "ThresholdPruner" in metrics["prune_reason"]
    assert metrics["epochs"] == 1
    good = metrics_of(jobs_in(folder)[trials[0.01].number])
    assert good["status"] == "completed" and good["epochs"] == 2


@pytest.mark.slow  # the real CLI
def test_a_study_trial_outside_the_search_space_is_refused_before_any_job(tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    study = optuna.create_study(study_name="mnistlab", storage=f"sqlite:///{folder / 'optuna.db'}")
    left_running = study.ask()  # as an interrupt leaves it; its value comes from the database
    left_running.suggest_float("optimizer.lr", 1.0, 10.0)
    result = sweep(tmp_path, "optimizer.lr=interval(0.001, 0.1)", f"hydra.sweep.dir={folder}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]  # after Optuna's "Using an existing study"
    assert "trial 0 of study mnistlab has {'optimizer.lr': " in line
    assert "outside this sweep's search space ['optimizer.lr']" in line
    assert sorted(path.name for path in folder.iterdir()) == [
        ".sweep.json",
        "optuna.db",
        "sweep.yaml",
    ]
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING
