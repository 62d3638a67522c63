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
from types import FrameType
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
        self.said = False  # whether its line was logged
        self.message = (
            f"interrupted before training started ({signal.Signals(signum).name}): "
            "no checkpoint written; run the same command again"
        )


class Interrupts:
    """SIGINT/SIGTERM/SIGUSR2 for one run, in three phases.

    SIGUSR2 is SLURM's early warning under submitit (a time limit or preemption ahead):
    mnistlab.sweep.slurm requeues the job once the run has saved its checkpoint.

    Building (from `with` to `hold()`): a signal ends the run at once with NotStarted, so a
    long data load or download stops at once; but one that comes inside an import waits for
    the import to end (`pending`): an exception raised halfway through importing numpy or
    torch leaves them half loaded, and some of their import code swallows it. A pending
    signal, or one that library code swallowed, ends the run where building ends: at the
    `with` block's end or at `hold()`. Training (from `hold()`): a signal sets `signum`, and
    the loop stops at a step boundary, saving a checkpoint. After `finish()` (the final
    test, writing the results): nothing is left to stop, so a signal is only noted in `late`,
    said at the block's end and handed on to the handler the block replaced (`hand_on`).
    An outer Interrupts (mnistlab.cli.train's, around Hydra) takes over the phase an inner
    one ended in: after a run has trained, a signal in Hydra's last steps is late too, and
    after a stop a second one is only noted, neither of them "before training started".
    """

    signum: int | None = None
    late: int | None = None
    pending: int | None = None  # a signal that came while building, not yet acted on
    building, finished = True, False

    def __enter__(self) -> Interrupts:
        self.previous = {}
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
                self.previous[signum] = signal.signal(signum, self._handle)
        outer = self.outer()
        if outer is not None and outer.building:
            self.pending, outer.pending = outer.pending, None  # one it held for an import
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.building:
            self.pending = self.pending or signum
            if not importing(frame):
                raise NotStarted(signum)
        elif self.finished:
            self.late = signum
        else:
            self.signum = signum

    def hold(self) -> None:
        """From now on a signal waits for the loop, which stops at a step boundary."""
        if self.pending is not None:  # it waited for an import, or library code swallowed it
            raise NotStarted(self.pending)
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
        if error is None and self.building and self.pending is not None:
            error = NotStarted(self.pending)  # it waited for an import, or was swallowed
            say(error)
            raise error
        if isinstance(error, NotStarted):
            say(error)
        outer = self.outer()
        if outer is not None and not self.building:  # trained, or stopped: no NotStarted now
            outer.building, outer.finished = False, self.finished
        if self.late is not None:
            name = signal.Signals(self.late).name
            log.warning("%s came after training had finished: the run completed anyway", name)
            self.hand_on(self.late, outer)

    def hand_on(self, late: int, outer: Interrupts | None) -> None:
        """Give a late signal to the handler this block replaced, where someone set one: a
        sweep's (mnistlab.sweep.interrupt) then stops the sweep before its next job, as it
        would had the signal come a moment later. Python's own handlers are left out (Ctrl-C
        would end a completed run with a traceback), and so is an outer Interrupts."""
        handler = self.previous.get(late)
        if outer is None and callable(handler) and handler is not signal.default_int_handler:
            handler(late, None)

    def outer(self) -> Interrupts | None:
        """The Interrupts this one's `with` block is nested in, if any."""
        handler = self.previous.get(signal.SIGTERM)
        outer = getattr(handler, "__self__", None)
        return outer if isinstance(outer, Interrupts) else None


def say(error: NotStarted) -> None:
    """Log NotStarted's line once, however many Interrupts (nested) it passes through."""
    if not error.said:
        log.warning(error.message)
        error.said = True


def importing(frame: FrameType | None) -> bool:
    """Whether the interrupted code is inside an import: Python's import machinery on the stack."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False
