"""The benchmark job: the matmul table and its results, the training benchmark, the CLI."""

import csv
import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_config, run_cli
from mnistlab import SettingError, benchmark

TINY_MATMUL = (
    "benchmark.sizes=[16,32]",
    "benchmark.dtypes=[float32,float64]",
    "benchmark.min_run_time=0.01",
)
TINY_TRAINING = (
    "benchmark=training",
    "benchmark.num_samples=640",
    "benchmark.batch_size=32",
    "benchmark.warmup_samples=64",
    "benchmark.log_every_n_batches=5",
)
HAS_GPU = torch.cuda.is_available() or torch.backends.mps.is_available()
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in log_dir, read back with TensorBoard's own reader."""
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(event.step, event.value) for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }


def table_lines(out: str, first_cells: set[str]) -> list[list[str]]:
    """The printed table's rows whose first cell is one of `first_cells`."""
    return [
        line.split() for line in out.splitlines() if line.split()[:1] in [[c] for c in first_cells]
    ]


def test_every_benchmark_config_composes() -> None:
    for choice in benchmark.BENCHMARKS:
        cfg = compose_config(f"benchmark={choice}", config_name="benchmark")
        assert cfg.benchmark.name == choice
        assert cfg.device.name == "auto"


def test_matmul_on_cpu_prints_table_and_writes_results(tmp_path: Path, capsys) -> None:
    cfg = compose_config("device=cpu", *TINY_MATMUL, config_name="benchmark")
    results = benchmark.run(cfg, tmp_path)
    out = capsys.readouterr().out

    assert "CPU GFLOP/s" in out and "GPU GFLOP/s" not in out
    rows = table_lines(out, {"16", "32"})
    assert [row[:2] for row in rows] == [
        ["16", "float32"],
        ["16", "float64"],
        ["32", "float32"],
        ["32", "float64"],
    ]
    for printed, row in zip(rows, results["rows"], strict=True):
        n, median = row["size"], row["cpu_median_s"]
        assert row["cpu_min_s"] <= median and row["cpu_runs"] >= 1
        expected = 2 * n**3 / median / 1e9  # GFLOP/s = 2n³/t, printed to 3 digits or more
        assert float(printed[-1].replace(",", "")) == pytest.approx(expected, rel=5e-3)

    assert json.loads((tmp_path / "results.json").read_text())["rows"] == results["rows"]
    with open(tmp_path / "results.csv") as file:
        saved = list(csv.DictReader(file))
    assert [(r["size"], r["dtype"]) for r in saved] == [(r[0], r[1]) for r in rows]


def test_matmul_scalars_are_gflops_against_size(tmp_path: Path) -> None:
    cfg = compose_config("device=cpu", *TINY_MATMUL, config_name="benchmark")
    results = benchmark.run(cfg, tmp_path)
    series = scalars(tmp_path)
    assert set(series) == {"matmul/cpu_float32_gflops", "matmul/cpu_float64_gflops"}
    for row in results["rows"]:
        expected = 2 * row["size"] ** 3 / row["cpu_median_s"] / 1e9
        points = dict(series[f"matmul/cpu_{row['dtype']}_gflops"])
        assert points[row["size"]] == pytest.approx(expected, rel=1e-6)  # float32 in the file


