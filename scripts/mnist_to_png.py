"""python scripts/mnist_to_png.py [MNIST folder] [output folder]: MNIST's IDX files as PNG folders.

Writes <output>/train/<label>/<index>.png (the 60,000 training images) and
<output>/test/<label>/<index>.png (the 10,000 test images), one grayscale PNG per image, named
by its place in the IDX file (00000.png ...). `dataset=image_folder` orders samples by file
name, so it sees the images in the IDX files' order and makes the same train/val split as
`dataset=mnist` with the same seed. Defaults: /work/shared/data/mnist, /tmp/mnist_png. Write it
outside the checkout: the images are data, not code. Then:

  mnistlab-train dataset=image_folder dataset.source.root=/tmp/mnist_png/train \
      dataset.source.test_root=/tmp/mnist_png/test
"""

import sys
import time
from pathlib import Path

from mnistlab.data.idx import find, read_pair
from mnistlab.data.mnist import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS
from mnistlab.data.pillow import write_png


def export(images_path: Path, labels_path: Path, out: Path) -> int:
    """One split's images as <out>/<label>/<index>.png; how many were written."""
    images, labels = read_pair(images_path, labels_path)
    for label in sorted(set(labels.tolist())):
        (out / str(label)).mkdir(parents=True, exist_ok=True)
    width = len(str(len(images) - 1))
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        write_png(out / str(label) / f"{index:0{width}d}.png", image)
    return len(images)


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data/mnist")
    target = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/mnist_png")
    if not source.is_dir():
        sys.exit(f"no MNIST folder at {source}: give the folder with the four IDX files")
    started = time.perf_counter()
    for split, images, labels in (
        ("train", TRAIN_IMAGES, TRAIN_LABELS),
        ("test", TEST_IMAGES, TEST_LABELS),
    ):
        paths = find(source, images), find(source, labels)
        if None in paths:
            sys.exit(f"{source} lacks {images} or {labels} (gzipped or not)")
        count = export(*paths, target / split)
        print(f"{count} images in {target / split}")
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
