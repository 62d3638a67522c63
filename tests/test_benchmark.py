"""The benchmark job: matmul, the training benchmark, time to accuracy, the CLI."""

import csv
import json
import os
import re
from pathlib import Path

import pytest
import torch

from conftest import (
    busy_core,
    compose_config,
    events,
    imported_modules,
    metrics_of,
    run_cli,
    shipped_values,
    two_cores,
)
from mnistlab import SettingError
from mnistlab.benchmark import job, matmul, quiet, training
from mnistlab.benchmark.settings import (
    VARIANT_NAMES,
    MatmulSettings,
    TimeToAccuracySettings,
    TrainingSettings,
)
from mnistlab.config import checks as config
from mnistlab.run.scalars import read_scalars

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
    "benchmark.rounds=3",
)
HAS_GPU = torch.cuda.is_available() or torch.backends.mps.is_available()
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def benchmark_settings(kind: type, **changes):
    """conf/benchmark/<its name>.yaml's settings, with `changes` (the YAML holds the values)."""
    name = {TrainingSettings: "training", MatmulSettings: "matmul"}[kind]
    return kind(**shipped_values("benchmark", name, **changes))


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in log_dir, read back with TensorBoard's own reader."""
    accumulator = events(log_dir)
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def assert_load_said(out: str, results: dict) -> None:
    """The benchmark printed other processes' load, and its verdict, as results.json has it."""
    load = results["load"]
    assert set(load) == {"before", "during", "reliable"}
    (line,) = [line for line in out.splitlines() if "other processes" in line]
    assert f"{load['before']:.1f} cores before" in line
    assert f"{load['during']:.1f} cores during the runs" in line
    assert line.startswith("UNRELIABLE: ") != load["reliable"]


def table_lines(out: str, first_cells: set[str]) -> list[list[str]]:
    """The printed table's rows whose first cell is one of `first_cells`."""
    return [
        line.split() for line in out.splitlines() if line.split()[:1] in [[c] for c in first_cells]
    ]


def test_the_settings_name_every_variant_and_dtype_that_exists() -> None:
    assert tuple(training.VARIANTS) == VARIANT_NAMES
    assert all(isinstance(dtype, torch.dtype) for dtype in matmul.DTYPES.values())


