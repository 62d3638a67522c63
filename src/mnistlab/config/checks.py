"""Config schemas and the checks that run before anything is built.

The plain settings groups (device, loop, dataset.loader) have dataclass schemas in Hydra's
ConfigStore, so a wrong type fails while Hydra composes the config. Ranges are checked in
each dataclass's `__post_init__`. Swappable components (`_target_` nodes) are checked against
the signature of what they build (keys, and values against the annotations: a list of two
integers, a number...) and against RANGES, by parameter name. NaN and infinity are refused
everywhere. So a typo or an impossible value fails before any data is loaded; what depends
on the data (model x input shape, objective x splits, sizes x split) is checked in
`mnistlab.run.training.build` once the data is there, before training.

This module does not import torch: `mnistlab-train --help` and `--cfg job` only need it.
"""

import collections.abc
import inspect
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from hydra._internal.utils import _locate  # get_object without its error log lines
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from mnistlab import SettingError
from mnistlab.names import METRICS
from mnistlab.run.rundir import run_folder, started
from mnistlab.sweep import naming
from mnistlab.sweep.rerun import config_subfolder

SECTIONS = ("device", "dataset", "model", "optimizer", "scheduler", "loop", "sweep", "objective")
GROUPS = ("dataset", "device", "experiment", "loop", "model", "optimizer", "scheduler", "sweep")
# Ranks other than 0 (torchrun, or the tasks of a SLURM job) leave the run folder to rank 0.
OTHER_RANK_OVERRIDES = ("hydra.output_subdir=null", "hydra/job_logging=disabled")


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
PRECISIONS = ("32", "bf16", "16-mixed")  # loop.precision (mnistlab.parts.precision)
TEST_ON = ("final", "best")


@dataclass
class EarlyStopping:
    """`loop.early_stopping`: stop once the objective has not improved for `patience` checks."""

    patience: int | None = None  # evaluations (epoch ends, and every eval_every_n_steps); null: off
    min_delta: float = 0.0  # an improvement must beat the best by more than this


@dataclass
class Target:
    """`loop.target`: stop as soon as `metric` is at least as good as `value` (null: no target)."""

    metric: str | None = None
    value: float | None = None


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
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    target: Target = field(default_factory=Target)
    eval_every_n_steps: int | None = None  # also validate (and check target, patience) mid-epoch
    test_on: str = "final"  # the model the test split evaluates: final, or best (by objective)
    precision: str = "32"  # 32, bf16 (autocast, CPU or CUDA) or 16-mixed (CUDA, loss scaling)
    compile: bool = False  # torch.compile the model
    label_smoothing: float = 0.0
    channels_last: bool = False  # model and 4-D input batches in channels-last memory order

    def __post_init__(self) -> None:
        if isinstance(self.early_stopping, dict):  # from the config: nested values come as dicts
            self.early_stopping = EarlyStopping(**self.early_stopping)
        if isinstance(self.target, dict):
            self.target = Target(**self.target)
        self.check_counts()
        self.check_recipe()

    def check_recipe(self) -> None:
        """Early stopping, target, evaluation points, the tested model, precision, smoothing."""
        patience, min_delta = self.early_stopping.patience, self.early_stopping.min_delta
        if patience is not None and patience < 1:
            raise SettingError(
                f"loop.early_stopping.patience={patience} must be >= 1 (null: no early stopping)"
            )
        if min_delta < 0:
            raise SettingError(f"loop.early_stopping.min_delta={min_delta} must be >= 0")
        metric, value = self.target.metric, self.target.value
        if (metric is None) != (value is None):
            raise SettingError(
                f"loop.target needs both a metric and a value (given metric={metric}, "
                f"value={value}): e.g. loop.target.metric=val_accuracy loop.target.value=0.99"
            )
        if metric is not None and metric not in METRICS:
            raise SettingError(
                f"loop.target.metric={metric!r} is unknown: use one of {', '.join(METRICS)}"
            )
        if self.eval_every_n_steps is not None and self.eval_every_n_steps < 1:
            raise SettingError(
                f"loop.eval_every_n_steps={self.eval_every_n_steps} must be >= 1 (null: only at "
                "epoch ends)"
            )
        if self.test_on not in TEST_ON:
            raise SettingError(f"loop.test_on={self.test_on!r} is unknown: use final or best")
        if self.precision not in PRECISIONS:
            raise SettingError(
                f"loop.precision={self.precision!r} is unknown: use one of {', '.join(PRECISIONS)}"
            )
        if not 0 <= self.label_smoothing < 1:
            raise SettingError(
                f"loop.label_smoothing={self.label_smoothing} must be in [0, 1), e.g. 0.1"
            )

    def check_counts(self) -> None:
        """Epochs, logging and checkpoint intervals, clipping and the NaN policy."""
        if self.epochs < 1:
            raise SettingError(f"loop.epochs={self.epochs} must be at least 1")
        if self.log_every_n_batches < 1:
            raise SettingError(
                f"loop.log_every_n_batches={self.log_every_n_batches} must be at least 1"
            )
        if self.grad_clip_norm is not None and not 0 < self.grad_clip_norm < math.inf:
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
class Prune:
    """`sweep.prune`: stop a sweep's hopeless jobs at an epoch's end (mnistlab.sweep.prune)."""

    median: bool = False  # worse than the median of the sweep's completed jobs at that epoch
    diverged: bool = False  # chance-level accuracy, or a non-finite loss
    grace_epochs: int = 1  # epochs every job trains before the rules look at it
    min_jobs: int = 2  # completed jobs the median needs at an epoch before it prunes there

    def __post_init__(self) -> None:
        if self.grace_epochs < 0:
            raise SettingError(f"sweep.prune.grace_epochs={self.grace_epochs} must be >= 0")
        if self.min_jobs < 1:
            raise SettingError(f"sweep.prune.min_jobs={self.min_jobs} must be >= 1")


