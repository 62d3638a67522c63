"""The command line as a user runs it: real subprocesses, from a foreign working directory."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import (
    TINY_RUN,
    imported_modules,
    metrics_of,
    only_run,
    only_sweep,
    run_cli,
    start_cli,
)

pytestmark = pytest.mark.slow  # each test runs the real command line

TINY = ("dataset.source.num_samples=1500", "loop.epochs=1", "loop.log_every_n_batches=5")


def test_single_run_writes_its_own_folder_under_outputs(tmp_path):
    result = run_cli("mnistlab.cli.train", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path)
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / "train.log").read_text().count("epoch 1/1") == 1
    assert list(run.glob("events.out.tfevents.*"))
    assert metrics_of(run)["status"] == "completed"
    assert "device: " in result.stderr + (run / "train.log").read_text()
    # It ends as a sweep does: where it is, and the command that shows it.
    where = run.relative_to(tmp_path)
    assert result.stdout.splitlines()[-2:] == [
        f"run: {where}",
        f"TensorBoard: tensorboard --logdir {where}",
    ]


def test_multirun_of_two_optimizers_by_two_learning_rates_gives_four_jobs(tmp_path):
    result = run_cli(
        "mnistlab.cli.train",
        "-m",
        "optimizer=sgd,adam",
        "optimizer.lr=0.1,0.01",
        *TINY,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    sweep = only_sweep(tmp_path)
    jobs = sorted(
        path for path in sweep.iterdir() if path.is_dir() and not path.name.startswith(".")
    )
    assert len(jobs) == 4
    for job in jobs:
        assert list(job.glob("events.out.tfevents.*")), job
        assert metrics_of(job)["status"] == "completed"
    # The folder names say what changed, so TensorBoard's run names are readable.
    assert [job.name.split("_", 1)[1] for job in jobs] == [
        "sgd+lr:0.1",
        "sgd+lr:0.01",
        "adam+lr:0.1",
        "adam+lr:0.01",
    ]


def test_two_sweeps_started_together_do_not_collide(tmp_path):
    first, second = (
        start_cli(
            "mnistlab.cli.train",
            "-m",
            *TINY_RUN,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    )
    assert first.wait(120) == 0 and second.wait(120) == 0
    assert len(list((tmp_path / "outputs" / "sweeps").iterdir())) == 2


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message shown where CUDA is missing"
)
def test_device_cuda_without_cuda_stops_with_one_line(tmp_path):
    result = run_cli("mnistlab.cli.train", "device=cuda", cwd=tmp_path)
    assert result.returncode != 0
    assert "CUDA is not available here: use device=auto or device=cpu" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("metrics.json"))
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_unknown_option_lists_the_available_ones(tmp_path):
    result = run_cli("mnistlab.cli.train", "optimizer=nope", cwd=tmp_path)
    assert result.returncode != 0
    assert (
        "optimizer=nope is not an option of optimizer: use one of adam, adamw, rmsprop, sgd"
        in result.stderr
    )
    for option in ("adam", "adamw", "rmsprop", "sgd"):
        assert option in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_is_installed_and_shows_help(tmp_path):
    script = Path(sys.executable).parent / "mnistlab-train"
    if not script.exists():
        pytest.fail(f"{script} missing: install the project with pip install -e '.[dev]'")
    result = subprocess.run(
        [script, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "optimizer: adam, adamw, rmsprop, sgd" in result.stdout


@pytest.mark.parametrize(
    ("flag", "shows"),
    [("--help", "optimizer: adam, adamw, rmsprop, sgd"), ("--cfg=job", "flush_denormal: true")],
)
def test_help_and_cfg_answer_without_importing_torch(tmp_path, monkeypatch, flag, shows):
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    result = run_cli("mnistlab.cli.train", flag, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert shows in result.stdout
    modules = imported_modules(result.stderr)
    assert "hydra" in modules  # the report is there, and read correctly
    assert not {"torch", "tensorboard", "numpy"} & modules
    assert not (tmp_path / "outputs").exists()  # nothing built, nothing written


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush denormals")
@pytest.mark.parametrize(("flush", "mode"), [("true", "flushed to zero"), ("false", "kept")])
def test_flush_denormal_reaches_every_cpu_thread_of_a_run(tmp_path, flush, mode):
    # Measured inside the run by a multiply that every worker thread takes part in: the flag
    # must be set before torch starts its threads, which copy it only when they start.
    result = run_cli(
        "mnistlab.cli.train",
        "dataset=fake_mnist",
        "loop.epochs=1",
        "device=cpu",
        "device.threads=2",
        f"device.flush_denormal={flush}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path)
    assert f"; CPU denormal floats {mode}\n" in (run / "train.log").read_text()
