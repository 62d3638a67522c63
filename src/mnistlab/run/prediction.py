"""mnistlab-predict's work: image files through a run's saved model, each one's class and its
probability.

Each file becomes the tensor the model saw in training: decoded by Pillow to grayscale
(mnistlab.data.pillow), scaled to [0, 1] as the IDX and MNIST builders scale their pixels
(mnistlab.data.mnist.to_pairs), resized to the model's input size where it differs (bilinear,
antialiased), and standardised with the (mean, std) of the run's training images, which its
checkpoint records (mnistlab.run.inputs). A checkpoint saved before that record rebuilds the
run's own data from its config to find them (the data must be at hand).
"""

import csv
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.nn import functional

from mnistlab import SettingError, names
from mnistlab.data import pillow
from mnistlab.data.mnist import uint8_tensor
from mnistlab.data.splits import build as build_data
from mnistlab.files import open_atomic
from mnistlab.loop.step import to_device
from mnistlab.parts import precision
from mnistlab.run import inputs, trained
from mnistlab.run.build import EVAL_BATCH_SIZE
from mnistlab.run.saved import Saved

log = logging.getLogger(__name__)
Row = tuple[str, int, float]  # file, predicted class, its probability


def image_files(given: Sequence[Path]) -> list[Path]:
    """The files named, and the PNG and JPEG files in (and below) the folders named, in order."""
    found: list[Path] = []
    for path in given:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.suffix.lower() in pillow.SUFFIXES)
            found += [p for p in inside if p.is_file()]
        elif path.is_file():
            found.append(path)
        else:
            raise SettingError(f"{path}: no such file or folder: name image files or folders")
    if not found:
        suffixes = ", ".join(pillow.SUFFIXES)
        raise SettingError(f"no image files ({suffixes}) in {', '.join(map(str, given))}")
    return found


def takes(saved: Saved) -> inputs.Inputs:
    """What the model takes in: from its checkpoint's record, or else from the run's own data."""
    found = inputs.read(saved.state, saved.source)
    if found is None:
        log.warning("%s records no input statistics: the run's data is rebuilt", saved.path)
        found = inputs.of(build_data(saved.cfg.dataset.source))
    if len(found.shape) not in (2, 3) or (len(found.shape) == 3 and found.shape[0] != 1):
        raise SettingError(
            f"{saved.source}: the model takes {found}, not grayscale images (height, width): "
            "mnistlab-predict reads grayscale images only"
        )
    if found.scale is None:  # fake_mnist's; or a builder that standardised without `normalize`
        log.warning(
            "%s records no standardisation of the run's inputs: images are only scaled to "
            "[0, 1]; if its data builder standardised them itself, these predictions are off",
            saved.path,
        )
    return found


def image_tensor(path: Path, model_inputs: inputs.Inputs) -> torch.Tensor:
    """One image file as the tensor the model takes (the module's docstring says how)."""
    pixels = pillow.gray(path)
    image = uint8_tensor(pixels).to(torch.float32).div_(255)  # as to_pairs scales its pixels
    size = tuple(model_inputs.shape[-2:])
    if tuple(image.shape) != size:
        resized = functional.interpolate(
            image[None, None], size=size, mode="bilinear", antialias=True, align_corners=False
        )
        image = resized[0, 0]
    if model_inputs.scale is not None:  # as mnistlab.data.splits.normalize: float32 tensors
        mean, std = (torch.tensor(value, dtype=torch.float32) for value in model_inputs.scale)
        image = image.sub_(mean).div_(std)
    return image.reshape(model_inputs.shape)


def predict_files(saved: Saved, files: Sequence[Path]) -> list[Row]:
    """Each file's predicted class and its probability (softmax of the logits)."""
    settings, device = trained.settings_of(saved)
    model_inputs = takes(saved)
    images = torch.stack([image_tensor(path, model_inputs) for path in files])  # all read first
    model = trained.model_of(saved, settings, device, model_inputs)
    options = trained.options_of(saved, settings)
    rows: list[Row] = []
    with torch.no_grad():
        for first in range(0, len(files), EVAL_BATCH_SIZE):
            batch = to_device(
                images[first : first + EVAL_BATCH_SIZE], device, options.channels_last
            )
            with precision.autocast(options.precision, device):
                logits = model(batch).float()
            best = logits.softmax(dim=1).max(dim=1)
            chosen = zip(best.indices.tolist(), best.values.tolist(), strict=True)
            rows += [(str(files[first + i]), c, p) for i, (c, p) in enumerate(chosen)]
    return rows


def write_predictions(out: str, rows: Sequence[Row]) -> None:
    """The CSV (names.PREDICTION_COLUMNS) at `out`, atomically; `-` writes it to stdout."""
    if out == "-":
        write_rows(sys.stdout, rows)
        return
    try:
        with open_atomic(Path(out), durable=False) as file:
            write_rows(file, rows)
    except OSError as error:
        raise SettingError(
            f"--out {out}: cannot write it ({error.strerror or error}): name a file in a folder "
            "you can write to"
        ) from None


def write_rows(file, rows: Sequence[Row]) -> None:
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(names.PREDICTION_COLUMNS)
    writer.writerows((path, chosen, repr(probability)) for path, chosen, probability in rows)
