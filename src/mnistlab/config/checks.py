"""The checks of a whole run config, made before anything is built.

The plain settings groups (device, loop, sweep, dataset.loader) become their schemas'
dataclasses (mnistlab.config.schemas: types, and ranges in `__post_init__`); swappable
components (`_target_` nodes) are checked against what they build (mnistlab.config.targets).
NaN, infinity and a missing value are refused everywhere. So a typo or an impossible value
fails before any data is loaded; what depends on the data (model x input shape, objective x
splits, sizes x split) is checked in `mnistlab.run.build.build` once the data is there, before
training.

This module does not import torch: `mnistlab-train --help` and `--cfg job` only need it.
"""

import os
from dataclasses import fields
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from mnistlab import SettingError
from mnistlab.config import shipped
from mnistlab.config.schemas import (
    DeviceSettings,
    LoaderSettings,
    LoopSettings,
    Settings,
    SweepSettings,
)
from mnistlab.config.targets import check_finite, check_target
from mnistlab.names import HIGHER_IS_BETTER, METRICS

SECTIONS = ("device", "dataset", "model", "optimizer", "scheduler", "loop", "sweep", "objective")


def check(cfg: DictConfig) -> Settings:
    """Validate the whole run config; raise SettingError naming the key and the fix."""
    check_sections(cfg)
    check_target(cfg.dataset.source, "dataset.source")
    check_target(cfg.model, "model")
    check_target(cfg.optimizer, "optimizer")
    check_target(cfg.scheduler, "scheduler")
    settings = check_settings(cfg)
    check_host(settings)
    return settings


def check_sections(cfg: DictConfig) -> None:
    """Refuse a config without one of the sections a run needs (`~model` removed it)."""
    for section in SECTIONS:
        if section not in cfg:
            raise SettingError(f"{section} is missing: a run needs one; {choose(section)}")


def choose(section: str) -> str:
    """How to give a run's section a value, in words: its group's options, or its values."""
    if section == "objective":
        return f"choose one of objective={', '.join(METRICS)}"
    return f"choose one of {section}={', '.join(shipped.options(section))}"


def check_host(settings: Settings) -> None:
    """Refuse more threads or loader workers than this machine gives the process (checked
    where the run trains: a sweep's jobs may run on bigger machines than the one submitting)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for key, count in (
        ("device.threads", settings.device.threads),
        ("dataset.loader.num_workers", settings.loader.num_workers),
    ):
        if cores and count is not None and count > cores:
            raise SettingError(
                f"{key}={count} is more than the {cores} CPU cores this process may use: use "
                f"at most {key}={cores}"
            )


def check_settings(cfg: DictConfig) -> Settings:
    """The checks that import nothing (a sweep makes them on every job before the first)."""
    check_sections(cfg)
    unknown = sorted(set(cfg) - set(SECTIONS) - {"hydra"})  # hydra: Hydra's own, when composed
    if unknown:  # e.g. +epochs=5 where loop.epochs=5 was meant: nothing would read it
        raise SettingError(
            f"{unknown[0]} is not a setting of mnistlab-train: the top level has "
            f"{', '.join(SECTIONS)}"
        )
    if cfg.objective not in METRICS:
        raise SettingError(
            f"objective={cfg.objective!r} is unknown: use one of {', '.join(METRICS)}"
        )
    settings = Settings(
        device=to_settings(cfg.device, DeviceSettings, "device"),
        loader=to_settings(cfg.dataset.loader, LoaderSettings, "dataset.loader"),
        loop=to_settings(cfg.loop, LoopSettings, "loop"),
        sweep=to_settings(cfg.sweep, SweepSettings, "sweep"),
    )
    check_choice(settings.loop, settings.sweep, cfg.objective)
    check_measured(settings.loop, cfg.objective)
    check_improvable(settings.loop, cfg.objective)
    return settings


def check_improvable(loop: LoopSettings, objective: str) -> None:
    """Refuse an early-stopping margin no accuracy can beat (every check would be no gain)."""
    patience, min_delta = loop.early_stopping.patience, loop.early_stopping.min_delta
    if patience is not None and objective in HIGHER_IS_BETTER and min_delta >= 1:
        raise SettingError(
            f"loop.early_stopping.min_delta={min_delta} can never be beaten by {objective}, a "
            "fraction of 1: use a margin below 1, e.g. 0.001"
        )


def check_choice(loop: LoopSettings, sweep: SweepSettings, objective: str) -> None:
    """Choosing a model by the test split would make its test score meaningless: refuse it."""
    chooses = "loop.test_on=best" if loop.test_on == "best" else None
    if loop.early_stopping.patience is not None:
        chooses = "loop.early_stopping.patience"
    if sweep.prune.median:  # it also has no test figure at each epoch's end to go by
        chooses = "sweep.prune.median"
    if chooses and objective.startswith("test_"):
        raise SettingError(
            f"{chooses} chooses the model by objective={objective}, the test split: use "
            "objective=val_loss or val_accuracy"
        )


def check_measured(loop: LoopSettings, objective: str) -> None:
    """Refuse an objective that a run may stop without measuring: the sweeper needs its value."""
    # train_loss is an epoch's mean, so only an epoch's end gives it; a target or early
    # stopping checked every eval_every_n_steps can end the run before its first epoch ends.
    stops = "loop.target" if loop.target.metric is not None else None
    if loop.early_stopping.patience is not None:
        stops = "loop.early_stopping.patience"
    if objective == "train_loss" and stops and loop.eval_every_n_steps is not None:
        raise SettingError(
            f"objective=train_loss is measured at epoch ends only, but {stops} with "
            f"loop.eval_every_n_steps={loop.eval_every_n_steps} may stop the run mid-epoch: "
            "use objective=val_loss (or val_accuracy), or loop.eval_every_n_steps=null"
        )


def to_settings(node: DictConfig, kind: type, name: str) -> Any:
    """Build a settings dataclass from its config node, refusing keys it does not have."""
    known = {field.name for field in fields(kind)}
    unknown = sorted(set(node) - known)
    if unknown:
        raise SettingError(
            f"{name}.{unknown[0]} is not a setting: use one of {', '.join(sorted(known))}"
        )
    values = OmegaConf.to_container(node, resolve=True)
    check_given(values, name)
    check_finite(values, name)
    return kind(**values)


def check_given(value: Any, name: str) -> None:
    """Refuse a setting left without a value (`???`): the schemas give none, the YAML files do."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_given(item, f"{name}.{key}")
    elif value == MISSING:
        raise SettingError(f"{name} has no value: give one, e.g. {name}=<value>")
