"""report.html's figures: the curves of every configuration, and the objective against each
swept number. Drawn on matplotlib's Agg canvas without pyplot, inlined as PNG data.
"""

import base64
import io
import math
import statistics
from pathlib import Path
from typing import Any

from mnistlab.names import BATCH_TAGS, HIGHER_IS_BETTER, PRUNED, TAGS
from mnistlab.private import matplotlib as matplotlib_private
from mnistlab.report import markup
from mnistlab.report.groups import Group, Sweep, average, rank_groups
from mnistlab.report.markup import Html, join, printable, trusted
from mnistlab.report.summary import cell
from mnistlab.run.scalars import Series

STYLES = ("-", "--", ":", "-.")
DPI = 80  # of the PNGs: a 15-inch figure is 1200 pixels wide
# The largest value an axis spans: past it matplotlib's ticks overflow (`arange: cannot compute
# length` at ±1e308); a curve beyond it is drawn at its edge, and listed as off the top.
AXIS_LIMIT = 1e300
LABEL_LIMIT = 40  # characters of a crafted key or value that a figure shows: it stays a figure
LEGEND_LIMIT = 12  # configurations named in a legend, best first
MARKED = 20  # a curve of this many points or fewer (per-epoch ones) marks each point


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
    labels = axes.yaxis.get_tightbbox(renderer)
    if labels is None:  # no label on it (parallel coordinates)
        return 0.0
    return (axes.get_window_extent(renderer).x0 - labels.x0) / axes.get_figure().dpi


