"""`dataset=image_folder`: one folder per class of PNG/JPEG files, each decoded as it is asked for.

The training root's class folders (sorted by name) are the classes; a test root, where given,
holds the same classes (or some). Samples are ordered by file name, then class, across all class
folders: files numbered as scripts/mnist_to_png.py numbers them keep their source's order, so
the train/val split (as `dataset=idx` draws it, mnistlab.data.mnist.split_order) and every
batch are those of the IDX files. Pixels become float32 in [0, 1], standardised with the mean
and std of the training split (as the IDX path does), measured in one pass over its images
unless given. Everything is checked before training: the folders, every file's header, one
image size throughout.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mnistlab import SettingError
from mnistlab.data.mnist import pixel_std_mean, split_order, uint8_tensor
from mnistlab.data.pillow import SUFFIXES, NotAnImage, gray, size_of
from mnistlab.data.splits import Origin, Splits


@dataclass(frozen=True)
class Found:
    """The image files of one root: their paths, labels and byte sizes, in sample order."""

    paths: list[Path]
    labels: list[int]
    sizes: list[int]

    def take(self, order: np.ndarray) -> "Found":
        """The samples at `order`'s indices, in that order."""
        picked = order.tolist()
        return Found(
            *([column[i] for i in picked] for column in (self.paths, self.labels, self.sizes))
        )


class ImageFiles(Dataset):
    """Image files and their labels; `dataset[i]` decodes file i: (float image, int64 label)."""

    def __init__(self, found: Found, root: Path, shape: tuple[int, int], scale: tuple) -> None:
        self.found, self.root, self.shape = found, root, shape
        self.std, self.mean = scale  # float32 0-d tensors, as `normalize` takes them
        self.targets = torch.tensor(found.labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.found.paths[index]
        pixels = gray(path)
        if pixels.shape != self.shape:  # changed since the run checked it
            raise SettingError(f"{path} is now {pixels.shape}, not {self.shape} as when checked")
        # The IDX path's operations, in its order: the same float32 values for the same pixels.
        image = uint8_tensor(pixels).to(torch.float32).div_(255).sub_(self.mean).div_(self.std)
        return image, self.targets[index]

    def fingerprint(self) -> str:
        """A SHA-256 of every file's path (from the root), byte size and label, and the scale."""
        digest = hashlib.sha256(f"{self.shape} {float(self.mean)} {float(self.std)}".encode())
        columns = (self.found.paths, self.found.sizes, self.found.labels)
        for path, size, label in zip(*columns, strict=True):
            digest.update(f"{path.relative_to(self.root)} {size} {label}\n".encode())
        return digest.hexdigest()


def image_folder(
    root: str | None,
    test_root: str | None,
    num_val_samples: int,
    num_train_samples: int | None,
    seed: int,
    mean: float | None,
    std: float | None,
    key: str = "dataset.source",
) -> Splits:
    """Training and validation from `root`'s class folders, test from `test_root` (optional)."""
    if root is None:
        raise SettingError(
            f"{key}.root is required: a folder with one sub-folder of PNG/JPEG files per class"
        )
    if (mean is None) != (std is None):
        raise SettingError(
            f"{key}.mean={mean} and {key}.std={std}: give both, or neither (null: measured "
            "on the training images)"
        )
    train_root = Path(root).expanduser()
    classes, found = scan(train_root, f"{key}.root")
    order = split_order(len(found.paths), num_val_samples, num_train_samples, seed, key)
    train, val = found.take(order.train), found.take(order.val)
    test, test_root_path = None, None
    if test_root is not None:
        test_root_path = Path(test_root).expanduser()
        test = scan(test_root_path, f"{key}.test_root", classes)[1]
    shape, counts = check_images(train, val, test, key, measure=mean is None)
    scale = pixel_std_mean(counts) if mean is None else fixed_scale(mean, std, key)
    where = f"the image folders in {train_root}" + (f" and {test_root}" if test_root else "")
    return Splits(
        ImageFiles(train, train_root, shape, scale),
        ImageFiles(val, train_root, shape, scale),
        len(classes),
        None if test is None else ImageFiles(test, test_root_path, shape, scale),
        Origin(where),
        scale=(float(scale[1]), float(scale[0])),  # (mean, std): mnistlab-predict's images too
    )


def fixed_scale(mean: float, std: float, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(std, mean) as given, refused where they cannot standardise."""
    if not std > 0:
        raise SettingError(f"{key}.std={std} must be > 0 (null with mean=null: measured)")
    return torch.tensor(std, dtype=torch.float32), torch.tensor(mean, dtype=torch.float32)


def scan(root: Path, setting: str, classes: list[str] | None = None) -> tuple[list[str], Found]:
    """The class names and the image files of `root`, in sample order; refused, naming
    `setting`, where it is no folder of class folders of images. `classes`: the training
    root's, which a test root's folders must be among (their labels are those)."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise SettingError(
            f"{setting}={root} {what}: point it at a folder with one sub-folder of PNG/JPEG "
            "files per class"
        )
    names = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not hidden(entry))
    if not names:
        raise SettingError(
            f"{setting}={root} holds no class folders: put each class's images in a sub-folder "
            f"named after it ({root}/<class>/<image>.png)"
        )
    known = names if classes is None else classes
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SettingError(
            f"{setting}={root} has class folders the training root lacks ({', '.join(unknown)}): "
            f"its classes are {', '.join(known)}; remove or rename those folders"
        )
    rows = [row for name in names for row in class_files(root / name, known.index(name), setting)]
    rows.sort(key=lambda row: (row[0].name, row[1]))
    return names, Found(*(list(column) for column in zip(*rows, strict=True)))


