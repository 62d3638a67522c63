"""Stopping a sweep: Ctrl-C or SIGTERM ends it with 130 / 143 and the command that continues it.

Jobs run in one of two ways, and a signal to the process group stops each cleanly:
- in the sweep's own process (Hydra's basic launcher): the running job's handler
  (mnistlab.loop.signals) stops it at a step boundary with a checkpoint, and the job ends the sweep
  (SystemExit); between jobs, this module's handler ends the sweep at once.
- in worker processes (the joblib launcher, POOLED): every worker's job stops on the same
  signal (sent to the sweep's process alone, `kill <pid>`, it passes it on to them). The
  sweep's process notes it and waits, so that no worker is killed while it saves. An
  interrupted job raises `JobInterrupted`, an ordinary exception, so the launcher gathers
  every job rather than killing the other workers; a worker that got the signal starts no
  further job.
Other launchers (submitit: SLURM's processes, not this process group) are left as they were.
The sweep then exits with 128 + the signal's number, and its last line is the command that
continues it (mnistlab.sweep.rerun): the same arguments, and hydra.sweep.dir=<this sweep>.
How the jobs run comes from the sweep's context (mnistlab.sweep.context). What this module
keeps is its process's own signal state (`_state`): the signal that stopped the sweep.
Kept free of torch: it runs in the sweep's process.
"""

import multiprocessing
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from hydra.errors import CompactHydraException

from mnistlab.loop import signals
from mnistlab.run import rundir
from mnistlab.sweep.context import IN_PROCESS, SweepContext

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class ProcessState:
    """This process's part in stopping a sweep."""

    signum: int | None = None  # the signal that stops the sweep, once one came
    sweep: Path | None = None  # the sweep folder, where this process runs a sweep it stops
    context: SweepContext | None = None  # the sweep whose jobs this process runs
    listening: bool = False  # whether a pooled worker notes signals between its jobs


_state = ProcessState()


class JobInterrupted(CompactHydraException):
    """A job of a pooled sweep stopped on a signal: the sweep gathers it, then ends."""

    def __init__(self, signum: int, started: bool = True) -> None:
        name = signal.Signals(signum).name
        super().__init__(
            f"interrupted by {name}: checkpoint saved"
            if started
            else f"not started: the sweep was interrupted by {name}"
        )
        self.signum, self.started = signum, started

    def __reduce__(self) -> tuple[type, tuple[int, bool]]:
        return JobInterrupted, (self.signum, self.started)  # sent from a worker to the sweep


@contextmanager
def stopping() -> Iterator[None]:
    """Around mnistlab-train: once a signal stopped a sweep, exit 128 + the signal's number."""
    try:
        yield
    except KeyboardInterrupt:  # SIGINT before the sweep set its handlers (Hydra composing)
        note(signal.SIGINT)
    except SystemExit as end:
        if isinstance(end, signals.NotStarted):  # while the job loaded torch or its data
            note(int(end.code or 0) - 128)
        if _state.signum is None:
            raise
    finally:
        if _state.sweep is not None and _state.signum is None:
            ended()  # the jobs are over: a late signal must not cut the summary short
    if _state.signum is not None:
        raise SystemExit(128 + _state.signum)


def start(context: SweepContext) -> None:
    """When the sweep starts (on_multirun_start): take the signals that stop its jobs."""
    if not context.stoppable():
        return  # the jobs run elsewhere (SLURM): a signal ends this process as it always did
    _state.sweep, _state.context = Path(context.folder), context
    listen(immediate=context.launcher == IN_PROCESS)


def listen(immediate: bool) -> None:
    """Note SIGINT/SIGTERM; `immediate`: and end this process at once (no job runs in it now)."""

    def handle(signum: int, frame: object) -> None:
        if _state.signum is not None:
            return  # a second Ctrl-C: the first one is being handled
        note(signum)
        if immediate:
            raise SystemExit(128 + signum)
        if not in_pool():
            forward(signum)

    for signum in SIGNALS:
        signal.signal(signum, handle)


def in_pool() -> bool:
    """Whether this process is a worker of a pooled sweep (the joblib launcher's)."""
    return _state.context is not None and _state.context.in_pool()


def forward(signum: int) -> None:
    """Pass a signal on to the pooled sweep's workers: `kill <pid>` reaches this process alone.

    A worker that got it already (Ctrl-C reaches the whole process group) notes it once more,
    which changes nothing: its job stops at a step boundary either way.
    """
    for worker in multiprocessing.active_children():
        with suppress(ProcessLookupError):  # a worker that has just ended
            os.kill(worker.pid, signum)


def ended() -> None:
    """Once the sweep's jobs are over, a signal only says that the summary is being written."""

    def handle(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        print(f"{name} ignored: the sweep has ended; writing its summary", file=sys.stderr)

    for signum in SIGNALS:
        signal.signal(signum, handle)


def note(signum: int) -> None:
    """Remember the first signal that stops the sweep."""
    _state.signum = _state.signum or signum


def job_starting(context: SweepContext) -> None:
    """Before a sweep's job: a pooled worker notes signals from now on; after one, no job starts."""
    _state.context = context
    if not context.in_pool():
        return
    if not _state.listening:
        listen(immediate=False)  # a job's own handler takes over while it runs
        _state.listening = True
    if _state.signum is not None:
        raise JobInterrupted(_state.signum, started=False)


def job_interrupted(signum: int, started: bool = True) -> NoReturn:
    """End a job stopped by `signum`: in a pooled worker for the sweep to gather, else the sweep."""
    note(signum)
    if in_pool():
        raise JobInterrupted(signum, started)
    raise SystemExit(128 + signum)


def continue_command(argv: list[str], sweep: Path) -> str:
    """`mnistlab-train -m <argv> hydra.sweep.dir=<sweep>`, quoted for a shell and for Hydra."""
    # Not loop.overwrite=true: pasted, it would replace the sweep it is meant to continue.
    dropped = ("hydra.sweep.dir=", "loop.overwrite=")
    own = [arg for arg in argv if arg not in ("-m", "--multirun")]
    kept = [arg for arg in own if not arg.lstrip("+").startswith(dropped)]
    folder = rundir.folder_override("hydra.sweep.dir", sweep)
    return shlex.join(["mnistlab-train", "-m", *kept]) + f" {folder}"


def print_continue(argv: list[str], sweep: Path) -> None:
    """After a sweep a signal stopped: the command that continues it."""
    if _state.signum is not None and _state.sweep is not None:
        name = signal.Signals(_state.signum).name
        print(f"sweep interrupted by {name}; continue it with: {continue_command(argv, sweep)}")
        sys.stdout.flush()
