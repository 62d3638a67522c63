"""What recording a run's provenance costs: the first run of a process, then each later one.

python scripts/provenance_cost.py [FOLDER]   # FOLDER: the checkout to run from (default: here)

Imports what a run has imported by then (torch, Hydra, numpy), then times
mnistlab.run.provenance.record into a temporary run folder: once (a fresh process: versions,
CPU, the git checkouts found), then 50 times more (a sweep's later jobs in the same process).
"""

import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import hydra  # noqa: F401  # a run has them imported before it records where it came from
import numpy  # noqa: F401
import torch  # noqa: F401

from mnistlab.run import provenance


def timed(folder: Path) -> float:
    """Milliseconds for one `record` (files written, fsync included) and its TensorBoard text."""
    began = time.perf_counter()
    provenance.as_text(provenance.record(folder, datetime.datetime.now()))
    return (time.perf_counter() - began) * 1e3


def main() -> None:
    if len(sys.argv) > 1:
        os.chdir(sys.argv[1])
    with tempfile.TemporaryDirectory() as run:
        first = timed(Path(run))
        later = [timed(Path(run)) for _ in range(50)]
        found = provenance.record(Path(run), datetime.datetime.now())
    git = found["git"]
    state = git.get("note") or f"commit {git['commit'][:10]}, {git['changed']} changed"
    print(f"CPU: {found['cpu']['model']} ({found['cpu']['cores']} cores); checkout: {state}")
    print(f"first run of a process: {first:.1f} ms")
    print(f"later runs: median {statistics.median(later):.2f} ms, max {max(later):.2f} ms")


if __name__ == "__main__":
    main()
