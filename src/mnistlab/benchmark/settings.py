"""The benchmark job's settings: dataclass schemas for conf/benchmark/*.yaml, without torch.

`mnistlab-benchmark --help` composes the config with these alone; torch loads only when a
benchmark runs.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from mnistlab import SettingError, config

DTYPE_NAMES = ("float32", "float64", "bfloat16", "float16")  # torch dtypes the matmul can time
# The training benchmark's variants, in the table's order (mnistlab.benchmark.training.VARIANTS).
VARIANT_NAMES = ("lesson", "lesson_fused", "mnistlab", "bare", "bare_defaults", "bare_plain")


@dataclass
class MatmulSettings:
    """The `benchmark=matmul` group: which products to time, and for how long."""

    name: str = "matmul"
    sizes: list[int] = field(default_factory=lambda: [128, 256, 512, 1024, 2048, 4096])
    dtypes: list[str] = field(default_factory=lambda: ["float32"])
    warmup: int = 1  # untimed products first: lazy initialisation is not the product's cost
    min_run_time: float = 3.0  # seconds of timed products per measurement (at least one)
    tf32: bool = False  # allow TF32 for CUDA float32 products (PyTorch's default: off)
    seed: int = 0

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

    name: str = "training"
    variants: list[str] = field(default_factory=lambda: list(VARIANT_NAMES))
    data: str = "random"  # random: MNIST-shaped noise, no files; mnist: the real training images
    num_samples: int = 60_000
    batch_size: int = 64
    lr: float = 1e-3
    rounds: int = 3  # each round trains every variant one epoch; we report the median
    warmup_samples: int = 6400  # one short untimed epoch per variant first
    log_every_n_batches: int = 100
    fast_optimizer: bool = True  # (2)'s optimizer, as loop.fast_optimizer sets it for a run
    seed: int = 0

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
class Recipe:
    """How `benchmark=time_to_accuracy` trains one model to its target: one of `recipes`."""

    model: dict[str, Any] = field(default_factory=dict)  # a `_target_` node: conf/model/*.yaml
    target_accuracy: float = 0.99  # stop as soon as the test accuracy reaches this
    batch_size: int = 128
    lr: float = 3e-3  # Adam's peak learning rate in the one-cycle schedule
    epochs: int = 3  # the one-cycle schedule's length, and where we give up

    def check(self, name: str) -> None:
        key = f"benchmark.recipes.{name}"
        if not 0 < self.target_accuracy <= 1:
            raise SettingError(f"{key}.target_accuracy={self.target_accuracy} must be in (0, 1]")
        for setting in ("batch_size", "epochs"):
            if getattr(self, setting) < 1:
                raise SettingError(f"{key}.{setting}={getattr(self, setting)} must be >= 1")
        if self.lr <= 0:
            raise SettingError(f"{key}.lr={self.lr} must be > 0")
        if "_target_" not in self.model:
            raise SettingError(f"{key}.model needs a _target_, e.g. mnistlab.models.ConvNet")


@dataclass
class TimeToAccuracySettings:
    """The `benchmark=time_to_accuracy` group: train one recipe until it reaches its target."""

    name: str = "time_to_accuracy"
    model: str = "cnn"  # which of `recipes` to train
    recipes: dict[str, Recipe] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=lambda: {"_target_": "mnistlab.mnist.mnist"})
    eval_every_n_steps: int | None = None  # also evaluate mid-epoch; null: only at epoch ends
    eval_batch_size: int = 500
    log_every_n_batches: int = 100
    fast_optimizer: bool = True  # fused (else foreach) Adam, as loop.fast_optimizer does
    seed: int = 0

    def __post_init__(self) -> None:
        self.recipes = {
            name: recipe if isinstance(recipe, Recipe) else Recipe(**recipe)
            for name, recipe in self.recipes.items()
        }
        if self.model not in self.recipes:
            raise SettingError(
                f"benchmark.model={self.model!r} is unknown: use one of {', '.join(self.recipes)}"
            )
        self.recipe.check(self.model)
        if self.eval_every_n_steps is not None and self.eval_every_n_steps < 1:
            raise SettingError(
                f"benchmark.eval_every_n_steps={self.eval_every_n_steps} must be >= 1 "
                "(null: evaluate at the end of each epoch only)"
            )
        for key in ("eval_batch_size", "log_every_n_batches"):
            if getattr(self, key) < 1:
                raise SettingError(f"benchmark.{key}={getattr(self, key)} must be at least 1")
        if "_target_" not in self.data:
            raise SettingError("benchmark.data needs a _target_, e.g. mnistlab.mnist.mnist")

    @property
    def recipe(self) -> Recipe:
        return self.recipes[self.model]


def register_schemas() -> None:
    """Make the benchmark schemas available to conf/benchmark/*.yaml, beside the device one."""
    config.register_schemas()
    store = ConfigStore.instance()
    store.store(group="schema", name="benchmark_matmul", node=MatmulSettings)
    store.store(group="schema", name="benchmark_training", node=TrainingSettings)
    store.store(group="schema", name="benchmark_time_to_accuracy", node=TimeToAccuracySettings)
