"""Sweeps on a Ray cluster: each job one Ray task, in the folders the basic launcher makes.

conf/hydra/launcher/ray*.yaml name `hydra_plugins.mnistlab_ray.RayLauncher`; the work is here.
The sweep's process (Ray's driver) joins the cluster (`hydra.launcher.ray.init`), sends each
job as a task with `hydra.launcher.ray.remote`'s options (num_cpus, num_gpus, ...) and gathers
the results in job order. A task runs its job as Hydra's launchers do (`run_job`), from the
folder the sweep started in, which every node must see at the same path (a shared file system):
the sweep's context, the job folders and the other jobs' results (pruning, a re-run) are read
from there, as on SLURM. Each job's train.log says which node ran it (`OnNode`).
- Threads: Ray sets OMP_NUM_THREADS to the task's num_cpus (where the node's environment has
  none) before the job loads torch, so torch's default, which device.threads=null keeps where
  the cores allow (mnistlab.parts.cores), is the job's share. A sweep's tasks all ask alike, so
  a worker process Ray reuses for the next job has the same count.
- Ctrl-C / SIGTERM: the sweep notes it (mnistlab.sweep.interrupt) and cancels every task:
  `ray.cancel` gives a running job SIGINT, on which it stops at a step boundary with a
  checkpoint (interrupt.JobInterrupted comes back); a waiting one never starts. The sweep then
  exits 130 / 143 with the command that continues it, as with the other launchers.
- A task lost with its node or its worker process: the job is reported in one line (LostJob)
  with that command; its folder keeps its last checkpoint, which the re-run resumes.
Ray's own retries of a lost task are off in the presets (max_retries: 0): the re-run decides.
Kept free of torch; Ray itself loads only when a Ray sweep starts.
"""

import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from hydra.errors import CompactHydraException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from mnistlab import SettingError
from mnistlab.names import RAY_LAUNCHER
from mnistlab.sweep import interrupt

log = logging.getLogger(__name__)

WAIT_S = 1.0  # seconds between looks at the tasks: a signal is handled between two
ASK_TIMEOUT = 10  # seconds for the head node's port to answer before the cluster is taken as gone
INSTALL = "pip install 'mnistlab[ray]'"


class LostJob(CompactHydraException):
    """A job whose Ray task ended without it: its node or its worker process was lost."""


class NotShared(CompactHydraException):
    """A node that does not see the folder the sweep started in."""


def first_line(error: BaseException) -> str:
    """An error's message, its first line only (Ray's carry their tracebacks)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def check_cluster(config: DictConfig) -> None:
    """A Ray sweep: its task options and its cluster, checked (and joined) before it starts;
    refused in one line, before the sweep's folder is made, where either is wrong."""
    if str(OmegaConf.select(config, "hydra.launcher._target_")) != RAY_LAUNCHER:
        return
    remote_task(config.hydra.launcher.ray.remote)
    connect(config.hydra.launcher.ray.init)


def connect(init: DictConfig) -> None:
    """Join the cluster `hydra.launcher.ray.init` names; refused in one line where none answers."""
    if OmegaConf.is_missing(init, "address"):
        raise SettingError(
            "hydra/launcher=ray_cluster needs the cluster's address: add "
            "hydra.launcher.ray.init.address=<head node>:6379 (`ray status` on the head "
            "prints it), or use hydra/launcher=ray for the cluster this machine is part of"
        )
    import ray

    if ray.is_initialized():
        return
    settings = OmegaConf.to_container(init, resolve=True)
    fix = (
        "start one (`ray start --head`; here: scripts/ray-local.sh start) and give its "
        "address as hydra.launcher.ray.init.address=<head node>:6379"
    )
    unreachable = check_reachable(str(settings.get("address") or ""))
    if unreachable:
        raise SettingError(f"hydra.launcher.ray.init.address: {unreachable}: {fix}")
    try:
        ray.init(**settings)
    except (ConnectionError, ValueError, TypeError, RuntimeError, ray.exceptions.RayError) as error:
        raise SettingError(
            f"hydra.launcher.ray.init={settings}: no Ray cluster joined ({first_line(error)}): "
            f"{fix} (a cluster with token authentication, as scripts/ray-local.sh's, also needs "
            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<its token file> exported)"
        ) from None


def check_reachable(address: str) -> str | None:
    """Why nothing answers at a `<host>:<port>` address (None: something does, or the address
    is Ray's to find: empty, `auto`, `local`). ray.init itself would wait without end."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host, int(port)), timeout=ASK_TIMEOUT).close()
    except OSError as error:
        return f"nothing answers at {address} ({error.strerror or error})"
    return None


def remote_task(options: DictConfig) -> Any:
    """`run_on_node` as a Ray remote function with `hydra.launcher.ray.remote`'s options."""
    try:
        import ray
    except ImportError:
        raise SettingError(f"hydra/launcher=ray needs Ray, not installed here: {INSTALL}") from None

    settings = OmegaConf.to_container(options, resolve=True)
    try:
        return ray.remote(**settings)(run_on_node)
    except (ValueError, TypeError) as error:
        raise SettingError(
            f"hydra.launcher.ray.remote={settings}: {first_line(error)}: correct or remove "
            "that option (ray.remote's options: num_cpus, num_gpus, memory, resources, ...)"
        ) from None


@dataclass(frozen=True)
class Shared:
    """What every task of the sweep gets alike: put into Ray's object store once."""

    hydra_context: HydraContext
    task_function: TaskFunction
    singleton_state: dict[Any, Any]  # Hydra's singletons (config store, plugins), as here


