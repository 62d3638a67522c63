"""Sweep summaries: one row per job of a multirun, ranked by the objective.

mnistlab-summarize outputs/sweeps/<time>     # (re)build summary.csv, summary.md, report.html
mnistlab-summarize <sweep> <sweep> ...       # and one report.html comparing them

The `SweepSummary` Hydra callback (`hydra.callbacks` in conf/train.yaml) does the same after
every job and prints the table when the sweep's process exits. It cannot rely on
`on_multirun_end`: Hydra never calls it once a job has raised, nor after Ctrl-C. Everything is
rebuilt from the job folders, so the command works on any sweep, finished, failed or stopped.
Kept free of torch so that the command starts in a blink.
"""

import argparse
import atexit
import csv
import logging
import math
import shlex
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from mnistlab.files import open_atomic
from mnistlab.names import (
    COMPLETED,
    FAILED,
    HIGHER_IS_BETTER,
    INTERRUPTED,
    METRICS,
    METRICS_FILE,
    PRUNED,
    UNFINISHED,
    UNREADABLE,
    read_metrics,
    recorded_metrics,
    write_metrics,
)
from mnistlab.sweep import interrupt, naming, rerun, timeleft

log = logging.getLogger(__name__)
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's where it is built in

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
    "stop_reason",
    "best_value",
    "best_step",
    "tested_on",
    "target_reached",
    "target_step",
    "target_seconds",
    "pruned_at_epoch",
    "prune_reason",
)
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

    @property
    def status(self) -> str:
        return self.metrics.get("status", UNFINISHED)

    @property
    def status_text(self) -> str:
        """The status as people read it: `pruned after epoch 2`."""
        if self.status == PRUNED and "pruned_at_epoch" in self.metrics:
            return f"{PRUNED} after epoch {self.metrics['pruned_at_epoch']}"
        return self.status


