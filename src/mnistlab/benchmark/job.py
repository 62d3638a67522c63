"""The benchmark job: compose the config, run the chosen benchmark, write into its folder.

Only Hydra loads with this module: `mnistlab-benchmark --help` does not import torch.
"""

from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_method
from omegaconf import DictConfig

from mnistlab import SettingError, names
from mnistlab.benchmark.settings import (
    MatmulSettings,
    TimeToAccuracySettings,
    TrainingSettings,
    register,
)
from mnistlab.config import checks
from mnistlab.config.schemas import DeviceSettings


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Run the benchmark `cfg.benchmark` names; write its results into out_dir."""
    if cfg.benchmark.name not in BENCHMARKS:
        raise SettingError(
            f"benchmark.name={cfg.benchmark.name!r} is unknown: use one of {', '.join(BENCHMARKS)}"
        )
    from mnistlab.parts.device import configure as configure_device  # torch: only when a job runs
    from mnistlab.parts.device import resolve_device

    kind, function = BENCHMARKS[cfg.benchmark.name]
    settings = checks.to_settings(cfg.benchmark, kind, "benchmark")
    device_settings = checks.to_settings(cfg.device, DeviceSettings, "device")
    device = resolve_device(device_settings.name)  # device=cuda without CUDA stops here
    configure_device(device_settings)  # before any parallel work: see device.configure
    out_dir.mkdir(parents=True, exist_ok=True)
    return get_method(function)(settings, device, out_dir)


# Each benchmark's settings, and the function that runs it (imported when it runs: torch).
BENCHMARKS: dict[str, tuple[type, str]] = {
    "matmul": (MatmulSettings, "mnistlab.benchmark.matmul.matmul_benchmark"),
    "training": (TrainingSettings, "mnistlab.benchmark.training.training_benchmark"),
    "time_to_accuracy": (
        TimeToAccuracySettings,
        "mnistlab.benchmark.time_to_accuracy.time_to_accuracy_benchmark",
    ),
}
register()


@hydra.main(version_base="1.3", config_path=names.CONF_DIR, config_name="benchmark")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: run the chosen benchmark in Hydra's output folder."""
    run(cfg, Path(HydraConfig.get().runtime.output_dir))
