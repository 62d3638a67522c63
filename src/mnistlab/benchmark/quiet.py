"""Whether a benchmark's figures can be trusted: other processes' load before and during it.

A benchmark on a machine that other processes keep busy measures the scheduler, not the code:
on a 2-core machine with one busy process, runs with torch's two threads reached 209-3,900
samples/s against 33,000-56,000 alone, and a ratio between two such figures meant nothing.
So the benchmarks measure the load (mnistlab.parts.cores) for a moment before they start and
over their whole run, record it with their results, and where it was more than half a core
mark their figures unreliable and leave the ratios out.
"""

import time
from dataclasses import asdict, dataclass

from mnistlab.parts import cores

BEFORE = 0.5  # seconds of looking before a benchmark starts
# A variant whose rounds spread wider than this share of its median: the machine's speed
# changed while it ran (a shared host's other guests, which no process count here shows).
SPREAD = 0.25


@dataclass(frozen=True)
class Load:
    """Other processes' load, in cores: before the benchmark, and while it ran."""

    before: float | None
    during: float | None

    def reliable(self) -> bool:
        """Whether neither reached half a core (unmeasured counts as quiet)."""
        return all(load is None or load < cores.BUSY for load in (self.before, self.during))

    def line(self) -> str:
        """`other processes' load: 0.0 cores before, 0.1 during` and the verdict."""
        said = ", ".join(
            f"{load:.1f} cores {when}"
            for when, load in (("before", self.before), ("during the runs", self.during))
            if load is not None
        )
        if not said:
            return "other processes' load: not measurable here (no /proc/stat)"
        if self.reliable():
            return f"other processes' load: {said}"
        return (
            f"UNRELIABLE: other processes kept {said} busy: figures taken under load; "
            "ratios left out. Run it again when the machine is quiet"
        )

    def record(self) -> dict[str, object]:
        """For results.json."""
        return {**asdict(self), "reliable": self.reliable()}


def load_before() -> float | None:
    """Other processes' load over `BEFORE` seconds, now."""
    meter = cores.Meter()
    time.sleep(BEFORE)
    return meter.busy()


def spread(figures: dict[str, float]) -> float:
    """(max - min) / median of one variant's samples/s over its rounds."""
    return (figures["max_samples_per_s"] - figures["min_samples_per_s"]) / figures["samples_per_s"]
