"""`benchmark=matmul`: the lesson's CPU-versus-GPU matrix product, timed properly."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mnistlab import SettingError
from mnistlab.benchmark import quiet
from mnistlab.benchmark.output import format_table, write_results, write_scalars
from mnistlab.benchmark.settings import DTYPE_NAMES, MatmulSettings
from mnistlab.data.memory import available
from mnistlab.parts import cores
from mnistlab.parts.device import cpu_model, describe

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one measured statement."""

    median: float
    min: float
    max: float
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
        max=max(measurement.times),
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
    meter = cores.Meter()
    cpu = time_call("torch.matmul(a, b)", {"torch": torch, "a": a, "b": b}, settings)
    row: dict[str, Any] = {
        "size": n,
        "dtype": dtype_name,
        "cpu_median_s": cpu.median,
        "cpu_min_s": cpu.min,
        "cpu_max_s": cpu.max,
        "cpu_runs": cpu.runs,
        "cpu_gflops": gflops(n, cpu.median),
        "other_load": meter.busy(),  # other processes' cores while the CPU's product was timed
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
    check_memory(settings, gpu)
    before = quiet.load_before()
    rows: list[dict[str, Any]] = []
    results["rows"], results["finished"] = rows, False
    for n in settings.sizes:
        for dtype_name in settings.dtypes:
            rows.append(measure_size(n, dtype_name, settings, gpu))
            # Each row is saved as soon as it is measured: a crash or Ctrl-C later keeps it.
            write_results(out_dir, results, rows)
    results["finished"] = True
    during = [row["other_load"] for row in rows if row["other_load"] is not None]
    load = quiet.Load(before, max(during) if during else None)
    results["load"] = load.record()
    print(matmul_table(rows, with_gpu=gpu is not None, reliable=load.reliable()))
    print(load.line())
    write_results(out_dir, results, rows)
    write_scalars(out_dir, matmul_scalars(rows, gpu, load.reliable()))
    return results


def check_memory(settings: MatmulSettings, gpu: torch.device | None) -> None:
    """Refuse, before allocating anything, a size whose matrices do not fit in free memory."""
    n, itemsize = max(settings.sizes), max(DTYPES[name].itemsize for name in settings.dtypes)
    # CPU: two float32 draws, then a, b and the product; GPU: a, b, the product and the copies
    # the timed statements make (up to 5 matrices at once).
    needs = {"CPU": n * n * (2 * 4 + 3 * itemsize)}
    if gpu is not None and gpu.type == "cuda":
        needs["GPU"] = n * n * 5 * itemsize
    for where, needed in needs.items():
        free = available() if where == "CPU" else available(gpu)
        if free is not None and needed > free:
            raise SettingError(
                f"benchmark.sizes: {n}×{n} matrices need about {needed / 1e9:.1f} GB of "
                f"{where} memory, {free / 1e9:.1f} GB are free: use smaller sizes"
            )


def gpu_absence(device: torch.device) -> str:
    """Why there are no GPU columns, said plainly."""
    if torch.cuda.is_available():
        return f"none: device={device.type} chosen, so the GPU columns are skipped"
    return "CUDA is not available: the GPU columns are skipped (CPU only)"


def matmul_scalars(
    rows: list[dict[str, Any]], gpu: torch.device | None, reliable: bool = True
) -> dict[str, list]:
    """TensorBoard series: GFLOP/s (and speed-up, unless taken under load) against size, per
    device and dtype."""
    series: dict[str, list] = {}
    for row in rows:
        step = row["size"]
        series.setdefault(f"matmul/cpu_{row['dtype']}_gflops", []).append((step, row["cpu_gflops"]))
        if "gpu_gflops" in row:
            prefix = f"matmul/{gpu.type}_{row['dtype']}"
            series.setdefault(f"{prefix}_gflops", []).append((step, row["gpu_gflops"]))
            if reliable:
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
    ("CPU max", "cpu_max_s", seconds),
    ("runs", "cpu_runs", str),
    ("CPU GFLOP/s", "cpu_gflops", rate),
    ("other load", "other_load", lambda load: "-" if load is None else f"{load:.1f}"),
]
SPEEDUPS = ("speedup", "speedup_with_transfer")  # ratios: left out of figures taken under load
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


def matmul_table(rows: list[dict[str, Any]], with_gpu: bool, reliable: bool = True) -> str:
    """One line per size × dtype, right-aligned columns; '-' where a value does not apply.
    Figures taken under load (not `reliable`) show no speed-ups."""
    columns = MATMUL_COLUMNS + (GPU_COLUMNS if with_gpu else [])
    if not reliable:
        columns = [column for column in columns if column[1] not in SPEEDUPS]
    cells = [[heading for heading, _, _ in columns]]
    for row in rows:
        cells.append([fmt(row[key]) if key in row else "-" for _, key, fmt in columns])
    return format_table(cells)
