"""Run and sweep folders: nothing we write follows a link out of them, one process per folder,
sweeps that could not run are refused before they start, and a full disk is one line.

Real links (symbolic and hard), real concurrent processes, a real file-size limit and /dev/full.
"""

import errno
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import (
    ONE_CPU,
    TINY_RUN,
    TORCHRUN,
    child_env,
    compose_config,
    metrics_of,
    resume_in_process,
    run_cli,
    start_cli,
    wait_for,
    when_started,
)
from mnistlab import SettingError, files, names
from mnistlab.cli import api, logfile
from mnistlab.run import fulldisk, guard
from mnistlab.run.training import run_training
from mnistlab.sweep import grid

TINY = (*TINY_RUN, *ONE_CPU)
TRAIN = "mnistlab.cli.train"
LINK_REFUSED = "never writes through a link"


def train(cwd: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_cli(TRAIN, *args, cwd=cwd, **kwargs)


def one_line(result: subprocess.CompletedProcess, text: str) -> str:
    """The refusal's line: a failed command, no traceback, one line naming `text`."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if text in line]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


# --- links: found, refused, never written through -----------------------------------------


def test_links_among_finds_symbolic_dangling_and_hard_links_below_the_patterns(tmp_path):
    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "victim").write_text("v")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep").symlink_to(tmp_path / "victim")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    os.link(tmp_path / "victim", tmp_path / "hard")
    found = {path.name for path in files.links_among(tmp_path)}
    assert found == {"deep", "dangling", "hard", "victim"}  # victim: it has two names now
    assert {p.name for p in files.links_among(tmp_path, ("sub", "plain.txt"))} == {"deep"}
    assert files.links_among(tmp_path / "missing") == []


def test_a_folder_is_held_by_one_descriptor_at_a_time(tmp_path):
    first = files.hold(tmp_path)
    assert first is not None
    assert files.hold(tmp_path) is None  # flock: another open file, even in this process
    os.close(first)
    again = files.hold(tmp_path)
    assert again is not None
    os.close(again)


def test_claim_refuses_a_link_where_a_run_writes_and_leaves_the_victim(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / names.SCALARS_FILE).symlink_to(victim)
    with pytest.raises(SettingError, match=LINK_REFUSED) as refusal:
        guard.claim(run, "hydra.run.dir", None, False)
    assert "scalars.csv -> " in str(refusal.value)
    assert victim.read_text() == "precious"
    assert files.hold(run) is not None  # the refused claim let go of the folder


def test_claim_refuses_a_folder_another_process_holds(tmp_path):
    holder = files.hold(tmp_path)
    with pytest.raises(SettingError, match="is in use by another mnistlab-train"):
        guard.claim(tmp_path, "hydra.run.dir", None, False)
    os.close(holder)


def test_a_folder_name_longer_than_the_file_system_allows_is_one_line(tmp_path):
    with pytest.raises(SettingError, match="a folder name of 300 bytes is longer"):
        guard.check_folder(tmp_path / ("a" * 300) / "run", "hydra.run.dir")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished tiny run to copy: each test plants its link in a copy."""
    folder = tmp_path_factory.mktemp("base") / "run"
    run_training(compose_config(*TINY), folder)
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text("{}\n")
    (folder / "train.log").write_text("log\n")
    return folder


def plant(run: Path, name: str, victim: Path, kind: str) -> None:
    """Replace `run/name` by a link to `victim` (a file, or a folder for .hydra)."""
    path = run / name
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    if kind == "hard":
        os.link(victim, path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(victim if kind == "symbolic" else victim.parent / "nowhere")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, kind",
    [
        (names.SCALARS_FILE, "symbolic"),
        ("train.log", "symbolic"),
        ("train.log", "hard"),
        (names.METRICS_FILE, "dangling"),
        (".hydra", "symbolic"),
        (names.SCALARS_FILE, "fifo"),  # not a link, but reading it would hang the resume
    ],
)
def test_resume_through_a_planted_link_is_refused_and_writes_nothing(
    tmp_path, finished_run, name, kind
):
    run = tmp_path / "sym"
    shutil.copytree(finished_run, run)
    victim = tmp_path / ("outside" if name == ".hydra" else "victim")
    victim.mkdir() if name == ".hydra" else victim.write_text("precious\n")
    plant(run, name, victim, kind)
    before = sorted(p.name for p in victim.iterdir()) if victim.is_dir() else victim.read_text()

    result = train(tmp_path, f"loop.resume={run}", "loop.epochs=2")

    line = one_line(result, f"{run}/{name}")
    assert line.startswith(f"loop.resume={run} holds ")
    after = sorted(p.name for p in victim.iterdir()) if victim.is_dir() else victim.read_text()
    assert after == before
    assert metrics_of(finished_run)["status"] == "completed"


@pytest.mark.slow
def test_a_new_run_into_a_folder_with_a_link_is_refused_in_one_line(tmp_path, finished_run):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / names.SCALARS_FILE).symlink_to(victim)
    result = train(tmp_path, *TINY, f"hydra.run.dir={run}")
    assert one_line(result, LINK_REFUSED).startswith(f"hydra.run.dir={run} holds the link")
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in run.iterdir()) == [names.SCALARS_FILE]


