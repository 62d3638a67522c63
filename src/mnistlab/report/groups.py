"""What report.html shows of a sweep: its jobs in groups of one configuration (seeds folded).

A `Group` is the jobs that differ only in the key folded over (loop.seed by default), with mean
± std over them; a `Sweep` its folder, jobs and groups. Read from the job folders alone.
"""

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from mnistlab.names import COMPLETED, HIGHER_IS_BETTER, PRUNED
from mnistlab.report.jobs import Job, find_jobs, objective_of, swept_keys
from mnistlab.report.settings import value_of
from mnistlab.report.summary import cell

SEED_KEY = "loop.seed"
NAME_KEY = "sweep.name"  # what reports call a sweep (default: its folder's name)


def finite(value: object) -> float | None:
    """`value` as a float where it is a finite number (not a bool, not an int past floats)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int of 400 digits: no figure to average
        return None
    return number if math.isfinite(number) else None


def average(values: list[float]) -> float:
    """The mean of finite numbers; finite also where their sum is not (1e308 + 1e308)."""
    try:
        return statistics.fmean(values)
    except OverflowError:
        return sum(value / len(values) for value in values)


@dataclass
class Group:
    """Jobs of one sweep that differ only in the grouped-over key (e.g. the seed)."""

    sweep: str
    config: dict[str, str]
    jobs: list[Job] = field(default_factory=list)

    @property
    def completed(self) -> list[Job]:
        return [job for job in self.jobs if job.status == COMPLETED]

    @property
    def pruned(self) -> bool:
        """Whether its curves are those of pruned jobs: none completed, some pruned."""
        return not self.completed and any(job.status == PRUNED for job in self.jobs)

    def values(self, key: str) -> list[float]:
        """`key` of each completed job that has a finite number for it."""
        found = (finite(job.metrics.get(key)) for job in self.completed)
        return [value for value in found if value is not None]

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        return average(values) if values else None

    def std(self, key: str) -> float | None:
        """The sample standard deviation over the group's jobs (None for fewer than 2)."""
        values = self.values(key)
        if len(values) < 2:
            return None
        try:
            return statistics.stdev(values)
        except OverflowError:  # a spread past the largest float (1e308 and -1e308)
            return math.inf

    @property
    def label(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.config.items()) or "all jobs"


@dataclass
class Sweep:
    """One sweep folder as the report reads it."""

    folder: Path
    jobs: list[Job]
    objective: str
    keys: list[str]  # the overridden keys whose value differs between jobs, in the given order
    group_over: str | None  # the swept key that groups fold over, if any

    @property
    def config_keys(self) -> list[str]:
        return [key for key in self.keys if key != self.group_over]

    @property
    def name(self) -> str:
        """`sweep.name` as its jobs were given it, else its folder's name (the time it began)."""
        given = {job.settings.get(NAME_KEY) for job in self.jobs} - {None, "null", ""}
        return given.pop() if len(given) == 1 else self.folder.name

    def groups(self, keys: list[str] | None = None) -> list[Group]:
        """The sweep's jobs by configuration (one group per job when nothing is folded): by
        the values of `keys`, or else of the keys it swept."""
        groups: dict[tuple[str, ...], Group] = {}
        for job in self.jobs:
            config = {key: value_of(job, key) for key in (keys or self.config_keys)}
            if self.group_over is None:
                config["job"] = job.folder.name
            found = groups.setdefault(tuple(config.values()), Group(self.name, config))
            found.jobs.append(job)
        for group in groups.values():
            group.config.pop("job", None)
        return list(groups.values())


def load_sweep(folder: Path, group_over: str) -> Sweep:
    """Read a sweep's jobs and find which keys it sweeps."""
    jobs = find_jobs(folder)
    if not jobs:
        raise FileNotFoundError(f"{folder} holds no Hydra job folders (*/.hydra/hydra.yaml)")
    keys = swept_keys(jobs)
    objective = objective_of(jobs) or "val_loss"  # no job's config readable: the default
    return Sweep(folder, jobs, objective, keys, group_over if group_over in keys else None)


def rank_groups(groups: list[Group], objective: str) -> list[Group]:
    """Groups with a completed job first, by their mean objective; then the rest."""
    sign = -1.0 if objective in HIGHER_IS_BETTER else 1.0

    def key(group: Group) -> tuple[bool, float]:
        mean = group.mean(objective)
        return (mean is None, 0.0 if mean is None else sign * mean)

    return sorted(groups, key=key)


def spread(group: Group, key: str) -> str:
    """mean ± std as people read it (accuracies in %), or the one value, or a dash."""
    mean, std = group.mean(key), group.std(key)
    if mean is None:
        return "–"
    text = cell(key, mean)
    if std is not None:
        deviation = cell(key, std)
        text += f" ± {deviation}"
    return text
