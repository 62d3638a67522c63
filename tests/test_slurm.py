"""SLURM for real, through Hydra's submitit launcher: a sweep, a 2-task DDP run, a preempted job.

The `slurm` tests need a live cluster that `sinfo` reaches: in CI, scripts/slurm-local.sh's
one-node cluster (`scripts/slurm-local.sh start` as root, then
`export SLURM_CONF=/tmp/mnistlab-slurm/slurm.conf`). Without one they skip, unless
MNISTLAB_SLURM_REQUIRED=1 (CI sets it) turns that into a failure.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import (
    ONE_CPU,
    TINY_RUN,
    assert_same_run,
    compose_config,
    final_state,
    metrics_of,
    only_sweep,
    run_cli,
    start_cli,
    summary_rows,
    wait_for,
)
from mnistlab import names
from mnistlab.run.training import run_training

# What the README tells users to run on a cluster without GPUs, on one core per job.
SLURM = ("-m", "hydra/launcher=slurm_cpu", *ONE_CPU)
TIMING = names.MEASURES
# Under pytest-xdist (--dist loadgroup) these run on one worker: one job at a time on the node.
pytestmark = pytest.mark.xdist_group("slurm")


@pytest.fixture(scope="module")
def cluster() -> None:
    """Skip (or fail, where MNISTLAB_SLURM_REQUIRED=1) unless a SLURM node answers."""
    reason = None
    if shutil.which("sbatch") is None:
        reason = "sbatch not found: SLURM is not installed (scripts/slurm-local.sh start)"
    else:
        sinfo = subprocess.run(
            ["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=30
        )
        states = sinfo.stdout.split()
        if sinfo.returncode != 0 or not {"idle", "mix", "alloc"} & set(states):
            said = (sinfo.stderr.strip() or " ".join(states) or "nothing").splitlines()[0]
            reason = (
                f"no SLURM node is up (sinfo: {said}); run scripts/slurm-local.sh start "
                "and export SLURM_CONF=/tmp/mnistlab-slurm/slurm.conf"
            )
    if reason and os.environ.get("MNISTLAB_SLURM_REQUIRED") == "1":
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("preset", ["slurm", "slurm_cpu"])
def test_the_slurm_presets_name_mnistlabs_launcher_where_hydra_loads_it(preset):
    from hydra.core.plugins import Plugins

    with initialize_config_dir(config_dir=names.CONF_DIR, version_base="1.3"):
        cfg = compose("train", [f"hydra/launcher={preset}"], return_hydra_config=True)
    target = cfg.hydra.launcher._target_
    plugins = Plugins.instance()  # scans (and runs) the hydra_plugins modules, as a run does
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    assert plugins.is_in_toplevel_plugins_module(target)
    launcher = plugins.class_name_to_class[target]
    assert issubclass(launcher, SlurmLauncher)
    assert launcher.checkpoint is not SlurmLauncher.checkpoint  # ours resumes; Hydra's restarts
    assert cfg.hydra.launcher.max_num_timeout > 0  # requeues after a time limit are allowed
    assert (cfg.hydra.launcher.gpus_per_node is None) == (preset == "slurm_cpu")


def slurm_jobs(sweep: Path) -> dict[str, str]:
    """`scontrol show job` for each SLURM job of the sweep (<id>, or <array id>_<task id>)."""
    return {job: ended(job) for job in job_ids(sweep)}


def job_ids(sweep: Path) -> list[str]:
    """The SLURM jobs of a sweep: submitit's folder for each holds its submitted pickle."""
    folders = (sweep / ".submitit").iterdir()
    return [path.name for path in folders if (path / f"{path.name}_submitted.pkl").exists()]


def ended(job: str) -> str:
    """The job's record once SLURM has finished with it (the results come back a bit earlier)."""
    deadline = time.monotonic() + 60
    while True:
        record = subprocess.run(
            ["scontrol", "show", "job", job], capture_output=True, text=True, check=True
        ).stdout
        if "JobState=COMPLETING" not in record and "JobState=RUNNING" not in record:
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.2)