@pytest.mark.slow
def test_overwrite_with_a_hydra_folder_linked_outside_is_refused(tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    plant(run, ".hydra", outside, "symbolic")
    result = train(tmp_path, *TINY, f"hydra.run.dir={run}", "loop.overwrite=true")
    one_line(result, LINK_REFUSED)
    assert [p.name for p in outside.iterdir()] == ["keep.txt"]
    assert (run / names.CHECKPOINT_FILE).exists()  # nothing was replaced either


@pytest.mark.slow
@pytest.mark.parametrize("more", [(), ("loop.overwrite=true",), ("sweep.retry_failed=true",)])
def test_a_sweep_whose_job_folder_is_a_link_is_refused_before_any_job(tmp_path, more):
    other = tmp_path / "other"
    run_training(compose_config(*TINY), other)
    names.write_metrics(other, {"status": names.FAILED, "error": "crafted"})
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "0_lr:0.1").symlink_to(other)
    before = {p.name: p.stat().st_mtime_ns for p in other.iterdir()}

    grid_args = ("-m", "optimizer.lr=0.1,0.01", *TINY, f"hydra.sweep.dir={sweep}", *more)
    result = train(tmp_path, *grid_args)

    line = one_line(result, LINK_REFUSED)
    assert line.startswith(f"hydra.sweep.dir={sweep} holds the link {sweep}/0_lr:0.1 -> ")
    assert {p.name: p.stat().st_mtime_ns for p in other.iterdir()} == before
    assert sorted(p.name for p in sweep.iterdir()) == ["0_lr:0.1"]


