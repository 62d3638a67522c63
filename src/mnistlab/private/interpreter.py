"""CPython's internals that mnistlab uses: running the exit handlers before `os._exit`."""

import atexit

from mnistlab.private import require


def run_exit_handlers() -> None:
    """What Python's exit runs first: every `atexit` handler, in reverse order of registration."""
    require(atexit, "_run_exitfuncs", "python")()
