"""The default sweeper: Hydra's basic sweeper, composing each job's config once."""

import pickle

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mnistlab import names
from mnistlab.sweep.record import definition

# mnistlab's callbacks read the jobs' files, which these jobs do not write.
NO_CALLBACKS = ("~hydra.callbacks.run_folder", "~hydra.callbacks.sweep")
HYDRAS_OWN = "hydra.sweeper._target_=hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def counted(monkeypatch) -> list[int]:
    """Hydra's own composition of a config, counted: one item per composition from now on."""
    composed: list[int] = []
    compose = ConfigLoaderImpl.load_configuration

    def counting(self, *args, **kwargs):
        composed.append(1)
        return compose(self, *args, **kwargs)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counting)
    return composed


def sweep(tmp_path, monkeypatch, *overrides: str) -> tuple[list[str], int]:
    """Run a real in-process multirun (the jobs record their config): configs, compositions."""
    composed = counted(monkeypatch)

    def job(cfg: DictConfig) -> float:
        configs.append(OmegaConf.to_yaml(cfg))
        cfg.loop.epochs = -1  # a job changing its config changes none other's
        return 0.0

    configs: list[str] = []
    with initialize_config_dir(config_dir=names.CONF_DIR, version_base="1.3"):
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
    with initialize_config_dir(config_dir=names.CONF_DIR, version_base="1.3"):
        ours = compose("train", ["optimizer.lr=0.1"], return_hydra_config=True)
        hydras = compose("train", ["optimizer.lr=0.1", HYDRAS_OWN], return_hydra_config=True)
    assert ours.hydra.sweeper._target_ != hydras.hydra.sweeper._target_
    assert definition(ours) == definition(hydras)  # so sweep.yaml of either continues with either


def test_a_jobs_process_gets_the_checked_config_with_it_and_composes_none(monkeypatch) -> None:
    """What joblib and submitit send to a job's process: the loader, pickled, with the configs."""
    from hydra_plugins.mnistlab_sweeper import SENT, ComposedOnce

    with initialize_config_dir(config_dir=names.CONF_DIR, version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        master = hydra.compose_config("train", ["optimizer=sgd,adam"], run_mode=RunMode.MULTIRUN)
        loader = ComposedOnce(hydra.config_loader)
        loader.check(master, ["optimizer=sgd"])
        composed = counted(monkeypatch)
        sent = pickle.loads(pickle.dumps(loader))
        assert sent.load_sweep_config(master, ["optimizer=sgd"]).optimizer.lr == 0.01
        assert composed == []
        assert sent.load_sweep_config(master, ["optimizer=sgd"]).optimizer.momentum == 0.0
        assert composed == [1]  # handed out once: asked again, it is composed
        for n in range(SENT):  # more than SENT configs: none travel, the job composes its own
            loader.check(master, ["optimizer=adam", f"loop.seed={n}"])
        assert pickle.loads(pickle.dumps(loader)).checked == {}


def test_the_jobs_of_a_sweep_share_the_parsed_files_and_a_search_path_does_not(
    monkeypatch, tmp_path
) -> None:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.config_repository import ConfigRepository

    from mnistlab.private import hydra as hydra_private

    parsed: list[str] = []
    load = ConfigRepository.load_config

    def counting(self, config_path):
        parsed.append(config_path)
        return load(self, config_path)

    monkeypatch.setattr(ConfigRepository, "load_config", counting)
    merged: list[list] = []
    merge = ConfigLoaderImpl._compose_config_from_defaults_list

    def merging(self, defaults, repo):
        merged.append([d.config_path for d in defaults])
        return merge(self, defaults=defaults, repo=repo)

    monkeypatch.setattr(ConfigLoaderImpl, "_compose_config_from_defaults_list", merging)
    with initialize_config_dir(config_dir=names.CONF_DIR, version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        master = hydra.compose_config("train", ["optimizer=sgd,adam"], run_mode=RunMode.MULTIRUN)
        loader = hydra.config_loader
        parsed.clear()  # the sweep's own config, composed before the sharing
        jobs = [["optimizer=sgd"], ["optimizer=adam"], ["optimizer=sgd", "loop.seed=3"]]
        shared = [hydra_private.composed(loader, master, job) for job in jobs]
        assert len(parsed) == len(set(parsed))  # no file parsed twice for the three jobs
        assert "optimizer/sgd" in parsed and "optimizer/adam" in parsed
        # The sweep's config and two defaults lists merged; the third job (values only) is not.
        assert len(merged) == 3 and merged[1] != merged[2]
        # The same configs as Hydra composes them without sharing, and each its own object.
        loader.repository = loader.repository.delegate
        assert [OmegaConf.to_yaml(c) for c in shared] == [
            OmegaConf.to_yaml(loader.load_sweep_config(master, job)) for job in jobs
        ]
        shared[0].optimizer.lr = 123.0  # a job changing its config changes no later job's
        again = hydra_private.composed(loader, master, ["optimizer=sgd"])
        assert again.optimizer.lr == 0.01
        # A job that sets hydra.searchpath gets a repository of its own, as Hydra gives it.
        searched = hydra_private.composed(
            loader, master, ["optimizer=sgd", f"hydra.searchpath=[file://{tmp_path}]"]
        )
        assert searched.optimizer.lr == 0.01
        assert not isinstance(loader.repository, hydra_private.SharedRepository)
