"""SLURM through Hydra's submitit launcher: a job told to stop early checkpoints, requeues, resumes.

conf/hydra/launcher/slurm.yaml names `hydra_plugins.mnistlab_slurm.SlurmLauncher`, Hydra's
submitit launcher with the additions in this module. Tasks other than 0 of a multi-task job
write nothing into the run folder (`task_overrides`). Before a job's time limit
(`signal_delay_s` ahead) or on `scancel --signal=USR2 <job>`, SLURM sends SIGUSR2; the run's
`Interrupts` handler treats it like SIGTERM: it finishes the step, saves checkpoint.pt and
stops with exit code 128 + 12. `PreemptibleTask` then hands the signal on to submitit's own
handler, which asks the launcher for the job to run next (`requeued_overrides`: the same job
with `loop.resume=<its folder>`) and runs `scontrol requeue`. The job starts again in the same
folder and goes on bit for bit.
"""

import logging
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.types import Quote, QuotedString
from hydra.types import TaskFunction
from omegaconf import DictConfig, OmegaConf

from mnistlab import SettingError, names
from mnistlab.run import rundir

log = logging.getLogger(__name__)

PREEMPTION = signal.SIGUSR2  # submitit's default (its SUBMITIT_PREEMPT_SIGNAL is not supported)
PREEMPTED_EXIT_CODE = 128 + PREEMPTION  # mnistlab.cli.train's exit code after stopping on it
RESUME, SUBDIR = "loop.resume=", "hydra.sweep.subdir="  # what a requeued job's overrides add
ASK_TIMEOUT = 20  # seconds for `sinfo` to answer before the cluster is taken as unreachable


def check_cluster(config: DictConfig) -> None:
    """A SLURM sweep needs a cluster that answers here: refused in one line before it starts."""
    if not str(OmegaConf.select(config, "hydra.launcher._target_")).endswith("SlurmLauncher"):
        return
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise SettingError(
            "hydra/launcher=slurm needs SLURM's commands (sbatch, sinfo), which are not on PATH "
            "here: start the sweep on a machine of the cluster (its login node), or leave "
            "hydra/launcher out to run the jobs on this machine"
        )
    try:
        answer = subprocess.run(
            ["sinfo", "--noheader", "--format=%P"],
            capture_output=True,
            text=True,
            timeout=ASK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        why = f"sinfo had no answer in {ASK_TIMEOUT} s"
    else:
        if answer.returncode == 0:
            return
        why = (answer.stderr.strip().splitlines() or ["sinfo failed"])[-1]
    raise SettingError(
        f"hydra/launcher=slurm: no SLURM cluster answers here ({why}): start the sweep where "
        "the cluster is reachable (SLURM_CONF names its slurm.conf), or a local one with "
        "scripts/slurm-local.sh start"
    )


@dataclass(frozen=True)
class PreemptibleTask:
    """The Hydra task function; a run that stopped on PREEMPTION hands it on to submitit."""

    function: TaskFunction

    def __call__(self, cfg: DictConfig) -> Any:
        try:
            return self.function(cfg)
        except SystemExit as stop:
            handler = signal.getsignal(PREEMPTION)
            if stop.code == PREEMPTED_EXIT_CODE and callable(handler):
                # submitit's: on task 0, checkpoint() and `scontrol requeue`, then exit. Called
                # here, inside Hydra's run_job, where HydraConfig still describes this job.
                handler(PREEMPTION, None)
            raise


def task_overrides() -> list[str]:
    """Extra overrides for this task of the job: tasks other than 0 leave the folder to task 0."""
    import submitit

    return [] if submitit.JobEnvironment().global_rank == 0 else list(names.OTHER_RANK_OVERRIDES)


def requeued_overrides(sweep_overrides: list[str], job_num: int) -> list[str]:
    """The job's overrides for its next start: with loop.resume where it left a checkpoint."""
    overrides = [item for item in sweep_overrides if not item.startswith((RESUME, SUBDIR))]
    folder = job_folder(job_num)
    if folder is None or not rundir.checkpoint_file(str(folder)).is_file():
        log.info("requeued: job %d starts again (no checkpoint yet)", job_num)
        return overrides
    log.info("requeued: job %d resumes from %s", job_num, folder)
    # The subdir is pinned: loop.resume would otherwise change the folder's name.
    subdir = str(HydraConfig.get().sweep.subdir)
    return [*overrides, RESUME + quoted(str(folder)), SUBDIR + quoted(subdir)]


def job_folder(job_num: int) -> Path | None:
    """This job's folder while Hydra runs it (None before and after: nothing to resume)."""
    if not HydraConfig.initialized() or HydraConfig.get().job.num != job_num:
        return None
    folder = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None)
    return None if folder is None else Path(folder).resolve()


def quoted(value: str) -> str:
    """`value` as a quoted Hydra override value: folder names hold `=` and `,`."""
    return QuotedString(text=value, quote=Quote.single).with_quotes()
