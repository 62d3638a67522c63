"""How every benchmark shows and saves its figures: a text table, results.json/.csv, scalars."""

import csv
import logging
from pathlib import Path
from typing import Any

from mnistlab.files import open_atomic, write_json

log = logging.getLogger(__name__)


def format_table(cells: list[list[str]], left: int = 0) -> str:
    """Lay out `cells` (first row: headings) under a rule: `left` text columns, then numbers."""
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    ]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def write_results(out_dir: Path, results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """results.json (everything) and results.csv (the table's rows) in the run folder."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open_atomic(out_dir / "results.csv") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    write_json(out_dir / "results.json", results)  # last: the csv holds whatever it lists
    log.info("results written to %s (%d rows)", out_dir, len(rows))


def write_scalars(out_dir: Path, series: dict[str, list[tuple[int, float]]]) -> None:
    """Write each tag's (step, value) points into the run folder's own event file."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(out_dir)) as writer:
        for tag, points in series.items():
            for step, value in points:
                writer.add_scalar(tag, value, step)
