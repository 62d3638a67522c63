"""A sweep prints one line per finished job: its result, jobs done of the total, time left."""

import re
from pathlib import Path

import pytest

from conftest import metrics_of, only_sweep, run_cli
from mnistlab.report.jobs import Job

LINE = re.compile(
    r"^sweep: job (\d+) \((.*)\) (\w+)(.*?) \| (\d+)/(\d+) jobs done( \| about .+ left)?$"
)


@pytest.mark.slow  # a real CLI sweep, like the other sweep tests
def test_each_finished_job_prints_its_result_and_the_sweeps_progress(tmp_path: Path) -> None:
    # The preset's 3 x 3 grid, narrowed on the command line to 1 x 3 (as the sweeper does);
    # the second job's learning rate is refused, so it fails and the sweep goes on.
    result = run_cli(
        "mnistlab.cli.train",
        "experiment=optimizer_lr_sweep",
        "optimizer=sgd",
        "optimizer.lr=0.05,-1,0.01",
        "dataset=random",
        "loop.epochs=1",
        "device.threads=1",
        cwd=tmp_path,
    )
    assert result.returncode != 0  # a job failed
    lines = [match.groups() for line in result.stdout.splitlines() if (match := LINE.match(line))]
    assert [(job, status, done, total) for job, _, status, _, done, total, _ in lines] == [
        ("0", "completed", "1", "3"),
        ("1", "failed", "2", "3"),
        ("2", "completed", "3", "3"),
    ]
    assert [left is not None for *_, left in lines] == [True, True, False]  # none after the last
    assert lines[1][3] == ": SettingError: optimizer.lr=-1 must be > 0"
    sweep = only_sweep(tmp_path)
    for job, name, _, value, *_ in (lines[0], lines[2]):
        metrics = metrics_of(sweep / f"{job}_{name}")
        chance = ", at chance" if Job(sweep, 0, {}, metrics).at_chance else ""  # tiny runs may be
        assert value == f", val_loss={metrics['val_loss']:.4f}{chance}"  # as the table has it
