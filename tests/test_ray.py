"""Sweeps on a real Ray cluster: both nodes, Ctrl-C, a node lost mid-job, pruning across nodes.

The `ray` tests need Ray (`pip install -e ".[ray]"`) and scripts/ray-local.sh's two-node
cluster on this machine (`scripts/ray-local.sh start`: a head node and a second node, one CPU
each, state in /tmp/mnistlab-ray or $MNISTLAB_RAY_DIR). Without them they skip, unless
MNISTLAB_RAY_REQUIRED=1 (CI sets it) turns that into a failure. The node-loss test stops the
second node and starts it again.
"""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import (
    ONE_CPU,
    ROOT,
    TINY_RUN,
    assert_same_run,
    compose_config,
    final_state,
    metrics_of,
    only_sweep,
    paste,
    run_cli,
    start_cli,
    summary_rows,
    wait_for,
    write_idx_dataset,
)
from mnistlab import names
from mnistlab.run.training import run_training
from mnistlab.sweep import ray as ray_sweep

RAY_DIR = Path(os.environ.get("MNISTLAB_RAY_DIR", "/tmp/mnistlab-ray"))
SCRIPT = ROOT / "scripts" / "ray-local.sh"
# One job on each node at a time (each node has one CPU): Ray's SPREAD puts them on both.
SPREAD = "+hydra.launcher.ray.remote.scheduling_strategy=SPREAD"
# What differs between the two launchers' runs: timings, and why each has its one thread
# (the basic launcher's runs are told device.threads=1, so their summary lists it).
TIMING = (*names.MEASURES, "threads_reason", "device.threads")
NODE_LINE = re.compile(r"ray: job (\d+) on node (\w+) ")
# Under pytest-xdist (--dist loadgroup) these run on one worker: one sweep at a time.
pytestmark = pytest.mark.xdist_group("ray")

NODES = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
alive = [node for node in ray.nodes() if node["Alive"]]
print(json.dumps({name: node["NodeID"] for node in alive for name in node["Resources"]
                  if name.startswith("node_")}))
"""


def cluster_nodes(address: str) -> dict[str, str]:
    """The live nodes of the local cluster, by the resource naming each: node_a, node_b."""
    try:
        answer = subprocess.run(
            [sys.executable, "-c", NODES, address], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:  # ray.init waits on a head that does not answer
        return {}
    if answer.returncode != 0:
        return {}
    return json.loads(answer.stdout.strip().splitlines()[-1])


def skip_or_fail(reason: str) -> None:
    """Skip for `reason`; fail where MNISTLAB_RAY_REQUIRED=1 (CI) says Ray must be there."""
    if os.environ.get("MNISTLAB_RAY_REQUIRED") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def installed() -> None:
    if importlib.util.find_spec("ray") is None:
        skip_or_fail("Ray is not installed: pip install -e '.[ray]'")


@pytest.fixture(scope="module")
def cluster(installed) -> Iterator[str]:
    """The local cluster's address, where it has both nodes; skip (or fail) without them.
    Its token (scripts/ray-local.sh) is in the environment of every sweep started meanwhile."""
    if not (RAY_DIR / "address").is_file():
        skip_or_fail(f"no local Ray cluster ({RAY_DIR}/address): {SCRIPT} start")
    address = (RAY_DIR / "address").read_text().strip()
    unreachable = ray_sweep.check_reachable(address)  # at once, where ray.init would wait
    if unreachable:
        skip_or_fail(f"the local Ray cluster is gone ({unreachable}): {SCRIPT} start")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_MODE", "token")
        env.setenv("RAY_AUTH_TOKEN_PATH", str(RAY_DIR / "auth_token"))
        nodes = cluster_nodes(address)
        if set(nodes) != {"node_a", "node_b"}:
            why = f"the Ray cluster at {address} has not both nodes ({nodes}): {SCRIPT} start"
            skip_or_fail(why)
        yield address


def on_ray(address: str) -> tuple[str, ...]:
    """`mnistlab-train -m` arguments for a sweep on the cluster at `address`."""
    return ("-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}")


def nodes_of(sweep: Path) -> dict[int, str]:
    """Job number -> the Ray node its train.log says it ran on (the last, for a resumed job)."""
    found = {}
    for log in sweep.glob("*/train.log"):
        for num, node in NODE_LINE.findall(log.read_text()):
            found[int(num)] = node
    return found


def job_folder(sweep: Path, num: int) -> Path:
    (folder,) = sweep.glob(f"{num}_*")
    return folder


def contents(folder: Path) -> list[str]:
    """A job folder's files, with the TensorBoard file's host/time/pid part left out."""
    files = (path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    return sorted(re.sub(r"tfevents\..*", "tfevents", name) for name in files)


def entries(sweep: Path) -> set[str]:
    """What a sweep folder holds, with TensorBoard files' host/time/pid part left out."""
    return {re.sub(r"tfevents\..*", "tfevents", path.name) for path in sweep.iterdir()}


