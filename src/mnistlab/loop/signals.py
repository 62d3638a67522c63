"""Signals during a run: SIGINT, SIGTERM and SIGUSR2 stop it cleanly, at a step boundary.

`Interrupts` is installed from the moment a job starts (mnistlab.cli.train, before torch loads)
while a run is built and trained; the loop asks it after steps (`agreed`, which under
torchrun every rank answers alike) whether to stop. No torch here: the entry point imports it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from mnistlab.parts.distributed import World

log = logging.getLogger(__name__)

# torchrun's agent starts every rank in a session of its own, so when the agent dies (killed,
# out of memory) no signal reaches the ranks: they would train on as orphans, writing into
# the run folder. Each rank notes its parent when this module loads (mnistlab.cli.train imports
# it before Hydra starts) and the loop treats the parent's disappearance like a SIGTERM. Not
# prctl's PR_SET_PDEATHSIG: Linux only, it fires when the parent *thread* that started the
# rank ends (not the agent), and it misses an agent that died before the call. One getppid()
# at each stop check costs well under a microsecond.
_LAUNCHER = os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None


def launcher_gone() -> bool:
    """True once the torchrun agent that started this process has died."""
    return _LAUNCHER is not None and os.getppid() != _LAUNCHER


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGUSR2 came during training; a checkpoint was saved, the run stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class NotStarted(SystemExit):
    """SIGINT or SIGTERM arrived before training started: nothing to save, the process ends.

    A SystemExit (code 130 or 143), since it may surface anywhere in data loading or model
    building, where an `except Exception` (Hydra's instantiate has one) would wrap it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.message = (
            f"interrupted before training started ({signal.Signals(signum).name}): "
            "no checkpoint written; run the same command again"
        )


class Interrupts:
    """SIGINT/SIGTERM/SIGUSR2 for one run, in three phases.

    SIGUSR2 is SLURM's early warning under submitit (a time limit or preemption ahead):
    mnistlab.sweep.slurm requeues the job once the run has saved its checkpoint.

    Building (from `with` to `hold()`): a signal ends the run at once with NotStarted, so a
    long data load or download stops at once. Training (from `hold()`): a signal sets
    `signum`, and the loop stops at a step boundary, saving a checkpoint. After `finish()`
    (the final test): nothing is left to stop, so a signal is only noted in `late`.
    """

    signum: int | None = None
    late: int | None = None
    building, finished = True, False

    def __enter__(self) -> Interrupts:
        self.previous = {}
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.building:
            raise NotStarted(signum)
        if self.finished:
            self.late = signum
        else:
            self.signum = signum

    def hold(self) -> None:
        """From now on a signal waits for the loop, which stops at a step boundary."""
        self.building = False

    def requested(self) -> bool:
        """Whether this process should stop: a signal came, or torchrun's agent is gone."""
        if self.signum is None and launcher_gone():
            log.warning("the torchrun agent that started this rank is gone: stopping")
            self.signum = signal.SIGTERM
        return self.signum is not None

    def agreed(self, world: World, device: torch.device) -> bool:
        """Whether any rank should stop; every rank gets the same answer at the same step."""
        if not world.any(self.requested(), device):
            return False
        self.signum = self.signum or signal.SIGTERM  # where it was another rank's signal
        return True

    def finish(self) -> None:
        """Training is over: a signal from now on has nothing left to stop."""
        self.finished = True
        if self.signum is not None:
            self.late, self.signum = self.signum, None

    def __exit__(self, kind: type | None, error: BaseException | None, trace: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if isinstance(error, NotStarted):
            log.warning(error.message)
