"""IDX files (MNIST's layout): parse and check them, and verify their MD5 sums.

The header is checked against the file before any array is made: a damaged or foreign file is
one `DamagedFile` line naming it. No torch.
"""

import gzip
import hashlib
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mnistlab import SettingError

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # 0x08 (uint8), then the number of dimensions


class DamagedFile(SettingError):
    """A dataset file that is not what it should be; the caller adds how to replace it."""


def parse_idx(raw: bytes, name: str, magic: int) -> np.ndarray:
    """The uint8 array in an IDX file's bytes; SettingError naming `name` if it is not one."""
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else "nothing"
        raise DamagedFile(f"{name} is not an IDX file: magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DamagedFile(f"{name} is truncated: its header needs {header} bytes")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DamagedFile(
            f"{name} has {len(raw)} bytes but its header {shape} says {expected}: "
            "the file is truncated or damaged"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read and parse one IDX file, gzipped or not."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DamagedFile(f"{path} is not a complete gzip file ({error})") from error
    return parse_idx(raw, str(path), magic)


def read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) and labels (N,) whose counts must agree."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise SettingError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if len(images) == 0:  # an empty split: nothing to train on or to measure
        raise SettingError(f"{images_path} holds no images: every split needs at least one")
    return images, labels


def md5sum(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def find(root: Path, name: str) -> Path | None:
    """The file `name` in `root`, gzipped or not; None where neither is there."""
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    return None


def verify(path: Path, checksums: Mapping[str, str]) -> str:
    """The file's MD5; refused where it is known and differs (a damaged or different download)."""
    found = md5sum(path)
    expected = checksums.get(path.name)
    if expected is not None and found != expected:
        raise DamagedFile(f"{path} has MD5 {found}, expected {expected}")
    return found
