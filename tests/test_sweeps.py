"""Sweeps through the real CLI: presets, the ranked summary, failed and stopped jobs, launchers."""

import importlib.util
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from conftest import (
    ROOT,
    SMALL_DIGITS,
    metrics_of,
    only_sweep,
    run_cli,
    start_cli,
    summary_rows,
    wait_for,
)
from mnistlab import names
from mnistlab.config import checks as config
from mnistlab.parts import cores

EXPERIMENTS = ROOT / "experiments"
PRESETS = sorted(path.stem for path in EXPERIMENTS.glob("*.yaml"))
LR_GRID = {"optimizer": "sgd,adam,rmsprop", "optimizer.lr": "0.1,0.01,0.001"}

# What each preset must set (dotted keys, read with OmegaConf.select). A new preset without an
# entry here fails test_every_preset_composes until someone says what it is meant to do.
EXPECTED = {
    "optimizer_lr_sweep": {"hydra.mode": RunMode.MULTIRUN, "hydra.sweeper.params": LR_GRID},
    "optimizer_lr_sweep_parallel": {
        "hydra.mode": RunMode.MULTIRUN,
        "hydra.sweeper.params": LR_GRID,
        "hydra.launcher.n_jobs": 2,
        "device.threads": None,  # each job its share of the cores
    },
    "lesson_fake_mnist": {
        "dataset.source._target_": "mnistlab.data.splits.fake_mnist",
        "dataset.loader.batch_size": 64,
        "model._target_": "mnistlab.parts.models.MNISTClassifier",
        "optimizer._target_": "torch.optim.Adam",
        "optimizer.lr": 0.001,
        "loop.epochs": 3,
        "loop.log_every_n_batches": 5,
    },
    "mnist_mlp": {"model._target_": "mnistlab.parts.models.MNISTClassifier", "loop.epochs": 3},
    "mnist_cnn": {"model._target_": "mnistlab.parts.models.ConvNet", "loop.epochs": 5},
    "mnist_cnn_995": {"model.channels": [32, 64], "model.shift": 2, "loop.epochs": 8},
    "mnist_speedrun": {
        "model.kernel_sizes": [5, 3],
        "model.padding": "valid",
        "scheduler._target_": "mnistlab.parts.schedulers.onecycle",
        "optimizer.betas": [0.7, 0.9],
        "dataset.loader.batch_size": 128,
        "model.channels": [8, 24],
        "loop.precision": "auto",
        "loop.channels_last": True,
        "loop.label_smoothing": 0.1,
        "loop.target.metric": "test_accuracy",
        "loop.epochs": 1,
    },
    "optuna_lr_search": {
        "hydra.mode": RunMode.MULTIRUN,
        "hydra.sweeper._target_": "hydra_plugins.mnistlab_optuna.ResumableOptunaSweeper",
        "hydra.sweeper.pruner._target_": "optuna.pruners.MedianPruner",
        "hydra.sweeper.direction": "minimize",
        "hydra.sweeper.n_trials": 20,
        "hydra.sweeper.params": {
            "optimizer": "choice(sgd, adam, rmsprop)",
            "optimizer.lr": "tag(log, interval(1e-4, 1e-1))",
        },
        "objective": "val_loss",
    },
}
# What a preset needs beyond the core install: Hydra plugins (optional extras), or configs
# that the real-MNIST work adds (conf/dataset/mnist.yaml, conf/model/cnn.yaml).
PLUGINS = {
    "optimizer_lr_sweep_parallel": "hydra_plugins.hydra_joblib_launcher",
    "optuna_lr_search": "hydra_plugins.hydra_optuna_sweeper",
}
CONFIGS = {
    "mnist_mlp": ["dataset/mnist.yaml"],
    "mnist_cnn": ["dataset/mnist.yaml", "model/cnn.yaml"],
}


def skip_without_plugin(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e '.[launchers,optuna]')")