def untimed(row: dict) -> dict:
    return {key: value for key, value in row.items() if key not in TIMING}


@pytest.mark.parametrize("preset", ["ray", "ray_cluster"])
def test_the_ray_presets_name_mnistlabs_launcher_where_hydra_loads_it(preset):
    from hydra.core.plugins import Plugins

    overrides = [f"hydra/launcher={preset}"]
    with initialize_config_dir(config_dir=names.CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides, return_hydra_config=True)
    target = cfg.hydra.launcher._target_
    plugins = Plugins.instance()  # scans (and runs) the hydra_plugins modules, as a run does
    assert target == names.RAY_LAUNCHER and plugins.is_in_toplevel_plugins_module(target)
    assert plugins.class_name_to_class[target].__module__ == "hydra_plugins.mnistlab_ray"
    remote = cfg.hydra.launcher.ray.remote
    assert (remote.num_cpus, remote.num_gpus, remote.max_retries) == (1, 0, 0)
    # ray_cluster must be given the address; ray finds this machine's cluster (or starts one).
    assert OmegaConf.is_missing(cfg.hydra.launcher.ray.init, "address") == (preset != "ray")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ((), "hydra/launcher=ray_cluster needs the cluster's address: add "),
        (
            ("hydra.launcher.ray.init.address=127.0.0.1:1",),
            "hydra.launcher.ray.init.address: nothing answers at 127.0.0.1:1 (",
        ),
        (
            ("hydra.launcher.ray.remote.num_cpus=-1",),
            "hydra.launcher.ray.remote={'num_cpus': -1, ",
        ),
    ],
)
def test_a_ray_sweep_without_a_cluster_or_with_a_bad_option_is_refused_in_one_line(
    tmp_path, settings, said
):
    result = run_cli(
        "mnistlab.cli.train", "-m", "hydra/launcher=ray_cluster", *settings, *TINY_RUN,
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith(said)]
    assert "hydra.launcher.ray" in line and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()  # refused before the sweep's folder was made


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_runs_its_jobs_on_both_nodes_into_the_basic_launchers_folders(tmp_path, cluster):
    address = cluster
    grid = (*TINY_RUN, "device=cpu", "optimizer.lr=0.01,0.001,0.1,0.2")
    (tmp_path / "ray").mkdir()
    (tmp_path / "basic").mkdir()
    # No device.threads: each job's share is the num_cpus (1) Ray gave it, not this machine's.
    result = run_cli("mnistlab.cli.train", *on_ray(address), SPREAD, *grid, cwd=tmp_path / "ray")
    assert result.returncode == 0, result.stderr[-3000:]
    basic = run_cli("mnistlab.cli.train", "-m", *grid, "device.threads=1", cwd=tmp_path / "basic")
    assert basic.returncode == 0, basic.stderr[-3000:]

    sweep, reference = only_sweep(tmp_path / "ray"), only_sweep(tmp_path / "basic")
    ran_on = nodes_of(sweep)
    print("job -> node:", ran_on)
    assert set(ran_on) == {0, 1, 2, 3}
    assert len(set(ran_on.values())) == 2  # both nodes ran jobs
    assert entries(sweep) == entries(reference)
    for folder in (path for path in reference.iterdir() if path.is_dir()):
        assert contents(sweep / folder.name) == contents(folder)
        ours, theirs = metrics_of(sweep / folder.name), metrics_of(folder)
        assert ours.keys() == theirs.keys()
        assert untimed(ours) == untimed(theirs)  # same seed, same thread count: same run
        assert "threads: 1 (torch's default)" in (sweep / folder.name / "train.log").read_text()
    assert [untimed(row) for row in summary_rows(sweep)] == [
        untimed(row) for row in summary_rows(reference)
    ]
    assert "4/4 jobs done" in result.stdout
    assert "4 jobs (4 completed)" in result.stdout


