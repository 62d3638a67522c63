"""Pick the torch device a run asks for, and describe it in words."""

import os
import platform
from pathlib import Path

import torch

from mnistlab import SettingError
from mnistlab.config import DeviceSettings


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


def configure(settings: DeviceSettings) -> None:
    """Apply the process-wide CPU settings: thread count and flushing denormals to zero."""
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    # Returns False where the CPU cannot (non-x86): nothing changes there.
    torch.set_flush_denormal(settings.flush_denormal)


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
