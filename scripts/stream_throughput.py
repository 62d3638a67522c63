"""python scripts/stream_throughput.py [PNG folder] [epochs] [workers ...]: training samples/s.

Trains the lesson's MLP (model=mlp, batch 64) on `dataset=image_folder` over the PNG folders that
scripts/mnist_to_png.py writes (default /tmp/mnist_png), once per DataLoader worker count
(default 0, 1, 2), and once on the in-memory IDX path (`dataset=mnist`, tensor mode) for
comparison, each as its own `mnistlab-train` process; prints each run's training samples per
second (metrics.json's samples_per_second: the time in training steps, data loading included,
without the start-up and validation), the CPU and the load average, as a Markdown table.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MNIST = "/work/shared/data/mnist"


def train(out: Path, *overrides: str) -> float:
    """One mnistlab-train run into `out`; its training samples per second."""
    command = [sys.executable, "-m", "mnistlab.cli.train", f"hydra.run.dir={out}", *overrides]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads((out / "metrics.json").read_text())["samples_per_second"]


def cpu() -> str:
    """The CPU's model name (Linux), and how many cores this process may use."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    name = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), "?")
    return f"{name}, {len(os.sched_getaffinity(0))} cores"


def main() -> None:
    pngs = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mnist_png")
    epochs = sys.argv[2] if len(sys.argv) > 2 else "1"
    workers = [int(n) for n in sys.argv[3:]] or [0, 1, 2]
    common = ("model=mlp", f"loop.epochs={epochs}")
    folder = ("dataset=image_folder", f"dataset.source.root={pngs / 'train'}")
    print(f"CPU: {cpu()}; load average before: {os.getloadavg()}")
    print("| data | loader | samples/s |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for count in workers:
            settings = (*folder, f"dataset.loader.num_workers={count}", *common)
            figure = train(Path(scratch) / f"workers{count}", *settings)
            print(
                f"| image_folder (PNG) | dataloader, {count} workers | {figure:,.0f} |", flush=True
            )
        memory = ("dataset=mnist", f"dataset.source.root={MNIST}", "dataset.source.download=false")
        figure = train(Path(scratch) / "memory", *memory, *common)
        print(f"| mnist (IDX, in memory) | tensor | {figure:,.0f} |")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
