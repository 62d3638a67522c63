"""report.html: one or more sweeps on a static page that opens from disk, plots inline.

Built from the job folders alone (metrics.json, scalars.csv, Hydra's record), never from
event files: a ranked table with the reason of every job that did not complete; seeds (or any
key named with --group-over) folded into mean ± std over n jobs; every job's training and
validation curves overlaid; and the objective against each swept number.
"""

import logging
import shlex
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import suppress
from itertools import chain, repeat
from pathlib import Path

from mnistlab.files import open_atomic, read_inside, write_text
from mnistlab.names import (
    COMPLETED,
    HIGHER_IS_BETTER,
    METRICS,
    PRUNED,
    REPORT_FILE,
    REPORT_STAMP_FILE,
    SCALARS_FILE,
    SWEEP_RECORD_FILE,
    UNREADABLE,
)
from mnistlab.report.compare import provenance_of
from mnistlab.report.compare import shown as shown_value
from mnistlab.report.groups import (
    NAME_KEY,
    SEED_KEY,
    Group,
    Sweep,
    load_sweep,
    rank_groups,
    spread,
)
from mnistlab.report.interactive import (
    filter_box,
    links,
    pick_box,
    policy,
    script,
    settings_data,
)
from mnistlab.report.jobs import Job, finished, rank
from mnistlab.report.markup import Html, join, tag, trusted
from mnistlab.report.plots import curves_figure, objective_figures, parallel_figure
from mnistlab.report.provenance import provenance_section
from mnistlab.report.settings import common, differing
from mnistlab.report.summary import cell
from mnistlab.run.scalars import Series, read_scalars
from mnistlab.sweep import context

log = logging.getLogger(__name__)


def table(
    header: list[str], rows: Iterable[list[object]], classes: Iterable[str] = (), **attributes
) -> Html:
    """An HTML table; every header and cell is shown as `cell` has it, escaped by `tag`
    (a cell that is Html already, links we made, as it is)."""
    head = tag("tr", *(tag("th", cell("", name)) for name in header))
    body = (
        tag("tr", *(tag("td", shown(value)) for value in row), class_=css)
        for row, css in zip(rows, chain(classes, repeat("")), strict=False)
    )
    return tag("table", tag("thead", head), tag("tbody", *body), **attributes)


def shown(value: object) -> object:
    """A cell's value as `cell` shows it, unless it is markup we made."""
    return value if isinstance(value, Html) else cell("", value)


AT_CHANCE_ROW = "chance"  # a completed job's row, where it ended no better than guessing

# The shared settings named in the line above their table: what was trained on what, how long.
HEADLINE = ("source._target_", "model._target_", "optimizer._target_", ".batch_size", ".lr")


def shared_settings(jobs: list[Job]) -> Html:
    """The settings every job shares, folded away under one line that counts them."""
    shared = common(jobs)
    if not shared:
        return join([])
    rows = [[key, value] for key, value in shared.items()]
    said = tag("summary", f"Settings every job shares ({len(shared)}): ", headline(shared))
    return tag("details", said, table(["setting", "value"], rows))


def headline(shared: dict[str, str]) -> Html:
    """The shared settings people look for first, in one line."""
    keys = [key for key in shared if key.endswith(HEADLINE) or key.startswith("loop.epochs")]
    return cell("", ", ".join(f"{key}={shared[key]}" for key in keys))


def shown_keys(jobs: list[Job], objective: str) -> list[str]:
    """The objective first, then the other headline metrics some job has."""
    keys = [objective] + [key for key in METRICS if key != objective]
    return [key for key in keys if any(key in job.metrics for job in jobs)]


def group_table(groups: list[Group], keys: list[str], objective: str, sweeps: bool) -> Html:
    """Configurations ranked by mean objective: mean ± std over n completed jobs."""
    metrics = shown_keys([job for group in groups for job in group.jobs], objective)
    header = ["rank", *(["sweep"] if sweeps else []), *keys, "n", *metrics, "not completed"]
    rows, classes = [], []
    for place, group in enumerate(rank_groups(groups, objective), start=1):
        done = len(group.completed)
        others = [f"{j.folder.name}: {j.status_text}" for j in group.jobs if j.status != COMPLETED]
        rows.append(
            [
                place if done else "–",
                *([group.sweep] if sweeps else []),
                *(group.config.get(key, "") for key in keys),
                f"{done} of {len(group.jobs)}",
                *(spread(group, key) for key in metrics),
                "; ".join(others),
            ]
        )
        classes.append("" if done else PRUNED if group.pruned else "bad")
    return table(header, rows, classes, class_="sortable")


