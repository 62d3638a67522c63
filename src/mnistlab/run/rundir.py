"""Where a run lives: its folder, what it writes there, its checkpoint, its start time.

The checks that protect a folder before anything is written are mnistlab.run.guard's.
This module does not import torch: `mnistlab-train --help` and `--cfg job` load it.
"""

import datetime
import re
import shlex
import shutil
from pathlib import Path

from mnistlab.files import PARTIAL_SUFFIX
from mnistlab.names import BEST_FILE, CHECKPOINT_FILE, EVENTS_PATTERN, METRICS_FILE, SCALARS_FILE

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


def wrote_anything(folder: Path) -> bool:
    """Whether `folder` holds anything a run writes (a full disk may have stopped it early)."""
    return any(next(folder.glob(pattern), None) for pattern in RUN_OUTPUTS)


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
