"""Threads that do not collapse (issue 30): a run's share of the cores, less other processes' load.

`choose` is plain arithmetic, tested case by case; `others_busy` reads the real /proc/stat next
to a real busy process; a real default run next to one says so and takes the free core.
"""

import os
import time

import pytest

from conftest import TINY_RUN, busy_core, metrics_of, only_run, run_cli, two_cores
from mnistlab.parts import cores

needs_proc = pytest.mark.skipif(cores.sample() is None, reason="needs Linux's /proc/stat")


@pytest.mark.parametrize(
    ("setting", "default", "parallel", "busy", "count", "reason"),
    [
        (None, 2, 1, 0.1, 2, "torch's default"),
        (None, 2, 1, None, 2, "torch's default"),  # not measured (no /proc/stat)
        (None, 16, 2, 0.0, 8, "16 cores shared by 2 jobs at once"),
        (None, 16, 9, 0.0, 1, "16 cores shared by 9 jobs at once"),
        (None, 1, 1, 0.0, 1, "torch's default"),  # torchrun's ranks: OMP_NUM_THREADS=1
        (3, 16, 1, 0.0, 3, "as set"),
    ],
)
def test_quiet_machines_get_their_share_of_the_cores(
    setting, default, parallel, busy, count, reason
):
    cores_here = 16 if default == 16 else 2
    threads = cores.choose(setting, default, parallel, busy, cores_here)
    assert (threads.count, threads.reason, threads.crowded) == (count, reason, False)


def test_other_processes_load_leaves_the_run_the_free_cores_and_says_how_to_override():
    threads = cores.choose(None, 2, 1, 1.0, 2)
    assert (threads.count, threads.crowded) == (1, True)
    assert threads.reason == (
        "other processes keep 1.0 of 2 cores busy; device.threads=2 to use 2 anyway"
    )
    # Two jobs at once on 16 cores: 8 each; 6 busy elsewhere leave 10, enough; 9 leave 7.
    assert cores.choose(None, 16, 2, 6.2, 16) == cores.Threads(
        8, "16 cores shared by 2 jobs at once"
    )
    threads = cores.choose(None, 16, 2, 9.2, 16)
    assert (threads.count, threads.crowded) == (7, True)
    # Every core busy: one thread still runs.
    assert cores.choose(None, 2, 1, 2.0, 2).count == 1


def test_an_explicit_thread_count_is_kept_with_a_warning_where_cores_are_busy():
    threads = cores.choose(2, 2, 1, 1.0, 2)
    assert (threads.count, threads.crowded) == (2, True)
    assert threads.reason == (
        "as set; other processes keep 1.0 of 2 cores busy: its threads will wait on each "
        "other, device.threads=1 would not wait for them"
    )
    assert cores.choose(1, 2, 1, 1.0, 2) == cores.Threads(1, "as set")


def test_a_slurm_task_gets_its_cpus(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert cores.allowed_cores() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "not a number")
    assert cores.allowed_cores() == len(os.sched_getaffinity(0))


@needs_proc
def test_a_busy_process_is_measured_as_other_processes_load():
    with busy_core(0):
        cores.others_busy()  # the window starts now
        time.sleep(0.5)
        assert cores.others_busy() >= 0.7  # a whole core, less the clock ticks' rounding


@pytest.mark.slow  # a real CLI run next to a real busy process
@needs_proc
@pytest.mark.skipif(len(two_cores()) < 2, reason="needs two cores")
def test_a_default_run_next_to_a_busy_process_takes_the_free_core_and_says_so(tmp_path):
    pair = two_cores()  # the run may use two cores; one is kept busy
    with busy_core(min(pair)):
        result = run_cli(
            "mnistlab.cli.train",
            *TINY_RUN,
            cwd=tmp_path,
            preexec_fn=lambda: os.sched_setaffinity(0, pair),
        )
    assert result.returncode == 0, result.stderr
    metrics = metrics_of(only_run(tmp_path))
    assert metrics["device"].endswith("(1 threads)")
    assert metrics["threads_reason"].startswith("other processes keep ")
    assert metrics["threads_reason"].endswith("; device.threads=2 to use 2 anyway")
    assert "[WARNING] - threads: 1 (other processes keep " in result.stdout + result.stderr
