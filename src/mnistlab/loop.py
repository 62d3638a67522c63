"""The plain five-step training loop (forward, loss, zero_grad, backward, step) and evaluation."""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from mnistlab import SettingError
from mnistlab.data import Batch

log = logging.getLogger(__name__)


@dataclass
class LoopSettings:
    """The `loop` config group. Checked when a run starts."""

    epochs: int = 3
    log_every_n_batches: int = 100
    seed: int = 0
    grad_clip_norm: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise SettingError(f"loop.epochs={self.epochs} must be at least 1")
        if self.log_every_n_batches < 1:
            raise SettingError(
                f"loop.log_every_n_batches={self.log_every_n_batches} must be at least 1"
            )
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise SettingError(
                f"loop.grad_clip_norm={self.grad_clip_norm} must be > 0 (null: no clipping)"
            )


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    settings: LoopSettings,
    *,
    first_step: int,
    total: int,
    log_loss: Callable[[int, float], None],
    description: str = "",
) -> tuple[float, int]:
    """Train over `batches`; return the mean training loss and the number of samples seen.

    Losses stay on the device and are only read every `log_every_n_batches` steps, so the
    loop never waits for the device on ordinary steps.
    """
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    every = settings.log_every_n_batches
    epoch_sum = window_sum = torch.zeros((), device=device)
    samples, step = 0, first_step
    with tqdm(total=total, desc=description, disable=None, leave=False, mininterval=0.5) as bar:
        for inputs, targets in batches:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            logits = model(inputs)  # 1. forward
            loss = loss_fn(logits, targets)  # 2. loss
            optimizer.zero_grad(set_to_none=True)  # 3. clear old gradients
            loss.backward()  # 4. backward
            if settings.grad_clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip_norm)
            optimizer.step()  # 5. update
            step += 1
            samples += len(targets)
            loss = loss.detach()
            epoch_sum = epoch_sum + loss * len(targets)
            window_sum = window_sum + loss
            bar.update()
            if step % every == 0:
                window = window_sum.item() / every
                log_loss(step, window)
                bar.set_postfix(loss=f"{window:.4f}", refresh=False)
                window_sum = torch.zeros((), device=device)
    return epoch_sum.item() / max(samples, 1), samples


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[Batch], device: torch.device
) -> tuple[float, float]:
    """Mean loss and accuracy of `model` over `batches`."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for inputs, targets in batches:
        inputs, targets = inputs.to(device), targets.to(device)
        logits = model(inputs)
        loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum")
        correct += (logits.argmax(dim=1) == targets).sum()
        count += len(targets)
    return loss_sum.item() / count, correct.item() / count
