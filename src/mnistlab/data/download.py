"""Downloading a dataset's files: from mirrors in turn, within a deadline, verified, atomically.

A file appears under its name only once it is whole and its MD5 matches (mnistlab.files); a
signal during a download stops it at once and leaves no partial file.
"""

import hashlib
import http.client
import logging
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from mnistlab.files import open_atomic

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30  # for the connection and each read; the deadline bounds the whole file
DOWNLOAD_DEADLINE_S = 600.0  # per file (dataset.source.download_deadline_s)
PROGRESS_EVERY_S = 10.0  # a slow download logs how far it got this often (and shows a bar)


class ChecksumError(Exception):
    """A downloaded file whose MD5 is not the known one."""


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived during a download."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stoppable() -> Iterator[None]:
    """SIGINT/SIGTERM raise inside the block, so its clean-up runs; then they go on as before."""
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    pending = None
    try:
        yield
    except Stopped as stopped:
        pending = stopped.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if pending is not None:
        signal.raise_signal(pending)  # what the program does on it: die, raise, or take note
        raise SystemExit(128 + pending)  # it only took note: the download stops all the same


@contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the block once `seconds` of wall-clock time have passed.

    A socket timeout bounds each read, not their sum: a server that sends its status line and
    then a header byte a second held `urlopen` for minutes past the deadline. A timer signal
    ends any wait. Only the main thread takes signals: elsewhere the reads' own bounds remain.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"past the download deadline of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    earlier, _ = signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))  # 0 would disarm it
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if earlier:  # someone else's timer was running: it goes on where it was
            signal.setitimer(signal.ITIMER_REAL, max(earlier - time.monotonic() + started, 1e-3))


def fetch(url: str, target: Path, md5: str | None, deadline_s: float) -> None:
    """Download `url` to `target` via a temporary file renamed only once complete and verified.

    The deadline covers it all: connecting, the response's headers and its body.
    """
    deadline = time.monotonic() + deadline_s
    timeout = min(DOWNLOAD_TIMEOUT_S, deadline_s)
    with alarm(deadline_s), urllib.request.urlopen(url, timeout=timeout) as response:
        size = int(response.headers.get("Content-Length") or 0) or None
        # The final name only ever holds a whole, verified file: an error below leaves none.
        with open_atomic(target, binary=True) as file:
            written, digest = stream(response, file, size, target.name, deadline)
            if size is not None and written != size:
                raise OSError(f"the connection closed after {written} of {size} bytes")
            if md5 is not None and digest != md5:
                raise ChecksumError(f"MD5 {digest}, expected {md5}")


def stream(
    response: http.client.HTTPResponse, file: BinaryIO, size: int | None, name: str, deadline: float
) -> tuple[int, str]:
    """Copy a response into `file`, showing progress once slow; return the byte count and MD5."""
    digest, written = hashlib.md5(), 0
    started = last_report = time.monotonic()
    total = f" of {size}" if size else ""
    # `delay`: the bar appears only for a download that takes a while (and only on a terminal).
    with tqdm(total=size, desc=name, unit="B", unit_scale=True, disable=None, delay=2) as bar:
        # read1 returns what has arrived: a trickling server cannot hold one call forever.
        while chunk := response.read1(1 << 20):
            file.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            bar.update(len(chunk))
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(
                    f"past the download deadline: {written}{total} bytes in {now - started:.1f} s"
                )
            if now - last_report >= PROGRESS_EVERY_S:  # for logs, where there is no bar
                seconds = now - started
                log.info("downloading %s: %d%s bytes after %.0f s", name, written, total, seconds)
                last_report = now
    return written, digest.hexdigest()


def download(
    name: str, root: Path, mirrors: Sequence[str], md5: Mapping[str, str], deadline_s: float
) -> bool:
    """Fetch `name`.gz from the first mirror that serves it intact; False if none does."""
    filename = f"{name}.gz"
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{filename}"
        log.info("downloading %s", url)
        try:
            with stoppable():
                fetch(url, root / filename, md5.get(filename), deadline_s)
            return True
        except (OSError, http.client.HTTPException, ChecksumError) as error:
            # URLError, HTTPError and timeouts are OSErrors: try the next mirror.
            log.warning("could not download %s: %s", url, error)
    return False