def png(figure: Any) -> Html:
    """A matplotlib figure as an inline <img> (base64 PNG)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return markup.tag("img", alt="plot", src=trusted(f"data:image/png;base64,{data}"))


def plain(text: str) -> str:
    """Text for a figure: shown as it is (a `$` pair would start matplotlib's math, and fail on
    `$\\x$`), on one line, and short enough that the legend leaves room for the plots."""
    text = printable(text.replace("\n", " "))
    if len(text) > LABEL_LIMIT:
        text = text[: LABEL_LIMIT - 1] + "…"
    return text.replace("$", r"\$")


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
    means = [average(row) for row in rows]
    return steps, means, [min(row) for row in rows], [max(row) for row in rows]


def limits(curves: list[list[float]]) -> tuple[float, float, bool]:
    """(bottom, top, log): top leaves out curves far above the typical one (diverged runs)."""
    finite = [[clip(v) for v in curve if math.isfinite(v)] for curve in curves]
    finite = [curve for curve in finite if curve]
    if not finite:
        return 0.0, 1.0, False
    peaks = sorted(max(curve) for curve in finite)
    # A slow run peaks a few times higher than the rest; a diverged one by orders of magnitude.
    top = min(peaks[-1], 10 * statistics.median(peaks))
    bottom = min(min(curve) for curve in finite)
    log = bottom > 0 and top / bottom > 10
    margin = (top / bottom) ** 0.05 if log else 0.05 * (top - bottom or 1.0)
    low, high = (bottom / margin, top * margin) if log else (bottom - margin, top + margin)
    if not (math.isfinite(low) and math.isfinite(high)):  # numbers near the largest float
        return bottom, top, log
    return low, high, log


def clip(value: float) -> float:
    """`value` within ±AXIS_LIMIT (nan stays nan)."""
    return value if not abs(value) > AXIS_LIMIT else math.copysign(AXIS_LIMIT, value)


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
        mean, low, high = ([clip(percent * v) for v in series] for series in (mean, low, high))
        colour, style = look[id(group)]
        dot = "o" if len(steps) <= MARKED else None  # per-epoch points: each one seen
        axes.plot(steps, mean, color=colour, linestyle=style, linewidth=1.2, marker=dot, ms=4)
        if group.pruned:  # where the rule stopped it: a cross at the curve's end
            axes.plot(steps[-1:], mean[-1:], color=colour, marker="X", markersize=9)
        if len(group.completed) > 1:
            axes.fill_between(steps, low, high, color=colour, alpha=0.15, linewidth=0)
    # The bands (lowest to highest over the seeds) inside the axes too, not only the means.
    bottom, top, log = limits([[percent * v for v in c[1] + c[2] + c[3]] for _, c in drawn])
    if log:
        log_scale(axes.yaxis)
    axes.set_ylim(bottom, top)
    above = [g.label for g, c in drawn if any(not math.isfinite(v) or v > top for v in c[1])]
    title = tag + (" (%)" if percent == 100 else "")
    axes.set_title(title + (" (some curves leave the top)" if above else ""))
    axes.set_xlabel("step")
    axes.grid(alpha=0.3)
    return above


def legend(figure: Any, groups: list[Group], objective: str, look) -> Any:
    """One entry per configuration, best first, naming it and its mean objective (at most
    LEGEND_LIMIT: the rest are counted), with its colour and line style."""
    from matplotlib.lines import Line2D

    ranked = rank_groups(groups, objective)
    handles = []
    for place, group in enumerate(ranked[:LEGEND_LIMIT], start=1):
        colour, style = look[id(group)]
        mean = group.mean(objective)
        figure_text = "" if mean is None else f" ({cell(objective, mean)})"
        label = plain(f"{place}. {group.label}") + figure_text
        handles.append(Line2D([], [], color=colour, linestyle=style, linewidth=2, label=label))
    if len(ranked) > LEGEND_LIMIT:
        more = f"… {len(ranked) - LEGEND_LIMIT} more (colour and line style above)"
        handles.append(Line2D([], [], linestyle="", label=more))
    if any(group.pruned for group in groups):
        handles.append(Line2D([], [], color="black", marker="X", linestyle="", label=PRUNED))
    title = f"by {plain(objective)}"
    return figure.legend(
        handles=handles, loc="upper right", fontsize=10, title=title, borderaxespad=0.2
    )


def curves_figure(sweep: Sweep, groups: list[Group], scalars) -> Html:
    """Training loss (every logging point) and the validation curves, all jobs overlaid."""
    tags = [BATCH_TAGS["loss"], TAGS["val_loss"], TAGS["val_accuracy"]]
    figure, axes = figure_of(15, 4, columns=3)
    look = styles(groups, sweep.config_keys)
    above: dict[str, list[str]] = {}
    for ax, tag in zip(axes, tags, strict=True):
        for label in draw_curves(ax, groups, look, tag, scalars):
            above.setdefault(label, []).append(tag)
    fit(figure, legend(figure, groups, sweep.objective, look))
    return join([styling_note(sweep), png(figure), clipped_note(above)])


def styling_note(sweep: Sweep) -> Html:
    """Which key sets the colour and which the line style, and what a band means."""
    colour, style = (sweep.config_keys + ["–", "–"])[:2]
    text = f"Colour: {colour}; line style: {style}"
    if sweep.group_over:
        text += f"; each line the mean over {sweep.group_over}, shaded from lowest to highest"
    return markup.tag("p", cell("", text), ".")


def clipped_note(above: dict[str, list[str]]) -> Html:
    """The curves cut off at the top, so that nobody misses a diverged run."""
    if not above:
        return Html()
    items = (
        markup.tag("li", cell("", f"{label}: {', '.join(tags)}")) for label, tags in above.items()
    )
    return join(
        [
            markup.tag("p", "Off the top of the charts (diverged, or far above the rest):"),
            markup.tag("ul", *items),
        ]
    )


def log_scale(axis: Any) -> None:
    """A log axis labelled 0.1, 0.2, 0.5, 1, 2 (not 10^-1, 2x10^-1, ...)."""
    from matplotlib.ticker import FuncFormatter

    matplotlib_private.log_scale(axis)
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    # Between the powers of ten, only 2 and 5 are labelled: the rest would overlap.
    axis.set_minor_formatter(
        FuncFormatter(lambda value, _: f"{value:g}" if f"{value:e}"[0] in "25" else "")
    )


def number(text: str) -> float | None:
    """A swept value as a finite number, or None (text, or inf and nan: no place on an axis)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def objective_figures(sweep: Sweep, groups: list[Group]) -> list[Html]:
    """The objective against each swept numeric key (the "which lr for which optimizer" plot)."""
    figures = []
    for key in sweep.config_keys:
        if all(number(group.config.get(key, "")) is not None for group in groups):
            figure = objective_figure(sweep, groups, key)
            if figure:
                figures.append(figure)
    return figures