def contents(folder: Path) -> list[str]:
    """A job folder's files, with the TensorBoard file's host/time/pid part left out."""
    names = (path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    return sorted(re.sub(r"tfevents\..*", "tfevents", name) for name in names)


def untimed_rows(sweep: Path) -> list[dict[str, str]]:
    """The rows of the sweep's summary.csv less their timings."""
    return [{k: v for k, v in row.items() if k not in TIMING} for row in summary_rows(sweep)]


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.usefixtures("cluster")
def test_a_sweep_runs_as_slurm_jobs_into_the_folders_the_basic_launcher_makes(tmp_path):
    grid = (*TINY_RUN, "optimizer.lr=0.01,0.001")
    (tmp_path / "slurm").mkdir()
    (tmp_path / "basic").mkdir()
    result = run_cli("mnistlab.cli.train", *SLURM, *grid, cwd=tmp_path / "slurm")
    assert result.returncode == 0, result.stderr[-3000:]
    basic = run_cli("mnistlab.cli.train", "-m", *ONE_CPU, *grid, cwd=tmp_path / "basic")
    assert basic.returncode == 0, basic.stderr[-3000:]

    sweep, reference = only_sweep(tmp_path / "slurm"), only_sweep(tmp_path / "basic")
    records = slurm_jobs(sweep)
    assert len(records) == 2  # one array task per job of the sweep
    for record in records.values():
        assert "JobState=COMPLETED" in record
        assert f"WorkDir={tmp_path / 'slurm'}" in record
    entries = {path.name for path in sweep.iterdir()} - {".submitit"}
    assert entries == {path.name for path in reference.iterdir()}
    for folder in reference.iterdir():
        if folder.is_dir():
            assert contents(sweep / folder.name) == contents(folder)
            ours, theirs = metrics_of(sweep / folder.name), metrics_of(folder)
            assert ours.keys() == theirs.keys()
            for key in ours.keys() - set(TIMING):
                assert ours[key] == theirs[key], key  # same seed, same thread count: same run
    assert untimed_rows(sweep) == untimed_rows(reference)
    assert "2 jobs (2 completed)" in result.stdout


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.usefixtures("cluster")
def test_two_tasks_of_one_slurm_job_train_as_one_ddp_run(tmp_path):
    run = ("dataset.source.num_samples=6000", "loop.epochs=2", "loop.log_every_n_batches=20")
    result = run_cli(
        "mnistlab.cli.train", *SLURM, "hydra.launcher.tasks_per_node=2", *run, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = only_sweep(tmp_path)
    ((job, record),) = slurm_jobs(sweep).items()
    assert "NumTasks=2" in record and "JobState=COMPLETED" in record
    assert {path.name for path in (sweep / ".submitit" / job).glob("*_result.pkl")} == {
        f"{job}_0_result.pkl",
        f"{job}_1_result.pkl",
    }  # both tasks ran the job to its end

    # The torchrun contract: one folder, one log, one TensorBoard run, one metrics.json.
    (folder,) = (path for path in sweep.iterdir() if (path / ".hydra").is_dir())
    assert len(list(sweep.glob("*/events.out.tfevents.*"))) == 1  # the job's: one for 2 tasks
    assert len(list(sweep.rglob("metrics.json"))) == 1
    log = (folder / "train.log").read_text()
    assert "rank 0 of 2; global batch size 128" in log
    assert "rank 1" not in log  # task 1 writes nothing into the run folder
    metrics = metrics_of(folder)
    assert (metrics["world_size"], metrics["global_batch_size"]) == (2, 128)
    assert metrics["steps"] == 2 * (5400 // 2 // 64 + 1)  # each rank trained half of each epoch

    # The same global batch in one process reaches about the same accuracy.
    single = compose_config(*ONE_CPU, *run, "dataset.loader.batch_size=128")
    alone = run_training(single, tmp_path / "single")
    assert metrics.keys() == alone.keys()
    assert abs(metrics["val_accuracy"] - alone["val_accuracy"]) < 0.05


# Long enough (a few seconds on 2 cores) for a signal to land mid-run.
PREEMPTED = (
    "dataset.source.num_samples=12000",
    "dataset.loader.batch_size=16",
    "model.dropout=0.1",
    "loop.epochs=2",
    "loop.log_every_n_batches=20",
)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.usefixtures("cluster")
def test_a_preempted_job_checkpoints_requeues_and_resumes_bit_for_bit(tmp_path):
    (tmp_path / "slurm").mkdir()
    sweep_process = start_cli(
        "mnistlab.cli.train",
        *SLURM,
        *PREEMPTED,
        cwd=tmp_path / "slurm",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: list((tmp_path / "slurm").glob("outputs/sweeps/*/*/events.out.tfevents.*")))
    sweep = only_sweep(tmp_path / "slurm")
    (job,) = job_ids(sweep)
    time.sleep(0.5)  # into the training loop
    # What SLURM sends signal_delay_s before the time limit; scancel sends it now.
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    output = sweep_process.communicate(timeout=300)[0].decode()
    assert sweep_process.returncode == 0, output[-3000:]

    record = slurm_jobs(sweep)[job]
    assert "Restarts=1" in record and "JobState=COMPLETED" in record
    (folder,) = (path for path in sweep.iterdir() if (path / ".hydra").is_dir())
    log = (folder / "train.log").read_text()
    assert "interrupted by SIGUSR2: checkpoint saved" in log
    resumed_at = int(re.search(r"resumed at epoch \d+, step (\d+)", log).group(1))
    resumed = final_state(folder, tag="train/loss")
    metrics = resumed[1]
    assert 0 < resumed_at < metrics["steps"], "the signal did not land mid-run"
    assert (metrics["status"], metrics["epochs"]) == ("completed", 2)

    # An uninterrupted run of the same config, outside SLURM, ends in the same place exactly.
    run_training(compose_config(*ONE_CPU, *PREEMPTED), tmp_path / "plain")
    assert_same_run(resumed, final_state(tmp_path / "plain", tag="train/loss"))
