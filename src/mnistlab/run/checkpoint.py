"""Checkpoints: everything needed to continue a run bit for bit, written atomically, loaded safely.

A checkpoint holds the model, the optimizer, its lr schedule, the float16 loss scaler (if any),
the loop's `Progress`, every RNG state and the run's config. The batch order needs no saved
state: it is derived from the seed and the epoch. Files are written to a temporary name and
renamed, so a crash mid-write leaves the previous checkpoint intact; they are read with
`weights_only=True`, so a file cannot run code.
"""

import io
import os
import pickle
import random
import re
import shutil
import types
import typing
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.optim.lr_scheduler import LRScheduler

from mnistlab import SettingError, names
from mnistlab.data.memory import refuse_beyond
from mnistlab.files import Refused, size_text, stale_partials, write_bytes
from mnistlab.files import check_yaml as check_plain_yaml
from mnistlab.loop.progress import SUMS, Progress
from mnistlab.run import rundir
from mnistlab.run.fulldisk import FULL, DiskFull, what_next

PROGRESS_FIELDS = {field.name: field.type for field in fields(Progress)}
FILENAME = names.CHECKPOINT_FILE
FORMAT = "mnistlab-checkpoint/1"
# A run's saved config is a few KB, four levels deep; these leave room for any real one.
MAX_CONFIG_CHARS = 1_000_000


def save(
    path: Path,
    cfg: DictConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None,
    progress: Progress,
    scaler: torch.amp.GradScaler | None = None,
    data: dict[str, str] | None = None,
) -> None:
    """Write the checkpoint to a temporary file, then rename it over `path`.

    `data`: what the run trains on (`fingerprint`, `source`), which a resume checks.
    """
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
        "data": data,
    }
    # Serialised in memory first: torch's zip writer turns a full disk into an opaque
    # RuntimeError, a plain write says ENOSPC, and the size says how much room is needed.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        write_bytes(path, buffer.getbuffer())  # its temporary file is gone before we measure
    except OSError as err:
        if err.errno not in FULL:
            raise
        raise disk_full(path, buffer.getbuffer().nbytes, err) from None


def disk_full(path: Path, needed: int, err: OSError) -> DiskFull:
    """One line: which folder, how much room the checkpoint needs, and what was kept."""
    free = shutil.disk_usage(path.parent).free
    kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} yet"
    return DiskFull(
        f"could not save the checkpoint in {path.parent} ({err.strerror}): it needs "
        f"{size_text(needed)} free there, {size_text(free)} are; {kept}. Free some space, "
        f"then {what_next(path.parent)}"
    )


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
        # What its records unpack to (torch reads deflated ones too), from the zip's index:
        # checked before any is read.
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(record.file_size for record in archive.infolist())
        refuse_beyond(
            unpacked,
            None,
            f"loop.resume: loading {path}",
            "free some memory, or resume it on a machine with more",
        )
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
        if isinstance(text, str):
            check_yaml(text, f"loop.resume: {path}")
        cfg = OmegaConf.create(text) if isinstance(text, str) else None
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        reason = str(err).splitlines()[0]
        raise SettingError(f"loop.resume: {path} holds an unreadable config ({reason})") from None
    if not isinstance(cfg, DictConfig):
        raise SettingError(f"loop.resume: {path} holds no run config: not an mnistlab checkpoint")
    return cfg


def check_yaml(text: str, source: str) -> None:
    """Refuse YAML that would cost more to read than a run's config: too long, aliased, deep.

    A run's config is a few KB of plain values, four levels deep, with no aliases (OmegaConf
    never writes one): a YAML "billion laughs" or 5,000 nested brackets is refused in one line
    (mnistlab.files.check_yaml), before it is built; OmegaConf builds it once, after.
    """
    if len(text) > MAX_CONFIG_CHARS:
        raise SettingError(
            f"{source} holds a config of {len(text):,} characters, more than any run's "
            f"({MAX_CONFIG_CHARS:,} at most): not an mnistlab run; nothing was run"
        )
    try:
        check_plain_yaml(text)
    except Refused as why:
        raise SettingError(
            f"{source}: its config: {why}; refused for safety, nothing was run"
        ) from None


def restore(
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None,
    device: torch.device,
    overrides: list[str],
    scaler: torch.amp.GradScaler | None = None,
    path: Path | str = "the checkpoint",
) -> Progress:
    """Load weights, optimizer, schedule, loss scaler, RNG states; return the progress, on `device`.

    The progress records this resume: its step, and the `overrides` it continues with. A part
    that does not fit the run (a checkpoint not written by mnistlab) is one line naming `path`.
    """
    with fitting(path, "model weights"):
        model.load_state_dict(state["model"])
    with fitting(path, "optimizer state"):
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        with fitting(path, "lr schedule"):
            scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:  # older checkpoints have none
        with fitting(path, "loss scaler"):
            scaler.load_state_dict(state["scaler"])
    saved = dict(state["progress"])
    for key in SUMS:  # a checkpoint from before train accuracy lacks the correct counts
        saved[key] = saved[key].to(device) if key in saved else torch.zeros((), device=device)
    with fitting(path, "RNG states"):
        set_rng_states(state["rng"])
    progress = Progress(**saved)
    progress.resumes.append({"at_step": progress.step, "overrides": overrides})
    return progress