@pytest.mark.slow  # the real CLI
def test_help_answers_without_importing_torch(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    done = run_cli("mnistlab.benchmark", "--help", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "benchmark: matmul, time_to_accuracy, training" in done.stdout
    imported = imported_modules(done.stderr)
    assert "hydra" in imported and "torch" not in imported


def test_every_benchmark_config_composes() -> None:
    for choice in job.BENCHMARKS:
        cfg = compose_config(f"benchmark={choice}", config_name="benchmark")
        assert cfg.benchmark.name == choice
        assert cfg.device.name == "auto"


def test_matmul_on_cpu_prints_table_and_writes_results(tmp_path: Path, capsys) -> None:
    cfg = compose_config("device=cpu", *TINY_MATMUL, config_name="benchmark")
    results = job.run(cfg, tmp_path)
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
        assert float(printed[-2].replace(",", "")) == pytest.approx(expected, rel=5e-3)
        assert row["cpu_min_s"] <= median <= row["cpu_max_s"]  # the spread, around the median
        assert printed[-1] == f"{row['other_load']:.1f}"  # other processes' load meanwhile
    assert results["load"]["reliable"] == (max(results["load"]["before"], row["other_load"]) < 0.5)
    assert_load_said(out, results)

    assert json.loads((tmp_path / "results.json").read_text())["rows"] == results["rows"]
    with open(tmp_path / "results.csv") as file:
        saved = list(csv.DictReader(file))
    assert [(r["size"], r["dtype"]) for r in saved] == [(r[0], r[1]) for r in rows]


def test_matmul_scalars_are_gflops_against_size(tmp_path: Path) -> None:
    cfg = compose_config("device=cpu", *TINY_MATMUL, config_name="benchmark")
    results = job.run(cfg, tmp_path)
    series = scalars(tmp_path)
    assert set(series) == {"matmul/cpu_float32_gflops", "matmul/cpu_float64_gflops"}
    for row in results["rows"]:
        expected = 2 * row["size"] ** 3 / row["cpu_median_s"] / 1e9
        points = dict(series[f"matmul/cpu_{row['dtype']}_gflops"])
        assert points[row["size"]] == pytest.approx(expected, rel=1e-6)  # float32 in the file


@pytest.mark.skipif(HAS_GPU, reason="checks the message of a machine without a GPU")
def test_matmul_without_cuda_says_so_and_skips_gpu_columns(tmp_path: Path, capsys) -> None:
    cfg = compose_config("device=auto", *TINY_MATMUL, config_name="benchmark")
    results = job.run(cfg, tmp_path)
    out = capsys.readouterr().out
    assert "CUDA is not available: the GPU columns are skipped (CPU only)" in out
    assert results["gpu"] is None and not results["cuda_available"]
    assert all("gpu_median_s" not in row for row in results["rows"])


@pytest.mark.slow  # the real CLI
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_device_cuda_without_cuda_fails_in_one_line(tmp_path: Path) -> None:
    done = run_cli("mnistlab.benchmark", "device=cuda", cwd=tmp_path, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    message = "device=cuda but CUDA is not available here: use device=auto or device=cpu"
    assert message in done.stderr.splitlines()  # Hydra's one-line form of our SettingError
    assert not list(tmp_path.rglob("results.json"))


@pytest.mark.slow
@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush denormals")
def test_cli_training_runs_each_variant_with_its_own_cpu_settings(tmp_path: Path) -> None:
    done = run_cli("mnistlab.benchmark", "device=cpu", *TINY_TRAINING, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # In a fresh process the setting reaches all of torch's threads, in the child too.
    assert (
        "(2), (3) here, with mnistlab-train's CPU settings: denormal floats flushed to zero"
        in lines
    )
    assert (
        "(1), (1f), (3d), (3p) in a child process, with torch's defaults: denormal floats kept"
        in lines
    )
    results = json.loads(next(tmp_path.rglob("results.json")).read_text())
    assert_load_said(done.stdout, results)
    assert any(line.startswith("(3)/(3d) =") for line in lines) == results["load"]["reliable"]


@pytest.mark.slow
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
        benchmark_settings(MatmulSettings, dtypes=["float8"])
    with pytest.raises(SettingError, match="benchmark.rounds"):
        benchmark_settings(TrainingSettings, rounds=2)
    with pytest.raises(SettingError, match="benchmark.variants"):
        benchmark_settings(TrainingSettings, variants=["lightning"])


def test_tf32_setting_is_restored() -> None:
    cuda_matmul = torch.backends.cuda.matmul
    if not hasattr(cuda_matmul, "fp32_precision"):
        pytest.skip("torch < 2.9 has only the legacy allow_tf32 flag")
    before = cuda_matmul.fp32_precision
    with matmul.tf32(True):
        assert cuda_matmul.fp32_precision == "tf32"
    assert cuda_matmul.fp32_precision == before


def test_every_training_variant_trains_every_sample(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    settings = benchmark_settings(
        TrainingSettings, num_samples=100, batch_size=32
    )  # last batch of 4
    data = training.workload_data(settings)
    with SummaryWriter(log_dir=str(tmp_path)) as writer:
        work = training.Workload(data, data, settings, torch.device("cpu"), writer)
        for variant in training.VARIANTS.values():
            contender = training.make_contender(variant, settings, work.device)
            before = [p.detach().clone() for p in contender.model.parameters()]
            assert variant.epoch(contender, work, 1) == 100
            after = list(contender.model.parameters())
            assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


@pytest.mark.slow
def test_training_benchmark_writes_all_three_figures(tmp_path: Path, capsys) -> None:
    cfg = compose_config("device=cpu", *TINY_TRAINING, config_name="benchmark")
    results = job.run(cfg, tmp_path)
    out = capsys.readouterr().out

    medians = {name: v["samples_per_s"] for name, v in results["variants"].items()}
    assert list(medians) == list(training.VARIANTS)  # the shipped config runs all, in order
    assert min(medians.values()) > 0
    assert all(len(v["per_round_samples_per_s"]) == 3 for v in results["variants"].values())
    assert len(results["ratios"]) == len(training.RATIOS)
    for key, (top, bottom, label, _) in training.RATIOS.items():
        assert results["ratios"][key] == medians[top] / medians[bottom]
        assert (f"{label} =" in out) == results["load"]["reliable"]  # not under load
    assert_load_said(out, results)
    for variant in training.VARIANTS.values():
        assert variant.title in out
    assert json.loads((tmp_path / "results.json").read_text())["ratios"] == results["ratios"]
    # The lesson's loops, (3d) and (3p) ran in a fresh child process, with torch's defaults.
    where = "(1), (1f), (3d), (3p) in a child process, with torch's defaults"
    assert results["denormals"][where] == "kept" and f"{where}: denormal floats kept" in out

    series = scalars(tmp_path)
    for name, median in medians.items():
        assert series[f"training/{name}_samples_per_s"] == [(32, pytest.approx(median, rel=1e-6))]
    # mnistlab's loop logged the loss as a real run does: every 5 batches of 20 per epoch,
    # epochs 1-3, after the untimed warm-up epoch 0 (2 batches: its partial window, at step 2).
    steps = [step for step, _ in scalars(tmp_path / "mnistlab_loop")["train/batch_loss"]]
    assert steps == [2, *range(25, 81, 5)]


def test_load_is_said_and_judged() -> None:
    assert quiet.Load(0.1, 0.3).line() == (
        "other processes' load: 0.1 cores before, 0.3 cores during the runs"
    )
    assert quiet.Load(0.1, 1.2).line() == (
        "UNRELIABLE: other processes kept 0.1 cores before, 1.2 cores during the runs busy: "
        "figures taken under load; ratios left out. Run it again when the machine is quiet"
    )
    assert not quiet.Load(0.6, None).reliable() and quiet.Load(None, None).reliable()
    assert "not measurable" in quiet.Load(None, None).line()


def table_of(spreads: dict[str, tuple[float, float, float]], during: float) -> str:
    """training_table of made-up figures: (median, min, max) per variant, and the load."""
    variants = {
        name: {
            "title": training.VARIANTS[name].title,
            "samples_per_s": median,
            "min_samples_per_s": low,
            "max_samples_per_s": high,
        }
        for name, (median, low, high) in spreads.items()
    }
    results = {
        "variants": variants,
        "ratios": {"mnistlab_over_bare": spreads["mnistlab"][0] / spreads["bare"][0]},
        "load": quiet.Load(0.0, during).record(),
    }
    return training.training_table(results)


def test_the_training_table_leaves_ratios_out_under_load_and_says_when_rounds_spread() -> None:
    steady = {"mnistlab": (100.0, 95.0, 104.0), "bare": (100.0, 90.0, 110.0)}
    table = table_of(steady, during=0.1)
    assert "(2)/(3) =   1.00x" in table and "noisy" not in table
    assert table.endswith("other processes' load: 0.0 cores before, 0.1 cores during the runs")
    assert "(2)/(3)" not in table_of(steady, during=0.9)  # under load: no ratio
    swinging = {"mnistlab": (100.0, 60.0, 104.0), "bare": (100.0, 90.0, 110.0)}
    table = table_of(swinging, during=0.1)
    assert "(2)/(3) =   1.00x" in table
    assert "noisy: (2) varied by more than 25% of the median between rounds" in table


def test_matmul_under_load_shows_no_speed_up() -> None:
    row = {"size": 8, "dtype": "float32", "speedup": 9.0, "speedup_with_transfer": 3.0}
    assert "speed-up" in matmul.matmul_table([row], with_gpu=True)
    quiet_table = matmul.matmul_table([row], with_gpu=True, reliable=False)
    assert "speed-up" not in quiet_table and "9.0x" not in quiet_table
    assert "w/ copy" not in quiet_table and "GPU median" in quiet_table


@pytest.mark.slow
@pytest.mark.skipif(len(two_cores()) < 2, reason="needs two cores")
def test_cli_training_benchmark_next_to_a_busy_process_prints_no_ratio(tmp_path: Path) -> None:
    pair = two_cores()
    with busy_core(min(pair)):
        done = run_cli(
            "mnistlab.benchmark",
            "device=cpu",
            *TINY_TRAINING,
            cwd=tmp_path,
            timeout=120,
            preexec_fn=lambda: os.sched_setaffinity(0, pair),
        )
    assert done.returncode == 0, done.stderr
    folder = next(tmp_path.rglob("results.json")).parent
    results = json.loads((folder / "results.json").read_text())
    assert results["load"]["during"] >= 0.7 and not results["load"]["reliable"]
    assert_load_said(done.stdout, results)
    assert not [line for line in done.stdout.splitlines() if re.match(r"\(\w+\)/\(\w+\) =", line)]
    assert not [tag for tag in scalars(folder) if tag.endswith(tuple(training.RATIOS))]


def test_each_variant_builds_its_own_adam() -> None:
    settings = benchmark_settings(TrainingSettings)
    fused = {}
    for name, variant in training.VARIANTS.items():
        optimizer = training.make_contender(variant, settings, torch.device("cpu")).optimizer
        assert isinstance(optimizer, torch.optim.Adam)
        assert optimizer.defaults["lr"] == settings.lr
        fused[name] = bool(optimizer.defaults["fused"])
    # (2) builds its Adam as mnistlab-train does, and gets the fused kernel on the CPU.
    expected = {"lesson": False, "lesson_fused": True, "mnistlab": True, "bare": True}
    assert fused == {**expected, "bare_defaults": True, "bare_plain": False}
    slow = benchmark_settings(TrainingSettings, fast_optimizer=False)
    contender = training.make_contender(training.VARIANTS["mnistlab"], slow, torch.device("cpu"))
    assert not contender.optimizer.defaults["fused"] and not contender.optimizer.defaults["foreach"]


@pytest.mark.slow
def test_training_workload_can_be_the_real_mnist_images(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNISTLAB_DATA", str(mnist_dir))
    data = training.workload_data(benchmark_settings(TrainingSettings, data="mnist"))
    assert data.inputs.shape == (60_000, 28, 28) and data.targets.shape == (60_000,)
    assert sorted(data.targets.unique().tolist()) == list(range(10))
    assert abs(data.inputs.mean().item()) < 0.05  # normalised as every mnistlab run sees it
    few = training.workload_data(
        benchmark_settings(TrainingSettings, data="mnist", num_samples=100)
    )
    assert torch.equal(few.inputs, data.inputs[:100])
    with pytest.raises(SettingError, match="benchmark.num_samples=70000 .* at most 60000"):
        training.workload_data(
            benchmark_settings(TrainingSettings, data="mnist", num_samples=70_000)
        )
    with pytest.raises(SettingError, match="benchmark.data='fashion'"):
        benchmark_settings(TrainingSettings, data="fashion")


# ---------------------------------------------------------------- time to accuracy

# A quick stand-in for the speed-run's data: small synthetic digits, a validation target.
QUICK_RACE = (
    "dataset=synthetic",
    "dataset.source.num_samples=1200",
    "device.threads=1",
    "loop.target.metric=val_accuracy",
)


def race_config(*run_overrides: str):
    """The shipped time_to_accuracy config on the CPU, its run shrunk by `run_overrides`."""
    cfg = compose_config("device=cpu", "benchmark=time_to_accuracy", config_name="benchmark")
    cfg.benchmark.overrides = [*QUICK_RACE, *run_overrides]
    return cfg


def test_time_to_accuracy_composes_the_speedrun_preset() -> None:
    cfg = compose_config("benchmark=time_to_accuracy", config_name="benchmark")
    settings = config.to_settings(cfg.benchmark, TimeToAccuracySettings, "benchmark")
    assert settings.experiment == "mnist_speedrun" and settings.overrides == []
    cfg.benchmark.experiment = "nothing_like_it"
    with pytest.raises(SettingError, match="^benchmark.experiment=nothing_like_it: "):
        job.run(cfg, Path("never-made"))
    cfg.benchmark.experiment = "mnist_mlp"  # a preset without a target
    with pytest.raises(SettingError, match="^benchmark.experiment=mnist_mlp sets no loop.target"):
        job.run(cfg, Path("never-made"))


def test_time_to_accuracy_is_a_training_run_that_stops_at_its_target(tmp_path, capsys) -> None:
    # 0.2: within this tiny run's reach with the preset's label smoothing (it ends near 0.27).
    results = job.run(race_config("loop.target.value=0.2", "loop.eval_every_n_steps=1"), tmp_path)
    metrics = metrics_of(tmp_path)  # train()'s own record
    assert results["reached"] and metrics["stop_reason"] == "target_reached"
    assert results["steps"] == metrics["target_step"] == metrics["steps"]
    assert results["wall_time_s"] == metrics["target_seconds"] > 0
    accuracies = read_scalars(tmp_path)["val/accuracy"][1]
    assert accuracies[-1] >= 0.2 > max(accuracies[:-1], default=0)  # the first that reached it
    assert "reached val_accuracy 0.2 in" in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text())["reached"]


def test_time_to_accuracy_not_reached_is_a_result(tmp_path: Path, capsys) -> None:
    results = job.run(race_config("loop.target.value=1.0"), tmp_path)
    assert not results["reached"] and results["epochs"] == 1 and results["final"] < 1
    assert "NOT REACHED: val_accuracy 1" in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text())["reached"] is False


@pytest.mark.slow
def test_cli_time_to_accuracy_runs_the_speedrun_on_real_mnist(
    tmp_path: Path, mnist_dir: Path
) -> None:
    done = run_cli(
        "mnistlab.benchmark",
        "device=cpu",
        "benchmark=time_to_accuracy",
        f"benchmark.overrides=['dataset.source.root={mnist_dir}',"
        "'dataset.source.num_train_samples=2560','loop.target.value=0.6']",
        cwd=tmp_path,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    (path,) = (tmp_path / "outputs" / "benchmarks").rglob("results.json")
    results = json.loads(path.read_text())
    assert results["target"] == "test_accuracy" and results["metrics"]["steps"] == 20  # 2560 / 128
    assert "test_accuracy 0.6" in done.stdout


@pytest.mark.cuda
@needs_cuda
def test_matmul_on_cuda_fills_gpu_columns(tmp_path: Path, capsys) -> None:
    cfg = compose_config("device=cuda", *TINY_MATMUL, config_name="benchmark")
    results = job.run(cfg, tmp_path)
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
    results = job.run(cfg, tmp_path)
    assert results["device"].endswith("(cuda:0)")
    assert min(v["samples_per_s"] for v in results["variants"].values()) > 0


@pytest.mark.slow  # a child process
def test_a_failing_child_process_is_an_error_not_a_hang(tmp_path: Path) -> None:
    settings = benchmark_settings(TrainingSettings, num_samples=64)
    data = training.workload_data(settings)
    work = training.Workload(data, data, settings, torch.device("cpu"), writer=None)
    failed = pytest.raises(RuntimeError, match=r"child process for no-such-variant stopped \(exit")
    with failed, training.torch_defaults_process(["no-such-variant"], work):
        pass
