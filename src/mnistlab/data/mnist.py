"""Real MNIST, and any dataset in its IDX layout: find or download, verify, parse, split.

A dataset folder holds four files, each gzipped (`name.gz`) or not (`name`):
training images and labels, test images and labels. `mnist()` fills a per-user cache folder
from a list of mirrors, checking every file against its known MD5; `idx()` reads any folder
in the same layout, with the image size and class count taken from the files. The decoded
arrays are kept beside the files (mnistlab.data.decoded), so the next run skips the parsing.
Parsing is plain numpy: an IDX file is a big-endian header followed by raw uint8 values.
"""

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnistlab import SettingError
from mnistlab.data import decoded
from mnistlab.data.download import DOWNLOAD_DEADLINE_S, download
from mnistlab.data.idx import DamagedFile, find, read_pair, verify
from mnistlab.data.splits import Origin, Splits, TensorPairs, normalize, remembered

log = logging.getLogger(__name__)

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
ENV_VAR = "MNISTLAB_DATA"

# The original files, gzipped (what mirrors serve) and unpacked (what some people keep).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


@dataclass(frozen=True)
class Advice:
    """What the error messages tell the user to change: the settings behind a dataset folder."""

    key: str | None = "dataset.source"  # the config node, e.g. benchmark.data; None: no node
    mirrors: tuple[str, ...] = ()  # where missing files can be downloaded from
    download_off: bool = False  # download=false: the mirrors are not used
    env_var: bool = False  # the folder defaults to $MNISTLAB_DATA

    @property
    def sources(self) -> tuple[str, ...]:
        """The mirrors to download from now."""
        return () if self.download_off else self.mirrors

    def setting(self, name: str) -> str:
        return f"{self.key}.{name}"

    def named(self, root: Path) -> str:
        """The dataset folder as the setting that gives it, where there is one."""
        return str(root) if self.key is None else f"{self.setting('root')}={root}"

    def elsewhere(self) -> str:
        """How to use another folder."""
        if self.key is None:
            return f"set ${ENV_VAR} to a folder that has them"
        env = f" (or ${ENV_VAR})" if self.env_var else ""
        return f"point {self.setting('root')}{env} at a folder that has them"

    def replace(self) -> str:
        """How to replace a damaged file."""
        if self.download_off:
            return f"delete it and set {self.setting('download')}=true to download it again"
        if self.mirrors:
            return "delete it to download it again"
        return "replace it with a good copy"