def class_files(folder: Path, label: int, setting: str) -> list[tuple[Path, int, int]]:
    """(path, label, byte size) of every image in one class folder; anything else refused."""
    rows = []
    for entry in sorted(folder.iterdir()):
        if hidden(entry):  # .DS_Store, editors' temporaries
            continue
        if not entry.is_file() or entry.suffix.lower() not in SUFFIXES:
            raise SettingError(
                f"{entry} is not a PNG or JPEG file ({setting}): a class folder holds only "
                "images; move it out"
            )
        rows.append((entry, label, entry.stat().st_size))
    if not rows:
        raise SettingError(
            f"the class folder {folder} holds no PNG or JPEG files ({setting}): add its images, "
            "or remove the folder"
        )
    return rows


def hidden(entry: Path) -> bool:
    return entry.name.startswith(".")


def check_images(
    train: Found, val: Found, test: Found | None, key: str, measure: bool
) -> tuple[tuple[int, int], np.ndarray | None]:
    """Every image's size, one for all; the training images decoded where `measure` (their
    pixel counts give the mean and std). A file that is no image is named with the fix."""
    counts = np.zeros(256, dtype=np.int64) if measure else None
    shape, first = None, train.paths[0]
    setting = f"{key}.root"
    try:
        for path in train.paths:
            if counts is None:
                found = size_of(path)
            else:
                pixels = gray(path)
                counts += np.bincount(pixels.ravel(), minlength=256)
                found = pixels.shape
            shape = same_size(path, found, shape or found, first, key)
        for where, part in ((f"{key}.root", val), (f"{key}.test_root", test)):
            setting = where  # named if one of its files is no image
            for path in [] if part is None else part.paths:
                same_size(path, size_of(path), shape, first, key)
    except NotAnImage as error:
        raise SettingError(f"{error} ({setting}): remove it, or replace it") from None
    return shape, counts


def same_size(path: Path, found: tuple, shape: tuple, first: Path, key: str) -> tuple:
    """`shape`, where `path`'s image has it; else refused."""
    if found != shape:
        raise SettingError(
            f"{path} is {found[0]}x{found[1]} pixels but {first} is {shape[0]}x{shape[1]}: "
            f"every image of {key}.root and {key}.test_root must have one size; resize them"
        )
    return shape