@dataclass
class Tasks:
    """The sweep's tasks as sent, and the signal that stopped the sweep, once one came."""

    nums: list[int] = field(default_factory=list)
    configs: list[DictConfig] = field(default_factory=list)
    refs: list[Any] = field(default_factory=list)  # Ray's ObjectRef of each task's JobReturn
    signum: int | None = None

    def cancel(self, signum: int) -> None:
        """Stop every task: a running job stops at its next step boundary, a waiting one never
        starts (a second signal changes nothing: the first is being handled)."""
        import ray

        if self.signum is None:
            self.signum = signum
            for ref in self.refs:
                ray.cancel(ref)


def launch(
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    remote: Any,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    """Send each job to the cluster as a task; their results, in job order."""
    import ray

    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    log.info(f"Launching {len(job_overrides)} jobs on Ray")
    shared = ray.put(Shared(hydra_context, task_function, Singleton.get_state()))
    tasks = Tasks()
    with cancelled_on_signal(tasks):
        for num, overrides in enumerate(job_overrides, start=initial_job_idx):
            if tasks.signum is not None:
                break  # stopped while jobs were being sent: the rest are not
            log.info(f"\t#{num} : {' '.join(overrides)}")
            job = hydra_context.config_loader.load_sweep_config(config, list(overrides))
            with open_dict(job):
                job.hydra.job.id, job.hydra.job.num = f"job_id_for_{num}", num
            tasks.refs.append(remote.remote(shared, job))
            tasks.nums.append(num)
            tasks.configs.append(job)
        wait_for(tasks.refs)
    return [result(tasks, index) for index in range(len(tasks.refs))]


@contextmanager
def cancelled_on_signal(tasks: Tasks) -> Iterator[None]:
    """While the sweep sends and waits: SIGINT/SIGTERM cancel its tasks, and the sweep's own
    handler (mnistlab.sweep.interrupt) notes the signal for the sweep's exit code."""
    previous = {signum: signal.getsignal(signum) for signum in interrupt.SIGNALS}

    def handle(signum: int, frame: Any) -> None:
        tasks.cancel(signum)
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)

    for signum in interrupt.SIGNALS:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def wait_for(refs: list[Any]) -> None:
    """Until every task has ended; Python's signal handlers run between the waits."""
    import ray

    waiting = list(refs)
    while waiting:
        _, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=WAIT_S)


def result(tasks: Tasks, index: int) -> JobReturn:
    """Task `index`'s JobReturn; a failed one with the reason where the task did not run the
    job to its end (cancelled before it started, or lost)."""
    import ray

    job = tasks.configs[index]
    try:
        return ray.get(tasks.refs[index])
    except ray.exceptions.TaskCancelledError:
        error: Exception = interrupt.JobInterrupted(tasks.signum or signal.SIGINT, started=False)
    except ray.exceptions.RayTaskError as failure:  # raised outside the job (run_on_node)
        error = failure.cause if isinstance(failure.cause, Exception) else failure
    except ray.exceptions.RayError as lost:  # the node, or the worker process, died
        error = lost_job(tasks.nums[index], job, lost)
    job_return = JobReturn(overrides=list(job.hydra.overrides.task), status=JobStatus.FAILED)
    job_return.return_value = error
    return job_return


def lost_job(num: int, job: DictConfig, lost: Exception) -> LostJob:
    """A job lost with its node: said in one line now, and the error that ends the sweep."""
    print(f"sweep: job {num} ({job_name(job)}) lost: {first_line(lost)}", flush=True)
    sweep = Path(str(job.hydra.sweep.dir)).absolute()
    again = interrupt.continue_command(sys.argv[1:], sweep)
    return LostJob(
        f"job {num} lost on Ray ({type(lost).__name__}); the re-run resumes it from its last "
        f"checkpoint, if it saved one: continue the sweep with: {again}"
    )


def job_name(job: DictConfig) -> str:
    """The job's folder name less its number (`lr:0.01`), as the progress lines name it."""
    subdir = str(OmegaConf.select(job, "hydra.sweep.subdir", default=""))
    return subdir.partition("_")[2] or " ".join(job.hydra.overrides.task)


def run_on_node(shared: Shared, config: DictConfig) -> JobReturn:
    """The Ray task: the job run as Hydra's launchers run one, from the sweep's start folder."""
    start = Path(config.hydra.runtime.cwd)
    sweep = start / str(config.hydra.sweep.dir)  # made by the sweep before it sent any job
    if not sweep.is_dir():
        raise NotShared(
            f"the sweep folder {sweep} is not on Ray node {node_name()}: every node must see "
            "the folder the sweep starts in at the same path (a shared file system such as NFS)"
        )
    here = os.getcwd()
    os.chdir(start)
    try:
        setup_globals()
        Singleton.set_state(shared.singleton_state)
        HydraConfig.instance().set_config(config)
        return run_job(
            hydra_context=shared.hydra_context,
            task_function=OnNode(shared.task_function),
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    finally:
        os.chdir(here)  # Ray runs further tasks in this process


def node_name() -> str:
    """This Ray node's id and host name."""
    import ray

    return f"{ray.get_runtime_context().get_node_id()} ({socket.gethostname()})"


@dataclass(frozen=True)
class OnNode:
    """The job's task function in a Ray task: it says where it runs, and it ends with a result
    or an error, never by ending the process (Ray would take that for a crashed worker)."""

    function: TaskFunction

    def __call__(self, cfg: DictConfig) -> Any:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        num = HydraConfig.get().job.num
        log.info("ray: job %d on node %s, %s CPUs, pid %d", num, node_name(), cpus, os.getpid())
        try:
            return self.function(cfg)
        except SystemExit as end:
            signum = end.code - 128 if isinstance(end.code, int) else None
            if signum in interrupt.SIGNALS:  # stopped by a signal, checkpoint saved
                raise interrupt.JobInterrupted(signum) from None
            raise LostJob(f"job {num} exited with code {end.code}") from None
