"""python scripts/sweep_goals.py [MNIST folder] [out folder] [--cheap]: the sweep goals.

Runs real `mnistlab-train -m` sweeps on real MNIST (the lesson MLP, one torch thread) and
prints the figures (`--cheap`: the first only, in about a minute):
1. cheap jobs (issues 15 and 30): a 9-job, 1-epoch sweep's wall time against its jobs'
   training time, with the basic launcher (one job after the other) and with joblib running
   two at once; and the overhead per job: what the 9-job sweep spends besides training, less
   what a 1-job sweep does (the one-off start: Python, Hydra, torch, the data), over the 8
   further jobs (goal: <= 0.25 s);
2. pruning: the 9-job, 5-epoch sweep without and with `sweep.prune.*` (the defaults, and
   `min_jobs=3` as Ray Tune's rule has it): jobs' training time
   (the sum of `wall_time_s`), epochs trained, and the best job of each;
3. resume: the pruned sweep (defaults) again, interrupted by SIGINT to its process group
   while job 5 trains, then re-run into its folder: every job's figures against the
   uninterrupted pruned sweep's, and whether jobs 0-3 were left untouched (their files' inode
   and mtime).
Each sweep's summary table is printed as mnistlab-train prints it. Takes 3-5 minutes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRID = ("optimizer=sgd,adam,rmsprop", "optimizer.lr=0.1,0.01,0.001")
COMMON = ("dataset=mnist", "device.threads=1")
JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")  # two jobs at once, a core each
PRUNE = ("sweep.prune.median=true", "sweep.prune.diverged=true")
PRUNE_LATE = (*PRUNE, "sweep.prune.min_jobs=3")  # the median judges from the fourth job on
# Values two equal sweeps must agree on, job for job (times differ from run to run).
SAME = ("status", "epochs", "steps", "train_loss", "val_loss", "val_accuracy", "test_accuracy")
SAME += ("pruned_at_epoch", "prune_reason")


def sweep(folder: Path, *args: str, stop_in_job: int | None = None) -> float:
    """Run one sweep into `folder`; its wall time. With `stop_in_job`, SIGINT it in that job."""
    command = [sys.executable, "-m", "mnistlab.cli.train", "-m", *args, f"hydra.sweep.dir={folder}"]
    print("+", " ".join(command[2:]), flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, text=True)
    if stop_in_job is not None:
        while not list(folder.glob(f"{stop_in_job}_*/checkpoint.pt")):
            time.sleep(0.05)  # job N has finished an epoch and is training the next
        time.sleep(0.3)
        os.killpg(process.pid, signal.SIGINT)
    out, _ = process.communicate()
    seconds = time.perf_counter() - started
    lines = [line for line in out.splitlines() if line.startswith(("sweep:", "sweep "))]
    print("\n".join(lines), out[out.find("Sweep ") :].split("\nreport:")[0], sep="\n", flush=True)
    print(f"exit {process.returncode}, {seconds:.1f} s wall\n", flush=True)
    return seconds


def jobs(folder: Path) -> dict[str, dict]:
    """Job folder name -> its metrics.json."""
    found = sorted(
        folder.glob("*/metrics.json"), key=lambda path: int(path.parent.name.split("_")[0])
    )
    return {path.parent.name: json.loads(path.read_text()) for path in found}


def training(folder: Path) -> tuple[float, int]:
    """The jobs' training seconds (sum of wall_time_s) and epochs trained."""
    runs = jobs(folder).values()
    return sum(run["wall_time_s"] for run in runs), sum(run["epochs"] for run in runs)


def best(folder: Path) -> str:
    """The completed job with the lowest val_loss."""
    done = {name: run for name, run in jobs(folder).items() if run["status"] == "completed"}
    return min(done, key=lambda name: done[name]["val_loss"])


