"""scalars.csv: every scalar a run logs, in a plain file beside TensorBoard's events.

TensorBoard's event files need TensorBoard to read; the report (and anyone with a
spreadsheet) reads `scalars.csv` instead: one `step,tag,value` line per point, appended as the
run goes. `History` is its one writer, `read_scalars` its one reader. Kept free of torch.
"""

import csv
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnistlab.files import open_append, read_inside, write_text
from mnistlab.names import SCALARS_FILE

HEADER = "step,tag,value\n"
LIMIT = 2**30  # a run of a million steps logs about 60 MB: more is not a run's
Series = tuple[list[int], list[float]]  # one tag's steps and values


class History:
    """A SummaryWriter stand-in that passes scalars on and appends them to scalars.csv."""

    def __init__(self, writer: Any, folder: Path, purge_step: int | None = None) -> None:
        self.writer = writer
        self.path = folder / SCALARS_FILE
        if purge_step is not None and self.path.exists():
            keep_before(self.path, purge_step)  # as TensorBoard purges a killed run's last events
        elif not self.path.exists():
            write_text(self.path, HEADER)
        self.file = open_append(self.path)  # line-buffered: a crash loses no point

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        # float32 in the event file (HParams reads no double-precision scalars: tried, it shows
        # none), full precision in scalars.csv and metrics.json.
        self.writer.add_scalar(tag, value, step)
        self.file.write(f"{step},{tag},{value!r}\n")

    def close(self) -> None:
        self.file.close()
        self.writer.close()

    def __getattr__(self, name: str) -> Any:
        """Everything else (add_text, add_image, file_writer) is the SummaryWriter's."""
        return getattr(self.writer, name)


def keep_before(path: Path, step: int) -> None:
    """Drop the points at `step` or later: a resumed run logs them again (and damaged rows)."""
    kept = [f"{at},{tag},{value!r}\n" for at, tag, value in points(path) if at < step]
    write_text(path, HEADER + "".join(kept))


def points(path: Path) -> Iterator[tuple[int, str, float]]:
    """The (step, tag, value) rows of a scalars.csv; damaged rows (a kill, a stray byte) skipped.

    Read as mnistlab.files.read_inside reads: never through a link, never a FIFO, bounded.
    """
    text = read_inside(path.parent, path.name, limit=LIMIT).decode(errors="replace")
    reader = csv.reader(text.splitlines())
    next(reader, None)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:  # a crafted field over csv's size limit: that row only
            continue
        try:
            step, tag, value = int(row[0]), row[1], float(row[2])
        except (ValueError, IndexError):
            continue
        if len(row) == 3:
            yield step, tag, value


def read_scalars(folder: Path) -> dict[str, Series]:
    """tag -> (steps, values) from a run folder's scalars.csv; empty if it has none."""
    series: dict[str, Series] = defaultdict(lambda: ([], []))
    path = folder / SCALARS_FILE
    if not path.exists() and not path.is_symlink():
        return {}
    for step, tag, value in points(path):
        series[tag][0].append(step)
        series[tag][1].append(value)
    return dict(series)
