"""Peak memory of a run, side by side with the lesson's plain script (issue 29's yardstick).

    python scripts/memory.py [--mnist ../shared/data/mnist] [--rounds 3] [--sweep]

Runs each program as its own process, interleaved round by round (so a busy moment hits all
of them alike), and prints the median peak RSS (the kernel's ru_maxrss of that process, as
`/usr/bin/time -v` reports it) and wall time of each:
- the lesson's plain script (scripts/lesson_mnist.py: Dataset + DataLoader + the five steps),
- the README's first command (`mnistlab-train`: synthetic digits, 3 epochs),
- the same 3-epoch MLP on real MNIST (`mnistlab-train experiment=mnist_mlp`),
- with --sweep, a 9-job sweep of 1-epoch MNIST runs (the basic launcher: one process).
Every figure names the CPU; the machine's load before and after is printed beside them.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MNIST = HERE.parent.parent / "shared" / "data" / "mnist"


def programs(mnist: Path, sweep: bool) -> dict[str, list[str]]:
    """What to measure: each a command line."""
    train = [sys.executable, "-m", "mnistlab.cli.train"]
    real = ["experiment=mnist_mlp", f"dataset.source.root={mnist}"]
    found = {
        "lesson script (real MNIST, 3 epochs)": [
            sys.executable,
            str(HERE / "lesson_mnist.py"),
            str(mnist),
        ],
        "mnistlab-train (README default)": train,
        "mnistlab-train experiment=mnist_mlp": [*train, *real],
    }
    if sweep:
        grid = ["optimizer=sgd,adam,rmsprop", "optimizer.lr=0.1,0.01,0.001", "loop.epochs=1"]
        found["9-job sweep, 1 epoch each"] = [*train, "-m", *real, *grid]
    return found


def peak(command: list[str], cwd: Path) -> tuple[float, float]:
    """The process's peak RSS in MB, and its wall time in s."""
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    took = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{child.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss * 1024 / 1e6, took  # Linux gives kB; MB here are 10**6 bytes


def cpu() -> str:
    """The CPU's model and the flags that matter for speed."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line), "?"
    )
    flags = next(
        (line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")),
        [],
    )
    shown = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    return f"{model}, {os.cpu_count()} cores, flags {' '.join(shown) or 'none of avx2/avx512/amx'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=MNIST, help="the four IDX files")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="also a 9-job sweep")
    args = parser.parse_args()
    measured: dict[str, list[tuple[float, float]]] = {}
    print(f"CPU: {cpu()}; load before: {os.getloadavg()[0]:.2f}", flush=True)
    for round_ in range(args.rounds):
        for name, command in programs(args.mnist.resolve(), args.sweep).items():
            with tempfile.TemporaryDirectory() as folder:
                measured.setdefault(name, []).append(peak(command, Path(folder)))
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    print(f"| program | peak RSS, median of {args.rounds} (range) | wall time, median |")
    print("|---|---|---|")
    for name, runs in measured.items():
        rss = [mb for mb, _ in runs]
        wall = statistics.median(took for _, took in runs)
        spread = f"{min(rss):.0f}-{max(rss):.0f}"
        print(f"| {name} | {statistics.median(rss):.0f} MB ({spread}) | {wall:.1f} s |")


if __name__ == "__main__":
    main()
