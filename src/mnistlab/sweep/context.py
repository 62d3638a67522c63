"""One sweep's context: what every job needs to know about the sweep, decided once at its start.

The sweep's process decides it before the first job (`start`, from the sweep callback's
on_multirun_start) and writes it into the sweep folder (`.sweep.json`); each job reads it from
there (`read`), in whatever process or machine it runs: the sweep's own (Hydra's basic
launcher), a joblib worker, a SLURM node. The sweep folder is shared wherever jobs run, so no
environment variable or module global has to travel with them.

Security: the file is data. Its values are checked for type and used as plain values (names of
keys, numbers); nothing in it chooses code to run.
Kept free of torch: it is read before a job imports torch.
"""

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnistlab import SettingError
from mnistlab.files import write_json
from mnistlab.names import (
    COMPLETED,
    FAILED,
    PRUNED,
    RAY_LAUNCHER,
    SWEEP_CONTEXT_FILE,
    recorded_metrics,
)
from mnistlab.parts import cores
from mnistlab.private import hydra as hydra_private
from mnistlab.sweep import naming, timeleft

# How a sweep's jobs run, so how a signal stops them (mnistlab.sweep.interrupt).
IN_PROCESS = "in_process"  # Hydra's basic launcher: in the sweep's own process
POOLED = "pooled"  # the joblib launcher: in worker processes of the sweep's process group
# Ray: tasks on the cluster's nodes, which the launcher passes a signal on to (mnistlab.sweep.ray)
DISPATCHED = "dispatched"
ELSEWHERE = "elsewhere"  # SLURM: processes that a signal to the sweep does not reach
LAUNCHERS = {
    hydra_private.BASIC_LAUNCHER: IN_PROCESS,
    hydra_private.JOBLIB_LAUNCHER: POOLED,
    RAY_LAUNCHER: DISPATCHED,
}
ENDED = (COMPLETED, FAILED, PRUNED)  # an interrupted job has work left


@dataclass(frozen=True)
class SweepContext:
    """What every job of one sweep needs to know about the sweep."""

    folder: str  # the sweep folder, as hydra.sweep.dir gives it
    swept: tuple[str, ...]  # the keys the sweep varies, in the user's order: job folder names
    total: int | None  # how many jobs it runs; None where the sweeper decides as it goes
    started: float  # time.time() when this run of the sweep started
    done_before: int  # jobs that an earlier run of the sweep finished in the folder
    pid: int  # the sweep's own process
    launcher: str  # IN_PROCESS, POOLED, DISPATCHED or ELSEWHERE
    parallel: int = 1  # jobs that run at once on one machine: they share its cores

    def in_pool(self) -> bool:
        """Whether this process runs jobs for the sweep's process: a joblib worker, a Ray task.

        (A Ray task on another machine that has the sweep's PID by chance is taken for the
        sweep's process: its job then ends the Ray task, which mnistlab.sweep.ray gathers.)"""
        return self.launcher in (POOLED, DISPATCHED) and self.pid != os.getpid()

    def progress(self) -> tuple[int | None, float, int]:
        """What the progress line needs: the total, the start, and the jobs done before it."""
        return self.total, self.started, self.done_before

    def stoppable(self) -> bool:
        """Whether a signal to the sweep reaches its jobs, so that the sweep stops them."""
        return self.launcher != ELSEWHERE


def runs_here(config: DictConfig) -> bool:
    """Whether the sweep `config` starts runs its jobs on this machine (not SLURM's, Ray's)."""
    launcher = str(OmegaConf.select(config, "hydra.launcher._target_"))
    return LAUNCHERS.get(launcher, ELSEWHERE) in (IN_PROCESS, POOLED)


def start(config: DictConfig) -> SweepContext:
    """Decide the context of the sweep that `config` starts, and write it into its folder."""
    folder = Path(config.hydra.sweep.dir)
    launcher = str(OmegaConf.select(config, "hydra.launcher._target_"))
    total = timeleft.job_count(config)
    context = SweepContext(
        folder=str(folder),
        swept=tuple(naming.swept_keys(config)),
        total=total,
        started=time.time(),
        done_before=0 if config.loop.overwrite else ended_jobs(folder),
        pid=os.getpid(),
        launcher=LAUNCHERS.get(launcher, ELSEWHERE),
        parallel=at_once(config, launcher, total),
    )
    path = folder / SWEEP_CONTEXT_FILE
    try:
        write_json(path, dataclasses.asdict(context))
    except OSError as error:  # a folder in its place, a full disk: no job could find it
        raise SettingError(
            f"hydra.sweep.dir={folder}: {path.name} could not be written ({error.strerror}): "
            f"remove what is at {path}, or choose another hydra.sweep.dir"
        ) from None
    return context


def at_once(config: DictConfig, launcher: str, total: int | None) -> int:
    """How many of the sweep's jobs run at once on this machine: joblib's n_jobs (as joblib
    reads it: -1 for every core), no more than the jobs there are; 1 for other launchers."""
    n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs")
    if launcher != hydra_private.JOBLIB_LAUNCHER or not isinstance(n_jobs, int) or n_jobs == 0:
        return 1
    if n_jobs < 0:
        n_jobs = max(1, cores.allowed_cores() + 1 + n_jobs)
    return min(n_jobs, total or n_jobs)


def ended_jobs(folder: Path) -> int:
    """How many job folders of `folder` hold a job that has ended for good."""
    if not folder.is_dir():
        return 0
    jobs = (job for job in folder.iterdir() if job.is_dir() and not job.name.startswith("."))
    return sum((recorded_metrics(job) or {}).get("status") in ENDED for job in jobs)


def read(folder: Path | str) -> SweepContext | None:
    """The context written into the sweep folder `folder`; None where there is none to read."""
    try:
        values = read_values(Path(folder) / SWEEP_CONTEXT_FILE)
    except (OSError, ValueError):
        return None
    try:
        return SweepContext(**values)
    except TypeError:  # keys missing or unknown: not a context this version wrote
        return None


def read_values(path: Path) -> dict[str, Any]:
    """The file's values, checked to be of the types `SweepContext` has."""
    values = json.loads(path.read_text())
    kinds = {
        "folder": str,
        "started": (int, float),
        "done_before": int,
        "pid": int,
        "launcher": str,
        "parallel": int,
    }
    if not isinstance(values, dict) or not all(
        isinstance(values.get(key), kind) for key, kind in kinds.items()
    ):
        raise ValueError(f"{path} is not a sweep context")
    total, swept = values.get("total"), values.get("swept")
    if not (total is None or isinstance(total, int)) or not isinstance(swept, list):
        raise ValueError(f"{path} is not a sweep context")
    if not all(isinstance(key, str) for key in swept):
        raise ValueError(f"{path} is not a sweep context")
    return values | {"swept": tuple(swept)}
