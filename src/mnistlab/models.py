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
        self, input_shape: Sequence[int], num_classes: int, hidden: int = 128, dropout: float = 0.0
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


class ConvNet(nn.Module):
    """A small CNN: two conv + max-pool blocks, one hidden dense layer, optional dropout."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        # (H, W) images get a channel dimension in forward; (C, H, W) images keep theirs.
        if len(input_shape) not in (2, 3) or min(input_shape[-2:]) < 4:
            raise SettingError(
                f"model=cnn needs images of at least 4x4 pixels, (H, W) or (C, H, W) (its two "
                f"poolings halve them twice), but the dataset's inputs have shape "
                f"{tuple(input_shape)}: use model=mlp"
            )
        in_channels, height, width = (1, *input_shape) if len(input_shape) == 2 else input_shape
        first, second = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, first, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(second * (height // 4) * (width // 4), hidden),
            nn.ReLU(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
        return self.classifier(self.features(x))  # raw logits for CrossEntropyLoss
