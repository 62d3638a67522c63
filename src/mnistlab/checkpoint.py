"""Checkpoints: everything needed to continue a run bit for bit, written atomically, loaded safely.

A checkpoint holds the model, the optimizer, the loop's `Progress`, every RNG state and the
run's config. The batch order needs no saved state: it is derived from the seed and the epoch.
Files are written to a temporary name and renamed, so a crash mid-write leaves the previous
checkpoint intact; they are read with `weights_only=True`, so a file cannot run code.
"""

import os
import pickle
import random
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mnistlab import SettingError, config
from mnistlab.loop import SUMS, Progress

FILENAME = config.CHECKPOINT_FILE
FORMAT = "mnistlab-checkpoint/1"


def save(
    path: Path, cfg: DictConfig, model: torch.nn.Module, optimizer, progress: Progress
) -> None:
    """Write the checkpoint to a temporary file, then rename it over `path`."""
    state = {
        "format": FORMAT,
        "config": OmegaConf.to_yaml(cfg),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "progress": asdict(progress),
        "rng": rng_states(),
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def find(resume: str) -> Path:
    """The checkpoint file that `loop.resume` names: the file itself or a run folder holding one."""
    path = config.checkpoint_file(resume)
    if not path.is_file():
        raise SettingError(f"loop.resume={resume}: no checkpoint at {path}")
    return path


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint without running any code from it; refuse anything that is not ours."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        reason = str(err).strip().splitlines()[0][:200]
        raise SettingError(
            f"loop.resume: {path} is not a readable mnistlab checkpoint ({reason})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SettingError(
            f"loop.resume: {path} is not an mnistlab checkpoint (no {FORMAT!r} marker)"
        )
    return state


def config_of(state: dict[str, Any]) -> DictConfig:
    return OmegaConf.create(state["config"])


def restore(
    state: dict[str, Any], model: torch.nn.Module, optimizer, device: torch.device
) -> Progress:
    """Load weights, optimizer and RNG states; return the saved progress, on `device`."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    saved = dict(state["progress"])
    for key in SUMS:  # a checkpoint from before train accuracy lacks the correct counts
        saved[key] = saved[key].to(device) if key in saved else torch.zeros((), device=device)
    set_rng_states(state["rng"])
    return Progress(**saved)


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
