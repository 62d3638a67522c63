"""The benchmark job's settings: dataclass schemas for conf/benchmark/*.yaml, without torch.

Types and ranges only: the values, defaults included, are in the YAML files.

`mnistlab-benchmark --help` composes the config with these alone; torch loads only when a
benchmark runs.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from mnistlab import SettingError
from mnistlab.cli import resolvers

DTYPE_NAMES = ("float32", "float64", "bfloat16", "float16")  # torch dtypes the matmul can time
# The training benchmark's variants, in the table's order (mnistlab.benchmark.training.VARIANTS).
VARIANT_NAMES = ("lesson", "lesson_fused", "mnistlab", "bare", "bare_defaults", "bare_plain")


@dataclass
class MatmulSettings:
    """The `benchmark=matmul` group: which products to time, and for how long."""

    name: str = MISSING
    sizes: list[int] = MISSING
    dtypes: list[str] = MISSING
    warmup: int = MISSING  # untimed products first: lazy initialisation is not the product's cost
    min_run_time: float = MISSING  # seconds of timed products per measurement (at least one)
    tf32: bool = False  # allow TF32 for CUDA float32 products (PyTorch's default: off)
    seed: int = MISSING

    def __post_init__(self) -> None:
        if not self.sizes or min(self.sizes) < 1:
            raise SettingError(f"benchmark.sizes={self.sizes} must be a list of sizes >= 1")
        unknown = [name for name in self.dtypes if name not in DTYPE_NAMES]
        if not self.dtypes or unknown:
            raise SettingError(
                f"benchmark.dtypes={self.dtypes} must list some of {', '.join(DTYPE_NAMES)}"
            )
        if self.warmup < 0:
            raise SettingError(f"benchmark.warmup={self.warmup} must be >= 0")
        if self.min_run_time <= 0:
            raise SettingError(f"benchmark.min_run_time={self.min_run_time} must be > 0")


@dataclass
class TrainingSettings:
    """The `benchmark=training` group: one workload, trained by every loop variant in turn."""

    name: str = MISSING
    variants: list[str] = MISSING
    data: str = MISSING  # random: MNIST-shaped noise, no files; mnist: the real training images
    num_samples: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    rounds: int = MISSING  # each round trains every variant one epoch; we report the median
    warmup_samples: int = MISSING  # one short untimed epoch per variant first
    log_every_n_batches: int = MISSING
    fast_optimizer: bool = MISSING  # (2)'s optimizer, as loop.fast_optimizer sets it for a run
    seed: int = MISSING

    def __post_init__(self) -> None:
        unknown = [name for name in self.variants if name not in VARIANT_NAMES]
        if not self.variants or unknown:
            raise SettingError(
                f"benchmark.variants={self.variants} must list some of {', '.join(VARIANT_NAMES)}"
            )
        if self.data not in ("random", "mnist"):
            raise SettingError(f"benchmark.data={self.data!r} is unknown: use random or mnist")
        for key in ("num_samples", "batch_size", "log_every_n_batches"):
            if getattr(self, key) < 1:
                raise SettingError(f"benchmark.{key}={getattr(self, key)} must be at least 1")
        if self.rounds < 3:
            raise SettingError(f"benchmark.rounds={self.rounds}: a median needs at least 3")
        if self.lr <= 0:
            raise SettingError(f"benchmark.lr={self.lr} must be > 0")


@dataclass
class TimeToAccuracySettings:
    """The `benchmark=time_to_accuracy` group: one mnistlab-train run of a preset with a target."""

    name: str = MISSING
    experiment: str = MISSING  # experiments/<name>.yaml: it must set loop.target
    overrides: list[str] = MISSING  # more settings, as mnistlab-train takes

    def __post_init__(self) -> None:
        if not self.experiment:
            raise SettingError("benchmark.experiment is empty: name a preset, e.g. mnist_speedrun")


def register() -> None:
    """Make the benchmark schemas available to conf/benchmark/*.yaml, beside the device one."""
    resolvers.register()
    store = ConfigStore.instance()
    store.store(group="schema", name="benchmark_matmul", node=MatmulSettings)
    store.store(group="schema", name="benchmark_training", node=TrainingSettings)
    store.store(group="schema", name="benchmark_time_to_accuracy", node=TimeToAccuracySettings)
