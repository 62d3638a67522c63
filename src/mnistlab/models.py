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
