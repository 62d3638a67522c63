"""How many CPU threads a run uses: its share of the cores, less what other processes keep busy.

torch's default (one thread per core) collapses when another process already keeps a core
busy: each of torch's parallel steps waits for its slowest thread, and a thread that has to
share its core makes every step wait (209-3,900 against 33,000-56,000 samples/s measured on a
2-core machine). So `device.threads: null` means: this process's cores (its CPU affinity, a
SLURM task's CPUs), divided among the sweep's jobs that run at once on this machine, less the
cores other processes kept busy while the job started; an explicit `device.threads` is kept,
with a warning where other processes leave it fewer cores.

Other processes' load is measured, not guessed from the load average (a minute's trailing
mean, this process's own past work included): the cores' busy time in /proc/stat over a
window, less this process's own CPU time. The window runs from the previous measurement (the
first: when this module loaded, which mnistlab-train does before torch loads) to the run's
start, at least `WINDOW` seconds. Where /proc/stat is missing (not Linux) nothing is measured.
Kept free of torch: mnistlab.cli.train imports it first.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

STAT = Path("/proc/stat")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc's clock ticks/s
WINDOW = 0.1  # seconds: ten clock ticks per core, enough to see a core kept busy
BUSY = 0.5  # of a core: load from other processes below this is noise


@dataclass(frozen=True)
class Sample:
    """The cores' busy time and this process's CPU time, at one moment."""

    when: float  # time.monotonic()
    busy: float  # seconds the cores this process may use spent busy, since boot
    own: float  # this process's CPU seconds, all its threads


def affinity() -> set[int] | None:
    """The cores this process may run on, where the system says (Linux); None elsewhere."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


def allowed_cores() -> int:
    """The cores this process may run on: its affinity, and a SLURM task's CPUs."""
    mine = affinity()
    cores = os.cpu_count() if mine is None else len(mine)
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cores = min(cores or 1, int(slurm))
    return max(1, cores or 1)


def sample(pids: tuple[int, ...] = ()) -> Sample | None:
    """Now's figures, `pids` (this process's helpers) counted as its own; None where the
    kernel does not give them."""
    try:
        lines = STAT.read_text().splitlines()
    except OSError:
        return None
    mine = affinity()
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if mine is not None and int(name[3:]) not in mine:
            continue
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
        busy += user + nice + system + irq + softirq + steal  # steal: the hypervisor's
    times = os.times()
    own = times.user + times.system + sum(cpu_seconds(pid) for pid in pids)
    return Sample(time.monotonic(), busy / TICKS, own)


def cpu_seconds(pid: int) -> float:
    """The CPU seconds process `pid` has used (0 once it has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command's name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def busy_between(before: Sample, after: Sample) -> float:
    """Cores' worth of other processes' work between two samples."""
    work = (after.busy - before.busy) - (after.own - before.own)
    return max(0.0, work / max(after.when - before.when, 1e-9))


class Meter:
    """Other processes' load from its start on: `busy()` reads it (None: not measurable)."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.start = sample(pids)

    def busy(self) -> float | None:
        return self.since_start(sample(self.pids))

    def lap(self) -> float | None:
        """`busy()`, and the meter starts again from now."""
        now = sample(self.pids)
        found, self.start = self.since_start(now), now
        return found

    def since_start(self, now: Sample | None) -> float | None:
        return None if self.start is None or now is None else busy_between(self.start, now)


# The window: from when mnistlab-train started (before torch loads) or the previous run's
# start; and the last load measured, for runs that follow it within `WINDOW`.
_window = Meter()
_said: float | None = None


def others_busy() -> float | None:
    """Cores' worth of other processes' work since the last call (or this module's load),
    over at least `WINDOW` seconds. A run that starts within `WINDOW` of the last measurement
    (runs called one after another from Python) gets that one again; the first waits for it."""
    global _said
    if _window.start is None:
        return None
    wait = _window.start.when + WINDOW - time.monotonic()
    if wait > 0 and _said is not None:
        return _said
    if wait > 0:
        time.sleep(wait)
    _said = _window.lap()
    return _said


@dataclass(frozen=True)
class Threads:
    """A run's CPU thread count, and why."""

    count: int
    reason: str
    crowded: bool = False  # fewer than it would use on a quiet machine: say so loudly


def choose(
    setting: int | None, default: int, parallel: int, busy: float | None, cores: int
) -> Threads:
    """The thread count for a run: `setting` (device.threads), torch's `default`, the sweep's
    jobs at once on this machine (`parallel`), other processes' load (`busy` of the `cores`)."""
    others = "" if busy is None else f"other processes keep {busy:.1f} of {cores} cores busy"
    free = cores if busy is None or busy < BUSY else max(1, int(cores - busy + 0.5))
    if setting is not None:
        if setting <= free:
            return Threads(setting, "as set")
        fix = f"device.threads={free} would not wait for them"
        why = f"as set; {others}: its threads will wait on each other, {fix}"
        return Threads(setting, why, crowded=True)
    share = max(1, cores // max(1, parallel))
    if free < min(default, share):
        use = min(default, share)
        return Threads(free, f"{others}; device.threads={use} to use {use} anyway", crowded=True)
    if parallel > 1 and share <= default:  # joblib's workers may have torch's default lowered
        return Threads(share, f"{cores} cores shared by {parallel} jobs at once")
    return Threads(default, "torch's default")