# Long enough (about 10 s a job on one core) for a signal, or a lost node, to land mid-run in
# both jobs, though the second node's job may start seconds after the first on a busy machine:
# random data (built at once, where digits took 5-10 s under load), 3,000 steps an epoch.
LONG = (
    *ONE_CPU,
    "dataset=random",
    "dataset.source.num_samples=6000",
    "dataset.loader.batch_size=2",
    "model.dropout=0.1",
    "loop.epochs=3",
    "loop.log_every_n_batches=20",
)
LRS = ("0.01", "0.001")


def started(sweep_parent: Path, jobs: int) -> bool:
    """Whether `jobs` jobs of the one sweep under `sweep_parent` are into their training."""
    return len(list(sweep_parent.glob(f"outputs/sweeps/*/*/{names.EVENTS_PATTERN}"))) >= jobs


def assert_as_never_stopped(sweep: Path, tmp_path: Path) -> None:
    """Each job of `sweep` ends as an uninterrupted run of its config ends, bit for bit."""
    for num, lr in enumerate(LRS):
        folder = job_folder(sweep, num)
        reference = tmp_path / f"plain_{num}"
        run_training(compose_config(*LONG, f"optimizer.lr={lr}"), reference)
        ours = final_state(folder, tag="train/loss")
        assert (ours[1]["status"], ours[1]["epochs"]) == ("completed", 3)
        assert_same_run(ours, final_state(reference, tag="train/loss"))