def default_root() -> Path:
    """Where MNIST is cached: $MNISTLAB_DATA, else the per-user cache folder."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mnistlab" / "mnist"


def missing_error(root: Path, advice: Advice) -> SettingError:
    """The one error for files that are neither here nor downloadable: where to get them."""
    needed = f"dataset files missing in {root}: need {', '.join(FILES)} (each may be gzipped)"
    mirrors = ", ".join(advice.mirrors)
    if advice.download_off:
        return SettingError(
            f"{needed}. {advice.setting('download')}=false, so nothing was downloaded: set it "
            f"to true (mirrors: {mirrors}), place them in that folder, or {advice.elsewhere()}"
        )
    if advice.mirrors:
        return SettingError(
            f"{needed}, and no mirror served them ({mirrors}; see the warnings above). "
            f"Download them and place them in that folder, or {advice.elsewhere()}"
        )
    also = f", or list {advice.setting('mirrors')} to download from" if advice.key else ""
    return SettingError(f"{needed}. Place them in that folder, {advice.elsewhere()}{also}")


def ensure_files(
    root: Path,
    mirrors: Sequence[str],
    md5: Mapping[str, str],
    deadline_s: float = DOWNLOAD_DEADLINE_S,
    advice: Advice | None = None,
) -> dict[str, Path]:
    """The four files in `root`, downloading the missing ones; every known MD5 checked."""
    paths = obtain(root, mirrors, md5, deadline_s, advice or Advice(mirrors=tuple(mirrors)))
    for path in paths.values():
        verify(path, md5)
    return paths


def obtain(
    root: Path, mirrors: Sequence[str], md5: Mapping[str, str], deadline_s: float, advice: Advice
) -> dict[str, Path]:
    """The four files in `root`, downloading the missing ones (each checked as it arrives)."""
    if root.exists() and not root.is_dir():
        raise SettingError(
            f"{advice.named(root)} is a file, not the folder of the dataset's files: "
            f"{advice.elsewhere()}"
        )
    missing = [name for name in FILES if find(root, name) is None]
    if missing and mirrors:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a file where a parent folder should be, no permission
            reason = error.strerror or type(error).__name__
            raise SettingError(
                f"{advice.named(root)}: cannot make that folder ({reason}): {advice.elsewhere()}"
            ) from None
        if not os.access(root, os.W_OK):
            raise SettingError(f"{root} is not writable: {advice.elsewhere()}")
    for name in missing:
        if not download(name, root, mirrors, md5, deadline_s):
            raise missing_error(root, advice)
    return {name: find(root, name) for name in FILES}


def to_pairs(images: np.ndarray, labels: np.ndarray) -> TensorPairs:
    """Float images in [0, 1] and int64 labels, converted (so copied): torch owns them."""
    inputs = uint8_tensor(images).to(torch.float32).div_(255)
    return TensorPairs(inputs, uint8_tensor(labels).to(torch.int64))


def uint8_tensor(array: np.ndarray) -> torch.Tensor:
    """The uint8 array as a tensor, sharing its memory where torch allows (it is converted next)."""
    # torch refuses to share read-only memory (a parsed file's bytes): that one is copied.
    return torch.from_numpy(array) if array.flags.writeable else torch.tensor(array)


def decode(root: Path, paths: dict[str, Path], key: dict[str, str]) -> decoded.Arrays:
    """The files' arrays and pixel counts: from their decoded copy where it matches, else parsed.

    `key` maps each file's name to its MD5, as on disk now.
    """
    cached = decoded.read(root, key)
    if cached is not None:
        return cached
    images, labels = read_pair(paths[TRAIN_IMAGES], paths[TRAIN_LABELS])
    test_images, test_labels = read_pair(paths[TEST_IMAGES], paths[TEST_LABELS])
    if images.shape[1:] != test_images.shape[1:]:
        raise SettingError(
            f"{paths[TRAIN_IMAGES]} holds images of {images.shape[1:]} but "
            f"{paths[TEST_IMAGES]} holds {test_images.shape[1:]}"
        )
    arrays = (images, labels, test_images, test_labels, pixel_counts(images))
    decoded.write(root, key, arrays)
    return arrays


@dataclass(frozen=True)
class Order:
    """Which training-file samples become the training split and which the validation split."""

    train: np.ndarray
    val: np.ndarray


def split_order(
    count: int,
    num_val_samples: int,
    num_train_samples: int | None,
    seed: int,
    key: str | None = "dataset.source",
) -> Order:
    """A seeded random train/validation split; optionally only the first training samples."""
    if not 0 < num_val_samples < count:
        raise SettingError(
            f"{key}.num_val_samples={num_val_samples} must be between 1 and "
            f"{count - 1} (the file holds {count} training samples)"
        )
    if num_train_samples is not None and num_train_samples < 1:
        raise SettingError(
            f"{key}.num_train_samples={num_train_samples} must be >= 1, or null for all"
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).numpy()
    return Order(train=order[num_val_samples:][:num_train_samples], val=order[:num_val_samples])


def idx(
    root: str | None,
    mirrors: Sequence[str],
    md5: Mapping[str, str] | None,
    num_val_samples: int,
    num_train_samples: int | None,
    seed: int,
    download_deadline_s: float,
    key: str | None = "dataset.source",
) -> Splits:
    """Any dataset in MNIST's four-file IDX layout; sizes and class count come from the files.

    `key` is where these arguments live in the config (`benchmark.data` in the benchmark), so
    that every message names the setting to change.
    """
    if root is None:
        # A Python check rather than `???` in the YAML: Hydra prints this without a traceback.
        raise SettingError(f"{key}.root is required: the folder with {', '.join(FILES)}")
    advice = Advice(key, tuple(mirrors))
    sizes = (num_val_samples, num_train_samples, seed)
    return load(Path(root).expanduser(), md5 or {}, advice, download_deadline_s, sizes)


def load(
    root: Path,
    md5: Mapping[str, str],
    advice: Advice,
    deadline_s: float,
    sizes: tuple[int, int | None, int],
    classes: int | None = None,
) -> Splits:
    """Find (or fetch), verify, decode and split the four files; damage named with the fix.

    `classes`: how many the labels may name (MNIST's 10); None: as many as the files name.
    The jobs of a sweep that run in one process (the basic launcher, a joblib worker) load the
    same files with the same split: the later ones get the first one's tensors back
    (`data.remembered`), once the files' MD5s show they are still the same files.
    """
    try:
        paths = obtain(root, advice.sources, md5, deadline_s, advice)
        key = {path.name: verify(path, md5) for path in paths.values()}  # one MD5 pass: check + key

        def make() -> Splits:
            arrays = decode(root, paths, key)
            check_labels(arrays, paths, classes)
            return split(arrays, sizes, advice.key, Origin(f"the IDX files in {root}"))

        return remembered(("idx", tuple(sorted(key.items())), sizes, classes), make)
    except DamagedFile as error:
        raise SettingError(f"{error}: {advice.replace()}") from None
    except OSError as error:  # a file that cannot be read: no permission, an I/O error
        raise SettingError(
            f"cannot read {error.filename or root} ({error.strerror or error}): make it "
            f"readable, or {advice.elsewhere()}"
        ) from None


def check_labels(arrays: decoded.Arrays, paths: dict[str, Path], classes: int | None) -> None:
    """Refuse a label beyond the dataset's classes, naming the file that holds it."""
    _, labels, _, test_labels, _ = arrays
    for name, found in ((TRAIN_LABELS, labels), (TEST_LABELS, test_labels)):
        if classes is not None and int(found.max()) >= classes:
            raise DamagedFile(
                f"{paths[name]} holds the label {int(found.max())}, but this dataset's labels "
                f"are 0 to {classes - 1}"
            )


def split(
    arrays: decoded.Arrays, sizes: tuple[int, int | None, int], key: str | None, origin: Origin
) -> Splits:
    """The training, validation and test splits as float tensors, normalised."""
    images, labels, test_images, test_labels, counts = arrays
    num_val_samples, num_train_samples, seed = sizes
    order = split_order(len(labels), num_val_samples, num_train_samples, seed, key)
    train, val = (images[order.train], labels[order.train]), (images[order.val], labels[order.val])
    if len(order.train) + len(order.val) < len(labels):  # only some: count what is trained on
        counts = pixel_counts(train[0])
    else:  # all but the validation images: fewer to count
        counts = counts - pixel_counts(val[0])
    num_classes = int(max(labels.max(), test_labels.max())) + 1
    test = to_pairs(test_images, test_labels)
    data = Splits(to_pairs(*train), to_pairs(*val), num_classes, test, origin)
    return normalize(data, pixel_std_mean(counts))


def pixel_counts(images: np.ndarray) -> np.ndarray:
    """How many pixels have each of the 256 values."""
    return torch.bincount(uint8_tensor(images).flatten(), minlength=256).numpy()


def pixel_std_mean(pixel_counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.std_mean` of images as `to_pairs` makes them, from how many pixels have each value."""
    # 256 possible values: sums over them in float64 give what std_mean's float64 passes over
    # every pixel give (the same float32 figures on MNIST's splits), without such a pass.
    counts = torch.from_numpy(pixel_counts).to(torch.float64)
    values = torch.arange(256, dtype=torch.float32).div_(255).to(torch.float64)
    total = counts.sum()
    mean = (counts * values).sum() / total
    var = (counts * (values - mean) ** 2).sum() / (total - 1)
    return var.sqrt().to(torch.float32), mean.to(torch.float32)


def mnist(
    root: str | None,
    mirrors: Sequence[str],
    download: bool,
    checksums: bool,
    num_val_samples: int,
    num_train_samples: int | None,
    seed: int,
    download_deadline_s: float,
    key: str | None = "dataset.source",
) -> Splits:
    """Real MNIST from `root` (default: $MNISTLAB_DATA, else the user cache); fetched if missing."""
    advice = Advice(key, tuple(mirrors), download_off=not download, env_var=root is None)
    return load(
        default_root() if root is None else Path(root).expanduser(),
        MNIST_MD5 if checksums else {},
        advice,
        download_deadline_s,
        (num_val_samples, num_train_samples, seed),
        classes=10,
    )
