"""The schemas of the plain settings groups (device, loop, sweep, dataset.loader): types and ranges.

Each is a dataclass in Hydra's ConfigStore (`/schema/<name>@_here_` in the YAML files), so a wrong
type fails while Hydra composes the config; ranges are checked in `__post_init__`. Values come
from the YAML files alone: no field has a default here. No torch.
"""

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from mnistlab import SettingError
from mnistlab.names import HIGHER_IS_BETTER, METRICS

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class DeviceSettings:
    """The `device` config group. Checked when a run starts."""

    name: str = MISSING
    threads: int | None = MISSING  # torch CPU threads; null: chosen (mnistlab.parts.cores)
    # Treat denormal floats (below 1.2e-38) as zero in CPU kernels. Adam's moments of rarely
    # used weights decay into that range, where x86 arithmetic is many times slower.
    flush_denormal: bool = MISSING

    def __post_init__(self) -> None:
        if self.name not in DEVICES:
            raise SettingError(
                f"device.name={self.name!r} is unknown: use one of {', '.join(DEVICES)}"
            )
        if self.threads is not None and self.threads < 1:
            raise SettingError(
                f"device.threads={self.threads} must be >= 1, or null to use the free cores"
            )


NAN_POLICIES = ("stop", "skip")
PRECISIONS = ("32", "auto", "bf16", "16-mixed")  # loop.precision (mnistlab.parts.precision)


TEST_ON = ("final", "best")
# Seeds go to torch's generators, and scaled per epoch (data.order.epoch_seed): numpy's range
# keeps every derived seed within what torch takes.
SEED_LIMIT = 2**32


@dataclass
class EarlyStopping:
    """`loop.early_stopping`: stop once the objective has not improved for `patience` checks."""

    patience: int | None = (
        MISSING  # evaluations (epoch ends, and every eval_every_n_steps); null: off
    )
    min_delta: float = MISSING  # an improvement must beat the best by more than this


@dataclass
class Target:
    """`loop.target`: stop as soon as `metric` is at least as good as `value` (null: no target)."""

    metric: str | None = MISSING
    value: float | None = MISSING


@dataclass
class LoopSettings:
    """The `loop` config group. Checked when a run starts."""

    epochs: int = MISSING
    log_every_n_batches: int = MISSING
    seed: int = MISSING
    grad_clip_norm: float | None = MISSING
    checkpoint_every_n_steps: int | None = MISSING  # besides the one at every epoch's end
    nan_policy: str = MISSING  # stop: end the run as failed; skip: drop that batch's update
    resume: str | None = MISSING  # a run folder or checkpoint file to continue
    overwrite: bool = MISSING  # a new run may replace the run already in hydra.run.dir
    fast_optimizer: bool = MISSING  # fused (else foreach) optimizer kernels where torch has them
    early_stopping: EarlyStopping = MISSING
    target: Target = MISSING
    eval_every_n_steps: int | None = MISSING  # also validate (and check target, patience) mid-epoch
    test_on: str = MISSING  # the model the test split evaluates: final, or best (by objective)
    precision: str = MISSING  # 32, auto (bf16 where native), bf16 (autocast) or 16-mixed (CUDA)
    compile: bool = MISSING  # torch.compile the model
    label_smoothing: float = MISSING
    channels_last: bool = MISSING  # model and 4-D input batches in channels-last memory order

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
        if metric is not None:
            check_goal(metric, value, "loop.target.value")
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
        if not 0 <= self.seed < SEED_LIMIT:
            raise SettingError(
                f"loop.seed={self.seed} must be an integer from 0 to {SEED_LIMIT - 1}, e.g. 1"
            )


def check_goal(metric: str, value: float, key: str) -> None:
    """Refuse a goal `metric` can never reach, or reaches before any training: accuracies are
    fractions in (0, 1] (0 is reached at once); cross-entropy losses are >= 0."""
    if metric in HIGHER_IS_BETTER and not 0 < value <= 1:
        raise SettingError(
            f"{key}={value} cannot be reached by {metric}, a fraction of 1: use a value in "
            "(0, 1], e.g. 0.99 for 99%"
        )
    if metric not in HIGHER_IS_BETTER and value < 0:
        raise SettingError(
            f"{key}={value} cannot be reached by {metric}: use a loss >= 0, e.g. 0.05"
        )


