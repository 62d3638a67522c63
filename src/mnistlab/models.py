"""Small classifiers. Input and output sizes come from the data at the call site."""

import math
from collections.abc import Sequence

import torch
from torch import nn


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
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        # (H, W) images get a channel dimension in forward; (C, H, W) images keep theirs.
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
