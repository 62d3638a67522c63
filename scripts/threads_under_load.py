"""python scripts/threads_under_load.py [runs]: the default run next to a busy process (issue 30).

Starts one process that keeps a core busy (a Python loop), then runs the default
`mnistlab-train` (synthetic digits, lesson MLP, 3 epochs) `runs` times each way, taking turns:
with `device.threads` left at its default (mnistlab picks the cores other processes leave
free) and with `device.threads=<all cores>` (torch's own default, what runs got before).
Prints each run's samples/s and the threads it used, then the medians. Then the same quietly,
once each, to show what the machine gives alone.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY_LOOP = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass\n"


def run(*args: str) -> tuple[float, str]:
    """One default run's samples/s and the `device` it reports."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        command = [sys.executable, "-m", "mnistlab.cli.train", *args, f"hydra.run.dir={out}"]
        subprocess.run(command, check=True, capture_output=True, cwd=folder)
        metrics = json.loads((out / "metrics.json").read_text())
    return metrics["samples_per_second"], metrics["device"]


def compare(runs: int, label: str) -> None:
    """`runs` default runs and `runs` with every core, taking turns; their medians."""
    cores = len(os.sched_getaffinity(0))
    figures: dict[str, list[float]] = {"default": [], f"device.threads={cores}": []}
    for _ in range(runs):
        for name, args in (
            ("default", ()),
            (f"device.threads={cores}", (f"device.threads={cores}",)),
        ):
            speed, device = run(*args)
            figures[name].append(speed)
            print(f"{label}: {name:18} {speed:9.0f} samples/s  ({device})", flush=True)
    for name, speeds in figures.items():
        print(f"{label}: {name:18} median {statistics.median(speeds):9.0f} samples/s")


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        time.sleep(1)  # the loop is running before the first run starts
        compare(runs, "next to a busy process")
    finally:
        busy.kill()
        busy.wait()
    time.sleep(1)
    compare(1, "quiet")


if __name__ == "__main__":
    main()
