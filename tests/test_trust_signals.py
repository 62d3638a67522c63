"""Signals at every stage of a run, and under torchrun (issue 12, §4 and §5): real signals.

Before training a signal ends the run at once, in one line, with the shell's exit code; during
training the run stops within a few steps, saved; after training (the final test) it has
nothing left to stop and the run completes. Under torchrun the ranks stop together, and stop
when the torchrun agent dies.
"""

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import (
    ONE_CPU,
    TESTS,
    TINY_RUN,
    TORCHRUN,
    QuietHandler,
    child_env,
    metrics_of,
    only_run,
    serving,
    start_cli,
    wait_for,
    when_started,
)
from mnistlab.data.splits import Splits, TensorPairs, random_dataset
from mnistlab.parts.models import MNISTClassifier

pytestmark = pytest.mark.slow  # every test here signals a real process

# The random dataset's one epoch on one thread; this module's own targets importable.
QUICK = (*TINY_RUN, "device.threads=1")
ENV = child_env(TESTS)


def signals_while_loading(
    signum: int, num_samples: int = 10, num_val_samples: int = 10, seed: int = 0
) -> Splits:
    """The random dataset, but the process gets `signum` while it loads."""
    os.kill(os.getpid(), signum)
    time.sleep(30)  # a long load: the signal must end it, not wait for it
    return random_dataset(num_samples, num_val_samples, seed)


def swallows_a_signal(
    signum: int, num_samples: int = 10, num_val_samples: int = 10, seed: int = 0
) -> Splits:
    """The random dataset, loaded by code that swallows the signal the process gets meanwhile.

    As numpy's and torch's import code did, in CI, to a SIGTERM sent while torch loaded.
    """
    try:
        os.kill(os.getpid(), signum)
        time.sleep(5)
    except BaseException:  # noqa: BLE001, S110  # a library's catch-all, on purpose
        pass
    return random_dataset(num_samples, num_val_samples, seed)


def signals_inside_an_import(
    signum: int, marker: str, num_samples: int = 10, num_val_samples: int = 10, seed: int = 0
) -> Splits:
    """The random dataset, after importing a module that gets `signum` halfway through."""
    module = Path(marker).with_suffix(".py")
    module.write_text(
        "import os, pathlib, time\n"
        f"os.kill(os.getpid(), {signum})\n"
        "time.sleep(0.3)  # the signal's handler runs here, inside the import\n"
        f"pathlib.Path({marker!r}).write_text('imported to the end')\n"
    )
    sys.path.insert(0, str(module.parent))
    importlib.import_module(module.stem)
    return random_dataset(num_samples, num_val_samples, seed)


