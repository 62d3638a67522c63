"""The names runs share: metrics, their TensorBoard tags and direction, run statuses, and the
settings that say where the data lives.

Every scalar a run logs is also kept in a plain `scalars.csv` in its folder. TensorBoard's
event files need TensorBoard to read; the report (and anyone with a spreadsheet) reads
`scalars.csv` instead: one `step,tag,value` line per point, appended as the run goes.
Kept free of torch, so that `mnistlab-summarize` starts quickly.
"""

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

# Where the data lives and how it is read: a resumed run or a re-run sweep may change these.
WHERE_DATA_LIVES = (
    "dataset.source.root",
    "dataset.source.mirrors",
    "dataset.source.download",
    "dataset.source.download_deadline_s",
    "dataset.source.checksums",
    "dataset.source.md5",
    "dataset.source.md5.*",
    "dataset.loader.num_workers",
)

SCALARS_FILE = "scalars.csv"
HEADER = "step,tag,value\n"
# metrics.json key -> TensorBoard tag. Accuracies are fractions in both; people see percent.
TAGS = {
    "train_loss": "train/loss",  # the epoch's mean over all its samples
    "train_accuracy": "train/accuracy",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
    "test_loss": "test/loss",
    "test_accuracy": "test/accuracy",
    "samples_per_second": "train/samples_per_second",
    "wall_time_s": "train/wall_time_s",
}
# Metrics where a larger value is better (the others are losses: smaller is better).
HIGHER_IS_BETTER = frozenset({"train_accuracy", "val_accuracy", "test_accuracy"})
# What `objective` and `loop.target.metric` may name, in the order the summary shows them.
METRICS = ("train_loss", "val_loss", "val_accuracy", "test_loss", "test_accuracy")

# metrics.json's `status`: how a run ended.
COMPLETED = "completed"
INTERRUPTED = "interrupted"  # by a signal: resume it
FAILED = "failed"
PRUNED = "pruned"  # stopped as hopeless by a sweep.prune rule: resume it to train on
# What the summary says of a job folder without a status of its own.
UNFINISHED = "unfinished"  # no metrics.json: still running, or killed
UNREADABLE = "unreadable"  # a damaged job folder


def better(metric: str, value: float, than: float | None, by: float = 0.0) -> bool:
    """Whether `value` of `metric` improves on `than` (None: nothing yet) by more than `by`."""
    if than is None:
        return True
    return value > than + by if metric in HIGHER_IS_BETTER else value < than - by


def reached(metric: str, value: float, goal: float) -> bool:
    """Whether `value` of `metric` is at least as good as `goal`."""
    return value >= goal if metric in HIGHER_IS_BETTER else value <= goal


# At every logging point: the means over the batches since the last one, and the lr.
BATCH_TAGS = {"loss": "train/batch_loss", "accuracy": "train/batch_accuracy", "lr": "train/lr"}


class History:
    """A SummaryWriter stand-in that passes scalars on and appends them to scalars.csv."""

    def __init__(self, writer: Any, folder: Path, purge_step: int | None = None) -> None:
        self.writer = writer
        self.path = folder / SCALARS_FILE
        if purge_step is not None and self.path.exists():
            keep_before(self.path, purge_step)  # as TensorBoard purges a killed run's last events
        elif not self.path.exists():
            self.path.write_text(HEADER)
        self.file = self.path.open("a", buffering=1)  # line-buffered: a crash loses no point

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
    """Drop the points at `step` or later: a resumed run logs them again."""
    with path.open(newline="") as file:
        rows = [row for row in csv.reader(file)][1:]
    kept = [",".join(row) for row in rows if len(row) == 3 and int(row[0]) < step]
    path.write_text(HEADER + "".join(line + "\n" for line in kept))


def read_scalars(folder: Path) -> dict[str, tuple[list[int], list[float]]]:
    """tag -> (steps, values) from a run folder's scalars.csv; empty if it has none."""
    series: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    path = folder / SCALARS_FILE
    if not path.exists():
        return {}
    with path.open(newline="", errors="replace") as file:  # damaged bytes: a row skipped
        reader = csv.reader(file)
        next(reader, None)
        for row in reader:
            try:
                step, tag, value = int(row[0]), row[1], float(row[2])
            except (ValueError, IndexError):  # a line cut short by a kill
                continue
            series[tag][0].append(step)
            series[tag][1].append(value)
    return dict(series)