def objective_figure(sweep: Sweep, groups: list[Group], key: str) -> Html | None:
    """The objective against `key`, one line per value of the other keys, ± std as bars."""
    others = [other for other in sweep.config_keys if other != key]
    lines: dict[str, list[tuple[float, Group]]] = {}
    for group in groups:
        if group.mean(sweep.objective) is not None:
            name = ", ".join(f"{o}={group.config.get(o, '')}" for o in others) or sweep.objective
            lines.setdefault(plain(name), []).append((number(group.config[key]), group))
    if not lines:
        return None
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
    objective, name = plain(sweep.objective), plain(key)
    axes.set(xlabel=name, ylabel=f"{objective} ({better} is better)")
    axes.set_title(f"{objective} against {name}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    fit(figure)
    return png(figure)


def parallel_figure(sweep: Sweep, groups: list[Group]) -> Html | None:
    """Parallel coordinates: an axis per swept setting and one for the objective, a line per
    configuration through its values, coloured by its rank (best darkest). Two keys or more."""
    keys, objective = sweep.config_keys, sweep.objective
    ranked = [g for g in rank_groups(groups, objective) if g.mean(objective) is not None]
    if len(keys) < 2 or not ranked:
        return None
    import matplotlib

    axes_values = [axis_positions([g.config.get(key, "") for g in ranked]) for key in keys]
    means = [g.mean(objective) for g in ranked]
    bottom, top, log = limits([means])
    scaled = [(math.log(m) if log else m) for m in (clip(min(max(m, bottom), top)) for m in means)]
    low, high = (math.log(bottom), math.log(top)) if log else (bottom, top)
    ends = {cell(objective, bottom): 0.0, cell(objective, top): 1.0}  # its range, as labels
    axes_values.append((ends, [(v - low) / ((high - low) or 1.0) for v in scaled]))
    figure, (axes,) = figure_of(2.2 * len(axes_values) + 2, 4)
    palette = matplotlib.colormaps["viridis"]
    for n in range(len(ranked)):
        ys = [positions[n] for _, positions in axes_values]
        colour = palette(0.85 * n / max(len(ranked) - 1, 1))
        axes.plot(range(len(ys)), ys, color=colour, linewidth=2 if n < 3 else 1, marker="o")
    for x, (ticks, _) in enumerate(axes_values):
        axes.axvline(x, color="#888", linewidth=0.8)
        for text, y in ticks.items():
            axes.text(x + 0.03, y, plain(text), fontsize=9, va="center")
    names = [plain(key) for key in keys] + [f"{plain(objective)} (mean)"]
    axes.set_xticks(range(len(names)), names)
    axes.set_yticks([])  # the objective's axis carries its range
    axes.set_ylim(-0.05, 1.05)
    axes.set_title(f"swept settings against {plain(objective)}: darker is better")
    fit(figure)
    return png(figure)


def axis_positions(values: list[str]) -> tuple[dict[str, float], list[float]]:
    """Where each value sits on its axis (0 to 1): numbers by size (log where they span 10x
    or more), text evenly in the order met. Returns the tick of each value and the positions."""
    distinct = list(dict.fromkeys(values))
    numbers = [number(value) for value in distinct]
    if all(n is not None for n in numbers):
        spread_log = min(numbers) > 0 and max(numbers) / min(numbers) >= 10
        scale = [math.log(n) if spread_log else n for n in numbers]
        low, high = min(scale), max(scale)
        place = {v: (s - low) / ((high - low) or 1.0) for v, s in zip(distinct, scale, strict=True)}
    else:
        place = {v: n / max(len(distinct) - 1, 1) for n, v in enumerate(distinct)}
    return place, [place[value] for value in values]
