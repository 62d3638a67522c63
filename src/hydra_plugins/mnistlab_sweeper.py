"""mnistlab's default sweeper: Hydra's basic sweeper, which composes each job's config once
where the jobs run in this process.

Hydra's BasicSweeper composes every job's config before the first job starts, so that a bad
value in the last job stops the sweep before any trains; its basic launcher then composes
each again to run it. For mnistlab's config that is a tenth of a second a job, paid twice.
Here the launcher gets the config the check composed. A launcher that runs jobs in other
processes (joblib, SLURM) composes them there, as Hydra's does.

Hydra instantiates sweepers only from the `hydra_plugins` package, hence this module, and
Hydra imports it on each start: it then gives `hydra/sweeper=basic` (the default) this sweeper
in place of Hydra's, under the same name, so that a preset or a command naming another
sweeper still gets that one. (A conf/hydra/sweeper/basic.yaml would do the same with a
deprecation warning: Hydra would check it against its own schema of that name.)
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

# Checked configs kept for the launcher at most (a few MB each at worst): a bigger batch's
# further jobs are composed again when they start.
KEPT = 100


class ComposedOnce:
    """A config loader that hands each job's checked config to the launcher, once."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self.checked: dict[tuple[int, tuple[str, ...]], list[DictConfig]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)  # everything else is the loader's own

    def check(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> None:
        """Compose a job's config (HydraException where it cannot be); keep it for its launch."""
        config = self.loader.load_sweep_config(master_config, list(sweep_overrides))
        if sum(map(len, self.checked.values())) < KEPT:
            key = (id(master_config), tuple(sweep_overrides))
            self.checked.setdefault(key, []).append(config)  # a job given twice: two configs

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: Sequence[str]
    ) -> DictConfig:
        """The config of the job `sweep_overrides`: the one checked, else composed now."""
        kept = self.checked.get((id(master_config), tuple(sweep_overrides)))
        if not kept:
            return self.loader.load_sweep_config(master_config, list(sweep_overrides))
        config = kept.pop(0)  # a job's config is its own: each is handed out once
        OmegaConf.copy_cache(from_config=master_config, to_config=config)  # as Hydra does
        return config


def naming(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


class BasicOnceSweeper(BasicSweeper):
    """Hydra's BasicSweeper; with Hydra's basic launcher, each job's config is composed once."""

    composed: ComposedOnce | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        # Hydra runs its plugin modules again when it scans them: compare the class's name.
        if naming(type(self.launcher)) == naming(BasicLauncher):  # jobs in this process
            self.composed = ComposedOnce(hydra_context.config_loader)
            context = HydraContext(config_loader=self.composed, callbacks=hydra_context.callbacks)
            self.hydra_context = self.launcher.hydra_context = context

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Hydra's check that every job's config composes; those configs are kept to run."""
        if self.composed is None:
            super().validate_batch_is_legal(batch)
            return
        for overrides in batch:
            self.composed.check(self.config, overrides)


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