def with_test_split(num_samples: int = 10, num_val_samples: int = 10, seed: int = 0) -> Splits:
    """The random dataset with a test split of 7 samples (validation has 10)."""
    data = random_dataset(num_samples, num_val_samples, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    test = TensorPairs(torch.randn(7, 3, generator=generator), torch.randint(0, 2, (7,)))
    return Splits(data.train, data.val, data.num_classes, test)


class SignalsDuringTest(MNISTClassifier):
    """The lesson MLP, sending its own process SIGINT when it evaluates the 7 test samples."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and len(x) == 7:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the handler runs here, in the middle of the test evaluation
        return super().forward(x)


def cli(*args: str, cwd: Path) -> subprocess.Popen:
    """mnistlab-train, running, its output (both streams) piped as text."""
    return start_cli(
        "mnistlab.cli.train",
        *args,
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_torch_loads_ends_the_job_in_one_line(tmp_path, signum):
    process = cli(*QUICK, cwd=tmp_path)
    # Hydra opens train.log as the job starts; torch then takes a second or more to import.
    runs = tmp_path / "outputs" / "runs"
    wait_for(lambda: list(runs.glob("*/train.log")), timeout=60, process=process, every=0.005)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, output
    assert f"interrupted before training started ({signal.Signals(signum).name})" in output
    assert "Traceback" not in output
    assert "epoch 1/" not in output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_data_loads_ends_the_run_in_one_line(tmp_path, signum):
    source = "dataset.source._target_=test_trust_signals.signals_while_loading"
    process = cli(*QUICK, source, f"+dataset.source.signum={signum}", cwd=tmp_path)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, output
    assert f"interrupted before training started ({signal.Signals(signum).name})" in output
    assert "Traceback" not in output
    assert sorted(path.name for path in only_run(tmp_path).iterdir()) == [".hydra", "train.log"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_library_code_swallows_still_ends_the_run_before_training(tmp_path, signum):
    source = "dataset.source._target_=test_trust_signals.swallows_a_signal"
    process = cli(*QUICK, source, f"+dataset.source.signum={signum}", cwd=tmp_path)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, output
    name = signal.Signals(signum).name
    assert output.count(f"interrupted before training started ({name})") == 1, output
    assert "Traceback" not in output and "epoch 1/" not in output


def test_a_signal_inside_an_import_waits_for_it_then_ends_the_run(tmp_path):
    marker = tmp_path / "signalled_module"
    source = "dataset.source._target_=test_trust_signals.signals_inside_an_import"
    arguments = (f"+dataset.source.signum={signal.SIGTERM}", f"+dataset.source.marker={marker}")
    process = cli(*QUICK, source, *arguments, cwd=tmp_path)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert marker.read_text() == "imported to the end"  # not cut off halfway through
    assert output.count("interrupted before training started (SIGTERM)") == 1, output
    assert "Traceback" not in output and "epoch 1/" not in output


class StalledMirror(QuietHandler):
    """Promises a file and sends none of it: the download waits."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.flush()
        time.sleep(20)


def test_sigterm_during_a_stalled_download_ends_the_run_and_leaves_no_partial_file(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    with serving(StalledMirror) as mirror:
        process = cli(
            "loop.epochs=1",
            "device.threads=1",
            "dataset=mnist",
            f"dataset.source.root={data}",
            f"dataset.source.mirrors=[{mirror}/]",
            f"hydra.run.dir={run}",
            cwd=tmp_path,
        )
        # The download has begun, and waits.
        wait_for(lambda: list(data.glob(".*.partial")), timeout=60, process=process)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 143, output
    assert "interrupted before training started (SIGTERM)" in output
    assert "Traceback" not in output
    assert not list(data.iterdir())  # no partial download left behind


def test_sigint_during_the_final_test_lets_the_run_complete(tmp_path):
    run = tmp_path / "run"
    process = cli(
        *QUICK,
        "dataset.source._target_=test_trust_signals.with_test_split",
        "model._target_=test_trust_signals.SignalsDuringTest",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    output, _ = process.communicate(timeout=120)
    # One consistent outcome: the test finished, the run says completed, the exit code is 0.
    assert process.returncode == 0, output
    metrics = metrics_of(run)
    assert metrics["status"] == "completed" and "test_loss" in metrics
    assert "SIGINT came after training had finished: the run completed anyway" in output


def test_a_signal_during_a_sweep_jobs_final_test_completes_the_job_and_stops_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    process = start_cli(
        "mnistlab.cli.train",
        "-m",
        *QUICK,
        "loop.seed=0,1",
        "dataset.source._target_=test_trust_signals.with_test_split",
        "model._target_=test_trust_signals.SignalsDuringTest",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, output
    assert "SIGINT came after training had finished: the run completed anyway" in output
    (job,) = sweep.glob("0_*")
    assert metrics_of(job)["status"] == "completed" and "test_loss" in metrics_of(job)
    assert not list(sweep.glob("1_*"))  # the sweep stopped before its next job
    assert "sweep interrupted by SIGINT; continue it with: mnistlab-train -m " in output


# --- under torchrun ---------------------------------------------------------------------------

# 30,000 steps of one sample per rank (seconds even on a fast machine): an epoch long enough
# that stopping at its end (the old behaviour, log_every_n_batches being beyond the epoch)
# cannot pass for stopping soon.
LONG_EPOCH = (
    *ONE_CPU,
    "dataset=fake_mnist",
    "dataset.source.num_samples=60000",
    "dataset.loader.batch_size=1",
    "loop.epochs=1",
    "loop.log_every_n_batches=1000000",
)
STEPS_PER_EPOCH = 60000 // 2


def torchrun(run: Path, cwd: Path) -> subprocess.Popen:
    """Two ranks of mnistlab-train under torchrun, into `run`, running."""
    return start_cli(
        *TORCHRUN,
        "-m",
        "mnistlab.cli.train",
        *LONG_EPOCH,
        f"hydra.run.dir={run}",
        cwd=cwd,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the ranks torchrun started)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Whether `pid` still runs (an exited orphan may stay a zombie until init reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def test_torchrun_ranks_stop_together_within_a_few_steps_of_sigterm(tmp_path):
    run = tmp_path / "run"
    process = torchrun(run, tmp_path)
    when_started(run, process, settle=0.5)  # into the epoch
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    process.wait(60)
    took = time.monotonic() - sent
    metrics = metrics_of(run)
    assert metrics["status"] == "interrupted"
    # Stopped mid-epoch, at a step both ranks agreed on (else one would wait in DDP forever).
    assert 0 < metrics["steps"] < STEPS_PER_EPOCH
    assert took < 15, f"{took:.1f} s from SIGTERM to exit"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks through /proc")
def test_torchrun_ranks_stop_when_the_agent_dies(tmp_path):
    run = tmp_path / "run"
    process = torchrun(run, tmp_path)
    when_started(run, process, settle=0.5)  # into the epoch
    ranks = children(process.pid)
    assert len(ranks) == 2
    process.kill()  # SIGKILL: the agent can pass nothing on; the ranks are on their own
    process.wait(10)
    deadline = time.monotonic() + 30
    try:
        while any(running(pid) for pid in ranks):
            assert time.monotonic() < deadline, "the ranks trained on without their agent"
            time.sleep(0.1)
    finally:
        for pid in filter(running, ranks):
            os.kill(pid, signal.SIGKILL)
    metrics = metrics_of(run)
    assert metrics["status"] == "interrupted"
    assert 0 < metrics["steps"] < STEPS_PER_EPOCH
