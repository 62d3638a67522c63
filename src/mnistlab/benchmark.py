"""mnistlab-benchmark: the lesson's CPU-versus-GPU matmul, and how fast our training loop is.

mnistlab-benchmark                                   # matmul at the default sizes, float32
mnistlab-benchmark 'benchmark.sizes=[10000]'         # the lesson's experiment exactly
mnistlab-benchmark 'benchmark.dtypes=[float32,float64,bfloat16,float16]'
mnistlab-benchmark benchmark=training                # lesson loop vs mnistlab loop vs bare loop
mnistlab-benchmark -m benchmark=training benchmark.batch_size=32,64,256
mnistlab-benchmark benchmark=time_to_accuracy        # the CNN to 99.0% test accuracy on MNIST
mnistlab-benchmark -m benchmark=time_to_accuracy benchmark.model=mlp,cnn
"""

import csv
import json
import logging
import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from mnistlab import SettingError, config
from mnistlab.config import DeviceSettings, LoaderSettings, LoopSettings
from mnistlab.data import Splits, TensorPairs, batches, num_batches
from mnistlab.data import build as build_data
from mnistlab.device import configure as configure_device
from mnistlab.device import cpu_model, denormals, describe, resolve_device
from mnistlab.loop import Progress, evaluate, train_epoch
from mnistlab.models import MNISTClassifier
from mnistlab.optim import build_optimizer

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


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
        unknown = [name for name in self.dtypes if name not in DTYPES]
        if not self.dtypes or unknown:
            raise SettingError(
                f"benchmark.dtypes={self.dtypes} must list some of {', '.join(DTYPES)}"
            )
        if self.warmup < 0:
            raise SettingError(f"benchmark.warmup={self.warmup} must be >= 0")
        if self.min_run_time <= 0:
            raise SettingError(f"benchmark.min_run_time={self.min_run_time} must be > 0")


