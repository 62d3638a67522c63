"""A sweep's progress: one line per finished job with its result, jobs done, and time left.

    sweep: job 3 (adam+lr:0.01) completed, val_loss=0.2310 | 4/9 jobs done | about 1m20s left

The sweep's process counts the jobs before any runs (`job_count`, into the sweep's context);
each job's process prints its line once it has ended (mnistlab.report.callback). Jobs done are
counted from the job folders, so parallel jobs agree.
Kept free of torch, like the summary.
"""

import time

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from mnistlab.private import hydra as hydra_private
from mnistlab.sweep import naming, record


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
        batches = hydra_private.split_arguments(overrides)
    except HydraException:  # glob() needs Hydra's config loader: the total stays unknown
        return None
    return sum(len(batch) for batch in batches)


def line(job: str, result: str, done: int, total: int | None, started: float, before: int) -> str:
    """`sweep: <job> <result> | done/total jobs done | about <time> left` (what is known).

    `started`: when this run of the sweep began (time.time()); `before`: jobs done by then.
    """
    parts = [f"sweep: {job} {result}", f"{done}/{total} jobs done" if total else f"{done} done"]
    finished_here = done - before
    if total and finished_here > 0 and done < total:
        seconds = (time.time() - started) / finished_here * (total - done)
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
