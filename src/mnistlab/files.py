"""The one way mnistlab writes a file: atomically, and never through a link.

Security: nothing we write follows a link out of its run or sweep folder. Each file is written
to a new temporary name beside it (created with O_EXCL | O_NOFOLLOW: a link planted there is
refused, not followed), flushed to disk, then renamed over the final name. A rename replaces
a link at that name with the file itself; what the link pointed at is never touched. A reader
(the sweep summary, a second terminal) sees the old file or the new one, never half of one;
a full disk leaves the old file and no temporary one behind.
A folder we are about to write into is first checked for links (`links_among`): other
programs (Hydra's log and config files) open their files by name and would follow one.
What is read back from a run or sweep folder is read the same careful way (`read_inside`):
never through a link, never a FIFO or device, never more than a bounded size.
Kept free of torch: `mnistlab-summarize` imports it.
"""

import errno
import fcntl
import fnmatch
import json
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import yaml

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's where it is built in

PARTIAL_SUFFIX = ".partial"  # .<name>.<pid>.partial: a file being written, beside <name>


def partial_of(path: Path) -> Path:
    """Where this process writes `path` before it is complete."""
    return path.with_name(f".{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")


@contextmanager
def open_atomic(path: Path, binary: bool = False, durable: bool = True) -> Iterator[IO[Any]]:
    """A file to write that appears at `path` only once it is complete and on disk.

    `durable=False` leaves out the flush to disk (an fsync costs milliseconds) for a record
    that a machine crash may lose without harm: it still appears whole or not at all to readers.
    """
    partial = partial_of(path)
    partial.unlink(missing_ok=True)  # one a killed process of the same pid left
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    descriptor = os.open(partial, flags, 0o644)
    try:
        with os.fdopen(descriptor, "wb" if binary else "w", newline=None if binary else "") as file:
            yield file
            file.flush()
            if durable:
                os.fsync(file.fileno())  # the rename must not land before the data does
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes | memoryview, durable: bool = True) -> None:
    """`data` at `path`, atomically."""
    with open_atomic(path, binary=True, durable=durable) as file:
        file.write(data)


def write_text(path: Path, text: str, durable: bool = True) -> None:
    """`text` at `path`, atomically."""
    with open_atomic(path, durable=durable) as file:
        file.write(text)


def write_json(path: Path, value: Any, durable: bool = True) -> None:
    """`value` as indented JSON at `path`, atomically."""
    write_text(path, json.dumps(value, indent=2) + "\n", durable)


def open_append(path: Path) -> IO[str]:
    """`path` to append lines to (created where missing), line-buffered; never through a link."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    return os.fdopen(descriptor, "a", buffering=1, newline="")


def stale_partials(folder: Path, name: str) -> Iterator[tuple[Path, int]]:
    """Temporary files of `name` in `folder`, with the process id that was writing each."""
    prefix = f".{name}."
    for path in folder.glob(f"{prefix}*{PARTIAL_SUFFIX}"):
        pid = path.name.removeprefix(prefix).removesuffix(PARTIAL_SUFFIX)
        if pid.isdigit():
            yield path, int(pid)


def hold(folder: Path) -> int | None:
    """Lock `folder` for this process until it exits; None when another process holds it.

    The lock is on the folder itself (flock on its descriptor): nothing is written for it, and
    the system releases it however the process ends.
    """
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def links_among(folder: Path, patterns: Iterable[str] = ("*",)) -> list[Path]:
    """Entries of `folder` named by `patterns` (and all below them) that a write could follow.

    That is a symbolic link (a dangling one included), a file with a second hard link (an
    append to it, a log's, would change the other name's file too), or what is neither a file
    nor a folder (a FIFO would block its reader, a device would take the write).
    """
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for entry in entries:
        if not any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in patterns):
            continue
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            found += links_among(Path(entry.path))
        elif not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            found.append(Path(entry.path))
    return found


class Refused(ValueError):
    """A file not read (a link, not a regular file, too big): the reason says why."""


READ_LIMIT = 10_000_000  # what mnistlab reads back (metrics, Hydra's records) is a few KB


def read_inside(folder: Path, *parts: str, limit: int = READ_LIMIT) -> bytes:
    """The file `folder/parts...`, where neither it nor a folder between it and `folder` is a
    link, and it is a regular file of at most `limit` bytes; `Refused` or OSError otherwise.

    `folder` itself is the caller's to trust (the sweep folder the user named, or a job folder
    `read_job` found to be no link): links below it are never followed out of it.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    where = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            inner = opened(part, flags | os.O_DIRECTORY, where)
            os.close(where)
            where = inner
        mode = os.stat(parts[-1], dir_fd=where, follow_symlinks=False).st_mode
        if not stat.S_ISREG(mode):  # never opened: a FIFO would block, a device act
            raise Refused(f"it is {kind_of(mode)}: not read")
        descriptor = opened(parts[-1], flags, where)
    finally:
        os.close(where)
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # replaced since the check
            raise Refused("it is no regular file: not read")
        data = file.read(limit + 1)
    if len(data) > limit:
        raise Refused(f"it is over {size_text(limit)}: mnistlab writes less")
    return data


def opened(name: str, flags: int, where: int) -> int:
    """os.open of `name` in the folder `where`; a link there is refused (O_NOFOLLOW), named."""
    try:
        return os.open(name, flags, dir_fd=where)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.ENOTDIR):  # what O_NOFOLLOW says of a link
            raise
        if stat.S_ISLNK(os.stat(name, dir_fd=where, follow_symlinks=False).st_mode):
            raise Refused(f"{name} is a link: not read") from None
        raise


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, as people say it."""
    kinds = {
        stat.S_ISLNK: "a link",
        stat.S_ISDIR: "a folder",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "a device")


YAML_DEPTH = 64  # levels: a run's config has four, Hydra's record about six


def load_yaml(text: str | bytes) -> Any:
    """Plain YAML values, as Hydra and mnistlab write them: Refused where they cannot be.

    `check_yaml` first, then a safe loader (no tag runs code) builds the values.
    yaml.YAMLError where it is no YAML.
    """
    check_yaml(text)
    return yaml.load(text, Loader=SafeLoader)


def check_yaml(text: str | bytes) -> None:
    """Refuse YAML that would cost more to build than ours: anchors, aliases, deep nesting.

    Read as a stream of events (no recursion, no alias expanded): an anchor or alias (Hydra
    and OmegaConf never write one; a crafted "billion laughs" multiplies what a reader walks)
    or nesting past YAML_DEPTH is refused before anything is built.
    """
    depth = 0
    for event in yaml.parse(text, Loader=SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise Refused("it uses YAML anchors or aliases (&name, *name), which we never write")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > YAML_DEPTH:
                raise Refused(f"it nests more than {YAML_DEPTH} levels deep: not ours")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def size_text(size: float) -> str:
    """A size in bytes as a person reads it: 812 bytes, 31.8 kB, 2.4 MB, 1.1 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} bytes"
