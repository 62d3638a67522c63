"""Config schemas and the checks that run before anything is built.

The plain settings groups (device, loop, dataset.loader) have dataclass schemas in Hydra's
ConfigStore, so a wrong type fails while Hydra composes the config. Ranges are checked in
each dataclass's `__post_init__`, and swappable components (`_target_` nodes) are checked
against the signature of what they build, so a typo fails before any data is loaded.

This module does not import torch: `mnistlab-train --help` and `--cfg job` only need it.
"""

import inspect
from dataclasses import dataclass, fields
from importlib.resources import files
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from mnistlab import SettingError, naming
from mnistlab.rundir import config_subfolder, run_folder, started

# The configs shipped in the package (in a checkout, src/mnistlab/conf links to conf/).
CONF_DIR = str(files("mnistlab") / "conf")
SECTIONS = ("device", "dataset", "model", "optimizer", "loop", "objective")
# Ranks other than 0 (torchrun, or the tasks of a SLURM job) leave the run folder to rank 0.
OTHER_RANK_OVERRIDES = ("hydra.output_subdir=null", "hydra/job_logging=disabled")
METRICS = ("train_loss", "val_loss", "val_accuracy", "test_loss", "test_accuracy")


DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class DeviceSettings:
    """The `device` config group. Checked when a run starts."""

    name: str = "auto"
    threads: int | None = None  # torch CPU threads; null keeps torch's default
    # Treat denormal floats (below 1.2e-38) as zero in CPU kernels. Adam's moments of rarely
    # used weights decay into that range, where x86 arithmetic is many times slower.
    flush_denormal: bool = True

    def __post_init__(self) -> None:
        if self.name not in DEVICES:
            raise SettingError(
                f"device.name={self.name!r} is unknown: use one of {', '.join(DEVICES)}"
            )
        if self.threads is not None and self.threads < 1:
            raise SettingError(
                f"device.threads={self.threads} must be >= 1, or null for torch's default"
            )


NAN_POLICIES = ("stop", "skip")


@dataclass
class LoopSettings:
    """The `loop` config group. Checked when a run starts."""

    epochs: int = 3
    log_every_n_batches: int = 100
    seed: int = 0
    grad_clip_norm: float | None = None
    checkpoint_every_n_steps: int | None = None  # besides the one at every epoch's end
    nan_policy: str = "stop"  # stop: end the run as failed; skip: drop that batch's update
    resume: str | None = None  # a run folder or checkpoint file to continue
    overwrite: bool = False  # a new run may replace the run already in hydra.run.dir
    fast_optimizer: bool = True  # fused (else foreach) optimizer kernels where torch has them

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise SettingError(f"loop.epochs={self.epochs} must be at least 1")
        if self.log_every_n_batches < 1:
            raise SettingError(
                f"loop.log_every_n_batches={self.log_every_n_batches} must be at least 1"
            )
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise SettingError(
                f"loop.grad_clip_norm={self.grad_clip_norm} must be > 0 (null: no clipping)"
            )
        if self.checkpoint_every_n_steps is not None and self.checkpoint_every_n_steps < 1:
            raise SettingError(
                f"loop.checkpoint_every_n_steps={self.checkpoint_every_n_steps} must be >= 1 "
                "(null: only at the end of each epoch)"
            )
        if self.nan_policy not in NAN_POLICIES:
            raise SettingError(f"loop.nan_policy={self.nan_policy!r} is unknown: use stop or skip")


@dataclass
class LoaderSettings:
    """How batches are drawn (the `dataset.loader` block). Checked when a run starts."""

    batch_size: int = 64
    shuffle: bool = True
    mode: str = "tensor"  # "tensor": slice in-memory tensors; "dataloader": Dataset + DataLoader
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise SettingError(f"dataset.loader.batch_size={self.batch_size} must be at least 1")
        if self.mode not in ("tensor", "dataloader"):
            raise SettingError(
                f"dataset.loader.mode={self.mode!r} is unknown: use tensor or dataloader"
            )
        if self.num_workers < 0:
            raise SettingError(f"dataset.loader.num_workers={self.num_workers} must be >= 0")