def stamps(folder: Path, numbers: range) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) of the files of jobs `numbers`."""
    files = [path for n in numbers for path in folder.glob(f"{n}_*/*") if path.is_file()]
    return {str(path): (path.stat().st_ino, path.stat().st_mtime_ns) for path in files}


def per_job_overhead(out: Path, stamp: str) -> None:
    """The basic sweep's overhead per job after the one-off start (a 1-job and a 9-job sweep)."""
    spent = {}
    for name, grid in (("one", ("optimizer=sgd", "optimizer.lr=0.1")), ("nine", GRID)):
        folder = out / f"{stamp}_overhead_{name}"
        wall = sweep(folder, *grid, *COMMON, "loop.epochs=1")
        spent[name] = wall - training(folder)[0]
    per_job = (spent["nine"] - spent["one"]) / 8
    print(
        f"OVERHEAD: {spent['one']:.2f} s besides training for 1 job, {spent['nine']:.2f} s for "
        f"9: {per_job:.3f} s per further job (goal <= 0.25 s)\n"
    )


def main() -> None:
    arguments = [arg for arg in sys.argv[1:] if arg != "--cheap"]
    data = Path(arguments[0] if arguments else "../shared/data/mnist").absolute()
    out = Path(arguments[1] if len(arguments) > 1 else "outputs/sweep_goals").absolute()
    os.environ["MNISTLAB_DATA"] = str(data)
    stamp = time.strftime("%H-%M-%S")

    per_job_overhead(out, stamp)
    if "--cheap" in sys.argv:
        return
    alone = None  # the basic sweep's training time: its jobs ran one at a time
    for name, launcher in (("basic", ()), ("joblib", JOBLIB)):
        cheap = out / f"{stamp}_cheap_{name}"
        wall = sweep(cheap, *GRID, *COMMON, "loop.epochs=1", *launcher)
        seconds, _ = training(cheap)
        alone = alone or seconds
        # Two jobs at once each train a little slower: against the jobs alone as well.
        against_alone = f" ({wall / alone:.2f}x the basic sweep's {alone:.1f} s)" * bool(launcher)
        print(
            f"CHEAP ({name}): sweep wall {wall:.1f} s for {seconds:.1f} s of training: "
            f"{wall / seconds:.2f}x{against_alone}\n"
        )

    plain = out / f"{stamp}_plain"
    sweep(plain, *GRID, *COMMON, "loop.epochs=5")
    t0, e0 = training(plain)
    for name, rules in (("min_jobs_3", PRUNE_LATE), ("defaults", PRUNE)):
        pruned = out / f"{stamp}_pruned_{name}"
        sweep(pruned, *GRID, *COMMON, "loop.epochs=5", *rules)
        t1, e1 = training(pruned)
        print(
            f"PRUNING ({name}): {t0:.1f} s / {e0} epochs without, {t1:.1f} s / {e1} epochs "
            f"with: {100 * (1 - t1 / t0):.0f}% less training time, {100 * (1 - e1 / e0):.0f}% "
            f"fewer epochs; best job {best(plain)} without, {best(pruned)} with\n"
        )

    resumed = out / f"{stamp}_resumed"
    sweep(resumed, *GRID, *COMMON, "loop.epochs=5", *PRUNE, stop_in_job=5)
    before = stamps(resumed, range(4))
    sweep(resumed, *GRID, *COMMON, "loop.epochs=5", *PRUNE)
    differ = [
        f"{name}: {key} {run.get(key)} != {jobs(pruned)[name].get(key)}"
        for name, run in jobs(resumed).items()
        for key in SAME
        if run.get(key) != jobs(pruned)[name].get(key)
    ]
    print(
        f"RESUME: {len(jobs(resumed))} jobs, {len(differ)} differences from the uninterrupted sweep"
    )
    print("\n".join(differ))
    now = stamps(resumed, range(4))
    touched = [path for path, was in before.items() if now.get(path) != was]
    print(f"RESUME: jobs 0-3: {len(before)} files, {len(touched)} changed by the re-run: {touched}")


if __name__ == "__main__":
    main()
