"""Resume a sweep: interrupt it (real signals to its process group), re-run it into its folder.

One uninterrupted sweep (module fixture) is the reference: every job of an interrupted and
resumed sweep must end with its metrics.json (less timings) and final weights, bit for bit.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import TINY_RUN, metrics_of, paste, run_cli, start_cli, summary_rows, wait_for
from mnistlab import names
from mnistlab.config import changeable
from mnistlab.sweep import record as sweeprecord

# 3 jobs: 2 of about 0.5 s (2 epochs of 63 steps, a checkpoint every 10 steps), and one whose
# learning rate is refused (it fails before training, as deterministically as can be).
SWEEP = (
    "optimizer.lr=0.01,0.02,-1",
    "dataset=fake_mnist",
    "dataset.loader.batch_size=16",
    "model.hidden=16",
    "loop.epochs=2",
    "loop.checkpoint_every_n_steps=10",
    "device.threads=1",
)
JOBS = ("0_lr:0.01", "1_lr:0.02", "2_lr:-1")
TIMINGS = (*names.MEASURES, "resumes")  # what a resumed job may change
CONTINUE = re.compile(r"^sweep interrupted by (SIG\w+); continue it with: (.*)$", re.M)
JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")

# On one xdist worker, so that the reference sweep is made once. Every test but one runs real
# CLI sweeps, and is marked slow.
pytestmark = pytest.mark.xdist_group("sweep_resume")


def sweep_cli(cwd: Path, sweep: Path, *args: str) -> subprocess.CompletedProcess:
    """`mnistlab-train -m SWEEP args hydra.sweep.dir=<sweep>`, to its end."""
    return run_cli("mnistlab.cli.train", "-m", *SWEEP, *args, f"hydra.sweep.dir={sweep}", cwd=cwd)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep, uninterrupted."""
    cwd = tmp_path_factory.mktemp("reference")
    result = sweep_cli(cwd, cwd / "sweep")
    assert result.returncode == 1, result.stderr  # job 2 failed, the others completed
    return cwd / "sweep"


def interrupt(
    cwd: Path, args: list[str], when: Callable[[], bool], signum: int, group: bool = True
) -> str:
    """Start `mnistlab-train -m args`, send `signum` to its process group once `when()`
    (`group=False`: to the sweep's process alone, as `kill <pid>` does)."""
    with (cwd / "out.txt").open("w") as out:
        process = start_cli(
            "mnistlab.cli.train",
            "-m",
            *args,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
        )
        wait_for(when, process=process, every=0.01)
        os.killpg(process.pid, signum) if group else os.kill(process.pid, signum)
        code = process.wait(timeout=120)
    output = read(cwd / "out.txt")
    assert code == 128 + signum, output
    return output


def read(path: Path) -> str:
    return path.read_text()


def status(job: Path) -> str | None:
    """The status in a job's metrics.json, None before it has one."""
    return metrics_of(job)["status"] if (job / "metrics.json").exists() else None


def training(job: Path) -> Callable[[], bool]:
    """True once the job has a checkpoint but no metrics: it is training."""
    return lambda: (job / "checkpoint.pt").exists() and not (job / "metrics.json").exists()


def stats(folder: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime_ns) of every file under `folder`: what proves it untouched."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            info = path.stat()
            found[str(path.relative_to(folder))] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return found


def results(job: Path) -> tuple[dict, dict[str, torch.Tensor] | None]:
    """A job's metrics.json less timings, and its final weights (None without a checkpoint)."""
    metrics = metrics_of(job)
    checkpoint = job / "checkpoint.pt"
    weights = torch.load(checkpoint, weights_only=True)["model"] if checkpoint.exists() else None
    return {key: value for key, value in metrics.items() if key not in TIMINGS}, weights


def assert_same_as(reference: Path, sweep: Path) -> None:
    """Every job as in the reference sweep: metrics (less timings), weights; the summary too."""
    assert sorted(path.name for path in sweep.iterdir() if path.is_dir()) == list(JOBS)
    for name in JOBS:
        (metrics, weights), (expected, expected_weights) = (
            results(sweep / name),
            results(reference / name),
        )
        assert metrics == expected, name
        if expected_weights is None:
            assert weights is None, name
        else:
            assert weights.keys() == expected_weights.keys()
            assert all(torch.equal(weights[k], expected_weights[k]) for k in weights), name
    assert summary(sweep) == summary(reference)


