"""A sweep's progress: one line per finished job with its result, jobs done, and time left.

    sweep: job 3 (adam+lr:0.01) completed, val_loss=0.2310 | 4/9 jobs done | about 1m20s left

The sweep's process notes the job count and the start time before any job runs (`start`,
from on_multirun_start); each job's process prints its line once it has ended (`report`, from
on_job_end). The note travels in an environment variable, which the launchers' worker
processes inherit. Jobs done are counted from the job folders, so parallel jobs agree.
Kept free of torch, like the summary.
"""

import json
import os
import time
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from mnistlab.sweep import naming, record

PROGRESS_ENV = "MNISTLAB_SWEEP_PROGRESS"  # {"total", "started", "done_before"}, set at start


def job_count(config: DictConfig) -> int | None:
    """How many jobs the sweep will run: Optuna's n_trials, the basic sweeper's grid; or None."""
    n_trials = OmegaConf.select(config, "hydra.sweeper.n_trials")
    if isinstance(n_trials, int):
        return n_trials
    if record.sweeper_of(config) != record.BASIC_SWEEPER:
        return None  # another sweeper decides as it goes
    # As the basic sweeper reads them: a preset's params first, the command line's over them.
    arguments = [*naming.preset_params(config), *config.hydra.overrides.task]
    try:
        overrides = OverridesParser.create().parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(overrides, None)
    except HydraException:  # glob() needs Hydra's config loader: the total stays unknown
        return None
    return sum(len(batch) for batch in batches)


def start(config: DictConfig, done_before: int) -> None:
    """Note the job count and the start; `done_before`: jobs already finished in the folder."""
    note = {"total": job_count(config), "started": time.time(), "done_before": done_before}
    os.environ[PROGRESS_ENV] = json.dumps(note)


def line(job: str, result: str, done: int) -> str:
    """`sweep: <job> <result> | done/total jobs done | about <time> left` (what is known)."""
    note: dict[str, Any] = json.loads(os.environ.get(PROGRESS_ENV, "{}"))
    total = note.get("total")
    parts = [f"sweep: {job} {result}", f"{done}/{total} jobs done" if total else f"{done} done"]
    finished_here = done - note.get("done_before", 0)
    if total and "started" in note and finished_here > 0 and done < total:
        seconds = (time.time() - note["started"]) / finished_here * (total - done)
        parts.append(f"about {duration(seconds)} left")
    return " | ".join(parts)


def duration(seconds: float) -> str:
    """`45s`, `3m20s`, `2h05m`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
