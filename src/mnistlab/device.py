"""Pick the torch device a run asks for, and describe it in words."""

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from mnistlab import SettingError

CHOICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class DeviceSettings:
    """The `device` config group. Checked when a run starts."""

    name: str = "auto"
    threads: int | None = None  # torch CPU threads; null keeps torch's default

    def __post_init__(self) -> None:
        if self.name not in CHOICES:
            raise SettingError(
                f"device.name={self.name!r} is unknown: use one of {', '.join(CHOICES)}"
            )
        if self.threads is not None and self.threads < 1:
            raise SettingError(
                f"device.threads={self.threads} must be >= 1, or null for torch's default"
            )


def resolve_device(name: str) -> torch.device:
    """Turn a device setting into a torch.device, failing before anything is built."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", _local_rank())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SettingError(
            "device=cuda but CUDA is not available here: use device=auto or device=cpu"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise SettingError(
            "device=mps but Apple MPS is not available here: use device=auto or device=cpu"
        )
    return torch.device("cuda", _local_rank()) if name == "cuda" else torch.device(name)


def _local_rank() -> int:
    # Under torchrun each process drives the GPU of its local rank.
    return int(os.environ.get("LOCAL_RANK", "0"))


def describe(device: torch.device) -> str:
    """A human name for the device: the GPU model, or the CPU model and thread count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda:{device.index or 0})"
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's marketing name where the OS tells it, else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
