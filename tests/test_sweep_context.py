"""A sweep's context: decided once at its start, written into its folder, read by every job."""

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from mnistlab import SettingError, names
from mnistlab.cli import resolvers
from mnistlab.names import SWEEP_CONTEXT_FILE
from mnistlab.sweep import context


def sweep_config(folder: Path, *overrides: str):
    """A composed config as a sweep of `overrides` into `folder` has it at its start."""
    cfg = compose_config()
    hydra = {
        "sweep": {"dir": str(folder)},
        "overrides": {"task": list(overrides)},
        "launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"},
        "sweeper": {"_target_": "hydra_plugins.mnistlab_sweeper.BasicOnceSweeper"},
    }
    OmegaConf.set_struct(cfg, False)
    return OmegaConf.merge(cfg, {"hydra": hydra})


def test_the_context_written_at_the_start_is_what_every_job_reads(tmp_path: Path) -> None:
    config = sweep_config(tmp_path, "optimizer.lr=0.1,0.01", "loop.epochs=2", "optimizer=sgd,adam")
    started = context.start(config)
    assert context.read(tmp_path) == started
    assert started.swept == ("optimizer.lr", "optimizer")  # in the user's order, constants out
    assert started.total == 4 and started.done_before == 0
    assert started.launcher == context.IN_PROCESS and started.pid == os.getpid()
    assert not started.in_pool() and started.stoppable()


def test_jobs_done_before_are_counted_from_the_job_folders(tmp_path: Path) -> None:
    for name, status in (("0_sgd", "completed"), ("1_adam", "interrupted"), ("2_x", "failed")):
        (tmp_path / name).mkdir()
        names.write_metrics(tmp_path / name, {"status": status})
    started = context.start(sweep_config(tmp_path, "optimizer=sgd,adam,x"))
    assert started.done_before == 2  # the interrupted job has work left


def test_job_folders_are_named_by_the_keys_the_context_says_vary(tmp_path: Path) -> None:
    context.start(sweep_config(tmp_path, "optimizer.lr=0.1,0.01", "loop.epochs=2"))
    job = ["optimizer.lr=0.01", "loop.epochs=2"]
    assert resolvers.job_name(str(tmp_path), job) == "lr:0.01"
    # Without a context to read, every override names the folder: nothing is lost.
    assert resolvers.job_name(str(tmp_path / "elsewhere"), job) == "lr:0.01+epochs:2"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"folder": 1}',
        '{"folder": "x", "swept": [["nested"]], "total": 1, "started": 0.0, "done_before": 0,'
        ' "pid": 1, "launcher": "pooled"}',
        '{"folder": "x", "swept": [], "total": "9", "started": 0.0, "done_before": 0,'
        ' "pid": 1, "launcher": "pooled"}',
        '{"folder": "x", "swept": [], "total": 1, "started": 0.0, "done_before": 0,'
        ' "pid": 1, "launcher": "pooled", "code": "os.system"}',
    ],
    ids=["not-json", "a-list", "missing-keys", "nested-keys", "wrong-type", "unknown-key"],
)
def test_a_damaged_or_crafted_context_is_read_as_none(tmp_path: Path, text: str) -> None:
    (tmp_path / SWEEP_CONTEXT_FILE).write_text(text)
    assert context.read(tmp_path) is None


def test_a_context_that_cannot_be_written_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / SWEEP_CONTEXT_FILE).mkdir()
    with pytest.raises(SettingError, match=r"\.sweep\.json could not be written"):
        context.start(sweep_config(tmp_path, "optimizer=sgd,adam"))


def test_a_link_in_place_of_the_context_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / SWEEP_CONTEXT_FILE).symlink_to(victim)
    context.start(sweep_config(sweep, "optimizer=sgd,adam"))
    assert victim.read_text() == "untouched"
    assert not (sweep / SWEEP_CONTEXT_FILE).is_symlink()
    assert json.loads((sweep / SWEEP_CONTEXT_FILE).read_text())["total"] == 2
