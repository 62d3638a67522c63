"""Loading torch into a job's process without Python's garbage collector walking it again.

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
import sys
from collections.abc import Iterator
from contextlib import contextmanager


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
