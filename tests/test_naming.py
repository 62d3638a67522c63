"""Run and job folder names: what differs, in the user's order, path-safe, resumable."""

from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import metrics_of, only_run, only_sweep, run_cli
from mnistlab.sweep import naming


def sweep_config(*overrides: str, params: dict | None = None):
    """The parts of a sweep's config that `swept_keys` reads."""
    return OmegaConf.create(
        {"hydra": {"overrides": {"task": list(overrides)}, "sweeper": {"params": params}}}
    )


def swept(*overrides: str, params: dict | None = None) -> list[str]:
    """The keys a sweep of `overrides` (and a preset's `params`) varies."""
    return naming.swept_keys(sweep_config(*overrides, params=params))


def test_swept_keys_come_first_in_the_given_order_and_constants_are_left_out() -> None:
    keys = swept("optimizer.lr=0.1,0.01", "loop.epochs=2", "optimizer=sgd,adam", "loop.seed=0,1")
    job = ["optimizer.lr=0.01", "loop.epochs=2", "optimizer=adam", "loop.seed=1"]
    assert naming.job_name(keys, job) == "lr:0.01+adam+seed:1"


def test_a_presets_sweeper_params_count_as_swept() -> None:
    keys = swept(
        "experiment=optimizer_lr_sweep", params={"optimizer": "sgd,adam", "loop.epochs": 3}
    )
    assert naming.job_name(keys, ["experiment=optimizer_lr_sweep", "optimizer=sgd"]) == "sgd"


def test_clashing_short_keys_stay_whole() -> None:
    keys = swept("model.hidden=8,16", "dataset.source.seed=1,2")
    assert naming.job_name(keys, ["model.hidden=8", "dataset.source.seed=2"]) == "hidden:8+seed:2"
    keys = swept("loop.seed=0,1", "dataset.source.seed=1,2")
    name = naming.job_name(keys, ["loop.seed=0", "dataset.source.seed=2"])
    assert name == "loop.seed:0+dataset.source.seed:2"


@pytest.mark.parametrize(
    ("override", "word"),
    [
        ("dataset.source.root=/tmp/mnist", "root:mnist"),
        ("dataset.source.root=/data/mnist/", "root:mnist"),
        ("model.channels=[16,32]", "channels:16-32"),
        ("optimizer.lr=1e+30", "lr:1e30"),
        ("optimizer.lr=1e-3", "lr:1e-3"),
        ("optimizer.lr=-1", "lr:-1"),  # the sign stays: a different number
        ("optimizer.momentum=-.5", "momentum:-.5"),
        ("+model.note='a b, c=d'", "note:a-b-c-d"),
    ],
)
def test_names_are_path_safe_and_valid_resume_arguments(override: str, word: str) -> None:
    name = naming.run_name(["loop.epochs=2", override])
    assert name == f"_epochs:2+{word}"
    assert "/" not in name
    folder = f"outputs/runs/2026-01-01_00-00-00_0{name}"
    (parsed,) = OverridesParser.create().parse_overrides([f"loop.resume={folder}"])
    assert not parsed.is_sweep_override()
    assert parsed.value() == folder


def test_a_run_without_overrides_is_its_time_alone() -> None:
    assert naming.run_name([]) == ""
    assert naming.run_name(["loop.resume=outputs/runs/x"]) == ""


@pytest.mark.slow
def test_sweep_over_paths_names_flat_job_folders_that_resume(tmp_path: Path, mnist_dir) -> None:
    """The issue's case: a path value once nested the folders and the summary found no job."""
    other = tmp_path / "copy"
    other.symlink_to(mnist_dir)
    small = (
        "dataset=mnist",
        "dataset.source.download=false",
        "dataset.source.num_train_samples=256",
        "dataset.source.num_val_samples=64",
        "loop.epochs=1",
        "device.threads=1",
    )
    roots = f"dataset.source.root={mnist_dir},{other}"
    result = run_cli("mnistlab.cli.train", "-m", roots, *small, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    sweep = only_sweep(tmp_path)
    jobs = sorted(path.name for path in sweep.iterdir() if (path / ".hydra").is_dir())
    assert jobs == [f"0_root:{mnist_dir.name}", "1_root:copy"]
    assert "2 completed" in (sweep / "summary.md").read_text()
    first = sweep / jobs[0]
    resumed = run_cli("mnistlab.cli.train", f"loop.resume={first}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert metrics_of(first)["status"] == "completed"
    assert not (tmp_path / "outputs" / "runs").exists()  # it continued in its own folder


@pytest.mark.slow  # the real CLI
def test_single_run_folder_carries_its_overrides(tmp_path: Path) -> None:
    result = run_cli(
        "mnistlab.cli.train", "dataset=random", "loop.epochs=1", "device.threads=1", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert only_run(tmp_path).name.endswith("_random+epochs:1+threads:1")
