"""Where a run lives: its folder, its checkpoint, its start time, and the checks on the folder.

Hydra creates the run folder, opens train.log in it and writes `.hydra/` before the task
function starts, so the checks that protect a folder run earlier, in a Hydra callback
(`RunFolder`, listed under `hydra.callbacks` in conf/train.yaml): a folder that cannot be one,
or that already holds another run, is refused there with one line and is left as it was. A
fresh folder whose run was refused with a `SettingError` is removed again when the run ends.

This module does not import torch: `mnistlab-train --help` and `--cfg job` load it.
"""

import datetime
import os
import re
import shlex
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnistlab import SettingError
from mnistlab.files import PARTIAL_SUFFIX
from mnistlab.names import BEST_FILE, CHECKPOINT_FILE, EVENTS_PATTERN, METRICS_FILE, SCALARS_FILE
from mnistlab.private import hydra as hydra_private

# What a run writes into its folder; `loop.overwrite=true` removes these before a new run.
RUN_OUTPUTS = (
    CHECKPOINT_FILE,
    BEST_FILE,
    METRICS_FILE,
    EVENTS_PATTERN,
    f".{CHECKPOINT_FILE}.*{PARTIAL_SUFFIX}",
    SCALARS_FILE,  # appended to by a run: a new run in the folder must not add to the old one's
)
HYDRA_OUTPUTS = (".hydra", "train.log")
RESUMED_PREFIX = "resumed_"  # .hydra/resumed_<time>/: the config of each resume

_started: datetime.datetime | None = None


def checkpoint_file(resume: str) -> Path:
    """The checkpoint `loop.resume` names: the file itself, or checkpoint.pt in a run folder."""
    path = Path(resume).expanduser()
    return path / CHECKPOINT_FILE if path.is_dir() else path


def resumed_folder(resume: str | None) -> Path | None:
    """The folder of the run that `loop.resume` names, if there is one to resume."""
    if resume is None:
        return None
    path = checkpoint_file(resume)
    return path.parent if path.is_file() else None


def run_folder(resume: str | None, fresh: str) -> str:
    """Hydra's run folder: a resumed run's own, so its log continues there; else `fresh`."""
    folder = resumed_folder(resume)
    return fresh if folder is None else str(folder)


def config_subfolder(resume: str | None) -> str:
    """Where Hydra saves this command's config; a resumed run keeps its first `.hydra/`."""
    if resumed_folder(resume) is None:
        return ".hydra"
    return resumed_subfolder()


def resumed_subfolder() -> str:
    """`.hydra/resumed_<time>`: where a resumed run's config goes, beside its first `.hydra/`."""
    return f".hydra/{RESUMED_PREFIX}{started('%Y-%m-%d_%H-%M-%S_%f')}"


def started(pattern: str) -> str:
    """The run's start time formatted by `pattern`: rank 0's under torchrun, else now (cached)."""
    global _started
    if _started is None:
        _started = datetime.datetime.now()
    return _started.strftime(pattern)


def set_started(moment: datetime.datetime | None) -> None:
    """Use `moment` as the start time (torchrun ranks take rank 0's); None changes nothing."""
    global _started
    if moment is not None:
        _started = moment


def resume_override(folder: Path) -> str:
    """`loop.resume=...` naming `folder`, quoted for Hydra's override grammar and for a shell."""
    return shlex.quote(f"loop.resume={hydra_quoted(folder)}")


def folder_override(key: str, folder: Path) -> str:
    """`key=<folder>` (absolute), quoted for Hydra and a shell where its characters need it."""
    path = str(folder.absolute())
    plain = re.fullmatch(r"[\w./:-]+", path) is not None
    return shlex.quote(f"{key}={path if plain else hydra_quoted(folder)}")