@pytest.mark.ray
@pytest.mark.slow
def test_ctrl_c_on_the_sweep_stops_every_job_with_a_checkpoint_and_the_rerun_ends_bit_exact(
    tmp_path, cluster
):
    address = cluster
    sweep_process = start_cli(
        "mnistlab.cli.train",
        *on_ray(address),
        SPREAD,
        *LONG,
        f"optimizer.lr={','.join(LRS)}",
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(lambda: started(tmp_path, 2), timeout=180, process=sweep_process)
    time.sleep(0.2)  # into the training loop
    sweep = only_sweep(tmp_path)
    sweep_process.send_signal(signal.SIGINT)  # what Ctrl-C sends the sweep
    output = sweep_process.communicate(timeout=300)[0]
    assert sweep_process.returncode == 130, output[-3000:]
    assert len(set(nodes_of(sweep).values())) == 2  # a job stopped on each node
    for num in range(2):
        folder = job_folder(sweep, num)
        assert metrics_of(folder)["status"] == "interrupted", output[-3000:]
        assert (folder / names.CHECKPOINT_FILE).is_file()
    (command,) = re.findall(r"sweep interrupted by SIGINT; continue it with: (.*)", output)
    assert f"hydra.sweep.dir={sweep}" in command

    again = paste(command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 jobs (2 completed)" in again.stdout
    for num in range(2):
        log = (job_folder(sweep, num) / "train.log").read_text()
        step = int(re.search(r"resumed at epoch \d+, step (\d+)", log).group(1))
        assert 0 < step < metrics_of(job_folder(sweep, num))["steps"], "not stopped mid-run"
    assert_as_never_stopped(sweep, tmp_path)


def node_b_raylet() -> int:
    """The PID of node b's raylet: the process a crash of that node takes first."""
    node = int((RAY_DIR / "worker.pid").read_text())
    children = Path(f"/proc/{node}/task/{node}/children").read_text().split()
    (raylet,) = (pid for pid in children if Path(f"/proc/{pid}/comm").read_text() == "raylet\n")
    return int(raylet)


def checkpointed_on(cwd: Path, node: str) -> Path | None:
    """The folder of the sweep's job that runs on `node`, once it has saved a checkpoint."""
    sweeps = list((cwd / "outputs" / "sweeps").glob("*"))
    ran_on = nodes_of(sweeps[0]) if sweeps else {}
    folders = [job_folder(sweeps[0], num) for num, on in ran_on.items() if on == node]
    return next((f for f in folders if (f / names.CHECKPOINT_FILE).is_file()), None)


@pytest.mark.ray
@pytest.mark.slow
def test_a_job_whose_node_dies_is_reported_in_one_line_and_the_rerun_continues_it(
    tmp_path, cluster
):
    address = cluster
    nodes = cluster_nodes(address)  # as they are now: this test starts node b again
    checkpointed = (*LONG, "loop.checkpoint_every_n_steps=100")
    args = (*on_ray(address), SPREAD, *checkpointed, f"optimizer.lr={','.join(LRS)}")
    sweep_process = start_cli(
        "mnistlab.cli.train",
        *args,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: checkpointed_on(tmp_path, nodes["node_b"]), process=sweep_process)
        lost = checkpointed_on(tmp_path, nodes["node_b"])
        os.kill(node_b_raylet(), signal.SIGKILL)  # node b crashes mid-job
        output = sweep_process.communicate(timeout=300)[0]
    finally:
        started_again = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True)
    assert started_again.returncode == 0, started_again.stderr.decode()[-2000:]
    assert sweep_process.returncode == 1, output[-3000:]
    sweep = only_sweep(tmp_path)
    num = int(lost.name.split("_")[0])
    name = lost.name.split("_", 1)[1]
    (line,) = re.findall(rf"sweep: job {num} \({re.escape(name)}\) lost: .*", output)
    assert "node" in line  # Ray's reason: the node the job ran on died
    other = job_folder(sweep, 1 - num)
    assert metrics_of(other)["status"] == "completed"  # the other node's job went on
    (command,) = set(re.findall(r"continue the sweep with: (.*)", output))

    again = paste(command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    # "completed, at chance (reused)": random data is learnt no better than chance.
    done = re.escape(f"job {1 - num} ({other.name.split('_', 1)[1]}) completed")
    assert re.search(rf"{done}[^|]*\(reused\)", again.stdout)
    assert re.search(rf"{re.escape(f'job {num} ({name}) completed')}[^|]*\(resumed\)", again.stdout)
    log = (lost / "train.log").read_text()
    assert re.search(r"resumed at epoch \d+, step [1-9]\d*", log)  # from its checkpoint
    assert_as_never_stopped(sweep, tmp_path)


@pytest.mark.ray
@pytest.mark.slow
def test_a_job_is_pruned_by_the_median_of_jobs_that_completed_on_the_other_node(tmp_path, cluster):
    address = cluster
    root = tmp_path / "idx"
    write_idx_dataset(root, n_train=12000, n_test=30, classes=3)
    data = (
        *ONE_CPU,
        "dataset=idx",
        f"dataset.source.root={root}",
        "dataset.source.num_val_samples=300",
        "dataset.loader.batch_size=10",
        "loop.epochs=4",
        "sweep.prune.grace_epochs=2",
    )
    # Jobs 0 and 1 learn and run at once, one on each node; job 2 learns far too slowly and
    # starts once one of them has ended. Its first check is after its third epoch (about 1 s
    # each): by then the other has completed too, unless the two started seconds apart.
    lrs = "optimizer.lr=0.01,0.012,0.000011"
    result = run_cli(
        "mnistlab.cli.train", *on_ray(address), SPREAD, *data, lrs, "sweep.prune.median=true",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = only_sweep(tmp_path)
    ran_on = nodes_of(sweep)
    print("job -> node:", ran_on)
    assert ran_on[0] != ran_on[1]  # on both nodes at once
    jobs = {num: metrics_of(job_folder(sweep, num)) for num in range(3)}
    assert [jobs[num]["status"] for num in range(3)] == ["completed", "completed", "pruned"]
    assert jobs[2]["pruned_at_epoch"] == 3
    assert "is worse than the median" in jobs[2]["prune_reason"]
    assert "of 2 completed jobs" in jobs[2]["prune_reason"]  # one of them from the other node
    assert "job 2 (lr:1.1e-05) pruned after epoch 3" in result.stdout
