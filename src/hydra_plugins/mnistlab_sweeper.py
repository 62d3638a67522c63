"""mnistlab's default sweeper: Hydra's basic sweeper, which composes each job's config once.

Hydra's BasicSweeper composes every job's config before the first job starts, so that a bad
value in the last job stops the sweep before any trains; its basic launcher then composes
each again to run it. For mnistlab's config that is a tenth of a second a job, paid twice.
Here the launcher gets the config the check composed; a launcher that runs jobs in other
processes (joblib, SLURM) sends them there with the jobs, where they are few.

Hydra instantiates sweepers only from the `hydra_plugins` package, hence this module, and
Hydra imports it on each start: it then gives `hydra/sweeper=basic` (the default) this sweeper
in place of Hydra's, under the same name, so that a preset or a command naming another
sweeper still gets that one. (A conf/hydra/sweeper/basic.yaml would do the same with a
deprecation warning: Hydra would check it against its own schema of that name.)
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from mnistlab import names
from mnistlab.config import checks
from mnistlab.private import hydra as hydra_private
from mnistlab.run import guard
from mnistlab.sweep import context, record, rerun

# Checked configs kept for the launch at most (a few MB each at worst): a bigger batch's
# further jobs are composed again when they start.
KEPT = 100
# A launcher with worker processes (joblib, SLURM) sends each job this loader: with it the
# checked configs, where they are this few (about 20 kB each).
SENT = 16
SAY_EVERY = 10.0  # seconds between lines while a big grid's configs are checked


class ComposedOnce:
    """A config loader that hands each job's checked config to the launcher, once."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self.checked: dict[tuple[str, ...], list[DictConfig]] = {}  # by the job's overrides

    def __getattr__(self, name: str) -> Any:
        loader = self.__dict__.get("loader")  # absent while unpickling
        if loader is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(loader, name)  # everything else is the loader's own

    def __getstate__(self) -> dict[str, Any]:
        """What a worker process gets: the loader, and the checked configs where few."""
        few = sum(map(len, self.checked.values())) <= SENT
        return {"loader": self.loader, "checked": self.checked if few else {}}

    def check(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> None:
        """Compose a job's config and check its settings (HydraException, SettingError where
        wrong: before any job trains); keep it for its launch."""
        config = hydra_private.composed(self.loader, master_config, list(sweep_overrides))
        if config.hydra.job.config_name == names.TRAIN_CONFIG:  # not the benchmark's, say
            settings = checks.check_settings(config)  # what needs no import (the rest: the job)
            if context.runs_here(config):  # a cluster's nodes may have more cores, or a GPU
                checks.check_host(settings)
                check_device(config)
        if sum(map(len, self.checked.values())) < KEPT:  # a job given twice: two configs
            self.checked.setdefault(tuple(sweep_overrides), []).append(config)

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: Sequence[str]
    ) -> DictConfig:
        """The config of the job `sweep_overrides`: the one checked, else composed now."""
        kept = self.checked.get(tuple(sweep_overrides))
        if not kept:
            return hydra_private.composed(self.loader, master_config, list(sweep_overrides))
        config = kept.pop(0)  # a job's config is its own: each is handed out once
        OmegaConf.copy_cache(from_config=master_config, to_config=config)  # as Hydra does
        return config


class BasicOnceSweeper(hydra_private.basic_sweeper()):
    """Hydra's BasicSweeper, whose launcher gets the configs that its check composed."""

    composed: ComposedOnce
    overwritten = False  # loop.overwrite=true: the folder was replaced, after the first check

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.composed = ComposedOnce(hydra_context.config_loader)
        context = HydraContext(config_loader=self.composed, callbacks=hydra_context.callbacks)
        super().setup(hydra_context=context, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Hydra's check that every job's config composes; those configs are kept to run.

        A grid refused before any job ran leaves no folder behind to mistake for a sweep; with
        loop.overwrite=true the folder's old sweep is replaced only once the first batch passed.
        """
        sweep = Path(self.config.hydra.sweep.dir).absolute()
        said = time.monotonic()
        try:
            with guard.refusal():  # a setting's one line, without Hydra's hint under it
                for done, overrides in enumerate(batch):
                    if time.monotonic() - said > SAY_EVERY:  # long work shows progress
                        print(f"checked the configs of {done:,} of {len(batch):,} jobs", flush=True)
                        said = time.monotonic()
                    self.composed.check(self.config, overrides)
        except (Exception, SystemExit):
            rerun.refused(sweep)
            raise
        overwrite = OmegaConf.select(self.config, "loop.overwrite") is True  # mnistlab-train's
        if overwrite and not self.overwritten:
            record.overwrite(sweep, self.config)
            self.overwritten = True


def check_device(config: DictConfig) -> None:
    """A GPU the job asks for must be here (where the jobs run): else no job could train."""
    if config.device.name in ("cuda", "mps"):
        from mnistlab.parts.device import resolve_device  # torch: only for these

        resolve_device(config.device.name)


@dataclass
class BasicOnceSweeperConf:
    """hydra/sweeper=basic: Hydra's settings of its basic sweeper, for this one."""

    _target_: str = f"{__name__}.{BasicOnceSweeper.__name__}"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


# Hydra's own entry was stored when basic_sweeper was imported (above): this one replaces it.
ConfigStore.instance().store(
    group="hydra/sweeper", name="basic", node=BasicOnceSweeperConf, provider="mnistlab"
)
