"""Nothing is half-written: atomic outputs, a full disk, stale temporaries, damaged sweep
folders, damaged checkpoints, and benchmark results that survive a stop mid-way.

A full disk is real here: a file-size limit (RLIMIT_FSIZE, any user) makes writes fail with
EFBIG, and where this user may mount one, a small tmpfs fails them with ENOSPC.
"""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import (
    ONE_CPU,
    TINY_RUN,
    child_env,
    compose_config,
    metrics_of,
    run_cli,
    start_cli,
    summary_rows,
    wait_for,
)
from mnistlab import SettingError
from mnistlab.benchmark import job
from mnistlab.cli import summarize
from mnistlab.files import size_text
from mnistlab.loop.progress import Progress
from mnistlab.run import checkpoint, fulldisk
from mnistlab.run.training import run_training

TINY = (*TINY_RUN, *ONE_CPU)


def no_signal_on_big_files() -> None:
    """In the child: a write past RLIMIT_FSIZE fails with EFBIG instead of killing it."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def python(code: str, limit: int | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python; with `limit`, no file it writes may grow past that size."""

    def setup() -> None:
        no_signal_on_big_files()
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=setup,
    )


# --- metrics.json and the other outputs are written atomically ------------------------------


@pytest.mark.slow  # a child process
def test_metrics_json_that_does_not_fit_leaves_the_old_one_whole(tmp_path: Path) -> None:
    old = {"status": "completed", "val_loss": 0.5}
    (tmp_path / "metrics.json").write_text(json.dumps(old))
    code = (
        "from pathlib import Path; from mnistlab.names import write_metrics; "
        f"write_metrics(Path({str(tmp_path)!r}), {{'status': 'completed', 'note': 'x' * 5000}})"
    )
    result = python(code, limit=1000)
    assert "File too large" in result.stderr  # the write really failed
    assert metrics_of(tmp_path) == old  # not a 0-byte file
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.json"]


