"""The benchmark job: compose the config, run the chosen benchmark, write into its folder."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnistlab import SettingError, config
from mnistlab.benchmark.matmul import MatmulSettings, matmul_benchmark
from mnistlab.benchmark.race import TimeToAccuracySettings, time_to_accuracy_benchmark
from mnistlab.benchmark.training import TrainingSettings, training_benchmark
from mnistlab.config import DeviceSettings
from mnistlab.device import configure as configure_device
from mnistlab.device import resolve_device


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
