"""python scripts/data_build_time.py [MNIST folder] [repeats] [threads]: time a job's data load.

Times `mnistlab.data.splits.build` for `dataset=mnist` (the shipped config) on a copy of the four
MNIST files in a temporary folder: "cold" builds find no decoded copy (it is deleted before
each), "warm" builds read the one the previous build wrote. Prints the median and the range.
Code that keeps no decoded copy (an older checkout on PYTHONPATH) gives cold figures for both.
"""

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import mnistlab
from mnistlab import names
from mnistlab.cli import resolvers
from mnistlab.data.splits import build

CACHE_FILE = ".mnistlab-decoded.pt"  # mnistlab.data.decoded.CACHE_FILE, named here for old code


def timed(source, root: Path, repeats: int, cold: bool) -> list[float]:
    """Seconds per build; `cold` deletes the decoded copy before each."""
    times = []
    for _ in range(repeats):
        if cold:
            (root / CACHE_FILE).unlink(missing_ok=True)
        started = time.perf_counter()
        build(source)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    resolvers.register()  # the configs use them
    mnist = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mnist")
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)  # device.threads
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "mnist"
        root.mkdir()
        for path in mnist.glob("*-ubyte*"):
            shutil.copy(path, root)
        with initialize_config_dir(config_dir=names.CONF_DIR, version_base="1.3"):
            overrides = [
                "dataset=mnist",
                f"dataset.source.root={root}",
                "dataset.source.download=false",
            ]
            cfg = compose("train", overrides)
        build(cfg.dataset.source)  # warm up imports and the page cache
        for name, cold in (("cold (decode the IDX files)", True), ("warm (decoded copy)", False)):
            times = timed(cfg.dataset.source, root, repeats, cold)
            print(
                f"{name:28s} median {statistics.median(times):.3f} s  "
                f"(min {min(times):.3f}, max {max(times):.3f}, {repeats} builds, "
                f"{torch.get_num_threads()} thread(s))"
            )
    print(f"code: {mnistlab.__file__}")


if __name__ == "__main__":
    main()