# --- a full disk while checkpointing ---------------------------------------------------------


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Inside the block no file this process writes may grow past `limit` bytes (EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def save(path: Path, model: torch.nn.Module) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    progress = Progress.on(torch.device("cpu"))
    checkpoint.save(path, OmegaConf.create({"a": 1}), model, optimizer, None, progress)


def save_twice(path: Path, limit: bool) -> tuple[str, int]:
    """Save a checkpoint, change the weights, save again: the second save's error and size."""
    model = torch.nn.Linear(200, 100)  # an ~81 KB checkpoint
    save(path, model)
    size = path.stat().st_size
    with torch.no_grad():
        model.weight.fill_(7.0)
    limited = file_size_limit(size // 2) if limit else nullcontext()
    with pytest.raises(fulldisk.DiskFull) as error, limited:
        save(path, model)
    return str(error.value), size


def assert_disk_full_handled(folder: Path, message: str, size: int) -> None:
    """One line naming the folder and the room needed; no temporary; the old checkpoint kept."""
    assert "\n" not in message and str(folder) in message and " free there, " in message
    assert f"needs {size_text(size)} free" in message
    assert "previous checkpoint.pt is kept" in message
    assert sorted(path.name for path in folder.iterdir()) == ["checkpoint.pt"]
    state = checkpoint.load(folder / "checkpoint.pt")
    assert not (state["model"]["weight"] == 7.0).all()  # the first save, whole


def test_checkpoint_past_the_file_size_limit_keeps_the_previous_one(tmp_path: Path) -> None:
    message, size = save_twice(tmp_path / "checkpoint.pt", limit=True)
    assert "File too large" in message
    assert_disk_full_handled(tmp_path, message, size)


@pytest.fixture
def small_tmpfs() -> Iterator[Path]:
    """A real 120 KiB file system: room for one small checkpoint, not for two."""
    mount_point = Path(tempfile.mkdtemp(prefix="mnistlab-tmpfs-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=120k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the EFBIG test runs")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)
    mount_point.rmdir()


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(small_tmpfs: Path) -> None:
    # The first ~81 KB save fits in 120 KiB; the second's temporary file, beside it, does not.
    message, size = save_twice(small_tmpfs / "checkpoint.pt", limit=False)
    assert "No space left on device" in message
    assert_disk_full_handled(small_tmpfs, message, size)


@pytest.mark.slow
def test_a_run_whose_disk_fills_stops_in_one_line_and_says_failed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = start_cli(
        "mnistlab.cli.train",
        *TINY,
        "dataset.source.num_samples=4000",
        "loop.checkpoint_every_n_steps=1",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=no_signal_on_big_files,
    )
    saved = run_dir / "checkpoint.pt"
    wait_for(saved.exists, process=process)
    size = saved.stat().st_size
    # From now on no file of the run may grow past half a checkpoint: the next save fails.
    resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (size // 2, size // 2))
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 1
    assert "Traceback" not in stderr
    line = next(line for line in stderr.splitlines() if "could not save the checkpoint" in line)
    assert str(run_dir) in line and " free there, " in line
    assert not list(run_dir.glob(".checkpoint.pt.*"))
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "failed" and "could not save the checkpoint" in metrics["error"]
    assert checkpoint.load(saved)["format"] == checkpoint.FORMAT  # the previous one, whole


# --- stale temporary checkpoints ---------------------------------------------------------------


@pytest.mark.slow  # a child process
def test_resume_removes_temporaries_of_killed_processes_only(tmp_path: Path) -> None:
    run_training(compose_config(*TINY), tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its process id now belongs to no process: it was "killed mid-write"
    stale = tmp_path / f".checkpoint.pt.{gone.pid}.partial"
    live = tmp_path / f".checkpoint.pt.{os.getpid()}.partial"  # a process still writing
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")

    # Resuming the finished run may train nothing more (or be refused once the cleanup is done).
    with suppress(SettingError):
        run_training(compose_config(*TINY, f"loop.resume={tmp_path}"), tmp_path)

    assert not stale.exists()
    assert live.exists()


# --- damaged checkpoints ----------------------------------------------------------------------


def foreign_files(folder: Path) -> dict[str, Path]:
    """Files that are not mnistlab checkpoints, each damaged or foreign in its own way."""
    torch.save({"weights": torch.zeros(3)}, folder / "good.pt")
    whole = (folder / "good.pt").read_bytes()
    files = {
        "empty": b"",
        "truncated": whole[: len(whole) // 2],
        "cut at the end": whole[:-10],
        "text": b"hello, I am not a checkpoint\n",
    }
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    torch.save({"format": "someone-else/1"}, folder / "foreign")
    return {name: folder / name for name in [*files, "foreign"]}


def test_damaged_or_foreign_checkpoints_are_one_line_each(tmp_path: Path) -> None:
    for name, path in foreign_files(tmp_path).items():
        with pytest.raises(SettingError) as error:
            checkpoint.load(path)
        message = str(error.value)
        assert re.search(f"{path} is not (a readable|an) mnistlab checkpoint", message), name
        assert "\n" not in message, name


class Evil:
    """Pickles as a call to os.system: what a crafted checkpoint would hold."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_that_calls_code_is_refused_for_safety(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": checkpoint.FORMAT, "model": Evil()}, path)
    with pytest.raises(SettingError) as error:
        checkpoint.load(path)
    message = str(error.value)
    assert "refused for safety" in message and "system" in message
    assert "weights_only" not in message and "\n" not in message


@pytest.mark.slow
def test_resume_from_a_zero_byte_checkpoint_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
    result = run_cli("mnistlab.cli.train", f"loop.resume={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "is not a readable mnistlab checkpoint: the file is empty (0 bytes)" in result.stderr


# --- sweep summaries survive a damaged job folder ---------------------------------------------

SWEEP = ("-m", "optimizer.lr=0.1,0.01", *TINY)


def damage_bad_yaml(folder: Path) -> None:
    (folder / ".hydra" / "hydra.yaml").write_text("hydra: {job: [unclosed\n")


def damage_truncated_metrics(folder: Path) -> None:
    raw = (folder / "metrics.json").read_bytes()
    (folder / "metrics.json").write_bytes(raw[: len(raw) // 2])


def damage_empty_metrics(folder: Path) -> None:
    (folder / "metrics.json").write_bytes(b"")


def damage_no_hydra_record(folder: Path) -> None:
    shutil.rmtree(folder / ".hydra")


DAMAGES = {
    "bad YAML": (damage_bad_yaml, "unreadable: .hydra/hydra.yaml: ParserError"),
    "truncated metrics.json": (damage_truncated_metrics, "unreadable: metrics.json: JSONDecode"),
    "0-byte metrics.json": (damage_empty_metrics, "unreadable: metrics.json: JSONDecodeError"),
    "missing .hydra/": (damage_no_hydra_record, "unreadable: .hydra/hydra.yaml: FileNotFound"),
}


@pytest.fixture(scope="module")
def sweep_with_a_damaged_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real 2-job sweep into a folder that already holds a damaged job folder (`7_junk`)."""
    cwd = tmp_path_factory.mktemp("sweep")
    sweep = cwd / "sweep"
    (sweep / "7_junk" / ".hydra").mkdir(parents=True)
    (sweep / "7_junk" / ".hydra" / "hydra.yaml").write_text("hydra: [not: valid: yaml\n")
    result = run_cli("mnistlab.cli.train", *SWEEP, f"hydra.sweep.dir={sweep}", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return sweep, result.stdout


def rows_by_folder(sweep: Path) -> dict[str, dict[str, str]]:
    """The rows of the sweep's summary.csv by job folder."""
    return {row["folder"]: row for row in summary_rows(sweep)}


@pytest.mark.slow  # the sweep
def test_sweep_exit_hook_lists_a_damaged_folder_and_ranks_the_rest(
    sweep_with_a_damaged_folder: tuple[Path, str],
) -> None:
    sweep, stdout = sweep_with_a_damaged_folder
    rows = rows_by_folder(sweep)
    assert rows["7_junk"]["status"] == "unreadable"
    assert rows["7_junk"]["error"].startswith("unreadable: ")
    good = [row for name, row in rows.items() if name != "7_junk"]
    assert [row["status"] for row in good] == ["completed", "completed"]
    assert (sweep / "summary.md").read_text().strip() in stdout


@pytest.mark.slow  # the sweep
@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_summarize_survives_any_one_damaged_job_folder(
    sweep_with_a_damaged_folder: tuple[Path, str], tmp_path: Path, damage: str, capsys
) -> None:

    sweep = shutil.copytree(sweep_with_a_damaged_folder[0], tmp_path / "sweep")
    shutil.rmtree(sweep / "7_junk")
    (sweep / "summary.csv").unlink()
    damaged, intact = sorted(path for path in sweep.iterdir() if path.is_dir())
    make_damage, reason = DAMAGES[damage]
    make_damage(damaged)

    summarize.main([str(sweep)])

    rows = rows_by_folder(sweep)
    assert rows[damaged.name]["status"] == "unreadable"
    assert rows[damaged.name]["error"].startswith(reason)
    assert rows[intact.name]["status"] == "completed"
    printed = capsys.readouterr().out
    assert "unreadable" in printed and (sweep / "summary.md").read_text().strip() in printed


def read_only_copy(sweep: Path) -> Path:
    """A copy of `sweep` that every user may read and nobody but root may write."""
    # pytest's tmp folders are private to their owner: this one is open to `nobody`.
    base = Path(tempfile.mkdtemp(prefix="mnistlab-ro-"))
    copy = shutil.copytree(sweep, base / "sweep")
    shutil.rmtree(copy / "7_junk")
    (copy / "summary.csv").unlink()
    for path in [base, *copy.rglob("*"), copy]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    return copy


@pytest.mark.slow  # the sweep, and a child process
def test_a_read_only_sweep_folder_still_gets_its_table_printed(
    sweep_with_a_damaged_folder: tuple[Path, str],
) -> None:
    sweep = read_only_copy(sweep_with_a_damaged_folder[0])
    command = [sys.executable, "-m", "mnistlab.cli.summarize", str(sweep)]
    if os.geteuid() == 0:  # root writes anywhere: run as `nobody`, for whom it is read-only
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a folder read-only")
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    try:
        result = subprocess.run(
            command, env=child_env(), capture_output=True, text=True, timeout=120
        )
    finally:
        for path in [sweep.parent, sweep, *sweep.rglob("*")]:
            path.chmod(0o755)
        shutil.rmtree(sweep.parent)
    assert result.returncode == 0, result.stderr
    assert "summary.csv/summary.md not written" in result.stderr
    assert "| rank |" in result.stdout and "completed" in result.stdout
    assert not (sweep / "summary.csv").exists()


# --- the matmul benchmark ------------------------------------------------------------------------


def test_matmul_refuses_sizes_that_do_not_fit_before_allocating(tmp_path: Path) -> None:
    cfg = compose_config(
        "device=cpu",
        "benchmark.sizes=[16,3000000]",  # 3e6 x 3e6 float32: 36 TB a matrix
        "benchmark.min_run_time=0.01",
        config_name="benchmark",
    )
    started = time.perf_counter()
    with pytest.raises(SettingError, match=r"benchmark\.sizes: 3000000×3000000 matrices need"):
        job.run(cfg, tmp_path)
    assert time.perf_counter() - started < 5  # refused up front, not after measuring 16
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_matmul_stopped_at_the_third_size_keeps_the_first_two(tmp_path: Path) -> None:
    process = start_cli(
        "mnistlab.benchmark",
        *ONE_CPU,
        "benchmark.sizes=[8,16,32]",
        "benchmark.min_run_time=1.5",  # each size takes 1.5 s: time to stop the third
        f"hydra.run.dir={tmp_path / 'bench'}",
        cwd=tmp_path,
        stderr=subprocess.PIPE,
    )
    results = tmp_path / "bench" / "results.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if results.exists() and len(json.loads(results.read_text())["rows"]) == 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)

    saved = json.loads(results.read_text())
    assert [row["size"] for row in saved["rows"]] == [8, 16]
    assert saved["finished"] is False
    csv_lines = (tmp_path / "bench" / "results.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in csv_lines[1:]] == ["8", "16"]