@pytest.mark.skipif(HAS_GPU, reason="checks the message of a machine without a GPU")
def test_matmul_without_cuda_says_so_and_skips_gpu_columns(tmp_path: Path, capsys) -> None:
    cfg = compose_config("device=auto", *TINY_MATMUL, config_name="benchmark")
    results = benchmark.run(cfg, tmp_path)
    out = capsys.readouterr().out
    assert "CUDA is not available: the GPU columns are skipped (CPU only)" in out
    assert results["gpu"] is None and not results["cuda_available"]
    assert all("gpu_median_s" not in row for row in results["rows"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_device_cuda_without_cuda_fails_in_one_line(tmp_path: Path) -> None:
    done = run_cli("mnistlab.benchmark", "device=cuda", cwd=tmp_path, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    message = "device=cuda but CUDA is not available here: use device=auto or device=cpu"
    assert message in done.stderr.splitlines()  # Hydra's one-line form of our SettingError
    assert not list(tmp_path.rglob("results.json"))


def test_cli_multirun_writes_one_folder_per_job(tmp_path: Path) -> None:
    done = run_cli(
        "mnistlab.benchmark",
        "-m",
        "device=cpu",
        "benchmark.sizes=[8],[16]",
        "benchmark.min_run_time=0.01",
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = sorted((tmp_path / "outputs" / "benchmarks" / "sweeps").rglob("results.json"))
    assert [json.loads(path.read_text())["rows"][0]["size"] for path in results] == [8, 16]
    assert "CPU GFLOP/s" in done.stdout


def test_settings_are_checked() -> None:
    with pytest.raises(SettingError, match="benchmark.dtypes"):
        benchmark.MatmulSettings(dtypes=["float8"])
    with pytest.raises(SettingError, match="benchmark.rounds"):
        benchmark.TrainingSettings(rounds=2)
    with pytest.raises(SettingError, match="benchmark.variants"):
        benchmark.TrainingSettings(variants=["lightning"])


def test_tf32_setting_is_restored() -> None:
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("torch < 2.9 has only the legacy allow_tf32 flag")
    before = matmul.fp32_precision
    with benchmark.tf32(True):
        assert matmul.fp32_precision == "tf32"
    assert matmul.fp32_precision == before


def test_every_training_variant_trains_every_sample(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    settings = benchmark.TrainingSettings(num_samples=100, batch_size=32)  # last batch of 4
    data = benchmark.mnist_shaped(settings)
    with SummaryWriter(log_dir=str(tmp_path)) as writer:
        work = benchmark.Workload(data, data, settings, torch.device("cpu"), writer)
        for variant in benchmark.VARIANTS.values():
            trainee = benchmark.make_trainee(variant, settings, work.device)
            before = [p.detach().clone() for p in trainee.model.parameters()]
            assert variant.epoch(trainee, work, 1) == 100
            after = list(trainee.model.parameters())
            assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_training_benchmark_writes_all_three_figures(tmp_path: Path, capsys) -> None:
    cfg = compose_config("device=cpu", *TINY_TRAINING, config_name="benchmark")
    results = benchmark.run(cfg, tmp_path)
    out = capsys.readouterr().out

    medians = {name: v["samples_per_s"] for name, v in results["variants"].items()}
    assert set(medians) == {"lesson", "mnistlab", "bare"} and min(medians.values()) > 0
    assert all(len(v["per_round_samples_per_s"]) == 3 for v in results["variants"].values())
    assert results["ratios"]["mnistlab_over_lesson"] == medians["mnistlab"] / medians["lesson"]
    assert results["ratios"]["mnistlab_over_bare"] == medians["mnistlab"] / medians["bare"]
    assert "(2)/(1) =" in out and "(2)/(3) =" in out and "lesson loop" in out
    assert json.loads((tmp_path / "results.json").read_text())["ratios"] == results["ratios"]

    series = scalars(tmp_path)
    for name, median in medians.items():
        assert series[f"training/{name}_samples_per_s"] == [(32, pytest.approx(median, rel=1e-6))]
    # mnistlab's loop logged train/loss as a real run does: every 5 batches of 20 per epoch,
    # epochs 1-3 after the untimed warm-up epoch 0.
    steps = [step for step, _ in scalars(tmp_path / "mnistlab_loop")["train/loss"]]
    assert steps == list(range(25, 81, 5))


@pytest.mark.cuda
@needs_cuda
def test_matmul_on_cuda_fills_gpu_columns(tmp_path: Path, capsys) -> None:
    cfg = compose_config("device=cuda", *TINY_MATMUL, config_name="benchmark")
    results = benchmark.run(cfg, tmp_path)
    out = capsys.readouterr().out
    assert "TF32 for CUDA float32 products: off" in out and "GPU GFLOP/s" in out
    for row in results["rows"]:
        assert row["gpu_min_s"] <= row["gpu_median_s"] and row["h2d_copy_s"] > 0
        assert row["speedup"] == row["cpu_median_s"] / row["gpu_median_s"]
        assert row["rel_error"] < 1e-5  # no TF32: the GPU's float32 product matches the CPU's
        assert row["tf32"] is (False if row["dtype"] == "float32" else None)
    assert "matmul/cuda_float32_gflops" in scalars(tmp_path)


@pytest.mark.cuda
@needs_cuda
def test_training_benchmark_on_cuda(tmp_path: Path) -> None:
    cfg = compose_config("device=cuda", *TINY_TRAINING, config_name="benchmark")
    results = benchmark.run(cfg, tmp_path)
    assert results["device"].endswith("(cuda:0)")
    assert min(v["samples_per_s"] for v in results["variants"].values()) > 0
