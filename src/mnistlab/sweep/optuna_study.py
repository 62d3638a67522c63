"""Where an Optuna sweep keeps its study, and how a job finds its own trial there.

The sweeper (mnistlab.sweep.optuna_sweeper) and each job agree on the storage through the job's
Hydra config: `hydra.sweeper.storage`, or by default `optuna.db` in the sweep folder. A job's
trial is the one whose number is the job's (`hydra.job.num`). Only the current config chooses
what is built (the pruner); the study database is read as values.
Kept free of torch; optuna loads only in sweeps that use this sweeper.
"""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SWEEPER = "hydra_plugins.mnistlab_optuna.ResumableOptunaSweeper"  # conf/hydra/sweeper/*.yaml
STUDY_FILE = "optuna.db"  # in the sweep folder, unless hydra.sweeper.storage names another

# (epoch, the epoch's metrics) -> why the job should stop now, or None: loop.Plan's prune hook
PruneHook = Callable[[int, dict[str, Any]], str | None]


def storage_url(storage: str | None, sweep_dir: str) -> str:
    """The study's database: `storage` as given, or SQLite in the sweep folder."""
    if storage is not None:
        return storage
    return f"sqlite:///{Path(sweep_dir).absolute() / STUDY_FILE}"


def trial_hook(objective: str) -> PruneHook | None:
    """In a job of this sweeper, its trial's hook (`hook`); else None."""
    # Hydra's global state, read here at the edge: `run.train` stays callable without Hydra.
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if (
        hydra_cfg.mode != RunMode.MULTIRUN
        or OmegaConf.select(hydra_cfg, "sweeper._target_") != SWEEPER
    ):
        return None
    return hook(hydra_cfg, objective)


def hook(hydra_cfg: DictConfig, objective: str) -> PruneHook | None:
    """Report each epoch's objective to the job's trial, and ask the configured pruner."""
    import optuna
    from hydra.utils import instantiate

    sweeper = hydra_cfg.sweeper
    storage = optuna.storages.RDBStorage(storage_url(sweeper.storage, hydra_cfg.sweep.dir))
    pruner = optuna.pruners.NopPruner() if sweeper.pruner is None else instantiate(sweeper.pruner)
    study = optuna.load_study(
        study_name=sweeper.study_name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),  # a job samples nothing
        pruner=pruner,
    )
    study_id = storage.get_study_id_from_name(sweeper.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, hydra_cfg.job.num)
    if storage.get_trial(trial_id).state != optuna.trial.TrialState.RUNNING:
        log.warning("trial %d is finished in the study: not reported", hydra_cfg.job.num)
        return None
    if len(study.directions) > 1:
        return None  # Optuna reports and prunes single-objective studies only
    trial = optuna.trial.Trial(study, trial_id)
    name = type(pruner).__name__

    def report(epoch: int, values: dict[str, Any]) -> str | None:
        if objective not in values:
            return None
        trial.report(float(values[objective]), step=epoch)
        return f"Optuna's {name} at epoch {epoch}" if trial.should_prune() else None

    return report
