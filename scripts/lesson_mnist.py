"""The lesson's plain script: real MNIST through a Dataset and a DataLoader, the five steps.

    python scripts/lesson_mnist.py <folder with the four IDX files> [epochs]

The yardstick scripts/memory.py measures mnistlab against: the lesson MLP (Flatten,
Linear(784,128), ReLU, Linear(128,10)), CrossEntropyLoss, Adam 1e-3, batch 64, 3 epochs, a
validation pass per epoch and a test pass at the end. Nothing of mnistlab is imported.
"""

import gzip
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array of its declared shape."""
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find(folder: Path, stem: str) -> Path:
    return next(path for path in folder.iterdir() if path.name.startswith(stem))


class MNIST(Dataset):
    def __init__(self, folder: Path, split: str) -> None:
        images = read_idx(find(folder, f"{split}-images-idx3-ubyte"))
        self.images = torch.from_numpy(images.astype(np.float32) / 255.0)
        self.labels = torch.from_numpy(
            read_idx(find(folder, f"{split}-labels-idx1-ubyte")).astype(np.int64)
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    right = total = 0
    with torch.no_grad():
        for x, y in loader:
            right += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    model.train()
    return right / total


def main() -> None:
    folder, epochs = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3
    torch.manual_seed(0)
    full, test = MNIST(folder, "train"), MNIST(folder, "t10k")
    train, val = torch.utils.data.random_split(full, [55000, 5000])
    train_loader = DataLoader(train, batch_size=64, shuffle=True)
    val_loader, test_loader = DataLoader(val, batch_size=1024), DataLoader(test, batch_size=1024)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        for x, y in train_loader:
            optimizer.zero_grad()  # the five steps
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: val accuracy {accuracy(model, val_loader):.4f}", flush=True)
    print(f"test accuracy {accuracy(model, test_loader):.4f}")


if __name__ == "__main__":
    main()