def job_table(sweep: Sweep, base: Path, table_id: str) -> Html:
    """Every job, best first; a job that did not complete with its status and reason; links
    from the page (in `base`) to each job's folder, log and config. Sortable, filterable."""
    metrics = shown_keys(sweep.jobs, sweep.objective) + ["samples_per_second", "wall_time_s"]
    # The reason last: the one column whose text wraps (a prune rule's reason is a sentence).
    header = ["rank", "diff", "job", *sweep.keys, "status", *metrics, "folder", "open", "reason"]
    rows, classes = [], []
    for place, job in enumerate(rank(sweep.jobs, sweep.objective), start=1):
        done = job.status == COMPLETED
        rows.append(
            [
                place if done else "–",
                pick_box(job.folder.name),
                "?" if job.num is None else job.num,
                *(job.overrides.get(key, "") for key in sweep.keys),
                job.status_text,
                *(cell(key, job.metrics[key]) if key in job.metrics else "" for key in metrics),
                job.folder.name,
                links(job.folder, base),
                job.metrics.get("error") or job.metrics.get("prune_reason", ""),
            ]
        )
        classes.append(
            AT_CHANCE_ROW
            if job.at_chance
            else ""
            if done
            else PRUNED
            if job.status == PRUNED
            else "bad"
        )
    settings = {job.folder.name: compared_fields(job) for job in sweep.jobs}
    data = f"{table_id}-settings"
    jobs = table(header, rows, classes, class_="sortable", id=table_id, data_settings=data)
    return join([filter_box(table_id), jobs, settings_data(table_id, settings)])


STYLE = trusted("""
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1600px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; }
td:last-child, th:last-child { text-align: left; white-space: normal; }
tr.bad td { color: #a00; background: #fff4f4; }
tr.pruned td { color: #8a5200; background: #fff7e8; }
tr.chance td { color: #a00; background: #fff0f0; font-style: italic; }
code { background: #f4f4f4; padding: 0.1em 0.3em; }
img { max-width: 100%; }
table.sortable th { cursor: pointer; }
input.filter { width: 40em; font-size: 0.9em; padding: 0.2em; }
a { margin-right: 0.4em; }
""")


def sweep_section(sweep: Sweep, several: bool, base: Path, table_id: str) -> Html:
    """One sweep: what it swept, its ranked configurations and jobs (the table `table_id`, with
    links from `base`), its plots."""
    groups = sweep.groups()
    scalars = {job.folder: scalars_of(job) for job in sweep.jobs}
    counts = ", ".join(f"{n} {s}" for s, n in Counter(job.status for job in sweep.jobs).items())
    better = "higher" if sweep.objective in HIGHER_IS_BETTER else "lower"
    logdir = f"tensorboard --logdir {shlex.quote(str(sweep.folder))}"
    named = sweep.name if sweep.name == sweep.folder.name else f"{sweep.name} ({sweep.folder})"
    parts = [
        tag("h2", cell("", named)) if several else "",
        tag(
            "p",
            cell("", f"{len(sweep.jobs)} jobs ({counts}){to_come(sweep)}; swept: "),
            cell("", ", ".join(sweep.keys) or "nothing"),
            "; ranked by ",
            tag("b", cell("", sweep.objective)),
            f" ({better} is better). TensorBoard: ",
            tag("code", logdir),
        ),
        shared_settings(sweep.jobs),
    ]
    if sweep.group_over:
        parts.append(tag("h3", "Configurations: mean ± std over ", cell("", sweep.group_over)))
        parts.append(group_table(groups, sweep.config_keys, sweep.objective, sweeps=False))
    parts += [tag("h3", "Jobs"), job_table(sweep, base, table_id), tag("h3", "Curves")]
    parts.append(curves_figure(sweep, groups, scalars))
    parts += objective_figures(sweep, groups)
    parallel = parallel_figure(sweep, groups)
    if parallel is not None:
        parts += [tag("h3", "Swept settings against the objective"), parallel]
    parts.append(provenance_section(sweep.jobs))
    return join(parts, "\n")


def scalars_of(job: Job) -> dict[str, Series]:
    """The job's scalars.csv, where it is a regular file inside the job folder; else none."""
    if job.status == UNREADABLE:  # a folder that is a link among them: nothing read through it
        return {}
    try:
        return read_scalars(job.folder)  # never through a link, never a FIFO (files.read_inside)
    except (OSError, ValueError) as error:  # unreadable, a link, a FIFO, too big
        log.warning("%s not read: %s", cell("", job.folder / SCALARS_FILE), cell("", error))
        return {}


INTRODUCTION = (
    "Accuracies in %, losses to 4 decimals; ± is the sample standard deviation over the jobs"
    " counted in n. Failed, interrupted and unfinished jobs are in red with their reason; pruned"
    " jobs in amber with the epoch and the reason, their curves ending in a cross; completed"
    " jobs that ended no better than guessing the commonest class (diverged, or not learning)"
    " in red italics, 'at chance'."
)