def hydra_quoted(folder: Path) -> str:
    """`folder` (absolute) as one quoted string of Hydra's override grammar."""
    # Hydra reads "..." as one string (sweep job folders hold "=" and ","); inside it, a quote
    # and the backslashes before a quote or before the closing quote are escaped.
    path = str(folder.absolute()).replace("${", "\\${")  # not an interpolation
    escaped = re.sub(r'(\\*)("|$)', lambda m: 2 * m[1] + ('\\"' if m[2] else ""), path)
    return f'"{escaped}"'


def resume_command(folder: Path) -> str:
    """The command that continues the run in `folder`, ready to paste into a shell."""
    return f"mnistlab-train {resume_override(folder)}"


def holds_run(folder: Path) -> bool:
    """Whether `folder` holds what a run writes: a checkpoint, metrics or TensorBoard events."""
    return any(next(folder.glob(pattern), None) for pattern in RUN_OUTPUTS[:3])


def remove_outputs(folder: Path) -> None:
    """Remove what a run and Hydra wrote in `folder`, then `folder` if that empties it.

    A link among them is removed as a link: what it points at, elsewhere, stays untouched.
    """
    for pattern in RUN_OUTPUTS + HYDRA_OUTPUTS:
        for path in folder.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    if not any(folder.iterdir()):
        folder.rmdir()


def wrote_since(folder: Path, moment: float) -> bool:
    """Whether a checkpoint, metrics or event file in `folder` was written after `moment`."""
    outputs = (path for pattern in RUN_OUTPUTS[:3] for path in folder.glob(pattern))
    return any(path.stat().st_mtime >= moment for path in outputs)


def check_folder(folder: Path, key: str) -> None:
    """Refuse a folder that is a file, lies below a file, or cannot be created or written."""
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


def check_new_run(folder: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse to start a new run in a folder holding another, unless told to overwrite it."""
    if resume is not None or not folder.is_dir() or not holds_run(folder):
        return
    if not overwrite:
        raise SettingError(
            f"hydra.run.dir={folder} already holds a run: continue it with "
            f"{resume_override(folder)}, choose another hydra.run.dir, or replace it with "
            "loop.overwrite=true"
        )
    for pattern in RUN_OUTPUTS + HYDRA_OUTPUTS:  # the old run goes; no mixed event files
        for path in folder.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def remove_fresh(folder: Path, first_new: Path) -> None:
    """Delete a refused run's folder and the parents made for it, while they are empty."""
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if not parent.is_relative_to(first_new) or any(parent.iterdir()):
            return
        parent.rmdir()


@contextmanager
def refusal() -> Iterator[None]:
    """Stop the command with the SettingError's one line (Hydra would turn it into a warning)."""
    try:
        yield
    except SettingError as err:
        raise SystemExit(str(err)) from None


class RunFolder(Callback):
    """Hydra callback: check the run folder before Hydra writes into it; tidy up a refusal."""

    def __init__(self) -> None:
        self.first_new: Path | None = None  # the topmost folder this run had to create
        self.started_at = time.time()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.run.dir).absolute()
        with refusal():
            check_folder(folder, "hydra.run.dir")
            check_new_run(folder, config.loop.resume, config.loop.overwrite)
        missing = [path for path in (folder, *folder.parents) if not path.exists()]
        self.first_new = missing[-1] if missing else None
        self.started_at = time.time()

    def on_run_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A run refused before training leaves no new folder (or resumed_<time>/) behind."""
        error = hydra_private.returned(job_return)
        if job_return.status is not JobStatus.FAILED or not isinstance(error, SettingError):
            return
        folder = Path(config.hydra.runtime.output_dir)
        if self.first_new is not None and not holds_run(folder):
            remove_fresh(folder, self.first_new)
        # A resume refused before training wrote nothing (2 s: coarse file times); one that
        # failed in training keeps the record of its command.
        resumed = str(config.hydra.output_subdir).startswith(".hydra/resumed_")
        if resumed and not wrote_since(folder, self.started_at - 2):
            shutil.rmtree(folder / config.hydra.output_subdir, ignore_errors=True)
