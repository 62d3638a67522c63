"""Pruning a sweep's hopeless jobs (sweep.prune): real sweeps through the CLI, real files."""

import json
from pathlib import Path

import pytest
import torch

# The accumulator TensorBoard's server reads with: it applies a resumed run's purge to texts.
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata
from tensorboard.util import tensor_util

from conftest import (
    compose_config,
    events,
    metrics_of,
    only_sweep,
    run_cli,
    summary_rows,
    write_idx_dataset,
)
from mnistlab import SettingError
from mnistlab.config import checks, schemas
from mnistlab.loop import prune
from mnistlab.names import PRUNED_TAG
from mnistlab.run import checkpoint
from mnistlab.run.training import run_training


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """A small learnable IDX dataset (3 classes, 12 x 10 images) and quick loop settings."""
    root = tmp_path_factory.mktemp("idx")
    write_idx_dataset(root, n_train=300, n_test=30, classes=3)
    return (
        "dataset=idx",
        f"dataset.source.root={root}",
        "dataset.source.num_val_samples=60",
        "dataset.loader.batch_size=30",
        "loop.log_every_n_batches=4",
        "loop.epochs=3",
        "device.threads=1",
    )


def sweep(cwd: Path, *args: str) -> tuple[Path, str]:
    """Run a sweep in `cwd`; its folder and its printed output."""
    result = run_cli("mnistlab.cli.train", "-m", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return only_sweep(cwd), result.stdout


def by_job(folder: Path) -> dict[int, dict]:
    """Job number -> its metrics.json."""
    return {
        int(job.name.split("_")[0]): metrics_of(job) for job in folder.iterdir() if job.is_dir()
    }


def job_folder(folder: Path, num: int) -> Path:
    (job,) = folder.glob(f"{num}_*")
    return job


def session_end(board: EventAccumulator) -> int | None:
    """The run's HParams session end status as TensorBoard reads it; None if it has none."""
    content = board.PluginTagToContent(metadata.PLUGIN_NAME).get(metadata.SESSION_END_INFO_TAG)
    return None if content is None else metadata.parse_session_end_info_plugin_data(content).status


@pytest.mark.slow  # a real sweep
def test_a_sweep_prunes_diverging_jobs_and_keeps_the_good_one(tmp_path):
    digits = ("dataset.source.num_samples=2000", "loop.epochs=3", "device.threads=1")
    lrs = "optimizer.lr=1e30,5,0.01"  # NaN at once; at chance; learns
    folder, out = sweep(tmp_path, *digits, lrs, "sweep.prune.diverged=true")
    jobs = by_job(folder)
    assert jobs[0]["status"] == jobs[0]["stop_reason"] == "pruned"
    assert jobs[0]["pruned_at_epoch"] == 0  # a non-finite loss prunes at once, grace or not
    assert "became nan" in jobs[0]["prune_reason"] and "lr=1e+30" in jobs[0]["prune_reason"]
    assert jobs[1]["status"] == "pruned" and jobs[1]["pruned_at_epoch"] == 2  # after grace
    assert "at chance" in jobs[1]["prune_reason"] and jobs[1]["epochs"] == 2
    assert jobs[1]["per_epoch"]["val_accuracy"][1] == jobs[1]["val_accuracy"]
    assert jobs[2]["status"] == "completed" and jobs[2]["epochs"] == 3
    assert len(jobs[2]["per_epoch"]["val_loss"]) == 3
    assert "job 1 (lr:5) pruned after epoch 2, val_loss=" in out
    rows = summary_rows(folder)
    assert [row["job"] for row in rows] == ["2", "1", "0"]  # completed first, then pruned
    assert [row["status"] for row in rows] == ["completed", "pruned", "pruned"]
    assert rows[1]["pruned_at_epoch"] == "2" and "at chance" in rows[1]["prune_reason"]
    assert "| - | 1 | 5 | pruned after epoch 2 |" in (folder / "summary.md").read_text()
    page = (folder / "report.html").read_text()
    name = job_folder(folder, 1).name
    pick = f'<td><input class="pick" type="checkbox" data-job="{name}"></td>'  # the diff box
    assert (
        f'<tr class="pruned"><td>–</td>{pick}<td>1</td><td>5</td><td>pruned after epoch 2<' in page
    )
    pruned = events(job_folder(folder, 1), EventAccumulator)
    completed = events(job_folder(folder, 2), EventAccumulator)
    (text,) = pruned.Tensors("pruned")
    assert b"pruned after epoch 2: val_accuracy" in text.tensor_proto.string_val[0]
    (epoch,) = pruned.Tensors(PRUNED_TAG)  # a metric HParams finds and filters pruned jobs by
    assert tensor_util.make_ndarray(epoch.tensor_proto) == 2.0
    assert PRUNED_TAG not in completed.Tags()["tensors"]
    # No end status: HParams has no "pruned", and the first end written would stay for good.
    assert session_end(pruned) is None
    assert session_end(completed) == api_pb2.STATUS_SUCCESS
    # The same sweep again: every job is finished, the one pruned before any validation too.
    written = {path: path.read_bytes() for path in folder.glob("*/metrics.json")}
    again = run_cli("mnistlab.cli.train", "-m", *digits, lrs, "sweep.prune.diverged=true",
                    f"hydra.sweep.dir={folder}", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert "job 0 (lr:1e30) pruned after epoch 0 (reused)" in again.stdout
    assert {path: path.read_bytes() for path in folder.glob("*/metrics.json")} == written


def write_job(sweep_dir: Path, name: str, status: str, val_loss: list[float]) -> Path:
    folder = sweep_dir / name
    folder.mkdir()
    metrics = {"status": status, "per_epoch": {"val_loss": val_loss}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_the_median_rule_compares_best_values_with_completed_jobs_after_grace(tmp_path):
    write_job(tmp_path, "0_a", "completed", [1.0, 0.5, 0.4])
    write_job(tmp_path, "1_b", "completed", [1.0, 0.7, 0.9])  # best by epoch 3: 0.7
    write_job(tmp_path, "2_c", "pruned", [9.0, 9.0])  # pruned: never counted
    write_job(tmp_path, "3_d", "completed", [1.0])  # too short for epoch 2
    (write_job(tmp_path, "4_e", "completed", []) / "metrics.json").write_text('{"stat')  # cut
    own = write_job(tmp_path, "5_own", "completed", [0.1, 0.1])  # its own old file: ignored
    settings = schemas.Prune(median=True, diverged=False, grace_epochs=1, min_jobs=2)
    history: dict[str, list[float]] = {"val_loss": [5.0]}  # fit adds each epoch's values
    hook = prune.rules(settings, "val_loss", history, 0.1, tmp_path, own)
    values = {"val_accuracy": 0.9}
    assert hook(1, values) is None  # epoch 1 is the grace epoch
    history["val_loss"].append(0.65)  # best 0.65 against the median of 0.5 and 0.7
    assert hook(2, values) == (
        "best val_loss by epoch 2 0.65 is worse than the median 0.6 of 2 completed jobs"
    )
    history["val_loss"][1] = 0.6  # as good as the median: not worse
    assert hook(2, values) is None
    # Best values so far: 0.6 against the median of 0.4 and 0.7 (job 1's 0.9 at epoch 3 is
    # not its best), though 0.62 at epoch 3 is better than the median of 0.4 and 0.9.
    history["val_loss"].append(0.62)
    assert hook(3, values) == (
        "best val_loss by epoch 3 0.6 is worse than the median 0.55 of 2 completed jobs"
    )
    three = schemas.Prune(median=True, diverged=False, grace_epochs=1, min_jobs=3)
    assert prune.rules(three, "val_loss", history, 0.1, tmp_path, own)(3, values) is None
    alone = prune.rules(settings, "val_loss", history, 0.1, None, own)  # a single run
    assert alone(3, values) is None


@pytest.mark.slow  # a real sweep
def test_the_median_rule_prunes_a_worse_job_only_once_enough_jobs_completed(tmp_path, data):
    # Jobs 1 and 4 learn far too slowly. Job 1 runs when one job has completed: it completes.
    # Job 4 runs after four: pruned at the first epoch after the grace epoch.
    lrs = "optimizer.lr=0.01,0.00001,0.012,0.014,0.000011"
    folder, out = sweep(tmp_path, *data, lrs, "sweep.prune.median=true")
    jobs = by_job(folder)
    assert [jobs[n]["status"] for n in range(5)] == ["completed"] * 4 + ["pruned"]
    assert jobs[4]["pruned_at_epoch"] == 2 and jobs[4]["epochs"] == 2
    assert "is worse than the median" in jobs[4]["prune_reason"]
    assert "of 4 completed jobs" in jobs[4]["prune_reason"]
    assert "test_loss" in jobs[1] and "test_loss" not in jobs[4]  # a pruned run is not tested
    assert "job 4 (lr:1.1e-05) pruned after epoch 2" in out

    # Resumed, it trains to the end as if it had never been pruned: bit for bit.
    job = job_folder(folder, 4)
    result = run_cli(
        "mnistlab.cli.train", f"loop.resume={job}", "sweep.prune.median=false", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = metrics_of(job)
    reference_dir = tmp_path / "never_pruned"
    reference = run_training(compose_config(*data, "optimizer.lr=0.000011"), reference_dir)
    assert resumed["status"] == "completed" and "prune_reason" not in resumed
    for key in ("train_loss", "val_loss", "val_accuracy", "test_loss", "steps", "per_epoch"):
        assert resumed[key] == reference[key], key
    saved = checkpoint.load(job / checkpoint.FILENAME)
    expected = checkpoint.load(reference_dir / checkpoint.FILENAME)
    for key, tensor in expected["model"].items():
        assert torch.equal(saved["model"][key], tensor), key
    # The resume purged the pruned note and ended the HParams session for good.
    board = events(job, EventAccumulator)
    assert session_end(board) == api_pb2.STATUS_SUCCESS
    assert board.Tensors("pruned") == []


@pytest.mark.slow  # the real CLI
def test_a_bad_prune_setting_is_refused_in_one_line(tmp_path, data):
    result = run_cli("mnistlab.cli.train", *data, "sweep.prune.min_jobs=0", cwd=tmp_path)
    assert result.returncode == 1
    assert "sweep.prune.min_jobs=0 must be >= 1" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr and "data:" not in result.stderr  # before the data
    with pytest.raises(SettingError, match=r"^sweep.prune.median chooses .* objective=test_loss"):
        checks.check(compose_config("sweep.prune.median=true", "objective=test_loss"))