def page(sweeps: list[Sweep], base: Path) -> Html:
    """The whole report, to be read from the folder `base`: the sweeps compared (when
    several), then each one in turn."""
    title = cell("", "Sweep report: " + ", ".join(sweep.name for sweep in sweeps))
    written = time.strftime("%Y-%m-%d %H:%M:%S")
    meta = tag("meta", charset="utf-8"), policy(STYLE)
    head = tag("head", *meta, tag("title", title), tag("style", STYLE))
    parts = [
        tag("h1", title),
        tag("p", f"Written {written} by mnistlab-summarize. {INTRODUCTION}"),
    ]
    if len(sweeps) > 1:
        objective = sweeps[0].objective
        keys = compared_keys(sweeps)
        groups = [group for sweep in sweeps for group in sweep.groups(keys)]
        parts.append(tag("h2", "All sweeps, ranked by ", cell("", objective)))
        parts.append(shared_settings([job for sweep in sweeps for job in sweep.jobs]))
        parts.append(group_table(groups, keys, objective, sweeps=True))
        parts += [tag("h3", "Curves of all sweeps, overlaid"), overlaid(sweeps, keys)]
    several = len(sweeps) > 1
    parts += [sweep_section(sweep, several, base, f"jobs-{n}") for n, sweep in enumerate(sweeps)]
    parts.append(script())
    body = tag("body", join(parts, "\n"))
    return join([trusted("<!doctype html>"), tag("html", head, body)], "\n") + "\n"


def overlaid(sweeps: list[Sweep], keys: list[str]) -> Html:
    """The curves of every configuration of every sweep on one set of axes: colour by sweep,
    line style by the first setting that differs."""
    groups = [group for sweep in sweeps for group in sweep.groups(keys)]
    for group in groups:
        group.config = {"sweep": group.sweep, **group.config}
    jobs = [job for sweep in sweeps for job in sweep.jobs]
    every = Sweep(sweeps[0].folder.parent, jobs, sweeps[0].objective, ["sweep", *keys], None)
    return curves_figure(every, groups, {job.folder: scalars_of(job) for job in jobs})


def compared_fields(job: Job) -> dict[str, str]:
    """What the report's two-row diff compares: the job's settings, then its provenance (as
    `mnistlab-diff` shows them)."""
    fields = dict(job.settings)
    if job.status != UNREADABLE:  # a link among the jobs is never read through
        found = provenance_of(job.folder) or {}
        fields |= {f"provenance.{key}": shown_value(value) for key, value in found.items()}
    return fields


def compared_keys(sweeps: list[Sweep]) -> list[str]:
    """The columns of sweeps compared: every setting that differs anywhere (fixed values
    filled in), less what each sweep folds over (the seed) and its name (a column of its own)."""
    jobs = [job for sweep in sweeps for job in sweep.jobs]
    given = list(dict.fromkeys(key for job in jobs for key in job.overrides))
    folded = {sweep.group_over for sweep in sweeps} | {NAME_KEY}
    return [key for key in differing(jobs, given) if key not in folded]


def to_come(sweep: Sweep) -> str:
    """`, 6 of 9 still to run` while the sweep runs (from its context), else nothing."""
    known = context.read(sweep.folder)
    total = known.total if known is not None else None
    ended = len(finished(sweep.jobs))
    return f", {total - ended} of {total} still to run" if total and total > ended else ""


def write_report(folders: list[Path], out: Path, group_over: str = SEED_KEY) -> Path:
    """Build report.html for the sweeps in `folders` and write it (atomically) to `out`."""
    sweeps = [load_sweep(folder, group_over) for folder in folders]
    text = page(sweeps, out.absolute().parent)  # escaped: markup
    with open_atomic(out) as file:
        file.write(text)
    return out


def refresh(sweep_dir: Path, every: float) -> None:
    """After a job: rebuild the sweep's report if its last build is `every` seconds old.

    A build reads every job, so rebuilding after each of n jobs would cost n² reads: builds
    are also ten build-times apart, which keeps them under a tenth of the sweep's time. Before
    the first build the sweep's start counts as one (when its `sweep.yaml` was written), so a
    sweep shorter than `every` draws its report once, at its end (`summary.print_summary`),
    which always rebuilds it.
    """
    stamp = sweep_dir / REPORT_STAMP_FILE
    with suppress(OSError, ValueError):  # no record of either, or a damaged stamp: build
        try:  # read as a job's files are: a FIFO or a link in its place is refused, not waited on
            built_at, took = map(float, read_inside(sweep_dir, REPORT_STAMP_FILE).split())
        except FileNotFoundError:
            built_at, took = (sweep_dir / SWEEP_RECORD_FILE).stat().st_mtime, 0.0
        if time.time() - built_at < max(every, 10 * took):
            return
    started = time.time()
    try:
        write_report([sweep_dir], sweep_dir / REPORT_FILE)
        write_text(stamp, f"{started} {time.time() - started}\n")
    except OSError as error:  # a read-only sweep folder, a full disk: the sweep goes on
        log.warning("report.html not written in %s: %s", sweep_dir, error)
