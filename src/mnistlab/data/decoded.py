"""A decoded copy of an IDX dataset beside its four files, so a sweep's jobs skip the gunzip.

Where the dataset folder is read-only (a shared copy on a cluster), the copy goes to the
per-user cache folder instead ($XDG_CACHE_HOME or ~/.cache, mnistlab/decoded/), named by the
four files' MD5s.

Decompressing and parsing MNIST costs every job about half a second; reading the decoded
uint8 arrays back from one tensor file costs a few hundredths. The copy is keyed by the MD5 of
each of the four files, as they are on disk now: the MD5 is computed anyway to check the files
against the known checksums, and unlike a size and modification time it cannot be fooled by a
replacement of the same size and time (`cp -p`, a coarse clock). A copy whose key differs is
rebuilt. The file is read with `weights_only=True` (it cannot run code) and its dtypes and
shapes are checked; anything wrong with it means "decode again", never an error.
"""

import hashlib
import io
import json
import logging
import os
import pickle
import stat
import zipfile
from pathlib import Path

import numpy as np
import torch

from mnistlab.data.idx import IMAGES_MAGIC, LOAD_BYTES
from mnistlab.data.memory import available, size
from mnistlab.files import write_bytes

log = logging.getLogger(__name__)

CACHE_FILE = ".mnistlab-decoded.pt"  # in the dataset folder; delete it at will
FORMAT = "mnistlab-decoded-idx-1"
# The four files' arrays, then how many training-file pixels have each of the 256 values
# (what the normalisation needs, without a pass over every pixel of every run).
PARTS = ("images", "labels", "test_images", "test_labels", "pixel_counts")
DIMS = (3, 1, 3, 1, 1)  # what an IDX images (0x0803) and labels (0x0801) file holds
DTYPES = (torch.uint8,) * 4 + (torch.int64,)
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # in PARTS order

# What torch.load raises on a cut, damaged or foreign file, or one that would run code.
DAMAGE = (
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    KeyError,
    IndexError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)
_told_read_only: set[Path] = set()  # folders already logged as read-only by this process


def location(root: Path, key: dict[str, str]) -> Path:
    """The decoded copy's file: beside the dataset, or in the user's cache if it is read-only."""
    if writable(root) or (root / CACHE_FILE).is_file():
        return root / CACHE_FILE
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mnistlab" / "decoded" / f"{name}.pt"


def read(root: Path, key: dict[str, str]) -> Arrays | None:
    """The arrays cached for `root`'s files with these MD5s; None if absent, stale or damaged."""
    path = location(root, key)
    if not path.is_file():
        return None
    try:
        if not fits_in_memory(path):  # decoding checks each file's size, and says why
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
    except DAMAGE as error:
        log.warning("ignoring %s, to be rewritten: %s", path, first_line(error))
        return None
    problem = check(state, key)
    if problem == "stale":
        log.info("%s is for other files than those in %s now: decoding again", path, root)
        return None
    if problem:
        log.warning("ignoring %s, to be rewritten: %s", path, problem)
        return None
    log.debug("read the decoded dataset from %s", path)
    return tuple(state[part].numpy() for part in PARTS)


def fits_in_memory(path: Path) -> bool:
    """Whether the copy's arrays, unpacked and made into splits, fit in free memory."""
    with zipfile.ZipFile(path) as archive:  # its index says what its records unpack to
        unpacked = sum(record.file_size for record in archive.infolist())
    free = available()
    if free is not None and unpacked * LOAD_BYTES[IMAGES_MAGIC] > free:
        log.warning("ignoring %s: its %s would not fit in memory", path, size(unpacked))
        return False
    return True


def check(state: object, key: dict[str, str]) -> str | None:
    """What is wrong with a loaded cache ("stale" for another key); None if it can be used."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return "not a decoded-dataset file of this version"
    if state.get("files") != key:
        return "stale"
    tensors = [state.get(part) for part in PARTS]
    for part, tensor, dims, dtype in zip(PARTS, tensors, DIMS, DTYPES, strict=True):
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != dtype:
            return f"{part} is not a {dtype} tensor"
        if tensor.dim() != dims or tensor.numel() == 0:
            return f"{part} has shape {tuple(tensor.shape)}"
    images, labels, test_images, test_labels, pixel_counts = tensors
    if len(images) != len(labels) or len(test_images) != len(test_labels):
        return "image and label counts differ"
    if images.shape[1:] != test_images.shape[1:]:
        return "training and test images differ in size"
    if pixel_counts.shape != (256,) or int(pixel_counts.sum()) != images.numel():
        return "pixel_counts does not count the training images' pixels"
    return None


def write(root: Path, key: dict[str, str], arrays: Arrays) -> None:
    """Save the arrays for these files atomically; an unwritable place or full disk: no cache."""
    path = location(root, key)
    if path.parent != root and root not in _told_read_only:
        _told_read_only.add(root)
        log.info("%s is read-only: its decoded copy goes to %s", root, path.parent)
    state = {"format": FORMAT, "files": key}
    state |= {part: torch.tensor(array) for part, array in zip(PARTS, arrays, strict=True)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, buffer.getbuffer())  # each process writes its own temporary file
    except OSError as error:  # a full disk, an unwritable cache folder: no cache
        log.warning("could not write %s: %s", path, error)
    else:
        log.info("wrote %s: later runs read it instead of decoding the files", path)


def writable(root: Path) -> bool:
    """Whether `root` may be written: its permissions allow it (even for root, who could)."""
    # Respect a folder made read-only on purpose (a shared dataset): root bypasses the check.
    mode = root.stat().st_mode
    return os.access(root, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def first_line(error: BaseException) -> str:
    """An exception as one short line: its type and the start of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__
