"""A job's process: loading torch without the garbage collector walking it, and a quick exit.

Loading.
torch, torch._dynamo (which torch's optimizers import when the first one is made) and what
they import leave about 280,000 objects that live until the process exits. Python's cyclic
garbage collector walks every one of them on each full pass, 0.14 s a pass on a 2-core VM:
six passes while they load (0.46 s), and one after each job in a joblib worker (loky calls
`gc.collect()` between tasks). So they load with the collector paused and are then frozen:
`gc.freeze()`, Python's documented way to leave long-lived objects out of later passes.
Reference counting still frees a frozen object; only unreachable reference cycles stay: the
imports leave about 9,000 such objects, once per process, which a collection first would free
at the cost of one more pass.
"""

import gc
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from mnistlab.private import interpreter
from mnistlab.private import joblib as joblib_private


@contextmanager
def lasting_imports() -> Iterator[None]:
    """Import with the collector paused; freeze what stays, where something new was loaded."""
    modules = len(sys.modules)
    running = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if running:
            gc.enable()
        if len(sys.modules) > modules:  # the first job of the process: torch and the rest
            gc.freeze()


def stop_idle_workers() -> None:
    """End joblib's worker processes at once, once every job is done (the command returned).

    Python's exit would ask each to end and wait while it tears its modules down (torch's
    included), half a second or more; their jobs have all returned, so nothing is lost.
    """
    pool = joblib_private.idle_pool()  # the pool joblib's launcher used, if any
    if pool is not None:
        pool.shutdown(wait=True, kill_workers=True)


def leave(code: object) -> NoReturn:
    """Exit with `code` as `sys.exit` would, without the modules' teardown where that is safe.

    Python's own exit would also tear down every module, which takes half a second once torch
    (and torch._dynamo, which torch's optimizers load) is in: a sweep of short runs, or a
    script calling mnistlab-train in a loop, would pay it each time. What must happen at exit
    is an exit handler (the sweep's summary, the continue line, logging's flush).
    """
    others = [thread for thread in threading.enumerate() if thread is not threading.main_thread()]
    if any(not thread.daemon for thread in others):  # a pool's (joblib's): Python's exit ends it
        sys.exit(code)
    if code is not None and not isinstance(code, int):  # sys.exit("message"): print it, status 1
        print(code, file=sys.stderr)
        code = 1
    interpreter.run_exit_handlers()  # what Python's exit runs first
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