@dataclass
class TrainingSettings:
    """The `benchmark=training` group: one workload, trained by every loop variant in turn."""

    name: str = "training"
    variants: list[str] = field(
        default_factory=lambda: [
            "lesson",
            "lesson_fused",
            "mnistlab",
            "bare",
            "bare_defaults",
            "bare_plain",
        ]
    )
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
        unknown = [name for name in self.variants if name not in VARIANTS]
        if not self.variants or unknown:
            raise SettingError(
                f"benchmark.variants={self.variants} must list some of {', '.join(VARIANTS)}"
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


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Run the benchmark `cfg.benchmark` names; write its results into out_dir."""
    if cfg.benchmark.name not in BENCHMARKS:
        raise SettingError(
            f"benchmark.name={cfg.benchmark.name!r} is unknown: use one of {', '.join(BENCHMARKS)}"
        )
    kind, benchmark = BENCHMARKS[cfg.benchmark.name]
    settings = config.to_settings(cfg.benchmark, kind, "benchmark")
    device_settings = config.to_settings(cfg.device, DeviceSettings, "device")
    device = resolve_device(device_settings.name)  # device=cuda without CUDA stops here
    configure_device(device_settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    return benchmark(settings, device, out_dir)


# ---------------------------------------------------------------- matmul (the lesson's experiment)


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one measured statement."""

    median: float
    min: float
    runs: int


def time_call(stmt: str, env: dict[str, Any], settings: MatmulSettings) -> Timing:
    """Time `stmt` properly: warm up, then repeat for at least `min_run_time` seconds.

    torch's Timer synchronises the accelerator before it reads the clock, so queued GPU
    work is counted, and it runs with torch's current thread count (its default is 1).
    """
    from torch.utils.benchmark import Timer  # heavy import: only the matmul benchmark needs it

    timer = Timer(stmt, globals=env, num_threads=torch.get_num_threads())
    if settings.warmup:
        timer.timeit(settings.warmup)  # untimed for us: lazy set-up is not the product's cost
    measurement = timer.blocked_autorange(min_run_time=settings.min_run_time)
    return Timing(
        median=measurement.median,
        min=min(measurement.times),
        runs=measurement.number_per_run * len(measurement.times),
    )


def gflops(n: int, seconds: float) -> float:
    """Achieved GFLOP/s of an n×n by n×n product: n³ multiply-adds are 2n³ operations."""
    return 2 * n**3 / seconds / 1e9


def relative_error(product: torch.Tensor, reference: torch.Tensor) -> float:
    """‖product − reference‖ / ‖reference‖ (Frobenius), computed in at least float32."""
    wide = torch.promote_types(reference.dtype, torch.float32)
    reference = reference.to(wide)
    return ((product.to(wide) - reference).norm() / reference.norm()).item()


def supports(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `device` multiplies `dtype` matrices (bfloat16 needs an Ampere-or-later GPU)."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        return torch.cuda.is_bf16_supported()
    return True


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 in CUDA float32 matmuls inside the block; restore it after."""
    matmul = torch.backends.cuda.matmul
    # torch >= 2.9 has fp32_precision, and raises if the legacy allow_tf32 is mixed with it.
    key = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"
    before = getattr(matmul, key)
    setattr(matmul, key, ("tf32" if enabled else "ieee") if key == "fp32_precision" else enabled)
    try:
        yield
    finally:
        setattr(matmul, key, before)


def measure_size(
    n: int, dtype_name: str, settings: MatmulSettings, gpu: torch.device | None
) -> dict[str, Any]:
    """One table row: the n×n product in one dtype on the CPU and, where there is one, the GPU."""
    dtype = DTYPES[dtype_name]
    generator = torch.Generator().manual_seed(settings.seed)
    a = torch.randn(n, n, generator=generator).to(dtype)
    b = torch.randn(n, n, generator=generator).to(dtype)
    cpu = time_call("torch.matmul(a, b)", {"torch": torch, "a": a, "b": b}, settings)
    row: dict[str, Any] = {
        "size": n,
        "dtype": dtype_name,
        "cpu_median_s": cpu.median,
        "cpu_min_s": cpu.min,
        "cpu_runs": cpu.runs,
        "cpu_gflops": gflops(n, cpu.median),
    }
    if gpu is not None and supports(gpu, dtype):
        row.update(measure_gpu(a, b, gpu, settings))
        row["speedup"] = cpu.median / row["gpu_median_s"]
        row["speedup_with_transfer"] = cpu.median / row["gpu_with_transfer_s"]
    return row


def measure_gpu(
    a: torch.Tensor, b: torch.Tensor, gpu: torch.device, settings: MatmulSettings
) -> dict[str, Any]:
    """The GPU columns: product, copy of both inputs, both together, and the product's error."""
    n, env = len(a), {"torch": torch, "a": a, "b": b, "gpu": gpu}
    with tf32(settings.tf32):
        env["a_gpu"], env["b_gpu"] = a.to(gpu), b.to(gpu)
        product = time_call("torch.matmul(a_gpu, b_gpu)", env, settings)
        copy = time_call("a.to(gpu); b.to(gpu)", env, settings)
        both = time_call("torch.matmul(a.to(gpu), b.to(gpu))", env, settings)
        error = relative_error(torch.matmul(env["a_gpu"], env["b_gpu"]).cpu(), a @ b)
    return {
        "gpu_median_s": product.median,
        "gpu_min_s": product.min,
        "gpu_runs": product.runs,
        "gpu_gflops": gflops(n, product.median),
        "tf32": settings.tf32 if a.dtype == torch.float32 and gpu.type == "cuda" else None,
        "h2d_copy_s": copy.median,
        "gpu_with_transfer_s": both.median,
        "rel_error": error,
    }


def matmul_benchmark(
    settings: MatmulSettings, device: torch.device, out_dir: Path
) -> dict[str, Any]:
    """The lesson's experiment, measured properly: print the table, write json, csv, scalars."""
    gpu = device if device.type != "cpu" else None
    results: dict[str, Any] = {
        "benchmark": "matmul",
        "cpu": f"{cpu_model()} ({torch.get_num_threads()} threads)",
        "gpu": describe(gpu) if gpu is not None else None,
        "cuda_available": torch.cuda.is_available(),
        "settings": asdict(settings),
    }
    print(f"CPU: {results['cpu']}")
    print(f"GPU: {results['gpu'] or gpu_absence(device)}")
    if gpu is not None and gpu.type == "cuda":
        print(f"TF32 for CUDA float32 products: {'on' if settings.tf32 else 'off'}")
    rows = [
        measure_size(n, dtype_name, settings, gpu)
        for n in settings.sizes
        for dtype_name in settings.dtypes
    ]
    results["rows"] = rows
    print(matmul_table(rows, with_gpu=gpu is not None))
    write_results(out_dir, results, rows)
    write_scalars(out_dir, matmul_scalars(rows, gpu))
    return results


def gpu_absence(device: torch.device) -> str:
    """Why there are no GPU columns, said plainly."""
    if torch.cuda.is_available():
        return f"none: device={device.type} chosen, so the GPU columns are skipped"
    return "CUDA is not available: the GPU columns are skipped (CPU only)"


def matmul_scalars(rows: list[dict[str, Any]], gpu: torch.device | None) -> dict[str, list]:
    """TensorBoard series: GFLOP/s (and speed-up) against size, per device and dtype."""
    series: dict[str, list] = {}
    for row in rows:
        step = row["size"]
        series.setdefault(f"matmul/cpu_{row['dtype']}_gflops", []).append((step, row["cpu_gflops"]))
        if "gpu_gflops" in row:
            prefix = f"matmul/{gpu.type}_{row['dtype']}"
            series.setdefault(f"{prefix}_gflops", []).append((step, row["gpu_gflops"]))
            series.setdefault(f"{prefix}_speedup", []).append((step, row["speedup"]))
    return series


def seconds(value: float | None) -> str:
    """A duration at a readable scale: 16.42 s, 251.3 ms, 85.2 us."""
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.1f} us"


def rate(value: float) -> str:
    """GFLOP/s with three significant digits at least: 1,306.3, 79.6, 0.0406."""
    return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"


MATMUL_COLUMNS = [  # (heading, row key, format); the GPU columns follow the CPU ones
    ("size", "size", str),
    ("dtype", "dtype", str),
    ("CPU median", "cpu_median_s", seconds),
    ("CPU min", "cpu_min_s", seconds),
    ("runs", "cpu_runs", str),
    ("CPU GFLOP/s", "cpu_gflops", rate),
]
GPU_COLUMNS = [
    ("GPU median", "gpu_median_s", seconds),
    ("GPU min", "gpu_min_s", seconds),
    ("runs", "gpu_runs", str),
    ("GPU GFLOP/s", "gpu_gflops", rate),
    ("TF32", "tf32", lambda on: {True: "on", False: "off"}.get(on, "-")),
    ("H2D copy", "h2d_copy_s", seconds),
    ("GPU+copy", "gpu_with_transfer_s", seconds),
    ("speed-up", "speedup", "{:.1f}x".format),
    ("w/ copy", "speedup_with_transfer", "{:.1f}x".format),
    ("rel. error", "rel_error", "{:.1e}".format),
]


def matmul_table(rows: list[dict[str, Any]], with_gpu: bool) -> str:
    """One line per size × dtype, right-aligned columns; '-' where a value does not apply."""
    columns = MATMUL_COLUMNS + (GPU_COLUMNS if with_gpu else [])
    cells = [[heading for heading, _, _ in columns]]
    for row in rows:
        cells.append([fmt(row[key]) if key in row else "-" for _, key, fmt in columns])
    return format_table(cells)


def format_table(cells: list[list[str]], left: int = 0) -> str:
    """Lay out `cells` (first row: headings) under a rule: `left` text columns, then numbers."""
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    ]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


