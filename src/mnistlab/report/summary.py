"""A sweep's summary: summary.csv (every column) and summary.md (the ranked table), and the
progress line each finished job prints. Rebuilt from the job folders (mnistlab.report.jobs).
Kept free of torch.
"""

import csv
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

from mnistlab import names
from mnistlab.files import open_atomic
from mnistlab.names import COMPLETED, FAILED, HIGHER_IS_BETTER, recorded_metrics, write_metrics
from mnistlab.report.jobs import (
    METRIC_KEYS,
    TABLE_KEYS,
    Job,
    columns,
    find_jobs,
    finished,
    objective_of,
    overridden,
    rank,
    row,
    swept_keys,
)
from mnistlab.sweep import timeleft
from mnistlab.sweep.context import SweepContext

log = logging.getLogger(__name__)


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
        write_csv(sweep_dir / names.SUMMARY_CSV, jobs)
        with open_atomic(sweep_dir / names.SUMMARY_MD) as file:
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


def progress_line(jobs: list[Job], folder_name: str, note: str, sweep: SweepContext | None) -> str:
    """The progress line for the job in the folder `folder_name`: its result, then the sweep's.

    `note` says what a re-run sweep did with the job's earlier run (`reused`, `resumed`);
    `sweep` how many jobs it runs and since when (None: unknown).
    """
    number, _, name = folder_name.partition("_")
    label = f"job {number} ({name})" if name else f"job {number}"
    total, started, before = (None, 0.0, 0) if sweep is None else sweep.progress()
    job = next((job for job in jobs if job.folder.name == folder_name), None)
    if job is None:  # its folder is not a job folder: say what is known
        return timeleft.line(label, "ended", len(finished(jobs)), total, started, before)
    result = f"{job.status_text} ({note})" if note else job.status_text
    value = job.metrics.get(job.objective) if job.objective is not None else None
    if isinstance(value, float):
        result += f", {job.objective}={cell(job.objective, value)}"
    reason = job.metrics.get("error") or job.metrics.get("prune_reason")
    if reason:
        result += f": {cell('error', reason)[:120]}"
    return timeleft.line(label, result, len(finished(jobs)), total, started, before)