@contextmanager
def fitting(path: Path | str, part: str) -> Iterator[None]:
    """Turn torch's refusal of a checkpoint's part into one line naming the file and the part."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
        # torch's state_dict message says where on its later lines: one line of all of them.
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise SettingError(
            f"loop.resume: {path}: the {part} it holds cannot be loaded into the run its config "
            f"describes ({reason}). Resume only checkpoints mnistlab-train wrote, or start a new "
            "run"
        ) from None


def check_parts(state: dict[str, Any], path: Path | str) -> None:
    """Refuse a checkpoint whose parts are not those mnistlab saves, naming the first wrong one.

    Checked before anything is built from it: a torch file that is not ours (no progress, an
    RNG state of another size, a tensor where a dict belongs) is one line, not a KeyError.
    """
    problem = wrong_part(state)
    if problem is not None:
        raise SettingError(
            f"loop.resume: {path} is not a checkpoint mnistlab can resume: {problem}. Resume "
            "only checkpoints mnistlab-train wrote, or start a new run"
        )


def wrong_part(state: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's parts, in a few words; None if they look like ours."""
    model = state.get("model")
    if not isinstance(model, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in model.items()
    ):
        return f"its model is {kind(model)}, not a dict of named tensors"
    optimizer = state.get("optimizer")
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict):
        return f"its optimizer is {kind(optimizer)}, not an optimizer's state"
    if not isinstance(optimizer.get("param_groups"), list):
        return "its optimizer has no list of parameter groups"
    for part in ("scheduler", "scaler", "data"):
        if state.get(part) is not None and not isinstance(state[part], dict):
            return f"its {part} is {kind(state[part])}, not a dict"
    return wrong_progress(state.get("progress")) or wrong_rng(state.get("rng"))


def wrong_progress(progress: object) -> str | None:
    """What is wrong with a saved `Progress`; None if every field has its type."""
    if not isinstance(progress, dict):
        return f"its progress is {kind(progress)}, not a dict"
    for key in ("epoch", "step"):
        if key not in progress:
            return f"its progress has no {key}"
    for key, value in progress.items():
        if key not in PROGRESS_FIELDS:
            return f"its progress has a field {str(key)[:50]!r} that mnistlab never saves"
        if not fits(value, PROGRESS_FIELDS[key]) or (key in SUMS and value.dim() != 0):
            return f"its progress.{key} is {kind(value)}"
    if progress["epoch"] < 0 or progress["step"] < 0:
        return "its progress counts are negative"
    return None


def fits(value: object, annotation: Any) -> bool:
    """Whether `value` has the type a `Progress` field declares (containers: their kind only)."""
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        return any(fits(value, option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    kind_ = typing.get_origin(annotation) or annotation
    if kind_ is float:
        kind_ = (int, float)
    return isinstance(value, kind_) and not (isinstance(value, bool) and annotation is not bool)


def wrong_rng(rng: object) -> str | None:
    """What is wrong with the saved RNG states; None if each has the form `rng_states` gives."""
    if not isinstance(rng, dict):
        return f"its RNG states are {kind(rng)}, not a dict"
    expected = torch.get_rng_state()
    cpu = rng.get("torch")
    if not isinstance(cpu, torch.Tensor) or cpu.dtype != torch.uint8 or cpu.shape != expected.shape:
        found = f"{cpu.numel()} {cpu.dtype}" if isinstance(cpu, torch.Tensor) else kind(cpu)
        return f"its torch RNG state holds {found} values, not {expected.numel()} bytes"
    cuda = rng.get("cuda")
    if not isinstance(cuda, list) or not all(
        isinstance(one, torch.Tensor) and one.dtype == torch.uint8 and one.dim() == 1
        for one in cuda
    ):
        return "its CUDA RNG states are not a list of byte tensors"
    numpy_state, python = rng.get("numpy"), rng.get("python")
    if not (
        isinstance(numpy_state, list)
        and len(numpy_state) == 5
        and numpy_state[0] == "MT19937"
        and isinstance(numpy_state[1], torch.Tensor)
        and numpy_state[1].shape == (624,)
    ):
        return "its numpy RNG state is not numpy's MT19937 state"
    if not (isinstance(python, list) and len(python) == 3 and isinstance(python[1], list)):
        return "its Python RNG state is not the random module's"
    if len(python[1]) != len(random.getstate()[1]):
        return f"its Python RNG state has {len(python[1])} numbers, not {len(random.getstate()[1])}"
    return None


def kind(value: object) -> str:
    """What a value is, in words: "a Tensor", "None"."""
    return "None" if value is None else f"a {type(value).__name__}"


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
