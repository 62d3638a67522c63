"""What mnistlab's configs need from Python before Hydra composes them: schemas and resolvers.

`register()` stores the settings schemas in Hydra's ConfigStore and makes the `${mnistlab.*:...}`
resolvers of conf/train.yaml available: run and sweep folder names, where a job's config is
saved, the groups `--help` lists. Every entry point calls it before composing. No torch.
"""

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mnistlab.config import schemas
from mnistlab.run.rundir import run_folder, started
from mnistlab.sweep import context, naming
from mnistlab.sweep.rerun import config_subfolder

GROUPS = ("dataset", "device", "experiment", "loop", "model", "optimizer", "scheduler", "sweep")


def register() -> None:
    """Store the schemas (`/schema/<name>@_here_`) and register the `${mnistlab.*:}` resolvers."""
    schemas.store()
    # ${mnistlab.started:...} names run folders: one time for all ranks under torchrun;
    # cached in the config (like Hydra's ${now:}) so launcher workers see the same value.
    OmegaConf.register_new_resolver("mnistlab.started", started, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("mnistlab.run_folder", run_folder, replace=True)
    OmegaConf.register_new_resolver("mnistlab.config_subfolder", config_subfolder, replace=True)
    OmegaConf.register_new_resolver("mnistlab.help_groups", help_groups, replace=True)
    OmegaConf.register_new_resolver("mnistlab.job_name", job_name, replace=True)
    OmegaConf.register_new_resolver("mnistlab.run_name", naming.run_name, replace=True)


def job_name(sweep_dir: str, overrides: Any) -> str:
    """A sweep job's folder name after its number, by the keys its sweep's context says vary."""
    sweep = context.read(Path(sweep_dir))
    return naming.job_name(() if sweep is None else sweep.swept, overrides)


def help_groups() -> str:
    """The config groups a training run can choose from, with their options, for --help."""
    from hydra.core.global_hydra import GlobalHydra  # initialised: Hydra is showing the help

    loader = GlobalHydra.instance().config_loader()
    return "\n".join(f"{g}: {', '.join(sorted(loader.get_group_options(g)))}" for g in GROUPS)
