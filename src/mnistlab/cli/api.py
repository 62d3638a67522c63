"""Train from Python (a notebook, a script): the config mnistlab-train composes, run in-process.

    from mnistlab.cli import api
    result = api.train(["dataset=random", "loop.epochs=1"], out_dir="outputs/notebook/first")
    result.metrics["val_accuracy"], result.run_dir

Hydra's compose API builds the config from the same files and overrides as the command line;
Hydra's global state is restored when it returns, so calls can follow each other. Sweeps
(`-m`) and launchers are the command line's job.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from mnistlab import SettingError, names
from mnistlab.cli import arguments, resolvers
from mnistlab.cli.train import resume_argv
from mnistlab.run import guard, rundir


@dataclass(frozen=True)
class Result:
    """What one run gave: its metrics.json values, and the folder it wrote into."""

    metrics: dict[str, Any]
    run_dir: Path


def run_config(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> DictConfig:
    """The config `mnistlab-train [--config-dir config_dir] overrides...` would run."""
    overrides = list(overrides)
    for override in arguments.parse(overrides):  # the command line's checks before Hydra's
        arguments.check(override)
    if config_dir is not None:
        folder = Path(config_dir).expanduser().resolve()
        if not folder.is_dir():
            raise SettingError(f"config_dir={str(config_dir)!r} is not a folder")
        # Like --config-dir: the folder's options join the shipped groups.
        overrides.append(f"hydra.searchpath=[file://{folder}]")
    resolvers.register()
    if GlobalHydra.instance().is_initialized():  # inside a Hydra job (mnistlab-benchmark)
        # Its search path: the same.
        return compose(config_name=names.TRAIN_CONFIG, overrides=overrides)
    with initialize_config_dir(config_dir=names.CONF_DIR, version_base="1.3"):
        return compose(config_name=names.TRAIN_CONFIG, overrides=overrides)


def train(
    overrides: Sequence[str] = (),
    *,
    out_dir: str | Path,
    config_dir: str | Path | None = None,
) -> Result:
    """Compose the run config from `overrides` and train in this process, writing to `out_dir`.

    With `loop.resume` the run continues in its own folder, which `Result.run_dir` names.
    """
    overrides = resume_argv(list(overrides))  # as the command line does for a resume
    cfg = run_config(overrides, config_dir)
    from mnistlab.run import resume, training

    sources = list(resume.DEFAULT_SOURCES)
    if config_dir is not None:  # a resumed run may call what the user's own groups offer
        sources.append(f"file://{Path(config_dir).expanduser().resolve()}")
    folder = rundir.resumed_folder(cfg.loop.resume) or Path(out_dir)  # as given: relative stays
    # The command line's checks, in its words: out_dir is this call's hydra.run.dir.
    key = "out_dir" if cfg.loop.resume is None else "loop.resume"
    with guard.claimed(folder.absolute(), key, cfg.loop.resume, cfg.loop.overwrite):
        metrics = training.run_training(cfg, Path(out_dir), overrides, sources)
    return Result(metrics=metrics, run_dir=folder)