def register_schemas() -> None:
    """Make the schemas available to the YAML files as `/schema/<name>@_here_`."""
    store = ConfigStore.instance()
    store.store(group="schema", name="device", node=DeviceSettings)
    store.store(group="schema", name="loop", node=LoopSettings)
    store.store(group="schema", name="loader", node=LoaderSettings)
    # ${mnistlab.started:...} names run folders: one time for all ranks under torchrun;
    # cached in the config (like Hydra's ${now:}) so launcher workers see the same value.
    OmegaConf.register_new_resolver("mnistlab.started", started, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("mnistlab.run_folder", run_folder, replace=True)
    OmegaConf.register_new_resolver("mnistlab.config_subfolder", config_subfolder, replace=True)
    naming.register()  # ${mnistlab.job_name:...}, ${mnistlab.run_name:...}


@dataclass(frozen=True)
class Settings:
    device: DeviceSettings
    loader: LoaderSettings
    loop: LoopSettings


def check(cfg: DictConfig) -> Settings:
    """Validate the whole run config; raise SettingError naming the key and the fix."""
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
    check_target(cfg.dataset.source, "dataset.source")
    check_source(cfg.dataset.source)
    check_target(cfg.model, "model")
    check_target(cfg.optimizer, "optimizer")
    for key in ("lr", "momentum", "weight_decay"):
        if key in cfg.optimizer:
            check_number(cfg.optimizer[key], f"optimizer.{key}", positive=key == "lr")
    if "hidden" in cfg.model:
        check_number(cfg.model.hidden, "model.hidden", positive=True)
    if "dropout" in cfg.model and not 0 <= cfg.model.dropout < 1:
        raise SettingError(f"model.dropout={cfg.model.dropout} must be in [0, 1), e.g. 0.2")
    return Settings(
        device=to_settings(cfg.device, DeviceSettings, "device"),
        loader=to_settings(cfg.dataset.loader, LoaderSettings, "dataset.loader"),
        loop=to_settings(cfg.loop, LoopSettings, "loop"),
    )


def check_source(source: DictConfig) -> None:
    """The sizes every dataset builder shares: counts >= 1, a validation fraction in (0, 1)."""
    for key in ("num_samples", "num_val_samples"):
        if key in source and (not isinstance(source[key], int) or source[key] < 1):
            raise SettingError(f"dataset.source.{key}={source[key]!r} must be an integer >= 1")
    if "val_fraction" in source:
        fraction = source.val_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 < fraction < 1
        ):
            raise SettingError(
                f"dataset.source.val_fraction={fraction!r} must be between 0 and 1, e.g. 0.1"
            )


def to_settings(node: DictConfig, kind: type, name: str) -> Any:
    """Build a settings dataclass from its config node, refusing keys it does not have."""
    known = {field.name for field in fields(kind)}
    unknown = sorted(set(node) - known)
    if unknown:
        raise SettingError(
            f"{name}.{unknown[0]} is not a setting: use one of {', '.join(sorted(known))}"
        )
    return kind(**OmegaConf.to_container(node, resolve=True))


def check_target(node: DictConfig, name: str) -> None:
    """Refuse keys the `_target_` does not accept, or values of the wrong plain type."""
    target = get_object(node._target_)
    parameters = inspect.signature(target, eval_str=True).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key in node:
        if key.startswith("_"):
            continue
        if key not in parameters:
            if takes_any:
                continue
            allowed = ", ".join(p for p in parameters if p not in ("self", "params"))
            raise SettingError(
                f"{name}.{key} is not accepted by {node._target_}: use one of {allowed}"
            )
        kind = parameters[key].annotation
        if kind in (int, float, str, bool) and not has_type(node[key], kind):
            raise SettingError(f"{name}.{key}={node[key]!r} must be of type {kind.__name__}")


def has_type(value: Any, kind: type) -> bool:
    """isinstance, except that bool is no number and an int will do for a float."""
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


def check_number(value: Any, name: str, positive: bool) -> None:
    """Refuse a non-numeric value, or a negative one (or zero, where `positive`)."""
    if not has_type(value, float):
        raise SettingError(f"{name}={value!r} is not a number")
    if value < 0 or (positive and value == 0):
        raise SettingError(f"{name}={value} must be {'> 0' if positive else '>= 0'}")
