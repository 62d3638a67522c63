"""How long report.html takes for big sweeps, on synthetic job folders.

python -m mnistlab.benchmark.report_speed              # 100 and 1,000 jobs
python -m mnistlab.benchmark.report_speed --jobs 5000

Each job folder holds what a real job leaves behind (Hydra's record, metrics.json, and a
scalars.csv the length of the default 3-epoch run's); 4 optimizers x lrs x 5 seeds, 2% failed.
Prints the seconds the summary and the report take. The goals: 100 jobs in 5 s, 1,000 in 60 s.
"""

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import yaml

from mnistlab import names
from mnistlab.names import BATCH_TAGS, METRICS_FILE, SCALARS_FILE, TAGS
from mnistlab.report import page, summary
from mnistlab.run.scalars import HEADER

OPTIMIZERS = ("sgd", "adam", "rmsprop", "adamw")
SEEDS = 5
STEPS_PER_EPOCH, EPOCHS, EVERY = 844, 3, 100


def write_job(sweep: Path, num: int, overrides: list[str], rng: random.Random) -> None:
    """One finished (or, now and then, failed) job folder."""
    folder = sweep / f"{num}_job"
    (folder / ".hydra").mkdir(parents=True)
    hydra = {
        "job": {"num": num, "config": {"override_dirname": {"exclude_keys": ["experiment"]}}},
        "overrides": {"task": overrides},
    }
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    (folder / ".hydra" / "config.yaml").write_text("objective: val_loss\n")
    if rng.random() < 0.02:
        failed = {"status": "failed", "error": "the training loss at steps 1-100 became nan"}
        (folder / METRICS_FILE).write_text(json.dumps(failed))
        return
    scale, lines = rng.uniform(0.05, 0.5), [HEADER]
    for step in range(EVERY, STEPS_PER_EPOCH * EPOCHS + 1, EVERY):
        loss = 2.3 * math.exp(-step / 300) + scale
        lines += [f"{step},{BATCH_TAGS['loss']},{loss!r}\n", f"{step},{BATCH_TAGS['lr']},0.01\n"]
    metrics = {"status": "completed", "train_loss": scale, "val_loss": scale * 1.1}
    metrics |= {"val_accuracy": 1 - scale / 3, "samples_per_second": 6e4, "wall_time_s": 9.0}
    for epoch in range(1, EPOCHS + 1):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            lines.append(
                f"{epoch * STEPS_PER_EPOCH},{TAGS[key]},{metrics[key] * (1 + 0.1 / epoch)!r}\n"
            )
    (folder / SCALARS_FILE).write_text("".join(lines))
    (folder / METRICS_FILE).write_text(json.dumps(metrics))


def make_sweep(root: Path, jobs: int) -> Path:
    """A sweep folder of `jobs` synthetic jobs: optimizer x lr x seed."""
    sweep, rng = root / f"sweep_{jobs}", random.Random(0)
    lrs = max(jobs // (len(OPTIMIZERS) * SEEDS), 1)
    num = 0
    for optimizer in OPTIMIZERS:
        for n in range(lrs):
            for seed in range(SEEDS):
                if num < jobs:
                    lr = f"{10 ** (-1 - 3 * n / max(lrs - 1, 1)):.3g}"
                    overrides = [
                        f"optimizer={optimizer}",
                        f"optimizer.lr={lr}",
                        f"loop.seed={seed}",
                    ]
                    write_job(sweep, num, overrides, rng)
                    num += 1
    return sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        for jobs in args.jobs:
            sweep = make_sweep(Path(root), jobs)
            started = time.perf_counter()
            summary.write_summary(sweep)
            summarised = time.perf_counter()
            page.write_report([sweep], sweep / names.REPORT_FILE)
            done = time.perf_counter()
            size = (sweep / names.REPORT_FILE).stat().st_size / 1e6
            print(
                f"{jobs:6d} jobs: summary {summarised - started:6.2f} s, "
                f"report {done - summarised:6.2f} s ({size:.1f} MB)",
                flush=True,
            )


if __name__ == "__main__":
    main()