@dataclass
class SweepSettings:
    """The `sweep` config group: how a re-run sweep treats its jobs, and pruning."""

    retry_failed: bool = False  # re-running a sweep into its folder trains failed jobs again
    report_every: float = 60.0  # seconds between rebuilds of report.html during a sweep
    prune: Prune = field(default_factory=Prune)

    def __post_init__(self) -> None:
        if isinstance(self.prune, dict):  # from the config: nested values come as dicts
            self.prune = Prune(**self.prune)
        if self.report_every < 0:  # NaN and infinity are refused for every number already
            raise SettingError(
                f"sweep.report_every={self.report_every} must be a number of seconds >= 0 "
                "(0: rebuild report.html after every job)"
            )


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
    store.store(group="schema", name="sweep", node=SweepSettings)
    # ${mnistlab.started:...} names run folders: one time for all ranks under torchrun;
    # cached in the config (like Hydra's ${now:}) so launcher workers see the same value.
    OmegaConf.register_new_resolver("mnistlab.started", started, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("mnistlab.run_folder", run_folder, replace=True)
    OmegaConf.register_new_resolver("mnistlab.config_subfolder", config_subfolder, replace=True)
    OmegaConf.register_new_resolver("mnistlab.help_groups", help_groups, replace=True)
    naming.register()  # ${mnistlab.job_name:...}, ${mnistlab.run_name:...}


def help_groups() -> str:
    """The config groups a training run can choose from, with their options, for --help."""
    from hydra.core.global_hydra import GlobalHydra  # initialised: Hydra is showing the help

    loader = GlobalHydra.instance().config_loader()
    return "\n".join(f"{g}: {', '.join(sorted(loader.get_group_options(g)))}" for g in GROUPS)


@dataclass(frozen=True)
class Settings:
    device: DeviceSettings
    loader: LoaderSettings
    loop: LoopSettings
    sweep: SweepSettings


def check(cfg: DictConfig) -> Settings:
    """Validate the whole run config; raise SettingError naming the key and the fix."""
    check_target(cfg.dataset.source, "dataset.source")
    check_target(cfg.model, "model")
    check_target(cfg.optimizer, "optimizer")
    check_target(cfg.scheduler, "scheduler")
    return check_settings(cfg)


def check_settings(cfg: DictConfig) -> Settings:
    """The checks that import nothing (a sweep makes them on every job before the first)."""
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
    return settings


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
    check_finite(values, name)
    return kind(**values)


def check_finite(value: Any, name: str) -> None:
    """Refuse NaN and infinity anywhere in `value`: no setting means either (null means off)."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{name}.{key}")
    elif isinstance(value, list):
        for item in value:
            check_finite(item, name)
    elif isinstance(value, float) and not math.isfinite(value):
        raise SettingError(f"{name}={value} must be a finite number, not NaN or infinity")


# The numbers a component may take, by parameter name, whichever class takes them (torch's
# optimizers, the models, the dataset builders); in a list, each number is checked.
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": (lambda x: x > 0, "> 0"),
    "eps": (lambda x: x > 0, "> 0 (it keeps a division finite), e.g. 1e-8"),
    "weight_decay": (lambda x: x >= 0, ">= 0"),
    "momentum": (lambda x: 0 <= x < 1, "in [0, 1), e.g. 0.9"),
    "dampening": (lambda x: 0 <= x <= 1, "in [0, 1]"),
    "alpha": (lambda x: 0 <= x < 1, "in [0, 1), e.g. 0.99"),
    "betas": (lambda x: 0 <= x < 1, "two numbers in [0, 1), e.g. [0.9, 0.999]"),
    "dropout": (lambda x: 0 <= x < 1, "in [0, 1), e.g. 0.2"),
    "hidden": (lambda x: x >= 1, ">= 1, e.g. 128"),
    "channels": (lambda x: x >= 1, "two integers >= 1, e.g. [16, 32]"),
    "kernel_sizes": (lambda x: x >= 1 and x % 2 == 1, "two odd integers >= 1, e.g. [3, 3]"),
    "shift": (lambda x: x >= 0, ">= 0 pixels (0: no shifts), e.g. 2"),
    "num_samples": (lambda x: x >= 1, "an integer >= 1"),
    "num_val_samples": (lambda x: x >= 1, "an integer >= 1"),
    "num_train_samples": (lambda x: x >= 1, "an integer >= 1, or null for all"),
    "val_fraction": (lambda x: 0 < x < 1, "between 0 and 1, e.g. 0.1"),
    # The schedulers' (mnistlab.parts.schedulers).
    "pct_start": (lambda x: 0 < x < 1, "in (0, 1), e.g. 0.25"),
    "div_factor": (lambda x: x > 0, "> 0, e.g. 25"),
    "final_div_factor": (lambda x: x > 0, "> 0, e.g. 10000"),
    "min_factor": (lambda x: 0 <= x <= 1, "in [0, 1], e.g. 0.1"),
    "gamma": (lambda x: 0 < x < 1, "in (0, 1), e.g. 0.5"),
    "every_epochs": (lambda x: x >= 1, "an integer >= 1"),
}


def load_target(path: str, name: str) -> Any:
    """What `_target_` names, or one line saying why it cannot be imported and how to fix it."""
    try:
        target = _locate(path)
    except (ImportError, ValueError) as err:
        reason = str(err).splitlines()[-2 if "\n" in str(err) else -1].strip()
        raise SettingError(
            f"{name}._target_={path!r} cannot be imported ({reason}): install its package, "
            "or put its module on the import path (PYTHONPATH=. for a file in this folder)"
        ) from None
    if not callable(target):
        raise SettingError(f"{name}._target_={path!r} is not a class or function")
    return target


def check_target(node: DictConfig, name: str) -> None:
    """Refuse keys the `_target_` does not accept, values of the wrong type or out of range."""
    target = load_target(node._target_, name)
    parameters = inspect.signature(target, eval_str=True).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    values = OmegaConf.to_container(node, resolve=True)
    check_finite(values, name)
    for key, value in values.items():
        if key.startswith("_"):
            continue
        if key not in parameters:
            if takes_any:
                continue
            allowed = ", ".join(p for p in parameters if p not in ("self", "params"))
            raise SettingError(
                f"{name}.{key} is not accepted by {node._target_}: use one of {allowed}"
            )
        parameter = parameters[key]
        if not fits(value, parameter.annotation):
            example = plain(parameter.default)
            short = example not in (None, inspect.Parameter.empty) and len(repr(example)) < 30
            hint = f", e.g. {example}" if short else ""
            raise SettingError(
                f"{name}.{key}={value!r} must be {describe(parameter.annotation)}{hint}"
            )
        check_range(value, f"{name}.{key}", key)


def check_range(value: Any, name: str, key: str) -> None:
    """Refuse a number outside what RANGES allows for a parameter called `key`."""
    if key not in RANGES or value is None:
        return
    allowed, text = RANGES[key]
    numbers = value if isinstance(value, list) else [value]
    if not all(has_type(number, float) and allowed(number) for number in numbers):
        raise SettingError(f"{name}={value!r} must be {text}")


def plain(value: Any) -> Any:
    """A default as it is written in YAML: tuples as lists."""
    return list(value) if isinstance(value, tuple) else value


# What a YAML value can be, in words for messages.
PLAIN_TYPES = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    bool: ("true or false", "true/false values"),
    type(None): ("null", "nulls"),
}
UNIONS = (typing.Union, types.UnionType)
SEQUENCES = (list, tuple, collections.abc.Sequence)
MAPPINGS = (dict, collections.abc.Mapping)


def fits(value: Any, kind: Any) -> bool:
    """Whether a plain config value fits a parameter's annotation (a list for a tuple too).

    A value is refused only where the annotation says clearly that it cannot be right: a
    string for a number or a list, a list of the wrong length, a number for a class such as
    torch.Tensor. Annotations it cannot read (Any, Callable, ...) accept anything.
    """
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is inspect.Parameter.empty or (isinstance(value, dict) and "_target_" in value):
        return True  # no annotation; or instantiate builds it, its parameters unchecked here
    if kind in PLAIN_TYPES:
        return value is None if kind is type(None) else has_type(value, kind)
    if origin in UNIONS:
        return any(fits(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin in SEQUENCES:
        if not isinstance(value, list):
            return False  # a string is a sequence too, but never the list that was meant
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(fits, value, args))
        return not args or all(fits(item, args[0]) for item in value)
    if origin in MAPPINGS:
        if not isinstance(value, dict):
            return False
        return not args or all(fits(k, args[0]) and fits(v, args[1]) for k, v in value.items())
    if isinstance(kind, type):
        return isinstance(value, str) if issubclass(kind, os.PathLike) else isinstance(value, kind)
    return True


def describe(kind: Any, many: bool = False) -> str:
    """An annotation in words: tuple[int, int] -> "a list of 2 integers"."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind in PLAIN_TYPES:
        return PLAIN_TYPES[kind][many]
    if origin in UNIONS:
        # Classes no YAML value can be (torch.Tensor) would only confuse the message.
        readable = [arg for arg in args if arg in PLAIN_TYPES or typing.get_origin(arg)]
        return " or ".join(describe(arg, many) for arg in readable or args)
    if origin in SEQUENCES:
        items = [arg for arg in args if arg is not Ellipsis]
        what = describe(items[0], many=True) if items else "values"
        count = f"{len(args)} " if origin is tuple and args[-1:] != (Ellipsis,) else ""
        return f"{'lists' if many else 'a list'} of {count}{what}"
    if origin in MAPPINGS:
        what = f" of {describe(args[0], True)} to {describe(args[1], True)}" if args else ""
        return f"{'mappings' if many else 'a mapping'}{what}"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    return getattr(kind, "__name__", str(kind))


def has_type(value: Any, kind: type) -> bool:
    """isinstance, except that bool is no number and an int will do for a float."""
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)
