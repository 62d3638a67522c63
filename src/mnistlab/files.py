"""Files a run, a sweep or a benchmark writes for people and tools to read: written atomically.

Each file is written to a temporary name in its own folder, flushed to disk, then renamed
over the final name. A reader (the sweep summary, a second terminal) sees the old file or the
new one, never half of one; a full disk leaves the old file and no temporary one behind.
Kept free of torch: `mnistlab-summarize` imports it.
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

METRICS_FILE = "metrics.json"  # in every run folder: the run's status and final figures


@contextmanager
def open_atomic(path: Path) -> Iterator[TextIO]:
    """A text file to write that appears at `path` only once it is complete and on disk."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("w", newline="") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())  # the rename must not land before the data does
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_json(path: Path, value: Any) -> None:
    """`value` as indented JSON at `path`, atomically."""
    with open_atomic(path) as file:
        file.write(json.dumps(value, indent=2) + "\n")


def write_metrics(out_dir: Path, metrics: dict[str, Any]) -> None:
    """The run's metrics.json: its status and figures."""
    write_json(out_dir / METRICS_FILE, metrics)
