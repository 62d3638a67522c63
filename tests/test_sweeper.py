"""The default sweeper: Hydra's basic sweeper, composing each job's config once in-process."""

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from mnistlab import config
from mnistlab.sweeprecord import definition

# mnistlab's callbacks read the jobs' files, which these jobs do not write.
NO_CALLBACKS = ("~hydra.callbacks.run_folder", "~hydra.callbacks.sweep_resume")
NO_CALLBACKS += ("~hydra.callbacks.sweep_summary",)
HYDRAS_OWN = "hydra.sweeper._target_=hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep(tmp_path, monkeypatch, *overrides: str) -> tuple[list[str], int]:
    """Run a real in-process multirun (the jobs record their config): configs, compositions."""
    composed = []
    compose = ConfigLoaderImpl.load_configuration

    def counted(self, *args, **kwargs):  # Hydra's own composition, counted
        composed.append(1)
        return compose(self, *args, **kwargs)

    def job(cfg: DictConfig) -> float:
        configs.append(OmegaConf.to_yaml(cfg))
        cfg.loop.epochs = -1  # a job changing its config changes none other's
        return 0.0

    configs: list[str] = []
    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counted)
    with initialize_config_dir(config_dir=config.CONF_DIR, version_base="1.3"):
        GlobalHydra.instance().hydra.multirun(  # type: ignore[union-attr]
            config_name="train",
            task_function=job,
            overrides=[*overrides, *NO_CALLBACKS, f"hydra.sweep.dir={tmp_path}"],
            with_log_configuration=False,
        )
    return configs, len(composed)


@pytest.mark.parametrize("grid", [("optimizer=sgd,adam", "loop.epochs=1,2"), ("loop.seed=1,1",)])
def test_each_job_is_composed_once_and_gets_the_config_hydras_sweeper_gives(
    tmp_path, monkeypatch, grid
) -> None:
    hydras, hydras_composed = sweep(tmp_path / "hydras", monkeypatch, *grid, HYDRAS_OWN)
    ours, composed = sweep(tmp_path / "ours", monkeypatch, *grid)
    assert ours == hydras and len(ours) in (2, 4)
    assert len(set(ours)) == len(ours) // (2 if grid == ("loop.seed=1,1",) else 1)
    assert composed == hydras_composed - len(ours)  # Hydra's composes every job twice


def test_a_sweep_started_with_hydras_sweeper_is_the_same_sweep_with_ours() -> None:
    with initialize_config_dir(config_dir=config.CONF_DIR, version_base="1.3"):
        ours = compose("train", ["optimizer.lr=0.1"], return_hydra_config=True)
        hydras = compose("train", ["optimizer.lr=0.1", HYDRAS_OWN], return_hydra_config=True)
    assert ours.hydra.sweeper._target_ != hydras.hydra.sweeper._target_
    assert definition(ours) == definition(hydras)  # so sweep.yaml of either continues with either
