"""report.html: one or more sweeps on a static page that opens from disk, plots inline.

Built from the job folders alone (metrics.json, scalars.csv, Hydra's record), never from
event files: a ranked table with the reason of every job that did not complete; seeds (or any
key named with --group-over) folded into mean ± std over n jobs; every job's training and
validation curves overlaid; and the objective against each swept number.
"""

import base64
import html
import io
import logging
import math
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistlab.files import open_atomic, write_text
from mnistlab.names import (
    BATCH_TAGS,
    COMPLETED,
    HIGHER_IS_BETTER,
    METRICS,
    PRUNED,
    REPORT_FILE,
    REPORT_STAMP_FILE,
    SWEEP_RECORD_FILE,
    TAGS,
)
from mnistlab.report.jobs import Job, find_jobs, objective_of, rank, swept_keys
from mnistlab.report.summary import cell
from mnistlab.run.scalars import read_scalars

log = logging.getLogger(__name__)

SEED_KEY = "loop.seed"
STYLES = ("-", "--", ":", "-.")


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
        found = (job.metrics.get(key) for job in self.completed)
        return [v for v in found if isinstance(v, int | float) and math.isfinite(v)]

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.fmean(values) if values else None

    def std(self, key: str) -> float | None:
        """The sample standard deviation over the group's jobs (None for fewer than 2)."""
        values = self.values(key)
        return statistics.stdev(values) if len(values) > 1 else None

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

    def groups(self) -> list[Group]:
        """The sweep's jobs by configuration (one group per job when nothing is folded)."""
        groups: dict[tuple[str, ...], Group] = {}
        for job in self.jobs:
            config = {key: job.overrides.get(key, "") for key in self.config_keys}
            if self.group_over is None:
                config["job"] = job.folder.name
            found = groups.setdefault(tuple(config.values()), Group(self.folder.name, config))
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