def compose_with_hydra(*overrides: str) -> DictConfig:
    """The config with its `hydra:` node, which conftest's compose_config leaves out."""
    with initialize_config_dir(config_dir=names.CONF_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def job_folders(sweep: Path) -> list[Path]:
    return sorted(path for path in sweep.iterdir() if (path / ".hydra").is_dir())


def assert_row_matches_metrics(row: dict[str, str], metrics: dict) -> None:
    """Every value of the job's metrics.json is in its summary row, exactly."""
    for key, value in metrics.items():
        if key == "per_epoch":  # each epoch's figures, for the median rule: not a column
            continue
        written = row[key]
        assert (float(written) if isinstance(value, float) else written) == (
            value if isinstance(value, float) else str(value)
        ), key


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes(preset: str) -> None:
    lines = (EXPERIMENTS / f"{preset}.yaml").read_text().splitlines()
    # Hydra reads the package header only from the very first lines, so it precedes the command.
    assert lines[0] == "# @package _global_"
    assert lines[1].startswith(f"# mnistlab-train experiment={preset}")
    if preset in PLUGINS:
        skip_without_plugin(PLUGINS[preset])
    for name in CONFIGS.get(preset, []):
        if not (Path(names.CONF_DIR) / name).exists():
            pytest.skip(f"conf/{name} is not here yet: the real-MNIST branch adds it")

    cfg = compose_with_hydra(f"experiment={preset}")

    for key, value in EXPECTED[preset].items():
        selected = OmegaConf.select(cfg, key)
        found = OmegaConf.to_container(selected) if isinstance(selected, DictConfig) else selected
        assert found == value, key
    config.check(cfg)  # the preset's settings pass the same checks as a run


def test_slurm_launcher_preset_composes() -> None:
    skip_without_plugin("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_with_hydra("experiment=optimizer_lr_sweep", "hydra/launcher=slurm")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.mem_gb) == (1, 1, 16)
    assert (launcher.partition, launcher.timeout_min) == (None, 60)


@pytest.mark.slow
def test_preset_sweep_writes_a_ranked_summary(tmp_path: Path) -> None:
    result = run_cli(
        "mnistlab.cli.train",
        "experiment=optimizer_lr_sweep",
        "optimizer=sgd,adam",  # the command line narrows the preset's 3 x 3 grid to 2 jobs
        "optimizer.lr=0.05",
        *SMALL_DIGITS,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    sweep = only_sweep(tmp_path)
    folders = job_folders(sweep)
    assert [folder.name.split("_")[0] for folder in folders] == ["0", "1"]
    assert all(list(folder.glob("events.out.tfevents.*")) for folder in folders)

    rows = summary_rows(sweep)
    assert {row["folder"] for row in rows} == {folder.name for folder in folders}
    for row in rows:
        assert row["status"] == "completed"
        assert row["optimizer.lr"] == "0.05"
        assert_row_matches_metrics(row, metrics_of(sweep / row["folder"]))
    assert [row["optimizer"] for row in rows] != ["sgd", "sgd"]
    losses = [float(row["val_loss"]) for row in rows]
    assert losses == sorted(losses)
    assert "experiment" not in rows[0]  # the preset's name is not a hyper-parameter
    assert (sweep / "summary.md").read_text().strip() in result.stdout  # printed at the end


@pytest.fixture(scope="module")
def failed_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 2-job sweep whose second job has a learning rate the config checks refuse."""
    cwd = tmp_path_factory.mktemp("failed")
    result = run_cli("mnistlab.cli.train", "-m", "optimizer.lr=0.05,-1", *SMALL_DIGITS, cwd=cwd)
    assert result.returncode != 0
    assert "optimizer.lr=-1 must be > 0" in result.stderr
    return only_sweep(cwd), result.stdout


@pytest.mark.slow
def test_failed_job_is_marked_and_the_others_kept(failed_sweep: tuple[Path, str]) -> None:
    sweep, stdout = failed_sweep
    good, bad = summary_rows(sweep)
    assert (good["job"], good["status"], good["optimizer.lr"]) == ("0", "completed", "0.05")
    assert_row_matches_metrics(good, metrics_of(sweep / good["folder"]))
    assert (bad["job"], bad["status"], bad["optimizer.lr"]) == ("1", "failed", "-1")
    assert bad["error"] == "SettingError: optimizer.lr=-1 must be > 0"
    assert metrics_of(sweep / bad["folder"]) == {"status": "failed", "error": bad["error"]}
    # Hydra skips on_multirun_end after a failure; the table is printed all the same.
    assert (sweep / "summary.md").read_text().strip() in stdout


@pytest.mark.slow
def test_summarize_rebuilds_the_summary_of_any_sweep(
    failed_sweep: tuple[Path, str], tmp_path: Path
) -> None:
    sweep = shutil.copytree(failed_sweep[0], tmp_path / "sweep")
    (sweep / "summary.csv").unlink()
    (sweep / "summary.md").unlink()
    (job_folders(sweep)[0] / "metrics.json").unlink()  # as if the job had been killed

    result = run_cli("mnistlab.cli.summarize", str(sweep), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert [(row["job"], row["status"]) for row in summary_rows(sweep)] == [
        ("0", "unfinished"),
        ("1", "failed"),
    ]
    assert (sweep / "summary.md").read_text().strip() in result.stdout
    missing = run_cli("mnistlab.cli.summarize", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2 and "is not a folder" in missing.stderr


@pytest.mark.slow
def test_interrupted_sweep_keeps_the_finished_jobs(tmp_path: Path) -> None:
    args = ("-m", "loop.epochs=1,200", SMALL_DIGITS[1])
    with (tmp_path / "out.txt").open("w") as out:
        sweep = start_cli(
            "mnistlab.cli.train", *args, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
        )
        # Once job 1 has logged its first epoch: it trains. (A signal between its data and its
        # first step ends it as not started: no folder is left.)
        wait_for(lambda: first_epoch_logged(tmp_path, job="1_"))
        sweep.send_signal(signal.SIGINT)  # Ctrl-C while job 1 trains
        sweep.wait(timeout=60)

    finished, stopped = summary_rows(only_sweep(tmp_path))
    assert (finished["job"], finished["status"]) == ("0", "completed")
    # "interrupted" once runs catch SIGINT themselves; until then the job just has no metrics.
    assert (stopped["job"], stopped["status"]) in (("1", "unfinished"), ("1", "interrupted"))
    assert "| rank |" in (tmp_path / "out.txt").read_text()


def first_epoch_logged(cwd: Path, job: str) -> bool:
    """Whether the job folder starting with `job` has logged its first epoch."""
    logs = list((cwd / "outputs" / "sweeps").glob(f"*/{job}*/*.log"))
    return bool(logs) and "epoch 1/" in logs[0].read_text()


@pytest.mark.slow
def test_joblib_preset_runs_jobs_side_by_side_on_one_thread_each(tmp_path: Path) -> None:
    skip_without_plugin("hydra_plugins.hydra_joblib_launcher")
    result = run_cli(
        "mnistlab.cli.train",
        "experiment=optimizer_lr_sweep_parallel",
        "optimizer=sgd,adam",
        "optimizer.lr=0.05",
        *SMALL_DIGITS,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    # Each worker prints its job's progress line: the total reached it from the sweep's process.
    assert len(re.findall(r"^sweep: job \d .* \| [12]/2 jobs done", result.stdout, re.M)) == 2
    sweep = only_sweep(tmp_path)
    assert [row["status"] for row in summary_rows(sweep)] == ["completed", "completed"]
    share = max(1, cores.allowed_cores() // 2)  # each job's share of this machine's cores
    for folder in job_folders(sweep):
        (log_file,) = folder.glob("*.log")
        threads = re.search(r"threads: (\d+) \((.*)\)", log_file.read_text())
        assert threads is not None and int(threads[1]) <= share
        if int(threads[1]) == share:  # fewer where other processes keep cores busy
            assert threads[2] == f"{cores.allowed_cores()} cores shared by 2 jobs at once"


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep(tmp_path: Path) -> None:
    skip_without_plugin("hydra_plugins.hydra_submitit_launcher")
    result = run_cli(
        "mnistlab.cli.train",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "optimizer=sgd,adam",
        "device.threads=1",
        *SMALL_DIGITS,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    sweep = only_sweep(tmp_path)
    assert (sweep / ".submitit").is_dir()  # the jobs really went through submitit
    rows = summary_rows(sweep)
    assert sorted(row["optimizer"] for row in rows) == ["adam", "sgd"]
    for row in rows:
        assert row["status"] == "completed"
        assert_row_matches_metrics(row, metrics_of(sweep / row["folder"]))
    assert (sweep / "summary.md").read_text().strip() in result.stdout


@pytest.mark.slow
def test_optuna_preset_runs_a_tiny_search(tmp_path: Path) -> None:
    skip_without_plugin("hydra_plugins.hydra_optuna_sweeper")
    result = run_cli(
        "mnistlab.cli.train",
        "experiment=optuna_lr_search",
        "hydra.sweeper.n_trials=2",
        *SMALL_DIGITS,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    sweep = only_sweep(tmp_path)
    rows = summary_rows(sweep)
    assert len(rows) == 2
    assert "| 1/2 jobs done" in result.stdout and "| 2/2 jobs done" in result.stdout  # n_trials
    for row in rows:
        assert row["status"] == "completed"
        assert row["optimizer"] in ("sgd", "adam", "rmsprop")
        assert 1e-4 <= float(row["optimizer.lr"]) <= 1e-1
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == float(rows[0]["val_loss"])  # Optuna's best is our rank 1