# What a damaged job folder can raise while it is read: a file missing or unreadable (OSError),
# bad JSON (ValueError), bad YAML, or YAML without the keys Hydra writes (KeyError, TypeError).
DAMAGE = (
    OSError,
    ValueError,
    yaml.YAMLError,
    OmegaConfBaseException,
    AttributeError,
    TypeError,
    KeyError,
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
        detail = f": {lines[0]}" if lines else ""
        raise Unreadable(f"{name}: {type(error).__name__}{detail}") from None


def load_job(folder: Path) -> Job:
    """Read a job folder that Hydra made: .hydra/hydra.yaml, and metrics.json where it exists."""
    # A plain YAML parser, never instantiating anything: nothing in a job folder chooses code
    # to run. And 20x faster than OmegaConf here, where a summary reads every job.
    with reading(".hydra/hydra.yaml"):
        text = (folder / ".hydra" / "hydra.yaml").read_text()
        hydra_cfg = yaml.load(text, Loader=SafeLoader)["hydra"]
        hidden = set(hydra_cfg["job"]["config"]["override_dirname"]["exclude_keys"])
        task = hydra_cfg["overrides"]["task"]
        overrides = dict(item.split("=", 1) for item in task if "=" in item)
        num = int(hydra_cfg["job"]["num"])
    with reading(".hydra/config.yaml"):
        text = (folder / ".hydra" / "config.yaml").read_text()
        objective = str(yaml.load(text, Loader=SafeLoader)["objective"])
    with reading(METRICS_FILE):
        metrics = load_metrics(folder)
    return Job(
        folder=folder,
        num=num,
        overrides={key: value for key, value in overrides.items() if key not in hidden},
        metrics=metrics,
        objective=objective,
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
        return load_job(folder)
    except Unreadable as error:
        number = folder.name.split("_", 1)[0]  # Hydra's subdir starts with the job number
        num = int(number) if number.isdigit() else None
        return Job(folder, num, {}, {"status": UNREADABLE, "error": f"unreadable: {error}"})


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job folder directly under `sweep_dir`; none if no folder has Hydra's .hydra/ record."""
    if not sweep_dir.is_dir():
        return []  # the sweep stopped before Hydra made its folder
    folders = [path for path in sweep_dir.iterdir() if is_job_folder(path)]
    if not any((folder / ".hydra").is_dir() for folder in folders):
        return []
    jobs = [read_job(folder) for folder in folders]
    return sorted(jobs, key=lambda job: (job.num is None, job.num or 0, job.folder.name))


def is_job_folder(path: Path) -> bool:
    """A sweep's job folders are its visible sub-folders (.submitit/ and the like are not)."""
    return path.is_dir() and not path.name.startswith(".")


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


def write_csv(path: Path, jobs: list[Job]) -> None:
    """All columns, values as Python writes them (floats round-trip exactly)."""
    header = columns(jobs, METRIC_KEYS)
    with open_atomic(path) as file:
        writer = csv.DictWriter(file, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(row(job) for job in jobs)


def markdown_table(jobs: list[Job]) -> str:
    """The ranked jobs as a Markdown table, numbers rounded for reading."""
    # The folder name repeats the overrides; an error column only where some job has one;
    # a setting every job shares is left to summary.csv (it compares nothing).
    has_error = any(job.metrics.get("error") for job in jobs)
    shared = set(overridden(jobs)) - set(swept_keys(jobs)) if len(jobs) > 1 else set()
    header = [
        "rank",
        *(
            key
            for key in columns(jobs, TABLE_KEYS)[:-1]
            if (has_error or key != "error") and key not in shared
        ),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for place, job in enumerate(jobs, start=1):
        shown = {"rank": place if job.status == COMPLETED else "-", "status": job.status_text}
        values = row(job) | shown
        cells = [cell(key, values.get(key, "")) for key in header]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cell(key: str, value: Any) -> str:
    """A value as a table cell: accuracies in %, losses to 4 decimals, no stray pipes."""
    if isinstance(value, float) and math.isfinite(value):
        if key.endswith("accuracy"):
            return f"{100 * value:.2f}%"
        if key == "samples_per_second":
            return f"{value:.0f}"
        if key == "wall_time_s":
            return f"{value:.1f}"
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def summary_text(sweep_dir: Path, jobs: list[Job], objective: str | None) -> str:
    """The summary.md text: a line on what was ranked, then the table."""
    counts = Counter(job.status for job in jobs)
    tally = ", ".join(f"{count} {status}" for status, count in counts.items())
    if objective is None:
        ranked = "not ranked: no job's config could be read"
    else:
        better = "higher" if objective in HIGHER_IS_BETTER else "lower"
        ranked = f"ranked by {objective} ({better} is better)"
    return f"Sweep {sweep_dir}: {len(jobs)} jobs ({tally}), {ranked}\n\n{markdown_table(jobs)}\n"


def write_summary(sweep_dir: Path, jobs: list[Job] | None = None) -> str:
    """Rebuild summary.csv and summary.md in `sweep_dir` from its job folders; return the text."""
    jobs = find_jobs(sweep_dir) if jobs is None else jobs
    if not jobs:
        raise FileNotFoundError(f"{sweep_dir} holds no Hydra job folders (*/.hydra/hydra.yaml)")
    objective = objective_of(jobs)
    jobs = rank(jobs, objective)
    text = summary_text(sweep_dir, jobs, objective)
    try:
        write_csv(sweep_dir / "summary.csv", jobs)
        with open_atomic(sweep_dir / "summary.md") as file:
            file.write(text)
    except OSError as error:  # a read-only sweep folder, a full disk: the table still shows
        log.warning("summary.csv/summary.md not written in %s: %s", sweep_dir, error)
    return text


def record_failure(out_dir: Path, error: BaseException) -> None:
    """Mark a job that raised as failed in its metrics.json, keeping whatever it had written."""
    metrics = recorded_metrics(out_dir) or {}  # damaged beyond use: the failure matters now
    if metrics.get("status") == FAILED and "error" in metrics:
        return  # recorded already (by the run, or by an earlier run of the sweep): untouched
    metrics["status"] = FAILED
    metrics.setdefault("error", f"{type(error).__name__}: {error}")
    try:
        write_metrics(out_dir, metrics)
    except OSError as write_error:
        log.error("could not mark %s failed: %s", out_dir, write_error)


def finished(jobs: list[Job]) -> list[Job]:
    """The jobs that have ended for good (an interrupted job has work left)."""
    return [job for job in jobs if job.status not in (UNFINISHED, UNREADABLE, INTERRUPTED)]


def progress_line(jobs: list[Job], folder_name: str, note: str = "") -> str:
    """The progress line for the job in the folder `folder_name`: its result, then the sweep's.

    `note` says what a re-run sweep did with the job's earlier run (`reused`, `resumed`).
    """
    number, _, name = folder_name.partition("_")
    label = f"job {number} ({name})" if name else f"job {number}"
    job = next((job for job in jobs if job.folder.name == folder_name), None)
    if job is None:  # its folder is not a job folder: say what is known
        return timeleft.line(label, "ended", len(finished(jobs)))
    result = f"{job.status_text} ({note})" if note else job.status_text
    value = job.metrics.get(job.objective) if job.objective is not None else None
    if isinstance(value, float):
        result += f", {job.objective}={cell(job.objective, value)}"
    reason = job.metrics.get("error") or job.metrics.get("prune_reason")
    if reason:
        result += f": {cell('error', reason)[:120]}"
    return timeleft.line(label, result, len(finished(jobs)))


class SweepSummary(Callback):
    """Hydra callback: record failed jobs and keep the sweep's summary current after each job."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Runs in the job's own process, whichever launcher started it."""
        if config.hydra.mode is not RunMode.MULTIRUN:
            return  # a single run reports its own failure on the terminal
        out_dir = Path(config.hydra.runtime.output_dir)
        error = job_return._return_value  # `return_value` would re-raise a failed job's error
        stopped = isinstance(error, interrupt.JobInterrupted)  # metrics.json says so already
        if stopped and not error.started:
            return  # the sweep stopped before this job began: nothing of it to summarise
        if job_return.status is JobStatus.FAILED and not stopped:
            log.error("job failed: %s: %s", type(error).__name__, error)
            record_failure(out_dir, error)
        jobs = find_jobs(Path(config.hydra.sweep.dir))
        write_summary(Path(config.hydra.sweep.dir), jobs)
        line = progress_line(jobs, out_dir.name, rerun.note_of(out_dir))
        print(line, flush=True)
        from mnistlab.report import page  # matplotlib loads only where a report is drawn

        page.refresh(Path(config.hydra.sweep.dir), config.sweep.report_every)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Print the ranked table when the sweep's process exits, however the sweep ended."""
        naming.remember_swept(config)  # before any job folder is named
        jobs = [] if config.loop.overwrite else find_jobs(Path(config.hydra.sweep.dir))
        timeleft.start(config, len(finished(jobs)))  # overwritten jobs are gone before job 0
        # Hydra skips on_multirun_end once a job has failed, and Ctrl-C skips it too; an exit
        # hook runs whether the sweep succeeded, failed or was stopped (after Hydra's error).
        atexit.register(print_summary, Path(config.hydra.sweep.dir))


def print_summary(sweep_dir: Path) -> None:
    """Rebuild the summary and the report and print them, if the sweep started a job."""
    if find_jobs(sweep_dir):
        print(write_summary(sweep_dir), flush=True)
        print_report([sweep_dir], sweep_dir / "report.html")


def print_report(sweep_dirs: list[Path], out: Path, group_over: str = "loop.seed") -> None:
    """Write report.html for `sweep_dirs`; print where it is and how to open TensorBoard."""
    from mnistlab.report import page  # matplotlib loads only here

    try:
        page.write_report(sweep_dirs, out, group_over)
    except OSError as error:  # a read-only sweep folder, a full disk: the table was printed
        log.warning("report.html not written: %s", error)
    else:
        print(f"report: {out}")
    for sweep_dir in sweep_dirs:  # one sweep per logdir: HParams compares like with like
        print(f"TensorBoard: tensorboard --logdir {shlex.quote(str(sweep_dir))}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """mnistlab-summarize <sweep dir> [<sweep dir> ...]: rebuild summaries and report.html."""
    parser = argparse.ArgumentParser(prog="mnistlab-summarize", description=main.__doc__)
    parser.add_argument(
        "sweep_dirs", nargs="+", type=Path, help="e.g. outputs/sweeps/2024-05-01_12-00-00_0"
    )
    parser.add_argument(
        "--group-over",
        default="loop.seed",
        metavar="KEY",
        help="a swept key to fold into mean ± std per configuration (default: loop.seed)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write the report (default: report.html in the sweep folder, or beside "
        "the first sweep's folder when several are compared)",
    )
    args = parser.parse_args(argv)
    for sweep_dir in args.sweep_dirs:
        if not sweep_dir.is_dir():
            parser.error(f"{sweep_dir} is not a folder")
        if not find_jobs(sweep_dir):
            parser.error(f"{sweep_dir} holds no Hydra job folders (*/.hydra/hydra.yaml)")
    for sweep_dir in args.sweep_dirs:
        print(write_summary(sweep_dir), flush=True)
    first = args.sweep_dirs[0]
    default = first / "report.html" if len(args.sweep_dirs) == 1 else first.parent / "report.html"
    print_report(args.sweep_dirs, args.out or default, args.group_over)


if __name__ == "__main__":
    main()