def table(header: list[str], rows: Iterable[list[str]], classes: Iterable[str] = ()) -> str:
    """An HTML table; cells are escaped here."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = "".join(
        f'<tr class="{css}">' + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        for row, css in zip(rows, list(classes) or [""] * 10**9, strict=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def shown_keys(jobs: list[Job], objective: str) -> list[str]:
    """The objective first, then the other headline metrics some job has."""
    keys = [objective] + [key for key in METRICS if key != objective]
    return [key for key in keys if any(key in job.metrics for job in jobs)]


def group_table(groups: list[Group], keys: list[str], objective: str, sweeps: bool) -> str:
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
    return table(header, rows, classes)


def job_table(sweep: Sweep) -> str:
    """Every job, best first; a job that did not complete with its status and reason."""
    metrics = shown_keys(sweep.jobs, sweep.objective) + ["samples_per_second", "wall_time_s"]
    # The reason last: the one column whose text wraps (a prune rule's reason is a sentence).
    header = ["rank", "job", *sweep.keys, "status", *metrics, "folder", "reason"]
    rows, classes = [], []
    for place, job in enumerate(rank(sweep.jobs, sweep.objective), start=1):
        done = job.status == COMPLETED
        rows.append(
            [
                place if done else "–",
                "?" if job.num is None else job.num,
                *(job.overrides.get(key, "") for key in sweep.keys),
                job.status_text,
                *(cell(key, job.metrics[key]) if key in job.metrics else "" for key in metrics),
                job.folder.name,
                job.metrics.get("error") or job.metrics.get("prune_reason", ""),
            ]
        )
        classes.append("" if done else PRUNED if job.status == PRUNED else "bad")
    return table(header, rows, classes)


DPI = 80  # of the PNGs: a 15-inch figure is 1200 pixels wide


def figure_of(width: float, height: float, columns: int = 1) -> tuple[Any, Any]:
    """A figure (not pyplot's: nothing keeps it) and its `columns` axes side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def fit(figure: Any, legend: Any = None) -> None:
    """Margins for the tick labels, axis labels and titles; on the right, room for `legend`.

    Set in inches, where matplotlib's constrained layout would measure every tick label first
    (half of a report's drawing time): only the legend and what sits left of each axes (its y
    axis's labels: long ones like 0.97005 too) are measured, once.
    """
    width, height = figure.get_size_inches()
    figure.subplots_adjust(bottom=0.6 / height, top=1 - 0.4 / height)  # this sets the y ticks
    renderer = figure.canvas.get_renderer()
    right = width - 0.25
    if legend is not None:  # placed in the figure's top right corner, outside the plots
        right -= legend.get_window_extent(renderer).width / figure.dpi
    reach = max(left_of(axes, renderer) for axes in figure.axes)
    left, gap = max(0.8, reach + 0.1), max(0.75, reach + 0.25)  # inches; gap: axes side by side
    columns = len(figure.axes)
    each = (right - left - (columns - 1) * gap) / columns
    # wspace as matplotlib has it: a fraction of an axes' width
    figure.subplots_adjust(left=left / width, right=right / width, wspace=gap / each)


def left_of(axes: Any, renderer: Any) -> float:
    """How far (in inches) the y axis's tick labels and label reach out left of `axes`."""
    reach = axes.get_window_extent(renderer).x0 - axes.yaxis.get_tightbbox(renderer).x0
    return reach / axes.get_figure().dpi


def png(figure: Any) -> str:
    """A matplotlib figure as an inline <img> (base64 PNG)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def styles(groups: list[Group], keys: list[str]) -> dict[int, tuple[Any, str]]:
    """Colour by the first swept key, line style by the second: id(group) -> (colour, style)."""
    import matplotlib

    def values(key: str | None) -> list[str]:
        return list(dict.fromkeys(group.config.get(key, "") for group in groups)) if key else [""]

    colour_key, style_key = (keys + [None, None])[:2]
    colours, lines = values(colour_key), values(style_key)
    palette = matplotlib.colormaps["tab10" if len(colours) <= 10 else "viridis"]
    spread_of = max(len(colours) - 1, 1)

    def colour(n: int) -> Any:
        return palette(n) if len(colours) <= 10 else palette(n / spread_of)

    return {
        id(group): (
            colour(colours.index(group.config.get(colour_key, "") if colour_key else "")),
            STYLES[lines.index(group.config.get(style_key, "") if style_key else "") % 4],
        )
        for group in groups
    }


Series = tuple[list[int], list[float]]


def group_curve(group: Group, tag: str, scalars: dict[Path, dict[str, Series]]):
    """(steps, mean, low, high) of `tag` over the group's jobs, at the steps all of them have."""
    jobs = group.completed or group.jobs
    series = [scalars[job.folder][tag] for job in jobs if tag in scalars[job.folder]]
    if not series:
        return None
    common = set(series[0][0]).intersection(*(set(steps) for steps, _ in series[1:]))
    steps = sorted(common)
    columns = [[dict(zip(s, v, strict=True))[step] for step in steps] for s, v in series]
    rows = list(zip(*columns, strict=True))
    means = [statistics.fmean(row) for row in rows]
    return steps, means, [min(row) for row in rows], [max(row) for row in rows]


def limits(curves: list[list[float]]) -> tuple[float, float, bool]:
    """(bottom, top, log): top leaves out curves far above the typical one (diverged runs)."""
    finite = [[v for v in curve if math.isfinite(v)] for curve in curves]
    finite = [curve for curve in finite if curve]
    if not finite:
        return 0.0, 1.0, False
    peaks = sorted(max(curve) for curve in finite)
    # A slow run peaks a few times higher than the rest; a diverged one by orders of magnitude.
    top = min(peaks[-1], 10 * statistics.median(peaks))
    bottom = min(min(curve) for curve in finite)
    log = bottom > 0 and top / bottom > 10
    margin = (top / bottom) ** 0.05 if log else 0.05 * (top - bottom or 1.0)
    if log:
        return bottom / margin, top * margin, True
    return bottom - margin, top + margin, False


def draw_curves(axes: Any, groups, look, tag: str, scalars) -> list[str]:
    """Every group's curve of `tag` on `axes`, clipped so that diverged runs squash nothing.

    Returns the labels of the curves that leave the top (or hold inf or nan)."""
    drawn = [(group, group_curve(group, tag, scalars)) for group in groups]
    drawn = [(group, curve) for group, curve in drawn if curve is not None]
    if not drawn:
        axes.text(0.5, 0.5, f"no job logged {tag}", ha="center", transform=axes.transAxes)
        return []
    percent = 100 if tag.endswith("accuracy") else 1  # for people: accuracies in %
    for group, (steps, mean, low, high) in drawn:
        mean, low, high = ([percent * v for v in series] for series in (mean, low, high))
        colour, style = look[id(group)]
        dot = "o" if len(steps) == 1 else None  # one epoch: a lone point draws no line
        axes.plot(steps, mean, color=colour, linestyle=style, linewidth=1.2, marker=dot)
        if group.pruned:  # where the rule stopped it: a cross at the curve's end
            axes.plot(steps[-1:], mean[-1:], color=colour, marker="X", markersize=9)
        if len(group.completed) > 1:
            axes.fill_between(steps, low, high, color=colour, alpha=0.15, linewidth=0)
    bottom, top, log = limits([[percent * v for v in curve[1]] for _, curve in drawn])
    if log:
        log_scale(axes.yaxis)
    axes.set_ylim(bottom, top)
    above = [g.label for g, c in drawn if any(not math.isfinite(v) or v > top for v in c[1])]
    title = tag + (" (%)" if percent == 100 else "")
    axes.set_title(title + (" (some curves leave the top)" if above else ""))
    axes.set_xlabel("step")
    axes.grid(alpha=0.3)
    return above


def legend(figure: Any, groups: list[Group], keys: list[str], look) -> Any:
    """One entry per colour and per line style, not per line."""
    from matplotlib.lines import Line2D

    handles, seen = [], set()
    for position, key in enumerate(keys[:2]):
        for group in groups:
            value = group.config.get(key, "")
            if (key, value) in seen:
                continue
            seen.add((key, value))
            colour, style = look[id(group)]
            handles.append(
                Line2D(
                    [],
                    [],
                    color=colour if position == 0 else "black",
                    linestyle=style if position == 1 else "-",
                    label=f"{key}={value}",
                )
            )
    if any(group.pruned for group in groups):
        handles.append(Line2D([], [], color="black", marker="X", linestyle="", label=PRUNED))
    if not handles:
        return None
    return figure.legend(handles=handles, loc="upper right", fontsize=8, borderaxespad=0.2)


def curves_figure(sweep: Sweep, groups: list[Group], scalars) -> str:
    """Training loss (every logging point) and the validation curves, all jobs overlaid."""
    tags = [BATCH_TAGS["loss"], TAGS["val_loss"], TAGS["val_accuracy"]]
    figure, axes = figure_of(15, 4, columns=3)
    look = styles(groups, sweep.config_keys)
    above: dict[str, list[str]] = {}
    for ax, tag in zip(axes, tags, strict=True):
        for label in draw_curves(ax, groups, look, tag, scalars):
            above.setdefault(label, []).append(tag)
    fit(figure, legend(figure, groups, sweep.config_keys, look))
    return styling_note(sweep) + png(figure) + clipped_note(above)


def styling_note(sweep: Sweep) -> str:
    """Which key sets the colour and which the line style, and what a band means."""
    colour, style = (sweep.config_keys + ["–", "–"])[:2]
    text = f"Colour: {colour}; line style: {style}"
    if sweep.group_over:
        text += f"; each line the mean over {sweep.group_over}, shaded from lowest to highest"
    return f"<p>{html.escape(text)}.</p>"


def clipped_note(above: dict[str, list[str]]) -> str:
    """The curves cut off at the top, so that nobody misses a diverged run."""
    if not above:
        return ""
    lines = (f"{label}: {', '.join(tags)}" for label, tags in above.items())
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f"<p>Off the top of the charts (diverged, or far above the rest):</p><ul>{items}</ul>"


def log_scale(axis: Any) -> None:
    """A log axis labelled 0.1, 0.2, 0.5, 1, 2 (not 10^-1, 2x10^-1, ...)."""
    from matplotlib.ticker import FuncFormatter

    axis._set_axes_scale("log")
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    # Between the powers of ten, only 2 and 5 are labelled: the rest would overlap.
    axis.set_minor_formatter(
        FuncFormatter(lambda value, _: f"{value:g}" if f"{value:e}"[0] in "25" else "")
    )


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def objective_figures(sweep: Sweep, groups: list[Group]) -> list[str]:
    """The objective against each swept numeric key (the "which lr for which optimizer" plot)."""
    figures = []
    for key in sweep.config_keys:
        if all(number(group.config.get(key, "")) is not None for group in groups):
            figure = objective_figure(sweep, groups, key)
            if figure:
                figures.append(figure)
    return figures


def objective_figure(sweep: Sweep, groups: list[Group], key: str) -> str:
    """The objective against `key`, one line per value of the other keys, ± std as bars."""
    others = [other for other in sweep.config_keys if other != key]
    lines: dict[str, list[tuple[float, Group]]] = {}
    for group in groups:
        if group.mean(sweep.objective) is not None:
            name = ", ".join(f"{o}={group.config.get(o, '')}" for o in others) or sweep.objective
            lines.setdefault(name, []).append((number(group.config[key]), group))
    if not lines:
        return ""
    figure, (axes,) = figure_of(7, 4)
    for name, points in lines.items():
        points.sort(key=lambda point: point[0])
        means = [group.mean(sweep.objective) for _, group in points]
        errors = [group.std(sweep.objective) or 0.0 for _, group in points]
        xs = [x for x, _ in points]
        axes.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=name)
    xs = [x for points in lines.values() for x, _ in points]
    if min(xs) > 0 and max(xs) / min(xs) >= 10:  # learning rates and the like
        axes.set_xscale("log")
    axes.set_xticks(sorted(set(xs)), [f"{x:g}" for x in sorted(set(xs))])  # the swept values
    axes.xaxis.set_minor_formatter("")
    bottom, top, log = limits([[g.mean(sweep.objective) for _, g in p] for p in lines.values()])
    if log:
        log_scale(axes.yaxis)
    axes.set_ylim(bottom, top)
    better = "higher" if sweep.objective in HIGHER_IS_BETTER else "lower"
    axes.set(xlabel=key, ylabel=f"{sweep.objective} ({better} is better)")
    axes.set_title(f"{sweep.objective} against {key}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    fit(figure)
    return png(figure)


CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1600px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; }
td:last-child, th:last-child { text-align: left; white-space: normal; }
tr.bad td { color: #a00; background: #fff4f4; }
tr.pruned td { color: #8a5200; background: #fff7e8; }
code { background: #f4f4f4; padding: 0.1em 0.3em; }
img { max-width: 100%; }
"""


def sweep_section(sweep: Sweep, several: bool) -> str:
    """One sweep: what it swept, its ranked configurations and jobs, its plots."""
    groups = sweep.groups()
    scalars = {job.folder: read_scalars(job.folder) for job in sweep.jobs}
    counts = ", ".join(f"{n} {s}" for s, n in Counter(job.status for job in sweep.jobs).items())
    better = "higher" if sweep.objective in HIGHER_IS_BETTER else "lower"
    parts = [
        f"<h2>{html.escape(str(sweep.folder))}</h2>" if several else "",
        f"<p>{len(sweep.jobs)} jobs ({counts}); swept: "
        f"{html.escape(', '.join(sweep.keys) or 'nothing')}; ranked by "
        f"<b>{sweep.objective}</b> ({better} is better). TensorBoard: "
        f"<code>tensorboard --logdir {html.escape(str(sweep.folder))}</code></p>",
    ]
    if sweep.group_over:
        parts.append(f"<h3>Configurations: mean ± std over {sweep.group_over}</h3>")
        parts.append(group_table(groups, sweep.config_keys, sweep.objective, sweeps=False))
    parts += ["<h3>Jobs</h3>", job_table(sweep), "<h3>Curves</h3>"]
    parts.append(curves_figure(sweep, groups, scalars))
    parts += objective_figures(sweep, groups)
    return "\n".join(parts)


def page(sweeps: list[Sweep]) -> str:
    """The whole report: the sweeps compared (when several), then each one in turn."""
    title = "Sweep report: " + ", ".join(sweep.folder.name for sweep in sweeps)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>Written {time.strftime('%Y-%m-%d %H:%M:%S')} by mnistlab-summarize. Accuracies in %,"
        " losses to 4 decimals; ± is the sample standard deviation over the jobs counted in n."
        " Failed, interrupted and unfinished jobs are in red with their reason; pruned jobs in"
        " amber with the epoch and the reason, their curves ending in a cross.</p>",
    ]
    if len(sweeps) > 1:
        objective = sweeps[0].objective
        keys = list(dict.fromkeys(key for sweep in sweeps for key in sweep.config_keys))
        groups = [group for sweep in sweeps for group in sweep.groups()]
        parts.append(f"<h2>All sweeps, ranked by {objective}</h2>")
        parts.append(group_table(groups, keys, objective, sweeps=True))
    parts += [sweep_section(sweep, len(sweeps) > 1) for sweep in sweeps]
    return "\n".join(parts) + "\n</body></html>\n"


def write_report(folders: list[Path], out: Path, group_over: str = SEED_KEY) -> Path:
    """Build report.html for the sweeps in `folders` and write it (atomically) to `out`."""
    text = page([load_sweep(folder, group_over) for folder in folders])
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
        if stamp.exists():
            built_at, took = map(float, stamp.read_text().split())
        else:
            built_at, took = (sweep_dir / SWEEP_RECORD_FILE).stat().st_mtime, 0.0
        if time.time() - built_at < max(every, 10 * took):
            return
    started = time.time()
    try:
        write_report([sweep_dir], sweep_dir / REPORT_FILE)
        write_text(stamp, f"{started} {time.time() - started}\n")
    except OSError as error:  # a read-only sweep folder, a full disk: the sweep goes on
        log.warning("report.html not written in %s: %s", sweep_dir, error)
