"""The checks on a run folder before anything is written there, and the one line they end in.

Hydra creates the run folder, opens train.log in it and writes `.hydra/` before the task
function starts, so these checks run earlier, in a Hydra callback (`RunFolder`, listed under
`hydra.callbacks` in conf/train.yaml); `mnistlab.cli.api.train` makes the same `claim`. A folder
that cannot be one, that another mnistlab-train is using, that holds a link where a run writes,
or that already holds another run, is refused there with one line and is left as it was.

Security: nothing we write follows a link out of its run or sweep folder. Our own files are
written by mnistlab.files, which replaces a link instead of writing through it; Hydra opens its
log and config files by name and would follow one, hence the refusal of any link first.
This module does not import torch.
"""

import os
import shutil
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnistlab import SettingError, files
from mnistlab.config import checks
from mnistlab.private import hydra as hydra_private
from mnistlab.run.rundir import (
    HYDRA_OUTPUTS,
    RUN_OUTPUTS,
    holds_run,
    resume_override,
    wrote_anything,
    wrote_since,
)

NAME_MAX = 255  # bytes in one file name, where the file system does not say


def check_folder(folder: Path, key: str) -> None:
    """Refuse a folder whose name is too long for the file system, that is a file, lies below
    a file, or cannot be created or written."""
    longest = max(len(os.fsencode(part)) for part in folder.parts)
    if longest > name_max(folder):
        raise SettingError(
            f"{key}: a folder name of {longest} bytes is longer than this file system allows "
            f"({name_max(folder)}): choose a shorter {key}"
        )
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"lies below the file {existing}"
        raise SettingError(f"{key}={folder} {where}: choose a folder, e.g. {key}=outputs/my_run")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SettingError(
            f"{key}={folder} cannot be written ({existing} is not writable): choose a folder "
            "you can write to"
        )


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, allowed where `folder` is (its nearest existing parent)."""
    for parent in folder.parents:
        try:
            return os.pathconf(parent, "PC_NAME_MAX")
        except (OSError, ValueError):  # missing, or itself a name too long to look up
            continue
    return NAME_MAX


def check_links(folder: Path, key: str, patterns: tuple[str, ...] = ("*",)) -> None:
    """Refuse a folder where a write could follow a link out of it (see the module's note)."""
    found = files.links_among(folder, patterns)
    if not found:
        return
    path = found[0]
    through = "mnistlab never writes through a link, which could change a file outside the folder"
    if path.is_symlink():
        what, why = f"the link {path} -> {os.readlink(path)}", through
    elif path.is_file():
        what, why = f"{path}, which has another name (a hard link)", through
    else:
        what = f"{path}, which is neither a file nor a folder"
        why = "a FIFO would stop the run, a device would take its writes"
    others = f" (and the {len(found) - 1} others like it)" if len(found) > 1 else ""
    raise SettingError(
        f"{key}={folder} holds {what}: {why}; remove it{others}, or choose another {key}"
    )


def check_new_run(folder: Path, resume: str | None, overwrite: bool, key: str) -> None:
    """Refuse to start a new run in a folder holding another, unless told to overwrite it."""
    if resume is not None or not folder.is_dir() or not holds_run(folder):
        return
    if not overwrite:
        raise SettingError(
            f"{key}={folder} already holds a run: continue it with "
            f"{resume_override(folder)}, choose another {key}, or replace it with "
            "loop.overwrite=true"
        )
    for pattern in RUN_OUTPUTS + HYDRA_OUTPUTS:  # the old run goes; no mixed event files
        for path in folder.glob(pattern):  # no links among them: checked first
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def claim(folder: Path, key: str, resume: str | None, overwrite: bool) -> int | None:
    """Check `folder`, hold it for this process, and clear it for a new run where told to.

    Returns the lock's descriptor, which the caller keeps open while it runs (None for
    torchrun's other ranks: rank 0 holds the folder for all).
    """
    check_folder(folder, key)
    folder.mkdir(parents=True, exist_ok=True)
    lock = None
    if os.environ.get("RANK", "0") == "0":
        lock = files.hold(folder)
        if lock is None:
            instead = "" if resume is not None else f", or choose another {key}"
            raise SettingError(
                f"{key}={folder} is in use by another mnistlab-train: wait for it to end (two "
                f"at once would mix their files){instead}"
            )
    try:
        check_links(folder, key, RUN_OUTPUTS + HYDRA_OUTPUTS)
        check_new_run(folder, resume, overwrite, key)
    except BaseException:
        release(lock)
        raise
    return lock


def release(lock: int | None) -> None:
    """Let another process use the folder `claim` held."""
    if lock is not None:
        os.close(lock)


@contextmanager
def claimed(folder: Path, key: str, resume: str | None, overwrite: bool) -> Iterator[None]:
    """`claim` the folder while the block runs; a new folder whose run was refused goes again."""
    first_new = first_missing(folder)
    lock = claim(folder, key, resume, overwrite)
    try:
        yield
    except SettingError:
        if first_new is not None and not holds_run(folder):
            remove_fresh(folder, first_new)
        raise
    finally:
        release(lock)


def first_missing(folder: Path) -> Path | None:
    """The topmost of `folder` and its parents that does not exist yet, if any."""
    missing = [path for path in (folder, *folder.parents) if not path.exists()]
    return missing[-1] if missing else None


def remove_fresh(folder: Path, first_new: Path, everything: bool = True) -> None:
    """Delete a refused run's folder (only while empty, unless `everything`) and the parents
    made for it, while they are empty."""
    if everything:
        shutil.rmtree(folder, ignore_errors=True)
    for path in (folder, *folder.parents):
        if not path.is_relative_to(first_new):
            return
        if path.is_dir():  # the folder itself is gone already where `everything`
            if any(path.iterdir()):
                return
            path.rmdir()


@contextmanager
def refusal() -> Iterator[None]:
    """End the command with one line where a check fails (Hydra would only warn and go on).

    A SettingError and a failed file operation (a full disk, a name too long) are the user's
    to fix: their line is enough. Anything else is a bug: its traceback, then the end.
    """
    try:
        yield
    except SettingError as err:
        raise SystemExit(str(err)) from None
    except HydraException:  # composing a job's config (the sweeper's check): Hydra reports it
        raise
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        raise SystemExit(f"mnistlab-train: {err.strerror or err}{where}") from None
    except Exception:
        traceback.print_exc()
        raise SystemExit(1) from None


class RunFolder(Callback):
    """Hydra callback: check the run folder before Hydra writes into it; tidy up a refusal."""

    def __init__(self) -> None:
        self.first_new: Path | None = None  # the topmost folder this run had to create
        self.started_at = time.time()
        self.lock: int | None = None  # held until the process ends

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.run.dir).absolute()
        self.first_new = first_missing(folder)
        self.started_at = time.time()
        loop = config.loop
        with refusal():
            if loop.resume is None:  # a resume's settings are the saved run's: checked there
                checks.check_host(checks.check_settings(config))  # before Hydra's job frame
            try:
                key = "hydra.run.dir" if loop.resume is None else "loop.resume"
                self.lock = claim(folder, key, loop.resume, loop.overwrite)
            except SettingError:
                if self.first_new is not None:  # another process's run may be in it: no rmtree
                    remove_fresh(folder, self.first_new, everything=False)
                raise

    def on_run_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A run refused before training leaves no new folder (or resumed_<time>/) behind."""
        with refusal():
            self.tidy(config, job_return)

    def tidy(self, config: DictConfig, job_return: JobReturn) -> None:
        """Remove what a run refused before training made: its new folder, its resumed_<time>/."""
        error = hydra_private.returned(job_return)
        if job_return.status is not JobStatus.FAILED or not isinstance(error, SettingError):
            return
        folder = Path(config.hydra.runtime.output_dir)
        if self.first_new is not None and not wrote_anything(folder):
            remove_fresh(folder, self.first_new)
        # A resume refused before training wrote nothing (2 s: coarse file times); one that
        # failed in training keeps the record of its command.
        resumed = str(config.hydra.output_subdir).startswith(".hydra/resumed_")
        if resumed and not wrote_since(folder, self.started_at - 2):
            shutil.rmtree(folder / config.hydra.output_subdir, ignore_errors=True)
