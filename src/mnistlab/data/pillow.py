"""Every use of Pillow: read an image file's size, decode it to grayscale, write a PNG.

One small module, so that the image folders (mnistlab.data.folders), the PNG export script and
the tests reach Pillow in one place (matplotlib installs it; pyproject.toml names it). A file
Pillow cannot read is one `NotAnImage` naming it. No torch.
"""

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnistlab import SettingError, files

SUFFIXES = (".png", ".jpg", ".jpeg")  # what an image folder reads (any case); others are refused


class NotAnImage(SettingError):
    """A file in an image folder that Pillow cannot read as an image."""


def size_of(path: Path) -> tuple[int, int]:
    """The image's (height, width), from its header alone: nothing is decoded."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as error:
        raise NotAnImage(f"{path} is not an image Pillow can read ({reason(error)})") from None
    return height, width


def gray(path: Path) -> np.ndarray:
    """The image as uint8 grayscale (height, width); colour converted with ITU-R 601 luma."""
    try:
        with Image.open(path) as image:
            image = image if image.mode == "L" else image.convert("L")
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise NotAnImage(f"{path} is not an image Pillow can read ({reason(error)})") from None


def reason(error: Exception) -> str:
    """An error's first line, without Pillow's repetition of the path."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text.split(" '", 1)[0] if isinstance(error, UnidentifiedImageError) else text


def write_png(path: Path, pixels: np.ndarray) -> None:
    """A uint8 (height, width) array as a grayscale PNG at `path`, written atomically."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, "PNG")
    files.write_bytes(path, buffer.getbuffer(), durable=False)
