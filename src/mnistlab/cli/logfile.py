"""train.log, the log file Hydra opens in the run folder: one line, once, when it fails.

Python's logging prints a traceback for every record a handler cannot write ("--- Logging
error ---"): on a full disk, one per log line. Here the first failure says which file and why,
and the log goes on on the terminal only.
"""

import logging
import sys
from contextlib import suppress
from types import MethodType


def one_line_on_failure() -> None:
    """Give each of the root logger's file handlers (Hydra's train.log) the one-line failure."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handleError = MethodType(stop_writing, handler)  # type: ignore[method-assign]


def stop_writing(handler: logging.FileHandler, record: logging.LogRecord) -> None:
    """Say once that the file cannot be written, and log to the terminal only from here on."""
    logging.getLogger().removeHandler(handler)
    error = sys.exc_info()[1]
    why = error.strerror if isinstance(error, OSError) and error.strerror else error
    print(
        f"mnistlab-train: {handler.baseFilename} cannot be written ({why}): the log goes on "
        "on the terminal only",
        file=sys.stderr,
        flush=True,
    )
    with suppress(Exception):  # its buffer cannot be flushed either
        handler.close()
