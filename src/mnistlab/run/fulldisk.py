"""A full disk while a run writes (scalars.csv, TensorBoard's events, metrics.json): one line.

The checkpoint's own save says how much room it needs (mnistlab.run.checkpoint); any other
write that fails for want of room ends the run with the same kind of line, and metrics.json
says failed where that small file still fits. TensorBoard writes its events from a thread of
its own, which prints the error as a traceback before the run sees it: that print is left out
(the run's line says it). Kept free of torch: mnistlab.cli.arguments imports it.
"""

import errno
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from mnistlab import SettingError
from mnistlab.files import size_text
from mnistlab.names import CHECKPOINT_FILE, FAILED, write_metrics
from mnistlab.run import rundir

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no room, over quota, over the size limit


class DiskFull(SettingError):
    """A write of the run's (a checkpoint, its logs) did not fit: the line says what to do."""


def is_full(error: BaseException) -> bool:
    """Whether `error` is a write that failed for want of room."""
    return isinstance(error, OSError) and error.errno in FULL


@contextmanager
def one_line(out_dir: Path) -> Iterator[None]:
    """Turn a failed write for want of room into DiskFull; record the failure in metrics.json."""
    quiet = QuietThreads()
    try:
        yield
    except DiskFull:
        raise
    except OSError as error:
        if not is_full(error):
            raise
        free = size_text(shutil.disk_usage(out_dir).free)
        message = (
            f"could not write the run's files in {out_dir} ({error.strerror}; {free} free "
            f"there): free some space, then {what_next(out_dir)}"
        )
        with suppress(OSError):  # the disk may be too full for this small file too
            write_metrics(out_dir, {"status": FAILED, "error": message})
        raise DiskFull(message) from None
    finally:
        quiet.restore()


def what_next(out_dir: Path) -> str:
    """Once there is room again: the command that continues the run, or to start it again."""
    if (out_dir / CHECKPOINT_FILE).exists():
        return f"continue with {rundir.resume_command(out_dir)}"
    return "start the run again (it has no checkpoint yet)"


class QuietThreads:
    """While a run writes: a thread ending for want of room prints nothing (the run says it)."""

    def __init__(self) -> None:
        self.previous = threading.excepthook
        threading.excepthook = self.hook

    def hook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or not is_full(args.exc_value):
            self.previous(args)

    def restore(self) -> None:
        threading.excepthook = self.previous