def summary(sweep: Path) -> list[dict[str, str]]:
    """summary.csv's rows, less timings and the settings a re-run may change (they change none)."""
    rows = summary_rows(sweep)
    kept = [key for key in rows[0] if key not in TIMINGS and not sweeprecord.may_differ(key)]
    return [{key: row[key] for key in kept} for row in rows]


def progress(output: str) -> dict[str, str]:
    """{job number: what its progress line says it did}."""
    return dict(re.findall(r"^sweep: job (\d) \(\S+\) (\w+(?: \([\w ]+\))?)", output, re.M))


@pytest.mark.slow
def test_a_sweep_interrupted_mid_job_then_between_jobs_ends_as_if_uninterrupted(
    reference: Path, tmp_path: Path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    args = [*SWEEP, f"hydra.sweep.dir={sweep}"]
    output = interrupt(tmp_path, args, training(sweep / JOBS[1]), signal.SIGINT)

    ((name, command),) = CONTINUE.findall(output)  # the last line, ready to paste
    assert name == "SIGINT" and output.rstrip().endswith(command)
    assert command == f"mnistlab-train -m {' '.join(SWEEP)} hydra.sweep.dir={sweep}"
    assert status(sweep / JOBS[1]) == "interrupted"
    assert not (sweep / JOBS[2]).exists()  # the sweep stopped: no further job started
    finished = stats(sweep / JOBS[0])

    # Resumed, with a setting that changes no result, and stopped once job 1 has completed.
    args[SWEEP.index("loop.checkpoint_every_n_steps=10")] = "loop.checkpoint_every_n_steps=7"
    output = interrupt(
        tmp_path, args, lambda: status(sweep / JOBS[1]) == "completed", signal.SIGTERM
    )

    # Job 0 is done, job 1 (interrupted) is not: 1 of 3. Job 1's line: the signal came first.
    assert re.search(
        r"^sweep: job 0 \(lr:0.01\) completed \(reused\), .* \| 1/3 jobs done", output, re.M
    )
    log = (sweep / JOBS[1] / "train.log").read_text()
    assert f"resuming {sweep / JOBS[1]} with loop.checkpoint_every_n_steps=7" in log
    ((name, command),) = CONTINUE.findall(output)
    assert name == "SIGTERM" and not (sweep / JOBS[2]).exists()

    # Continued by the joblib launcher: jobs 0 and 1 reused in its workers, job 2 trained there.
    resumed = paste(f"{command} {' '.join(JOBLIB)}", tmp_path)

    assert resumed.returncode == 1, resumed.stderr  # job 2 fails, as in the reference
    assert_same_as(reference, sweep)
    assert stats(sweep / JOBS[0]) == finished  # job 0 was never trained again
    assert progress(resumed.stdout) == {
        "0": "completed (reused)",
        "1": "completed (reused)",
        "2": "failed",
    }, resumed.stdout + resumed.stderr
    # The resumed job's config went beside its first .hydra/; a reused job's was removed.
    assert len(list((sweep / JOBS[1] / ".hydra").glob("resumed_*/config.yaml"))) == 1
    assert not list((sweep / JOBS[0] / ".hydra").glob("resumed_*"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["^C", "kill"]
)
def test_a_joblib_sweep_interrupted_mid_job_ends_as_if_uninterrupted(
    reference: Path, tmp_path: Path, signum: int, group: bool
) -> None:
    """Ctrl-C reaches every process of the sweep; `kill <pid>` the sweep's, which passes it on."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    args = [*SWEEP, *JOBLIB, f"hydra.sweep.dir={sweep}"]
    output = interrupt(tmp_path, args, training(sweep / JOBS[1]), signum, group)

    ((_, command),) = CONTINUE.findall(output)
    # Each worker's job stopped at a step boundary and saved, or (stopped while it loaded torch
    # or its data, on a busy machine) had not trained at all; none was killed. Job 2 (lr=-1)
    # fails by design wherever it ran: its worker may reach it before the signal.
    assert status(sweep / JOBS[1]) == "interrupted"
    for job in sweep.iterdir():
        if job.is_dir():
            untrained = status(job) is None and not (job / "checkpoint.pt").exists()
            ended = ("interrupted", "completed", *(("failed",) if job.name == JOBS[2] else ()))
            assert untrained or status(job) in ended, job.name

    # Continued by the basic launcher, one job after the other.
    resumed = paste(command.replace(f" {' '.join(JOBLIB)}", ""), tmp_path)

    assert resumed.returncode == 1, resumed.stderr
    assert "Launching 3 jobs locally" in resumed.stdout  # the basic launcher's words
    assert_same_as(reference, sweep)
    assert progress(resumed.stdout)["1"] == "completed (resumed)"


@pytest.mark.slow
def test_a_failed_job_is_reported_again_and_retrained_only_when_asked(
    reference: Path, tmp_path: Path
) -> None:
    sweep = shutil.copytree(reference, tmp_path / "sweep")
    failed = sweep / JOBS[2]
    # A checkpoint in the failed job's folder: a failed job is not resumed from it.
    shutil.copy(sweep / JOBS[0] / "checkpoint.pt", failed / "checkpoint.pt")
    before = {job: stats(sweep / job) for job in JOBS}

    again = sweep_cli(tmp_path, sweep)

    assert again.returncode == 1
    assert (
        f"{JOBS[2]} failed in an earlier run of this sweep (SettingError: optimizer.lr=-1 must be "
        "> 0): not trained again; re-run with sweep.retry_failed=true to train it again"
    ) in again.stderr
    # Nothing touched; the failed job's log says it was reported again.
    assert {job: stats(sweep / job) for job in JOBS[:2]} == {job: before[job] for job in JOBS[:2]}
    assert {key: value for key, value in stats(failed).items() if key != "train.log"} == {
        key: value for key, value in before[JOBS[2]].items() if key != "train.log"
    }
    assert progress(again.stdout) == {
        **{str(n): "completed (reused)" for n in range(2)},
        "2": "failed (not retried)",
    }

    retried = sweep_cli(tmp_path, sweep, "sweep.retry_failed=true")

    assert retried.returncode == 1  # it fails again, from scratch
    assert not (failed / "checkpoint.pt").exists()  # its old outputs went first
    assert stats(failed)["metrics.json"] != before[JOBS[2]]["metrics.json"]
    assert "job 2 (lr:-1) failed: SettingError" in retried.stdout
    assert {job: stats(sweep / job) for job in JOBS[:2]} == {job: before[job] for job in JOBS[:2]}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("changed", "named"),
    [
        (
            ("optimizer.lr=0.01,0.05,-1", *SWEEP[1:]),
            "optimizer.lr: 0.01,0.02,-1 there, 0.01,0.05,-1 here",
        ),
        ((*SWEEP, "loop.seed=1"), "loop.seed: unset there, 1 here"),
        (SWEEP[:3], "model.hidden: 16 there, unset here; loop.epochs: 2 there, unset here"),
    ],
    ids=["other values", "another setting", "a setting left out"],
)
def test_another_sweep_in_the_folder_is_refused_in_one_line(
    reference: Path, tmp_path: Path, changed: tuple[str, ...], named: str
) -> None:
    before = stats(reference)
    args = ("-m", *changed, f"hydra.sweep.dir={reference}")
    result = run_cli("mnistlab.cli.train", *args, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"hydra.sweep.dir={reference} holds another sweep ({named}): run the same sweep to "
        "continue it, choose another hydra.sweep.dir, or replace it with loop.overwrite=true"
    ]
    assert stats(reference) == before  # nothing written, nothing removed
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_grid_refused_before_any_job_leaves_no_folder_and_a_later_batch_keeps_it(
    tmp_path: Path,
) -> None:
    """A typo in the grid stops the sweep before its first job (Hydra checks every config):
    nothing is left in its folder. Refused in a later batch, the jobs that ran stay continuable."""
    sweep = tmp_path / "sweep"
    typo = into_the_folder(sweep, "sgd,adamm")
    assert typo.returncode == 1 and "optimizer=adamm is not an option of optimizer" in typo.stderr
    assert not sweep.exists()
    # A setting refused by mnistlab's own check, also before the first job: in one line.
    epochs = into_the_folder(sweep, "sgd,adam", "loop.epochs=1,0")
    assert epochs.returncode == 1 and epochs.stderr == "loop.epochs=0 must be at least 1\n"
    assert not sweep.exists()
    later = into_the_folder(sweep, "sgd,adamm", "hydra.sweeper.max_batch_size=1")
    assert later.returncode == 1 and "optimizer=adamm is not an option of optimizer" in later.stderr
    assert (sweep / names.SWEEP_RECORD_FILE).exists()
    assert [path.parent.name for path in sweep.glob("*/metrics.json")] == ["0_sgd"]


@pytest.mark.slow
def test_a_corrected_sweep_takes_the_folder_of_one_that_ran_no_job(tmp_path: Path) -> None:
    """Hydra's own sweeper leaves the record of a refused grid: the corrected command into
    that folder runs, not refused as another sweep."""
    sweep = tmp_path / "sweep"
    hydras = f"hydra.sweeper._target_={sweeprecord.BASIC_SWEEPER}"
    typo = into_the_folder(sweep, "sgd,adamm", hydras)
    assert typo.returncode == 1 and "optimizer=adamm is not an option of optimizer" in typo.stderr
    assert (sweep / names.SWEEP_RECORD_FILE).exists()  # recorded before Hydra's check
    fixed = into_the_folder(sweep, "sgd,adam")
    assert fixed.returncode == 0, fixed.stderr
    assert "its sweep ran no job (optimizer: sgd,adamm there, sgd,adam here)" in fixed.stdout
    assert len(list(sweep.glob("*/metrics.json"))) == 2
    assert "sgd,adam\n" in (sweep / names.SWEEP_RECORD_FILE).read_text()


@pytest.mark.slow
def test_overwrite_replaces_the_sweep_only_once_the_grid_passed_hydras_check(
    tmp_path: Path,
) -> None:
    """loop.overwrite=true with a typo in the grid leaves the old sweep as it was."""
    sweep = tmp_path / "sweep"
    assert into_the_folder(sweep, "sgd,adam").returncode == 0
    record = (sweep / names.SWEEP_RECORD_FILE).read_text()
    typo = into_the_folder(sweep, "sgd,adamm", "loop.overwrite=true")
    assert typo.returncode == 1 and "optimizer=adamm is not an option of optimizer" in typo.stderr
    assert sorted(path.parent.name for path in sweep.glob("*/metrics.json")) == ["0_sgd", "1_adam"]
    assert (sweep / names.SWEEP_RECORD_FILE).read_text() == record
    fixed = into_the_folder(sweep, "rmsprop,sgd", "loop.overwrite=true")
    assert fixed.returncode == 0, fixed.stderr
    jobs = sorted(path.parent.name for path in sweep.glob("*/metrics.json"))
    assert jobs == ["0_rmsprop", "1_sgd"]


@pytest.mark.slow
def test_overwrite_never_reaches_through_a_link_or_into_single_runs(tmp_path: Path) -> None:
    """A link in the sweep folder refuses the sweep; a folder of single runs is no sweep."""
    runs = tmp_path / "outputs" / "runs"
    single = run_cli("mnistlab.cli.train", *SMALL, f"hydra.run.dir={runs / 'mine'}", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    kept = sorted(path.name for path in (runs / "mine").iterdir())
    refused = into_the_folder(runs, "sgd,adam", "loop.overwrite=true")
    assert refused.returncode == 1
    assert "holds runs of mnistlab-train without -m (mine), not a sweep" in refused.stderr
    assert sorted(path.name for path in (runs / "mine").iterdir()) == kept
    sweep = tmp_path / "sweep"
    assert into_the_folder(sweep, "sgd").returncode == 0
    (sweep / "1_elsewhere").symlink_to(runs / "mine")
    refused = into_the_folder(sweep, "adam", "loop.overwrite=true")  # nothing is replaced
    assert refused.returncode == 1
    assert f"holds the link {sweep / '1_elsewhere'} -> {runs / 'mine'}" in refused.stderr
    assert sorted(path.name for path in (runs / "mine").iterdir()) == kept


SMALL = (*TINY_RUN, "dataset.source.num_samples=256")


def into_the_folder(sweep: Path, optimizers: str, *more: str) -> subprocess.CompletedProcess:
    """A small sweep over `optimizers` into `sweep`."""
    args = ("-m", f"optimizer={optimizers}", *SMALL, *more, f"hydra.sweep.dir={sweep}")
    return run_cli("mnistlab.cli.train", *args, cwd=sweep.parent)


def no_record(sweep: Path) -> str:
    (sweep / names.SWEEP_RECORD_FILE).unlink()  # as an older mnistlab-train left it
    return "holds a sweep with no sweep.yaml (an older mnistlab-train's)"


def code_in_record(sweep: Path) -> str:
    payload = f"!!python/object/apply:os.system ['touch {sweep}/ran']"
    (sweep / names.SWEEP_RECORD_FILE).write_text(f"overrides: {payload}\n")
    return (
        "its sweep.yaml cannot be read: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'"
    )


def nested_record(sweep: Path) -> str:
    path = sweep / names.SWEEP_RECORD_FILE
    record = path.read_text().replace("swept:\n", "swept:\n- [1, 2]\n")  # not a key's text
    path.write_text(record + "params: {a: &x [1, *x]}\n")  # nor this: an alias loop
    return (
        "its sweep.yaml cannot be read: it uses YAML anchors or aliases (&name, *name), which "
        "we never write"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage", [no_record, code_in_record, nested_record], ids=["no record", "code", "nested"]
)
def test_a_sweep_folder_whose_record_is_missing_or_unsafe_is_refused_in_one_line(
    reference: Path, tmp_path: Path, damage: Callable[[Path], str]
) -> None:
    sweep = shutil.copytree(reference, tmp_path / "sweep")
    reason = damage(sweep)
    before = stats(sweep)

    refused = sweep_cli(tmp_path, sweep)

    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"hydra.sweep.dir={sweep} {reason}: choose another hydra.sweep.dir, or replace it with "
        "loop.overwrite=true"
    ]
    assert stats(sweep) == before
    assert not (sweep / "ran").exists()  # the record was read as data: nothing in it ran


def test_what_a_sweep_re_run_may_change_a_resumed_job_may_change_too() -> None:
    # Else a job interrupted before the change could not continue with it.
    for key in changeable.RERUN_MAY_DIFFER:
        probe = "device.name" if key == "device" else key.replace("*", "name")
        assert changeable.matches(probe, changeable.RESUME_MAY_CHANGE), key


def start_sweep(cwd: Path, sweep: Path, *args: str) -> subprocess.Popen:
    """`mnistlab-train -m args hydra.sweep.dir=<sweep>` in its own process group, running."""
    return start_cli(
        "mnistlab.cli.train",
        "-m",
        *args,
        f"hydra.sweep.dir={sweep}",
        cwd=cwd,
        stdout=(cwd / "out.txt").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


# The same 3 jobs, long enough (50 epochs) to still be running when the test acts.
LONG = tuple(arg for arg in SWEEP if not arg.startswith("loop.epochs=")) + ("loop.epochs=50",)


@pytest.mark.slow
def test_a_second_command_in_a_running_sweeps_folder_is_refused(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    first = start_sweep(tmp_path, sweep, *LONG)
    try:
        wait_for(training(sweep / JOBS[0]), process=first, every=0.01)
        second = run_cli(
            "mnistlab.cli.train", "-m", *LONG, f"hydra.sweep.dir={sweep}", cwd=tmp_path
        )
    finally:
        os.killpg(first.pid, signal.SIGINT)
        assert first.wait(timeout=120) == 130

    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    assert (
        f"hydra.sweep.dir={sweep} is in use by another mnistlab-train: wait for it to end"
        in second.stderr
    )
    # Nothing of the second command reached the job folders: one writer of events, one log.
    assert len(list((sweep / JOBS[0]).glob("events.out.tfevents.*"))) == 1
    assert not list((sweep / JOBS[0] / ".hydra").glob("resumed_*"))


@pytest.mark.slow
def test_a_second_ctrl_c_while_the_first_is_handled_changes_nothing(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    process = start_sweep(tmp_path, sweep, *LONG)
    wait_for(training(sweep / JOBS[0]), process=process, every=0.01)
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)

    assert process.wait(timeout=120) == 130
    output = read(tmp_path / "out.txt")
    assert "Traceback" not in output and "Exception ignored" not in output, output
    assert len(CONTINUE.findall(output)) == 1
    assert status(sweep / JOBS[0]) == "interrupted"


@pytest.mark.slow
def test_a_finished_job_whose_record_lost_its_objective_fails_in_one_line(
    reference: Path, tmp_path: Path
) -> None:
    sweep = shutil.copytree(reference, tmp_path / "sweep")
    metrics = metrics_of(sweep / JOBS[0])
    (sweep / JOBS[0] / "metrics.json").write_text(json.dumps(metrics | {"val_loss": "abc"}))
    before = stats(sweep / JOBS[1])

    again = sweep_cli(tmp_path, sweep)

    assert again.returncode == 1
    assert "Traceback" not in again.stderr
    assert (
        f"{JOBS[0]}: its metrics.json says it finished, but val_loss is 'abc' there, not a "
        "number: re-run with sweep.retry_failed=true to train it again" in again.stderr
    )
    assert status(sweep / JOBS[0]) == "failed"  # and so retried only when asked
    assert stats(sweep / JOBS[1]) == before  # the sound job is reused, untouched
