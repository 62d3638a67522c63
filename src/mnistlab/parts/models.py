"""Small classifiers. Input and output sizes come from the data at the call site."""

import math
from collections.abc import Sequence

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from mnistlab import SettingError


def build(node: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Instantiate the model for this data and run it once on a zero sample.

    A model that cannot take the data (a CNN on 3 features, images too small for its pooling)
    then fails here, in one line, before training, rather than with a traceback mid-run.
    """
    what = f"model ({node._target_}) for inputs of shape {input_shape} and {num_classes} classes"
    try:
        model = instantiate(node, input_shape=input_shape, num_classes=num_classes)
    except InstantiationException as err:
        if isinstance(err.__cause__, SettingError):
            raise err.__cause__ from None
        cause = str(err.__cause__).partition("\n")[0]
        raise SettingError(f"cannot build the {what}: {cause}") from None
    model.eval()  # no dropout, no batch-norm statistics: the probe leaves no trace
    try:
        with torch.no_grad():
            logits = model(torch.zeros(1, *input_shape))
    except RuntimeError as err:  # shape mismatches: torch's message says which layer
        first_line = str(err).partition("\n")[0]
        raise SettingError(f"the {what} fails on one sample: {first_line}") from None
    model.train()
    if tuple(logits.shape) != (1, num_classes):
        raise SettingError(
            f"the {what} returns {tuple(logits.shape)} for one sample, not (1, {num_classes})"
        )
    return model


class MNISTClassifier(nn.Module):
    """The lesson's MLP: Flatten -> Linear(784, 128) -> ReLU -> Linear(128, 10), raw logits."""

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(math.prod(input_shape), hidden)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No softmax: CrossEntropyLoss wants raw logits.
        return self.fc2(self.dropout(self.relu(self.fc1(self.flatten(x)))))


PADDINGS = ("same", "valid")


def image_layout(
    input_shape: Sequence[int], kernel_sizes: tuple[int, int], padding: str
) -> tuple[int, int, int]:
    """The feature map's height and width after both blocks, and the input's channels."""
    if padding not in PADDINGS:
        raise SettingError(f"model.padding={padding!r} is unknown: use same or valid")
    if len(input_shape) not in (2, 3):
        raise SettingError(
            f"model=cnn needs images of at least 4x4 pixels, (H, W) or (C, H, W) (its two "
            f"poolings halve them twice), but the dataset's inputs have shape "
            f"{tuple(input_shape)}: use model=mlp"
        )
    # (H, W) images get a channel dimension in forward; (C, H, W) images keep theirs.
    in_channels, height, width = (1, *input_shape) if len(input_shape) == 2 else input_shape
    height, width = (feature_size(n, kernel_sizes, padding) for n in (height, width))
    if min(height, width) < 1:
        raise SettingError(
            f"model=cnn with kernel_sizes={list(kernel_sizes)} and padding={padding} needs "
            "larger images (its convolutions and two poolings shrink them to nothing), but "
            f"the dataset's inputs have shape {tuple(input_shape)}: use model=mlp"
        )
    return height, width, in_channels


class ConvNet(nn.Module):
    """A small CNN: two conv + max-pool + ReLU blocks, one hidden dense layer, optional dropout.

    `padding="same"` keeps each conv's output the size of its input; "valid" shrinks it by
    the kernel size less one (the speed-run CNN: 5x5 then 3x3, valid, 28 -> 24 -> 12 -> 10 -> 5).
    `shift` > 0 moves each training image by up to that many pixels (`RandomShift`).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: tuple[int, int],
        hidden: int,
        dropout: float,
        kernel_sizes: tuple[int, int],
        padding: str,
        shift: int,
    ) -> None:
        super().__init__()
        self.shift = RandomShift(shift)
        height, width, in_channels = image_layout(input_shape, kernel_sizes, padding)
        # Half the image or more moves a centred digit out of view: only edge pixels are left.
        rows, columns = input_shape[-2:]
        if 2 * shift >= min(rows, columns):
            raise SettingError(
                f"model.shift={shift} would move {rows}x{columns} images by half their size or "
                f"more: use at most {(min(rows, columns) - 1) // 2} pixels, e.g. model.shift=2"
            )
        first, second = channels
        # Pooling before the ReLU gives the same values and gradients as after it (the max of
        # rectified values is the rectified max), with the ReLU on a quarter of the values:
        # 12-19% less time per step of the speed-run CNN (bf16, channels-last, batch 256, 1 and
        # 2 threads, interleaved). The convs keep their state_dict keys.
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, first, kernel_size=kernel_sizes[0], padding=padding),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(first, second, kernel_size=kernel_sizes[1], padding=padding),
            nn.MaxPool2d(2),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(second * height * width, hidden),
            nn.ReLU(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
        return self.classifier(self.features(self.shift(x)))  # raw logits for CrossEntropyLoss


def feature_size(size: int, kernel_sizes: Sequence[int], padding: str) -> int:
    """An image side after the two conv + pool blocks."""
    for kernel in kernel_sizes:
        size = (size if padding == "same" else size - kernel + 1) // 2
    return size


class RandomShift(nn.Module):
    """Augmentation on the device: in training mode, move each image of a batch by its own
    random offset of up to `pixels` rows and columns (edge pixels repeated into the gap);
    in eval mode, or with `pixels=0`, the images pass unchanged.

    Batched tensor ops only (one pad, one gather), drawn from torch's generator on the
    images' device, so checkpoints (which save every RNG state) resume it exactly.
    """

    def __init__(self, pixels: int) -> None:
        super().__init__()
        if pixels < 0:
            raise SettingError(f"model.shift={pixels} must be >= 0 (0: no shifts)")
        self.pixels = pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.pixels == 0:
            return x
        n, _, height, width = x.shape
        s, device = self.pixels, x.device
        padded = nn.functional.pad(x, (s, s, s, s), mode="replicate")
        dy, dx = torch.randint(0, 2 * s + 1, (2, n, 1, 1), device=device)
        rows = dy + torch.arange(height, device=device).view(1, height, 1)
        cols = dx + torch.arange(width, device=device).view(1, 1, width)
        batch = torch.arange(n, device=device).view(n, 1, 1)
        # Indexing (N, C, H', W') with (batch, :, rows, cols) gives (N, H, W, C): a permuted
        # view of that is (N, C, H, W) in channels-last order.
        return padded[batch, :, rows, cols].permute(0, 3, 1, 2)
