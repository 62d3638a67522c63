"""model.shift: random shifts of the training images, as batched tensor ops on the device."""

import pytest
import torch

from conftest import compose_config
from mnistlab import SettingError
from mnistlab.config import checks
from mnistlab.parts.models import RandomShift, build


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`image` (C, H, W) moved by (dy, dx), edge pixels repeated: the slow, obvious way."""
    _, height, width = image.shape
    rows = (torch.arange(height) - dy).clamp(0, height - 1)
    cols = (torch.arange(width) - dx).clamp(0, width - 1)
    return image[:, rows][:, :, cols]


def test_each_training_image_moves_by_its_own_offset_within_range():
    torch.manual_seed(0)
    images = torch.randn(64, 1, 12, 10)
    out = RandomShift(2).train()(images)
    assert out.shape == images.shape
    offsets = set()
    for image, moved in zip(images, out, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(moved, shifted(image, dy, dx))
        ]
        assert len(matches) == 1  # random data: exactly one offset explains it
        offsets |= set(matches)
    assert len(offsets) > 10  # offsets differ between the images of one batch (25 possible)


def test_evaluation_and_shift_zero_leave_images_alone():
    images = torch.randn(4, 1, 8, 8)
    assert RandomShift(2).eval()(images) is images
    assert RandomShift(0).train()(images) is images


def test_the_cnn_shifts_only_while_training():
    torch.manual_seed(0)
    model = build(compose_config("model=cnn", "model.shift=2").model, (28, 28), 10)
    images = torch.randn(8, 28, 28)
    model.eval()
    assert torch.equal(model(images), model(images))
    model.train()
    assert not torch.equal(model(images), model(images))  # a new draw of offsets each time


def test_a_negative_shift_is_refused_before_the_run():
    with pytest.raises(SettingError, match=r"^model.shift=-1 must be >= 0 pixels"):
        checks.check(compose_config("model=cnn", "model.shift=-1"))
