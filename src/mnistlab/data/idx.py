"""IDX files (MNIST's layout): parse and check them, and verify their MD5 sums.

The header is checked against the file before any array is made: a damaged or foreign file is
one `DamagedFile` line naming it. A file is read no further than its header declares, and
only once that size is one the file can hold and memory can take: a small gzip file that
would unpack to gigabytes (a "zip bomb") is refused before it is unpacked. No torch.
"""

import gzip
import hashlib
import math
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mnistlab import SettingError
from mnistlab.data.memory import refuse_beyond, size

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # 0x08 (uint8), then the number of dimensions
# Deflate packs at most 1032 bytes into one: a gzip file cannot unpack to more than this.
MAX_GZIP_RATIO = 1032
# Memory per declared byte while a dataset loads: the bytes, a split's copy of them, then the
# float32 values (images) or int64 values (labels) a run trains on.
LOAD_BYTES = {IMAGES_MAGIC: 1 + 1 + 4, LABELS_MAGIC: 1 + 1 + 8}
CHUNK = 1 << 20


class DamagedFile(SettingError):
    """A dataset file that is not what it should be; the caller adds how to replace it."""


def header_size(magic: int) -> int:
    """The magic number, then one big-endian uint32 size per dimension."""
    return 4 + 4 * (magic & 0xFF)


def parse_header(raw: bytes, name: str, magic: int) -> tuple[int, ...]:
    """The shape an IDX file's header declares; DamagedFile naming `name` if it is not one."""
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else "nothing"
        raise DamagedFile(f"{name} is not an IDX file: magic number {found}, expected {magic}")
    header = header_size(magic)
    if len(raw) < header:
        raise DamagedFile(f"{name} is truncated: its header needs {header} bytes")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=magic & 0xFF, offset=4))
    if magic == IMAGES_MAGIC and 0 in shape[1:]:
        raise DamagedFile(
            f"{name} holds images of {shape[1]}x{shape[2]} pixels: an image needs at least one"
        )
    return shape


def parse_idx(raw: bytes, name: str, magic: int) -> np.ndarray:
    """The uint8 array in an IDX file's bytes; SettingError naming `name` if it is not one."""
    shape = parse_header(raw, name, magic)
    header = header_size(magic)
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise wrong_size(name, len(raw), shape, expected)
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def wrong_size(name: str, found: int, shape: tuple[int, ...], expected: int) -> DamagedFile:
    return DamagedFile(
        f"{name} has {found} bytes but its header {shape} says {expected}: "
        "the file is truncated or damaged"
    )


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read and parse one IDX file, gzipped or not, no further than its header declares."""
    packed = path.suffix == ".gz"
    try:
        with gzip.open(path) if packed else path.open("rb") as stream:
            shape = parse_header(stream.read(header_size(magic)), str(path), magic)
            declared = math.prod(shape)
            check_room(path, shape, magic, packed)
            body = stream.read(declared + 1)  # one byte more shows a file longer than declared
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DamagedFile(f"{path} is not a complete gzip file ({error})") from error
    expected = header_size(magic) + declared
    if len(body) > declared:  # the rest is never read: it may unpack to gigabytes
        raise DamagedFile(
            f"{path} holds more than the {expected} bytes its header {shape} says: the file is "
            "damaged or not an IDX file"
        )
    if len(body) < declared:
        raise wrong_size(str(path), header_size(magic) + len(body), shape, expected)
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def check_room(path: Path, shape: tuple[int, ...], magic: int, packed: bool) -> None:
    """Refuse a declared size the file cannot hold, or that memory cannot take, before reading."""
    declared, on_disk = math.prod(shape), path.stat().st_size
    if not packed and on_disk != header_size(magic) + declared:
        raise wrong_size(str(path), on_disk, shape, header_size(magic) + declared)
    if packed and declared > on_disk * MAX_GZIP_RATIO:
        raise DamagedFile(
            f"{path} declares {shape} ({size(declared)}), more than a gzip file of "
            f"{size(on_disk)} can unpack to: the file is damaged or not an IDX file"
        )
    refuse_beyond(
        declared * LOAD_BYTES[magic],
        None,
        f"loading {path} (its header says {shape}: {size(declared)})",
        "use a smaller dataset, or free some memory",
    )


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
    """The file's MD5, read in chunks: a large file is never in memory at once."""
    digest = hashlib.md5()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
