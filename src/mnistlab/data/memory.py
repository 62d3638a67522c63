"""How much memory this process may still use, and the one refusal for what will not fit.

The dataset loaders check an IDX file's declared size against it before decompressing; the
run checks its model's training needs (mnistlab.parts.memory) against it before building the
model; the benchmark checks its matrices. On the CPU the figure is the smallest of the
system's available memory (/proc/meminfo MemAvailable), the cgroup's limit less its use, and
the process's own limits (`ulimit -v`, `ulimit -d`) less what it maps already; on a GPU, what
torch says is free there. None where nothing says (not Linux, Apple MPS): nothing is checked.
"""

import resource
from contextlib import suppress
from pathlib import Path

import torch

from mnistlab import SettingError

# The process's own limits, and the line of /proc/self/status that says what counts against it.
LIMITS = ((resource.RLIMIT_AS, "VmSize:"), (resource.RLIMIT_DATA, "VmData:"))


def available(device: torch.device | None = None) -> int | None:
    """Bytes this process may still allocate on `device` (the CPU by default); None: unknown."""
    if device is not None and device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device is not None and device.type != "cpu":
        return None
    free = [figure for figure in (system_available(), cgroup_available()) if figure is not None]
    free += process_headroom()
    return min(free) if free else None


def system_available() -> int | None:
    """MemAvailable: what the system can give without swapping."""
    with suppress(OSError, ValueError, IndexError):
        meminfo = Path("/proc/meminfo").read_text()
        return kilobytes(meminfo, "MemAvailable:")
    return None


def cgroup_available() -> int | None:
    """The cgroup's memory limit less what it uses (a container, a SLURM job); None if none."""
    with suppress(OSError, ValueError):
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            return int(limit) - int((cgroup / "memory.current").read_text())
    return None


def process_headroom() -> list[int]:
    """What `ulimit -v` and `ulimit -d` leave this process beyond what it maps already."""
    headroom = []
    with suppress(OSError, ValueError, IndexError):
        status = Path("/proc/self/status").read_text()
        for limit, line in LIMITS:
            soft = resource.getrlimit(limit)[0]
            if soft != resource.RLIM_INFINITY:
                headroom.append(soft - kilobytes(status, line))
    return headroom


def kilobytes(text: str, line: str) -> int:
    """The figure after `line` in a /proc file, which gives it in kB, in bytes."""
    return int(text.split(line)[1].split()[0]) * 1024


def where(device: torch.device | None) -> str:
    return "CPU" if device is None or device.type == "cpu" else device.type.upper()


def refuse_beyond(needed: int, device: torch.device | None, what: str, fix: str) -> None:
    """SettingError where `needed` bytes exceed what is available: `what` needs it, `fix` helps."""
    free = available(device)
    if free is not None and needed > free:
        raise SettingError(
            f"{what} needs about {size(needed)} of {where(device)} memory, but "
            f"{size(max(free, 0))} are available: {fix}"
        )


def size(count: float) -> str:
    """Bytes in words: 1.9 GB, 340 MB, 12 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} bytes"
