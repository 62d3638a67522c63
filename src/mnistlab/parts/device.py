"""Pick the torch device a run asks for, and describe it in words."""

import os
import platform
from pathlib import Path

import torch

from mnistlab import SettingError
from mnistlab.config.schemas import DeviceSettings
from mnistlab.parts import cores


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


# torch's own thread count, before any run of this process set one (a sweep's jobs may share
# a process: the basic launcher's).
TORCH_THREADS = torch.get_num_threads()


def configure(settings: DeviceSettings, parallel: int = 1) -> cores.Threads:
    """Apply the CPU settings: thread count (mnistlab.parts.cores), denormals flushed or not.

    `parallel`: the jobs of this run's sweep that run at once on this machine. Call it before
    the first parallel CPU operation: the flag is per thread, and torch's worker threads copy
    the main thread's when they start, never later.
    """
    busy, allowed = cores.others_busy(), cores.allowed_cores()
    threads = cores.choose(settings.threads, TORCH_THREADS, parallel, busy, allowed)
    torch.set_num_threads(threads.count)
    # Returns False where the CPU cannot (non-x86): nothing changes there.
    torch.set_flush_denormal(settings.flush_denormal)
    return threads


def denormals() -> str:
    """What CPU kernels do with denormal floats now, on all threads: flushed, kept or mixed."""
    # 2**20 copies of the smallest float32 denormal (bit pattern 1): a multiply large enough
    # to run on every worker thread. Made from integers: no float conversion can flush it.
    tiny = torch.ones(1 << 20, dtype=torch.int32).view(torch.float32)
    share = (tiny * 1.0 == 0).float().mean().item()
    if share in (0.0, 1.0):
        return "flushed to zero" if share else "kept"
    return f"flushed on {share:.0%} of the work only (threads started before the setting)"


def _local_rank() -> int:
    # Under torchrun each process drives the GPU of its local rank.
    return int(os.environ.get("LOCAL_RANK", "0"))


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so the clock sees all of it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


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
