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
    AT_CHANCE,
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
from mnistlab.report.markup import printable
from mnistlab.sweep import timeleft
from mnistlab.sweep.context import SweepContext

log = logging.getLogger(__name__)


def write_csv(path: Path, jobs: list[Job]) -> None:
    """All columns, values as Python writes them (floats round-trip exactly)."""
    header = [encodable(key) for key in columns(jobs, METRIC_KEYS)]
    with open_atomic(path) as file:
        writer = csv.DictWriter(file, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        for job in jobs:
            writer.writerow({encodable(key): encodable(v) for key, v in row(job).items()})


def encodable(value: Any) -> Any:
    """`value`, but text with lone surrogates (a JSON `\\udcff`, a file name's bad byte) escaped:
    UTF-8 cannot write them."""
    if not isinstance(value, str):
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


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
    lines = [markdown_row([cell("", key) for key in header]), "|" + "---|" * len(header)]
    for place, job in enumerate(jobs, start=1):
        shown = {"rank": place if job.status == COMPLETED else "-", "status": job.status_text}
        values = row(job) | shown
        lines.append(markdown_row([cell(key, values.get(key, "")) for key in header]))
    return "\n".join(lines)


def markdown_row(cells: list[str]) -> str:
    """One table row of Markdown text."""
    return "| " + " | ".join(markdown(text) for text in cells) + " |"


def markdown(text: str) -> str:
    """Text that Markdown shows as it is: a `|` would split a row, a `<` start HTML where
    summary.md is shown as a page, `](` make a link (printed, a backslash shows before each)."""
    for special, escaped in (("\\", "\\\\"), ("|", "\\|"), ("<", "\\<"), ("](", "]\\(")):
        text = text.replace(special, escaped)
    return text


# A cell's most characters: a crafted value (100,000 brackets) stays a cell, not a page.
CELL_LIMIT = 1000


def cell(key: str, value: Any) -> str:
    """A value as people read it: accuracies in %, losses to 4 decimals; text on one line,
    printable (no control characters) and at most CELL_LIMIT characters."""
    if isinstance(value, float) and math.isfinite(value):
        return figure(key, value)
    if isinstance(value, int) and not -(10**15) < value < 10**15:
        return power_of_ten(value)
    text = printable(str(value).replace("\r\n", " ").replace("\n", " ").replace("\t", " "))
    return text if len(text) <= CELL_LIMIT else text[: CELL_LIMIT - 1] + "…"


def figure(key: str, value: float) -> str:
    """A finite number, rounded for its kind; in powers of ten where digits would run on."""
    percent = key.endswith("accuracy")
    shown = 100 * value if percent else value
    decimals = 2 if percent else {"samples_per_second": 0, "wall_time_s": 1}.get(key, 4)
    text = f"{shown:.{decimals}f}" if abs(shown) < 1e9 else f"{shown:.4g}"
    return text + ("%" if percent else "")


def power_of_ten(value: int) -> str:
    """A whole number of many digits as 1.234e+400 (float() would overflow past 1e308)."""
    digits = str(abs(value))
    return f"{'-' if value < 0 else ''}{digits[0]}.{digits[1:4]}e+{len(digits) - 1}"


def summary_text(sweep_dir: Path, jobs: list[Job], objective: str | None) -> str:
    """The summary.md text: a line on what was ranked, then the table."""
    counts = Counter(job.status for job in jobs)
    tally = ", ".join(f"{count} {status}" for status, count in counts.items())
    if objective is None:
        ranked = "not ranked: no job's config could be read"
    else:
        better = "higher" if objective in HIGHER_IS_BETTER else "lower"
        ranked = f"ranked by {objective} ({better} is better)"
    line = cell("", f"Sweep {sweep_dir}: {len(jobs)} jobs ({tally}), {ranked}")
    return f"{markdown(line)}\n\n{markdown_table(jobs)}\n"


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
    # The status, what the re-run did, the objective, then whether it ended at chance.
    status = job.status_text.split(",")[0]  # `completed, at chance`: the mark goes last
    result = cell("", f"{status} ({note})" if note else status)
    value = job.metrics.get(job.objective) if job.objective is not None else None
    if isinstance(value, float):
        result += f", {cell('', job.objective)}={cell(job.objective, value)}"
    if job.at_chance:
        result += f", {AT_CHANCE}"
    reason = job.metrics.get("error") or job.metrics.get("prune_reason")
    if reason:
        result += f": {cell('error', reason)[:120]}"
    return timeleft.line(label, result, len(finished(jobs)), total, started, before)