def test_a_resume_drops_damaged_rows_of_scalars_csv_and_goes_on(tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    scalars = run / names.SCALARS_FILE
    scalars.write_bytes(scalars.read_bytes() + b"\xff\xfe,train/loss,1\nabc,train/loss,2\n1,x\n")
    metrics = resume_in_process(run, "loop.epochs=2")
    assert metrics["status"] == "completed"
    text = scalars.read_text()
    assert "abc" not in text and "\ufffd" not in text and text.startswith("step,tag,value\n")
    assert "2,train/batch_loss," in text or "3,train/batch_loss," in text


# --- one process per run folder ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("resume", [False, True])
def test_a_second_command_in_a_run_folder_in_use_is_refused(tmp_path, finished_run, resume):
    run = tmp_path / "run"
    long = ("dataset.source.num_samples=20000", "loop.epochs=50")
    if resume:
        shutil.copytree(finished_run, run)
        args = (f"loop.resume={run}", "loop.epochs=400")
    else:
        args = (*TINY, *long, f"hydra.run.dir={run}")
    first = start_cli(TRAIN, *args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Into its training: its own event file is there (a resume's beside the first run's).
        wait_for(lambda: len(list(run.glob("events.out.tfevents.*"))) == 1 + resume, process=first)
        second = train(tmp_path, *args)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    key = "loop.resume" if resume else "hydra.run.dir"
    line = one_line(second, "is in use by another mnistlab-train")
    assert line.startswith(f"{key}={run} is in use")
    assert len(list(run.glob("events.out.tfevents.*"))) == 1 + resume  # the second made none


def test_api_train_refuses_a_folder_that_holds_another_run(tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = (run / names.METRICS_FILE).read_bytes()
    with pytest.raises(SettingError, match=r"^out_dir=.* already holds a run"):
        api.train([*TINY, "optimizer=sgd"], out_dir=run)
    assert (run / names.METRICS_FILE).read_bytes() == before
    result = api.train([*TINY, "optimizer=sgd", "loop.overwrite=true"], out_dir=run)
    assert result.metrics["status"] == "completed"


# --- sweeps that could not run are refused before they start -------------------------------


def test_a_range_is_counted_without_being_listed():
    parser = OverridesParser.create()
    started = time.perf_counter()
    overrides = ["a=range(0,1000000000000)", "b=1,2,3", "c=range(0,1,0.25)", "b=4,5", "d=7"]
    counts = grid.counts(parser.parse_overrides(overrides))
    assert counts == {"a": 10**12, "b": 2, "c": 4, "d": 1}
    assert time.perf_counter() - started < 1


@pytest.mark.slow
def test_a_grid_above_sweep_max_jobs_is_refused_at_once_naming_the_count(tmp_path):
    sweep = tmp_path / "sweep"
    started = time.monotonic()
    huge = train(tmp_path, "-m", *TINY, "optimizer.lr=range(1,1000001)", f"hydra.sweep.dir={sweep}")
    assert time.monotonic() - started < 30  # before: no output in 180 s
    line = one_line(huge, "more than sweep.max_jobs=1000")
    assert "1,000,000 jobs (1,000,000 optimizer.lr)" in line
    assert "sweep.max_jobs=1000000" in line
    small = ("-m", *TINY, "optimizer=sgd,adam", "optimizer.lr=0.1,0.2", f"hydra.sweep.dir={sweep}")
    refused = train(tmp_path, *small, "sweep.max_jobs=3")
    assert "4 jobs (2 optimizer x 2 optimizer.lr)" in one_line(refused, "sweep.max_jobs=3")
    assert not sweep.exists()
    allowed = train(tmp_path, *small[:-1], "optimizer.lr=0.1", small[-1], "sweep.max_jobs=2")
    assert allowed.returncode == 0, allowed.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_sweep_on_a_device_this_machine_lacks_is_refused_before_any_job(tmp_path):
    args = ("-m", *TINY_RUN, "optimizer.lr=0.1,0.2", "device=cuda")
    result = train(tmp_path, *args)  # into outputs/sweeps/<time>, made for it
    assert one_line(result, "device=cuda but CUDA is not available here").startswith("device=")
    assert not (tmp_path / "outputs").exists()  # nor the folders made for it


@pytest.mark.slow
@pytest.mark.parametrize("without", ["cluster", "commands"])
def test_a_slurm_sweep_without_a_cluster_is_refused_in_one_line(tmp_path, without):
    env = child_env()
    if without == "cluster" and not shutil.which("sbatch"):  # CI installs them (slurm-local.sh)
        pytest.skip("needs SLURM's commands on PATH, with no cluster to answer them")
    if without == "cluster":
        (tmp_path / "slurm.conf").write_text("# no cluster here\n")
        env["SLURM_CONF"] = str(tmp_path / "slurm.conf")
    else:
        env["PATH"] = str(Path(os.__file__).parent)  # no sinfo, no sbatch
    sweep = tmp_path / "sweep"
    args = ("-m", "hydra/launcher=slurm", *TINY_RUN, "optimizer.lr=0.1,0.2")
    result = train(tmp_path, *args, f"hydra.sweep.dir={sweep}", env=env)
    expected = "no SLURM cluster answers here" if without == "cluster" else "not on PATH"
    assert one_line(result, expected).startswith("hydra/launcher=slurm")
    assert not sweep.exists()


# --- a full disk, wherever the run writes ----------------------------------------------------


def test_a_log_file_that_cannot_be_written_says_so_once(capsys):
    handler = logging.FileHandler("/dev/full")  # every write: ENOSPC
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        logfile.one_line_on_failure()
        for _ in range(3):
            logging.getLogger("mnistlab.test").warning("a line")
    finally:
        root.removeHandler(handler)
    err = capsys.readouterr().err
    assert err.count("/dev/full cannot be written (No space left on device)") == 1
    assert "Logging error" not in err and "Traceback" not in err
    assert handler not in root.handlers


def test_a_write_that_finds_no_room_ends_the_run_in_one_line(tmp_path):
    full = open("/dev/full", "w")  # noqa: SIM115  # closed below, after the failed flush
    with pytest.raises(fulldisk.DiskFull) as stopped, fulldisk.one_line(tmp_path):
        full.write("x" * 10_000)
        full.flush()
    with suppress(OSError):
        full.close()
    assert str(stopped.value).startswith(f"could not write the run's files in {tmp_path}")
    assert "start the run again (it has no checkpoint yet)" in str(stopped.value)
    assert metrics_of(tmp_path)["status"] == "failed"
    with pytest.raises(OSError) as other, fulldisk.one_line(tmp_path):
        raise OSError(errno.EACCES, "Permission denied")  # not for want of room: as it was
    assert other.value.errno == errno.EACCES


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A real file system (a small tmpfs) filled to the last byte before the test writes."""
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    with suppress(OSError), open(tmp_path / "filler", "wb", buffering=0) as filler:
        while True:
            filler.write(b"x" * 4096)
    yield tmp_path
    subprocess.run(["umount", str(tmp_path)], check=True)


@pytest.mark.slow
def test_a_run_on_a_full_disk_says_so_in_one_line_per_file(full_disk):
    run = full_disk / "run"
    # Hydra's own .hydra/ files are left out: their writes are Hydra's (one line from
    # mnistlab.cli.arguments); this test is about the run's own.
    args = (*TINY, f"hydra.run.dir={run}", "hydra.output_subdir=null")
    result = train(full_disk, *args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr
    assert result.stderr.count("train.log cannot be written (No space left on device)") == 1
    line = one_line(result, "could not write the run's files in")
    assert f"in {run} (No space left on device; 0 bytes free there)" in line
    assert line.endswith("start the run again (it has no checkpoint yet)")


@pytest.mark.slow
def test_hydra_writing_its_files_on_a_full_disk_is_one_line(full_disk):
    result = train(full_disk, *TINY, f"hydra.run.dir={full_disk / 'run'}")
    line = one_line(result, "could not write the run's files")
    assert line.endswith("No space left on device: free some space and start again")


# --- a distributed run whose other rank died --------------------------------------------


@pytest.mark.slow
def test_a_torchrun_rank_killed_leaves_a_failed_metrics_json(tmp_path):
    run = tmp_path / "run"
    args = ("dataset=random", "dataset.source.num_samples=20000", "loop.epochs=50", *ONE_CPU)
    command = (*TORCHRUN, "-m", TRAIN, *args, f"hydra.run.dir={run}")
    process = start_cli(
        *command,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        when_started(run, process, settle=1.0)
        found = subprocess.run(
            ["pgrep", "-P", str(process.pid), "-f", TRAIN], capture_output=True, text=True
        )
        ranks = [int(pid) for pid in found.stdout.split() if int(pid) != process.pid]
        assert len(ranks) == 2, found
        os.kill(max(ranks), signal.SIGKILL)  # rank 1: started last
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    metrics = metrics_of(run)
    assert metrics["status"] == "failed"
    assert metrics["error"].startswith("RankLost: another rank of this 2-process run ended")
