"""Data-parallel training under torchrun: one run folder, disjoint shards, single-run accuracy."""

import signal
import subprocess

import pytest
import torch

from conftest import (
    ONE_CPU,
    TORCHRUN,
    compose_config,
    events,
    metrics_of,
    only_run,
    run_cli,
    start_cli,
    when_started,
)
from mnistlab.config.schemas import LoaderSettings
from mnistlab.data.splits import TensorPairs, batches
from mnistlab.run.training import run_training

RUN = (
    *ONE_CPU,
    "dataset.source.num_samples=12000",
    "loop.epochs=2",
    "loop.log_every_n_batches=20",
)


@pytest.mark.parametrize("mode", ["tensor", "dataloader"])
def test_ranks_see_disjoint_shards_and_a_new_split_every_epoch(mode):
    data = TensorPairs(torch.arange(1000).float()[:, None], torch.arange(1000))
    loader = LoaderSettings(batch_size=32, shuffle=True, mode=mode, num_workers=0)

    def seen(rank, epoch):
        return [
            int(i)
            for _, t in batches(data, loader, seed=3, epoch=epoch, rank=rank, world_size=2)
            for i in t
        ]

    for epoch in range(2):
        first, second = seen(0, epoch), seen(1, epoch)
        assert len(first) == len(second) == 500
        assert not set(first) & set(second)
        assert set(first) | set(second) == set(range(1000))
    assert seen(0, 0) != seen(0, 1)


@pytest.mark.slow
def test_two_process_torchrun_writes_one_run_close_to_a_single_process_run(tmp_path):
    result = run_cli(*TORCHRUN, "-m", "mnistlab.cli.train", *RUN, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)  # one folder for both ranks
    assert len(list(tmp_path.rglob("events.out.tfevents.*"))) == 1
    assert len(list(tmp_path.rglob("metrics.json"))) == 1
    assert len(list(tmp_path.rglob("train.log"))) == 1
    log = (run / "train.log").read_text()
    assert result.stdout.count(f"run: {run.relative_to(tmp_path)}") == 1  # rank 0 alone says it
    assert "rank 0 of 2; global batch size 128" in log
    assert "rank 1" not in log  # other ranks write nothing into the run folder
    metrics = metrics_of(run)
    assert (metrics["world_size"], metrics["global_batch_size"]) == (2, 128)
    assert metrics["steps"] == 2 * (10800 // 2 // 64 + 1)

    # The same global batch in one process reaches about the same accuracy.
    single = run_training(
        compose_config(*RUN, "dataset.loader.batch_size=128"), tmp_path / "single"
    )
    assert abs(metrics["val_accuracy"] - single["val_accuracy"]) < 0.03
    assert metrics["val_accuracy"] > 0.8


@pytest.mark.slow
def test_torchrun_run_stops_on_sigterm_and_resumes_under_torchrun(tmp_path):
    run = tmp_path / "run"
    # Noise images, made in milliseconds (the synthetic digits take each rank a second), as
    # many as RUN trains on: 338 steps an epoch per rank.
    noise = ("dataset=fake_mnist", "dataset.source.num_samples=10800")
    args = (*RUN, *noise, "dataset.loader.batch_size=16", f"hydra.run.dir={run}")
    process = start_cli(
        *TORCHRUN,
        "-m",
        "mnistlab.cli.train",
        *args,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    when_started(run, settle=1.0)
    process.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    process.wait(120)
    assert metrics_of(run)["status"] == "interrupted"

    again = (f"loop.resume={run}", f"hydra.run.dir={tmp_path / 'again'}")
    result = run_cli(*TORCHRUN, "-m", "mnistlab.cli.train", *again, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = metrics_of(run)
    assert (metrics["status"], metrics["epochs"], metrics["world_size"]) == ("completed", 2, 2)
    assert metrics["steps"] == 2 * (10800 // 2 // 16 + 1)
    steps = [event.step for event in events(run).Scalars("train/batch_loss")]
    # Every 20 steps and each epoch's end (338 steps an epoch): no gap, no duplicate.
    assert steps == sorted({*range(20, metrics["steps"] + 1, 20), 338, metrics["steps"]})
