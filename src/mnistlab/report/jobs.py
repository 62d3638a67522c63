"""A sweep's job folders, read as data: one `Job` per folder, ranked by the objective.

A plain YAML parser reads what Hydra wrote (`.hydra/`), `names.read_metrics` the run's
metrics.json; nothing in a job folder chooses code to run, and a damaged folder becomes one
`unreadable` job with its reason. Kept free of torch.
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from omegaconf.errors import OmegaConfBaseException

from mnistlab.files import Refused, load_yaml, read_inside
from mnistlab.loop.prune import at_chance as guessing
from mnistlab.names import (
    COMPLETED,
    HIGHER_IS_BETTER,
    INTERRUPTED,
    METRICS,
    METRICS_FILE,
    PRUNED,
    UNFINISHED,
    UNREADABLE,
    read_metrics,
)
from mnistlab.report.settings import flatten

# metrics.json keys in the order the summary shows them (mnistlab.cli.train writes them).
METRIC_KEYS = (
    *METRICS,
    "train_accuracy",
    "epochs",
    "steps",
    "samples_per_second",
    "wall_time_s",
    "world_size",
    "global_batch_size",
    "device",
    "precision",
    "precision_reason",
    "threads_reason",
    "chance_accuracy",
    "stop_reason",
    "best_value",
    "best_step",
    "tested_on",
    "target_reached",
    "target_step",
    "target_seconds",
    "pruned_at_epoch",
    "prune_reason",
    "peak_rss_mb",
    "peak_gpu_mb",
    "data_fingerprint",
    "data_source",
    "data_inputs",
)


AT_CHANCE = "at chance"  # a completed job no better than guessing: diverged, or not learning

# The compact table leaves out what rarely differs between jobs (the CSV keeps everything).
TABLE_KEYS = (*METRICS, "samples_per_second", "wall_time_s")


@dataclass
class Job:
    """One job folder of a sweep: its number, overrides and what its metrics.json says."""

    folder: Path
    num: int | None  # None: a folder too damaged to say
    overrides: dict[str, str]
    metrics: dict[str, Any]
    objective: str | None = None  # the `objective` setting in the job's config
    settings: dict[str, str] = field(default_factory=dict)  # its config, flattened (settings.py)

    @property
    def status(self) -> str:
        return self.metrics.get("status", UNFINISHED)

    @property
    def status_text(self) -> str:
        """The status as people read it: `pruned after epoch 2`, `completed, at chance`."""
        if self.status == PRUNED and "pruned_at_epoch" in self.metrics:
            return f"{PRUNED} after epoch {self.metrics['pruned_at_epoch']}"
        if self.at_chance:
            return f"{COMPLETED}, {AT_CHANCE}"
        return self.status

    @property
    def at_chance(self) -> bool:
        """A completed job whose final validation accuracy is no better than guessing (the
        rule `sweep.prune.diverged` prunes by: diverged, or not learning), or whose training
        loss is not a number."""
        if self.status != COMPLETED:
            return False
        accuracy, chance = self.metrics.get("val_accuracy"), self.metrics.get("chance_accuracy")
        loss = self.metrics.get("train_loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            return True
        numbers = all(isinstance(v, float) and math.isfinite(v) for v in (accuracy, chance))
        return numbers and guessing(accuracy, chance)


# What a damaged job folder can raise while it is read: a file missing or unreadable (OSError),
# bad JSON or a refused file (ValueError), bad YAML, YAML without the keys Hydra writes
# (KeyError, TypeError), a number too big to be one (OverflowError).
DAMAGE = (
    OSError,
    ValueError,
    yaml.YAMLError,
    OmegaConfBaseException,
    AttributeError,
    TypeError,
    KeyError,
    ArithmeticError,
)


class Unreadable(Exception):
    """A job folder file that cannot be read as Hydra or mnistlab-train wrote it."""


@contextmanager
def reading(name: str) -> Iterator[None]:
    """Turn any damage met while reading the file `name` into one `Unreadable` line naming it."""
    try:
        yield
    except DAMAGE as error:
        lines = str(error).strip().splitlines()
        # A refusal's reason is a sentence; an error from a parser or the system needs its kind.
        kind = "" if type(error) in (Refused, ValueError) else type(error).__name__
        said = [part for part in (kind, lines[0] if lines else "") if part]
        raise Unreadable(": ".join([name, *said])) from None


def texts(value: Any, what: str) -> list[str]:
    """`value`, checked to be a list of text as Hydra writes it."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Refused(f"{what} must be a list of text")
    return value


def text(value: Any, what: str) -> str:
    """`value`, checked to be text."""
    if not isinstance(value, str):
        raise Refused(f"{what} must be text, not {type(value).__name__}")
    return value


def load_job(folder: Path) -> Job:
    """Read a job folder that Hydra made: .hydra/hydra.yaml, and metrics.json where it exists."""
    # A plain YAML parser, never instantiating anything: nothing in a job folder chooses code
    # to run. And 20x faster than OmegaConf here, where a summary reads every job.
    with reading(".hydra/hydra.yaml"):
        hydra_cfg = load_yaml(read_inside(folder, ".hydra", "hydra.yaml"))["hydra"]
        job = hydra_cfg["job"]
        hidden = set(texts(job["config"]["override_dirname"]["exclude_keys"], "exclude_keys"))
        task = texts(hydra_cfg["overrides"]["task"], "overrides.task")
        overrides = dict(item.split("=", 1) for item in task if "=" in item)
        if not isinstance(job["num"], int) or isinstance(job["num"], bool):
            raise Refused("job.num must be a whole number")
        num = job["num"]
    with reading(".hydra/config.yaml"):
        config = load_yaml(read_inside(folder, ".hydra", "config.yaml"))
        objective = text(config["objective"], "objective")
        settings = flatten(config)
    with reading(METRICS_FILE):
        metrics = load_metrics(folder)
        text(metrics.get("status", UNFINISHED), "status")
    return Job(
        folder=folder,
        num=num,
        overrides={key: value for key, value in overrides.items() if key not in hidden},
        metrics=metrics,
        objective=objective,
        settings=settings,
    )