# ---------------------------------------------------------------- training (how fast our loop is)


@dataclass(frozen=True)
class Workload:
    """What every variant trains on: the same samples, on the host and on the device."""

    host: TensorPairs  # where the lesson's Dataset keeps its samples
    on_device: TensorPairs  # what the fast paths slice (the same tensors on a CPU run)
    settings: TrainingSettings
    device: torch.device
    writer: "SummaryWriter | None"  # mnistlab's loop logs train/loss here, as a real run does

    def head(self, count: int) -> "Workload":
        """The first `count` samples: a short epoch for warming up."""
        host = TensorPairs(self.host.inputs[:count], self.host.targets[:count])
        on_device = TensorPairs(self.on_device.inputs[:count], self.on_device.targets[:count])
        return Workload(host, on_device, self.settings, self.device, self.writer)


@dataclass
class Trainee:
    """One variant's own model and optimizer; each round trains it one more epoch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    losses: list[float] = field(default_factory=list)


# An epoch function trains a trainee one epoch of a workload and returns the samples seen.
EpochFn = Callable[[Trainee, Workload, int], int]


def lesson_epoch(trainee: Trainee, work: Workload, epoch: int) -> int:
    """(1) The lesson's loop: a Dataset of single samples, a shuffling DataLoader, five steps."""
    model, optimizer, criterion = trainee.model, trainee.optimizer, nn.CrossEntropyLoss()
    loader = DataLoader(work.host, batch_size=work.settings.batch_size, shuffle=True)
    model.train()
    samples = 0
    for step, (images, labels) in enumerate(loader, start=1):
        images, labels = images.to(work.device), labels.to(work.device)
        outputs = model(images)
        loss = criterion(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        samples += len(labels)
        if step % work.settings.log_every_n_batches == 0:
            trainee.losses.append(loss.item())  # the lesson prints the loss here
    return samples


def mnistlab_epoch(trainee: Trainee, work: Workload, epoch: int) -> int:
    """(2) mnistlab's loop, called as mnistlab.train's `fit` calls it (tensor mode, logging on)."""
    settings = work.settings
    loader = LoaderSettings(batch_size=settings.batch_size, shuffle=True, mode="tensor")
    loop = LoopSettings(epochs=1, log_every_n_batches=settings.log_every_n_batches, seed=0)
    steps_per_epoch = num_batches(len(work.on_device), loader.batch_size)
    progress = Progress.on(work.device, step=epoch * steps_per_epoch)
    train_epoch(
        trainee.model,
        batches(work.on_device, loader, seed=loop.seed, epoch=epoch),
        trainee.optimizer,
        loop,
        progress,
        total=steps_per_epoch,
        log_loss=lambda step, value: work.writer.add_scalar("train/loss", value, step),
        description=f"mnistlab loop, epoch {epoch}",
    )
    return progress.epoch_samples


def bare_epoch(trainee: Trainee, work: Workload, epoch: int) -> int:
    """(3) The lower bound: tensors on the device, one randperm, sliced batches, no logging."""
    model, optimizer, criterion = trainee.model, trainee.optimizer, nn.CrossEntropyLoss()
    order = torch.randperm(len(work.on_device), device=work.device)
    inputs, targets = work.on_device.inputs[order], work.on_device.targets[order]
    size = work.settings.batch_size
    model.train()
    for first in range(0, len(targets), size):
        loss = criterion(model(inputs[first : first + size]), targets[first : first + size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return len(targets)


# An optimizer factory builds a variant's Adam from the model's parameters.
OptimizerFn = Callable[
    [Iterable[nn.Parameter], TrainingSettings, torch.device], torch.optim.Optimizer
]


def plain_adam(
    params: Iterable[nn.Parameter], settings: TrainingSettings, device: torch.device
) -> torch.optim.Optimizer:
    """The lesson's `torch.optim.Adam(model.parameters(), lr=...)`: torch's default kernels."""
    return torch.optim.Adam(params, lr=settings.lr)


def fused_adam(
    params: Iterable[nn.Parameter], settings: TrainingSettings, device: torch.device
) -> torch.optim.Optimizer:
    """The same Adam with `fused=True`: one kernel updates every parameter."""
    return torch.optim.Adam(params, lr=settings.lr, fused=True)


def mnistlab_adam(
    params: Iterable[nn.Parameter], settings: TrainingSettings, device: torch.device
) -> torch.optim.Optimizer:
    """Adam exactly as mnistlab-train builds it: conf/optimizer/adam.yaml via build_optimizer."""
    return build_optimizer(adam_node(settings.lr), params, device, fast=settings.fast_optimizer)


@dataclass(frozen=True)
class Variant:
    """A named way to train: its epoch function and how its Adam is built."""

    title: str
    epoch: EpochFn
    optimizer: OptimizerFn
    torch_defaults: bool = True  # run as a user's own script does: torch's CPU settings


# The order is the table's order; the labels (1)-(3p) are the ones the ratios refer to.
VARIANTS: dict[str, Variant] = {
    "lesson": Variant("(1)  lesson loop: Dataset + DataLoader, Adam", lesson_epoch, plain_adam),
    "lesson_fused": Variant("(1f) lesson loop + fused Adam", lesson_epoch, fused_adam),
    "mnistlab": Variant(
        "(2)  mnistlab loop: train_epoch, TensorBoard on, build_optimizer",
        mnistlab_epoch,
        mnistlab_adam,
        torch_defaults=False,
    ),
    "bare": Variant(
        "(3)  bare loop: sliced tensors, no logging, fused Adam",
        bare_epoch,
        fused_adam,
        torch_defaults=False,
    ),
    "bare_defaults": Variant(
        "(3d) bare loop, fused Adam, torch's defaults", bare_epoch, fused_adam
    ),
    "bare_plain": Variant("(3p) bare loop, plain Adam, torch's defaults", bare_epoch, plain_adam),
}
RATIOS = {  # key: (top variant, bottom variant, label, what it shows)
    "mnistlab_over_lesson": ("mnistlab", "lesson", "(2)/(1)", "mnistlab against the lesson"),
    "mnistlab_over_bare": ("mnistlab", "bare", "(2)/(3)", "mnistlab's overhead (goal >= 0.95)"),
    "lesson_fused_over_lesson": ("lesson_fused", "lesson", "(1f)/(1)", "fused Adam, lesson loop"),
    "bare_defaults_over_bare_plain": (
        "bare_defaults",
        "bare_plain",
        "(3d)/(3p)",
        "fused Adam, bare loop",
    ),
    "bare_defaults_over_lesson_fused": (
        "bare_defaults",
        "lesson_fused",
        "(3d)/(1f)",
        "the data path, same fused Adam",
    ),
    "bare_plain_over_lesson": ("bare_plain", "lesson", "(3p)/(1)", "the data path, plain Adam"),
    "bare_over_bare_defaults": (
        "bare",
        "bare_defaults",
        "(3)/(3d)",
        "mnistlab's CPU settings (device.flush_denormal)",
    ),
}


def make_trainee(variant: Variant, settings: TrainingSettings, device: torch.device) -> Trainee:
    """The lesson's MLP, initialised alike for every variant, and the variant's own Adam."""
    torch.manual_seed(settings.seed)
    model = MNISTClassifier(input_shape=(28, 28), num_classes=10).to(device)
    return Trainee(model, variant.optimizer(model.parameters(), settings, device))


DATA_TITLES = {"random": "MNIST-shaped random samples", "mnist": "real MNIST training images"}


def workload_data(settings: TrainingSettings) -> TensorPairs:
    """`num_samples` MNIST-shaped random images and labels, or the first of the real ones."""
    if settings.data == "mnist":
        splits = build_data({"_target_": "mnistlab.mnist.mnist"})  # cached, else downloaded
        images = torch.cat([splits.train.inputs, splits.val.inputs])
        if settings.num_samples > len(images):
            raise SettingError(
                f"benchmark.num_samples={settings.num_samples} is more than MNIST's "
                f"{len(images)} training images: use at most {len(images)}"
            )
        labels = torch.cat([splits.train.targets, splits.val.targets])
        return TensorPairs(images[: settings.num_samples], labels[: settings.num_samples])
    generator = torch.Generator().manual_seed(settings.seed)
    return TensorPairs(
        torch.rand(settings.num_samples, 28, 28, generator=generator),
        torch.randint(0, 10, (settings.num_samples,), generator=generator),
    )


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so the clock sees all of it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed_epoch(variant: Variant, trainee: Trainee, work: Workload, epoch: int) -> float:
    """Samples per second of one epoch of one variant."""
    synchronize(work.device)
    started = time.perf_counter()
    samples = variant.epoch(trainee, work, epoch)
    synchronize(work.device)
    return samples / (time.perf_counter() - started)


class Trainer:
    """Some variants' trainees on one workload, warmed up, each trained one epoch per call."""

    def __init__(self, names: list[str], work: Workload) -> None:
        self.work = work
        self.trainees = {
            name: make_trainee(VARIANTS[name], work.settings, work.device) for name in names
        }
        warmup = work.head(min(work.settings.warmup_samples, len(work.host)))
        for name in names:  # untimed: lazy set-up, caches, Adam state
            VARIANTS[name].epoch(self.trainees[name], warmup, 0)

    def epoch(self, name: str, epoch: int) -> float:
        return timed_epoch(VARIANTS[name], self.trainees[name], self.work, epoch)


def torch_defaults_worker(
    conn: Connection, names: list[str], settings: TrainingSettings, device: torch.device
) -> None:
    """A child process that trains `names` as a user's own script runs: torch's CPU settings.

    Only the thread count is the parent's. It answers (variant, epoch) with samples/s.
    """
    torch.set_num_threads(conn.recv())
    host = workload_data(settings)
    trainer = Trainer(names, Workload(host, host.to(device), settings, device, writer=None))
    conn.send(denormals())
    while (request := conn.recv()) is not None:
        conn.send(trainer.epoch(*request))


@contextmanager
def torch_defaults_process(
    names: list[str], work: Workload
) -> Iterator[tuple[Callable[[str, int], float], str]]:
    """Start the child for `names`; yield its epoch function and its denormal report."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: torch's defaults
    conn, child_conn = context.Pipe()
    args = (child_conn, names, work.settings, work.device)
    child = context.Process(target=torch_defaults_worker, args=args, daemon=True)
    child.start()
    try:
        conn.send(torch.get_num_threads())

        def epoch(name: str, number: int) -> float:
            conn.send((name, number))
            return conn.recv()

        yield epoch, conn.recv()
    finally:
        if child.is_alive():
            conn.send(None)
        child.join(timeout=60)


def measure_variants(work: Workload) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Samples/s per variant and round, and what each process does with denormal floats.

    Variants alternate in a rotating order. Those with `torch_defaults` train in a child
    process: a process-wide CPU setting such as flushing denormals cannot be switched back and
    forth, since torch's worker threads keep the setting they started with.
    """
    names = work.settings.variants
    here = [name for name in names if not VARIANTS[name].torch_defaults]
    there = [name for name in names if VARIANTS[name].torch_defaults]
    with torch_defaults_process(there, work) if there else nullcontext((None, "")) as child:
        child_epoch, child_denormals = child
        trainer = Trainer(here, work)
        speeds: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(1, work.settings.rounds + 1):
            # Rotating the order spreads any drift (clock, heat, memory) evenly over the variants.
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                epoch = trainer.epoch if name in here else child_epoch
                speeds[name].append(epoch(name, round_))

    def labels(group: list[str]) -> str:
        return ", ".join(VARIANTS[name].title.split()[0] for name in group)

    modes = (
        {f"{labels(here)} here, with mnistlab-train's CPU settings": denormals()} if here else {}
    )
    if there:
        modes[f"{labels(there)} in a child process, with torch's defaults"] = child_denormals
    return speeds, modes


def training_benchmark(
    settings: TrainingSettings, device: torch.device, out_dir: Path
) -> dict[str, Any]:
    """Samples/s of the lesson's loop, mnistlab's loop and bare loops; the ratios between them."""
    from torch.utils.tensorboard import SummaryWriter  # heavy import: only when a run starts

    host = workload_data(settings)
    print(f"device: {describe(device)}")
    print(
        f"lesson MLP, Adam lr {settings.lr}, batch {settings.batch_size}, "
        f"{settings.num_samples} {DATA_TITLES[settings.data]}, median of {settings.rounds} epochs"
    )
    with SummaryWriter(log_dir=str(out_dir / "mnistlab_loop")) as writer:
        work = Workload(host, host.to(device), settings, device, writer)
        speeds, modes = measure_variants(work)
    for where, mode in modes.items():
        print(f"{where}: denormal floats {mode}")
    results = {**training_results(speeds, settings, device), "denormals": modes}
    print(training_table(results))
    rows = [{"variant": name, **figures} for name, figures in results["variants"].items()]
    write_results(out_dir, results, rows)
    write_scalars(out_dir, training_scalars(results, settings.batch_size))
    return results


def training_results(
    speeds: dict[str, list[float]], settings: TrainingSettings, device: torch.device
) -> dict[str, Any]:
    """The medians per variant and the ratios between the variants that ran."""
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    ratios = {
        key: medians[top] / medians[bottom]
        for key, (top, bottom, _, _) in RATIOS.items()
        if top in medians and bottom in medians
    }
    variants = {
        name: {
            "title": VARIANTS[name].title,
            "samples_per_s": medians[name],
            "min_samples_per_s": min(values),
            "max_samples_per_s": max(values),
            "per_round_samples_per_s": values,
        }
        for name, values in speeds.items()
    }
    return {
        "benchmark": "training",
        "device": describe(device),
        "settings": asdict(settings),
        "variants": variants,
        "ratios": ratios,
    }


def training_table(results: dict[str, Any]) -> str:
    """One line per variant, then one line per ratio with what it shows."""
    cells = [["variant", "samples/s (median)", "min", "max"]]
    for figures in results["variants"].values():
        speeds = ("samples_per_s", "min_samples_per_s", "max_samples_per_s")
        cells.append([figures["title"], *(f"{figures[key]:,.0f}" for key in speeds)])
    width = max(len(label) for _, _, label, _ in RATIOS.values()) + 3  # "(3u)/(3p) = "
    ratios = [
        f"{RATIOS[key][2] + ' =':<{width}}{value:.2f}x  {RATIOS[key][3]}"
        for key, value in results["ratios"].items()
    ]
    return "\n".join([format_table(cells, left=1), *ratios])


def training_scalars(results: dict[str, Any], batch_size: int) -> dict[str, list]:
    """TensorBoard series at step = batch size, so sweeps over the batch size line up."""
    series = {
        f"training/{name}_samples_per_s": [(batch_size, figures["samples_per_s"])]
        for name, figures in results["variants"].items()
    }
    for key, value in results["ratios"].items():
        series[f"training/{key}"] = [(batch_size, value)]
    return series


# ---------------------------------------------------------------- time to accuracy (real MNIST)


def load_data(node: dict[str, Any], device: torch.device) -> tuple[Splits, float]:
    """Build the dataset `node` names and move it to the device; return it and the seconds taken."""
    started = time.perf_counter()
    data = build_data(node)
    data = data.to(device)
    synchronize(device)
    return data, time.perf_counter() - started


@dataclass
class Race:
    """One model trained until it reaches its target: every evaluation, and the outcome."""

    split: str  # what the accuracy is measured on: "test", or "val" for data without a test set
    evaluations: list[dict[str, float]] = field(default_factory=list)
    eval_seconds: float = 0.0
    reached: bool = False


def race(
    model: nn.Module,
    data: Splits,
    settings: TimeToAccuracySettings,
    device: torch.device,
    writer: "SummaryWriter",
) -> Race:
    """Train with a one-cycle schedule, evaluating at each epoch's end (and every N steps)."""
    recipe = settings.recipe
    eval_split = data.test if data.test is not None else data.val
    outcome = Race(split="test" if data.test is not None else "val")
    loader = LoaderSettings(batch_size=recipe.batch_size, shuffle=True, mode="tensor")
    loop = LoopSettings(log_every_n_batches=settings.log_every_n_batches, seed=settings.seed)
    steps_per_epoch = num_batches(len(data.train), recipe.batch_size)
    optimizer = build_optimizer(
        adam_node(recipe.lr), model.parameters(), device, fast=settings.fast_optimizer
    )
    # OneCycleLR: warm up to the peak lr, then anneal far below it over `epochs` epochs.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch
    )
    progress = Progress.on(device)
    eval_loader = LoaderSettings(batch_size=settings.eval_batch_size, shuffle=False)
    started = time.perf_counter()

    def reached() -> bool:
        """Evaluate now; True once the target is met."""
        tick = time.perf_counter()
        _, accuracy = evaluate(model, batches(eval_split, eval_loader, seed=0, epoch=0), device)
        model.train()  # evaluate() switched to eval mode; a mid-epoch check must switch back
        now = time.perf_counter()
        outcome.eval_seconds += now - tick
        outcome.evaluations.append(
            {
                "epoch": progress.step / steps_per_epoch,
                "step": progress.step,
                "seconds": now - started,
                "accuracy": accuracy,
            }
        )
        writer.add_scalar(f"{outcome.split}/accuracy", accuracy, progress.step)
        return accuracy >= recipe.target_accuracy

    def after_step() -> bool:
        scheduler.step()  # per step: one-cycle changes the lr every batch
        every = settings.eval_every_n_steps
        mid_epoch = progress.epoch_step < steps_per_epoch  # the epoch's end is checked below
        return every is not None and progress.step % every == 0 and mid_epoch and reached()

    for epoch in range(recipe.epochs):
        progress.start_epoch()
        finished = train_epoch(
            model,
            batches(data.train, loader, seed=settings.seed, epoch=epoch),
            optimizer,
            loop,
            progress,
            total=steps_per_epoch,
            log_loss=lambda step, value: writer.add_scalar("train/loss", value, step),
            after_step=after_step,
            description=f"epoch {epoch + 1}/{recipe.epochs}",
        )
        if not finished or reached():  # not finished: after_step met the target mid-epoch
            outcome.reached = True
            break
    return outcome


def adam_node(lr: float) -> DictConfig:
    """conf/optimizer/adam.yaml with `lr`: the optimizer config mnistlab-train would use."""
    node = OmegaConf.load(Path(config.CONF_DIR) / "optimizer" / "adam.yaml")
    node.lr = lr
    return node


def time_to_accuracy_benchmark(
    settings: TimeToAccuracySettings, device: torch.device, out_dir: Path
) -> dict[str, Any]:
    """Train one recipe on real MNIST until its target test accuracy; report time and epochs."""
    from torch.utils.tensorboard import SummaryWriter  # heavy import: only when a run starts

    recipe = settings.recipe
    data, load_seconds = load_data(settings.data, device)
    torch.manual_seed(settings.seed)
    model = instantiate(recipe.model, input_shape=data.input_shape, num_classes=data.num_classes)
    model = model.to(device)
    print(f"device: {describe(device)}")
    print(
        f"{settings.model}: {describe_model(recipe.model)}, Adam one-cycle to lr {recipe.lr:g}, "
        f"batch {recipe.batch_size}, target {recipe.target_accuracy:.2%}, "
        f"at most {recipe.epochs} epochs"
    )
    print(
        f"data: {len(data.train):,} training samples, loaded in {load_seconds:.2f} s "
        "(not counted in the time below)"
    )
    with SummaryWriter(log_dir=str(out_dir)) as writer:
        outcome = race(model, data, settings, device, writer)
        results = race_results(outcome, settings, device, load_seconds)
        writer.add_scalar("time_to_accuracy/seconds", results["wall_time_s"], 0)
        writer.add_scalar("time_to_accuracy/epochs", results["epochs"], 0)
        writer.add_scalar("time_to_accuracy/accuracy", results["accuracy"], 0)
    print(race_table(outcome))
    print(race_summary(results))
    write_results(out_dir, results, outcome.evaluations)
    return results


def describe_model(node: dict[str, Any]) -> str:
    """ConvNet(channels=[16, 32], hidden=128, dropout=0.25): a model node on one line."""
    arguments = ", ".join(f"{key}={value}" for key, value in node.items() if key != "_target_")
    return f"{node['_target_'].rsplit('.', 1)[-1]}({arguments})"


def race_results(
    outcome: Race, settings: TimeToAccuracySettings, device: torch.device, load_seconds: float
) -> dict[str, Any]:
    """The figures of one race: reached or not, wall time, epochs, final accuracy."""
    last = outcome.evaluations[-1]
    return {
        "benchmark": "time_to_accuracy",
        "device": describe(device),
        "settings": asdict(settings),
        "model": settings.model,
        "target_accuracy": settings.recipe.target_accuracy,
        "split": outcome.split,
        "reached": outcome.reached,
        "wall_time_s": last["seconds"],  # training and evaluation; data loading excluded
        "eval_time_s": outcome.eval_seconds,
        "load_time_s": load_seconds,
        "epochs": last["epoch"],
        "steps": last["step"],
        "accuracy": last["accuracy"],
        "evaluations": outcome.evaluations,
    }


def race_table(outcome: Race) -> str:
    """One line per evaluation: where training stood, the time so far, the accuracy."""
    cells = [["epoch", "step", "time", f"{outcome.split} accuracy"]]
    for row in outcome.evaluations:
        cells.append(
            [
                f"{row['epoch']:.2f}",
                str(row["step"]),
                f"{row['seconds']:.1f} s",
                f"{row['accuracy']:.2%}",
            ]
        )
    return format_table(cells)


def race_summary(results: dict[str, Any]) -> str:
    """The one line to quote: reached (in how long) or not reached (and how close)."""
    r = results
    where = (
        f"{r['wall_time_s']:.1f} s ({r['epochs']:.2f} epochs, {r['steps']} steps; "
        f"{r['eval_time_s']:.2f} s of it evaluating; data loading {r['load_time_s']:.2f} s apart)"
    )
    target = f"{r['target_accuracy']:.2%} {r['split']} accuracy"
    if r["reached"]:
        return f"reached {target} in {where}: {r['accuracy']:.2%}"
    return f"NOT REACHED: {target}; {r['accuracy']:.2%} at the end, after {where}"


# ---------------------------------------------------------------- results


def write_results(out_dir: Path, results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """results.json (everything) and results.csv (the table's rows) in the run folder."""
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(out_dir / "results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    log.info("results written to %s", out_dir)


def write_scalars(out_dir: Path, series: dict[str, list[tuple[int, float]]]) -> None:
    """Write each tag's (step, value) points into the run folder's own event file."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(out_dir)) as writer:
        for tag, points in series.items():
            for step, value in points:
                writer.add_scalar(tag, value, step)


BENCHMARKS: dict[str, tuple[type, Callable[[Any, torch.device, Path], dict[str, Any]]]] = {
    "matmul": (MatmulSettings, matmul_benchmark),
    "training": (TrainingSettings, training_benchmark),
    "time_to_accuracy": (TimeToAccuracySettings, time_to_accuracy_benchmark),
}
register_schemas()


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="benchmark")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: run the chosen benchmark in Hydra's output folder."""
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
