"""Checkpoints: everything needed to continue a run bit for bit, written atomically, loaded safely.

A checkpoint holds the model, the optimizer, its lr schedule, the float16 loss scaler (if any),
the loop's `Progress`, every RNG state and the run's config. The batch order needs no saved
state: it is derived from the seed and the epoch. Files are written to a temporary name and
renamed, so a crash mid-write leaves the previous checkpoint intact; they are read with
`weights_only=True`, so a file cannot run code.
"""

import errno
import io
import os
import pickle
import random
import re
import shutil
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.optim.lr_scheduler import LRScheduler

from mnistlab import SettingError, names
from mnistlab.files import stale_partials, write_bytes
from mnistlab.loop.progress import SUMS, Progress
from mnistlab.run import rundir

FILENAME = names.CHECKPOINT_FILE
FORMAT = "mnistlab-checkpoint/1"


class DiskFull(SettingError):
    """The checkpoint did not fit on the disk; the previous one is kept."""


def save(
    path: Path,
    cfg: DictConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None,
    progress: Progress,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Write the checkpoint to a temporary file, then rename it over `path`."""
    state = {
        "format": FORMAT,
        # Resolved: a saved config holds plain values only (mnistlab.run.resume refuses `${...}`).
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        # loop.precision=16-mixed: the loss scale it has grown or backed off to, and the
        # steps since it last changed; a fresh scaler would start over at 65536.
        "scaler": None if scaler is None else scaler.state_dict(),
        "progress": asdict(progress),
        "rng": rng_states(),
    }
    # Serialised in memory first: torch's zip writer turns a full disk into an opaque
    # RuntimeError, a plain write says ENOSPC, and the size says how much room is needed.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        write_bytes(path, buffer.getbuffer())  # its temporary file is gone before we measure
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        raise disk_full(path, buffer.getbuffer().nbytes, err) from None


def disk_full(path: Path, needed: int, err: OSError) -> DiskFull:
    """One line: which folder, how much room the checkpoint needs, and what was kept."""
    free = shutil.disk_usage(path.parent).free
    kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} yet"
    return DiskFull(
        f"could not save the checkpoint in {path.parent} ({err.strerror}): it needs "
        f"{megabytes(needed)} free there, {megabytes(free)} are; {kept}. Free some space "
        "and resume with loop.resume=<this run's folder>"
    )


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def remove_stale(folder: Path) -> None:
    """Delete temporary checkpoint files left by processes that were killed mid-write."""
    for temporary, pid in stale_partials(folder, FILENAME):
        if not alive(pid):
            temporary.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether a process with this id runs now (one still writing its checkpoint keeps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def find(resume: str) -> Path:
    """The checkpoint file that `loop.resume` names: the file itself or a run folder holding one."""
    path = rundir.checkpoint_file(resume)
    if not path.is_file():
        raise SettingError(f"loop.resume={resume}: no checkpoint at {path}")
    return path


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint without running any code from it; refuse anything that is not ours."""
    unreadable = f"loop.resume: {path} is not a readable mnistlab checkpoint"
    if path.stat().st_size == 0:
        raise SettingError(f"{unreadable}: the file is empty (0 bytes)")
    if not zipfile.is_zipfile(path):  # what torch.save writes; a cut file loses its zip index
        raise SettingError(f"{unreadable}: it is truncated, damaged, or another kind of file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise SettingError(f"{unreadable}: {refused(str(err))}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as err:
        reason = str(err).strip().split(". ")[0][:200] or type(err).__name__
        raise SettingError(f"{unreadable} ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SettingError(
            f"loop.resume: {path} is not an mnistlab checkpoint (no {FORMAT!r} marker)"
        )
    return state


def refused(error: str) -> str:
    """Why `weights_only` loading refused a file, without torch's advice to turn it off."""
    found = re.search(r"GLOBAL ([\w.]+)", error)
    what = f"it asks to call {found.group(1)}" if found else "it holds more than tensors and values"
    return (
        f"refused for safety and not loaded: {what}, which an mnistlab checkpoint never does. "
        "Resume only from checkpoints that mnistlab-train wrote"
    )


def config_of(state: dict[str, Any], path: Path | str = "the checkpoint") -> DictConfig:
    """The run config a checkpoint holds: YAML text, read with a safe loader, as data only.

    What it may call is checked by mnistlab.run.resume before anything uses it.
    """
    text = state.get("config")
    try:
        cfg = OmegaConf.create(text) if isinstance(text, str) else None
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        reason = str(err).splitlines()[0]
        raise SettingError(f"loop.resume: {path} holds an unreadable config ({reason})") from None
    if not isinstance(cfg, DictConfig):
        raise SettingError(f"loop.resume: {path} holds no run config: not an mnistlab checkpoint")
    return cfg


def restore(
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None,
    device: torch.device,
    overrides: list[str],
    scaler: torch.amp.GradScaler | None = None,
) -> Progress:
    """Load weights, optimizer, schedule, loss scaler, RNG states; return the progress, on `device`.

    The progress records this resume: its step, and the `overrides` it continues with.
    """
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:  # older checkpoints have none
        scaler.load_state_dict(state["scaler"])
    saved = dict(state["progress"])
    for key in SUMS:  # a checkpoint from before train accuracy lacks the correct counts
        saved[key] = saved[key].to(device) if key in saved else torch.zeros((), device=device)
    set_rng_states(state["rng"])
    progress = Progress(**saved)
    progress.resumes.append({"at_step": progress.step, "overrides": overrides})
    return progress


def rng_states() -> dict[str, Any]:
    """Every random generator a run draws from, in forms `weights_only` loading accepts."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": [version, list(internal), gauss],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