def load_metrics(folder: Path) -> dict[str, Any]:
    """A job's metrics.json; a note that there is none yet where it does not exist."""
    try:
        return read_metrics(folder)
    except FileNotFoundError:  # the job is still running, or was stopped before it wrote one
        return {"status": UNFINISHED, "error": "no metrics.json: still running, or killed"}


def read_job(folder: Path) -> Job:
    """`load_job`, or a job listed as unreadable with the reason where the folder is damaged."""
    try:
        if folder.is_symlink():  # it may lead anywhere: what it holds is no job of this sweep
            raise Unreadable("the job folder is a link: not read")
        return remembered_job(folder)
    except Unreadable as error:
        number = folder.name.split("_", 1)[0]  # Hydra's subdir starts with the job number
        num = int(number) if number.isascii() and number.isdigit() and len(number) < 19 else None
        return Job(folder, num, {}, {"status": UNREADABLE, "error": f"unreadable: {error}"})


# A sweep's callback reads every job folder after each job: the process keeps what it read,
# by the files' identity (inode, change time, size), so each job's files are parsed once,
# not once per later job (a 100-job sweep: 5,050 reads otherwise).
_read: dict[Path, tuple[tuple, Job]] = {}
JOB_FILES = ((".hydra", "hydra.yaml"), (".hydra", "config.yaml"), (METRICS_FILE,))


def remembered_job(folder: Path) -> Job:
    """`load_job(folder)`, or what it gave last where none of the job's files has changed."""
    stamp = tuple(file_stamp(folder.joinpath(*parts)) for parts in JOB_FILES)
    kept = _read.get(folder)
    if kept is None or kept[0] != stamp:
        kept = _read[folder] = stamp, load_job(folder)
    job = kept[1]
    return replace(job, overrides=dict(job.overrides), metrics=dict(job.metrics))  # the caller's


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """A file's inode, change time and size; None where there is none."""
    try:
        found = path.stat(follow_symlinks=False)
    except OSError:
        return None
    return found.st_ino, found.st_ctime_ns, found.st_size


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job folder directly under `sweep_dir`; none if no folder has Hydra's .hydra/ record."""
    if not is_folder(sweep_dir):
        return []  # the sweep stopped before Hydra made its folder
    folders = [path for path in sweep_dir.iterdir() if is_job_folder(path)]
    if not any(is_folder(folder / ".hydra") for folder in folders):
        return []
    jobs = [read_job(folder) for folder in folders]
    return sorted(jobs, key=lambda job: (job.num is None, job.num or 0, job.folder.name))


def is_job_folder(path: Path) -> bool:
    """A sweep's job folders are its visible sub-folders (.submitit/ and the like are not)."""
    return not path.name.startswith(".") and is_folder(path)


def is_folder(path: Path) -> bool:
    """Whether `path` is a folder (or a link to one); False where that cannot be known."""
    try:
        return path.is_dir()
    except OSError:  # a parent folder this user may not enter: read_job will say so
        return False


def objective_of(jobs: list[Job]) -> str | None:
    """The metric the sweep optimises: the `objective` setting of its jobs' configs."""
    return next((job.objective for job in jobs if job.objective is not None), None)


def rank(jobs: list[Job], objective: str | None) -> list[Job]:
    """Completed jobs best first; pruned ones next (by their value when pruned); then failed,
    interrupted, unfinished and unreadable ones, in job order."""
    # Losses are minimised; accuracies (the only other metrics we return) are maximised.
    sign = -1.0 if objective in HIGHER_IS_BETTER else 1.0
    tiers = {COMPLETED: 0, PRUNED: 1}

    def key(job: Job) -> tuple[int, bool, float]:
        tier = tiers.get(job.status, len(tiers))
        value = job.metrics.get(objective) if objective is not None else None
        usable = tier < len(tiers) and isinstance(value, float) and math.isfinite(value)
        return (tier, not usable, sign * value if usable else 0.0)

    return sorted(jobs, key=key)


def columns(jobs: list[Job], metric_keys: tuple[str, ...]) -> list[str]:
    """The header: job, every overridden key, status, the metrics some job has, error."""
    present = [key for key in metric_keys if any(key in job.metrics for job in jobs)]
    return ["job", *overridden(jobs), "status", *present, "error", "folder"]


def overridden(jobs: list[Job]) -> list[str]:
    """Every overridden key, in the order the jobs give them."""
    return list(dict.fromkeys(key for job in jobs for key in job.overrides))


def swept_keys(jobs: list[Job]) -> list[str]:
    """Overridden keys whose value is not the same in every job, in the order given."""
    return [key for key in overridden(jobs) if len({job.overrides.get(key) for job in jobs}) > 1]


def row(job: Job) -> dict[str, Any]:
    """One job as a flat dict keyed like `columns`."""
    return {
        "job": "?" if job.num is None else job.num,
        **job.overrides,
        **{key: job.metrics[key] for key in METRIC_KEYS if key in job.metrics},
        "status": job.status,
        "error": job.metrics.get("error", ""),
        "folder": job.folder.name,
    }


def finished(jobs: list[Job]) -> list[Job]:
    """The jobs that have ended for good (an interrupted job has work left)."""
    return [job for job in jobs if job.status not in (UNFINISHED, UNREADABLE, INTERRUPTED)]