@dataclass
class Prune:
    """`sweep.prune`: stop a sweep's hopeless jobs at an epoch's end (mnistlab.loop.prune)."""

    median: bool = MISSING  # worse than the median of the sweep's completed jobs at that epoch
    diverged: bool = MISSING  # chance-level accuracy, or a non-finite loss
    grace_epochs: int = MISSING  # epochs every job trains before the rules look at it
    min_jobs: int = MISSING  # completed jobs the median needs at an epoch before it prunes there

    def __post_init__(self) -> None:
        if self.grace_epochs < 0:
            raise SettingError(f"sweep.prune.grace_epochs={self.grace_epochs} must be >= 0")
        if self.min_jobs < 1:
            raise SettingError(f"sweep.prune.min_jobs={self.min_jobs} must be >= 1")


@dataclass
class SweepSettings:
    """The `sweep` config group: how a re-run sweep treats its jobs, and pruning."""

    name: str | None = MISSING  # what reports call the sweep; None: its folder's name
    retry_failed: bool = MISSING  # re-running a sweep into its folder trains failed jobs again
    report_every: float = MISSING  # seconds between rebuilds of report.html during a sweep
    max_jobs: int = MISSING  # a grid with more jobs is refused before any is composed
    prune: Prune = MISSING

    def __post_init__(self) -> None:
        if isinstance(self.prune, dict):  # from the config: nested values come as dicts
            self.prune = Prune(**self.prune)
        if self.report_every < 0:  # NaN and infinity are refused for every number already
            raise SettingError(
                f"sweep.report_every={self.report_every} must be a number of seconds >= 0 "
                "(0: rebuild report.html after every job)"
            )
        if self.max_jobs < 1:
            raise SettingError(f"sweep.max_jobs={self.max_jobs} must be at least 1")


@dataclass
class LoaderSettings:
    """How batches are drawn (the `dataset.loader` block). Checked when a run starts."""

    batch_size: int = MISSING
    shuffle: bool = MISSING
    mode: str = MISSING  # "tensor": slice in-memory tensors; "dataloader": Dataset + DataLoader
    num_workers: int = MISSING

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise SettingError(f"dataset.loader.batch_size={self.batch_size} must be at least 1")
        if self.mode not in ("tensor", "dataloader"):
            raise SettingError(
                f"dataset.loader.mode={self.mode!r} is unknown: use tensor or dataloader"
            )
        if self.num_workers < 0:
            raise SettingError(f"dataset.loader.num_workers={self.num_workers} must be >= 0")
        if self.num_workers > 0 and self.mode == "tensor":
            raise SettingError(
                f"dataset.loader.num_workers={self.num_workers} has no effect with "
                "dataset.loader.mode=tensor (no DataLoader): add dataset.loader.mode=dataloader, "
                "or leave num_workers=0"
            )


@dataclass(frozen=True)
class Settings:
    device: DeviceSettings
    loader: LoaderSettings
    loop: LoopSettings
    sweep: SweepSettings


# Where each schema's group lies in a run config.
GROUPS: dict[str, type] = {
    "device": DeviceSettings,
    "dataset.loader": LoaderSettings,
    "loop": LoopSettings,
    "sweep": SweepSettings,
}


def setting_type(key: str) -> Any:
    """The type a schema gives `key` (e.g. loop.target.value: float | None); None if none does."""
    for group, kind in GROUPS.items():
        if not key.startswith(f"{group}."):
            continue
        annotation: Any = kind
        for name in key[len(group) + 1 :].split("."):
            if not dataclasses.is_dataclass(annotation):
                return None
            hints = typing.get_type_hints(annotation)
            if name not in hints:
                return None
            annotation = hints[name]
        return annotation
    return None


def store() -> None:
    """Make the schemas available to the YAML files as `/schema/<name>@_here_`."""
    config_store = ConfigStore.instance()
    config_store.store(group="schema", name="device", node=DeviceSettings)
    config_store.store(group="schema", name="loop", node=LoopSettings)
    config_store.store(group="schema", name="loader", node=LoaderSettings)
    config_store.store(group="schema", name="sweep", node=SweepSettings)
