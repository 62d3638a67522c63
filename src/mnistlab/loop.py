"""The plain five-step training loop (forward, loss, zero_grad, backward, step) and evaluation."""

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from mnistlab import SettingError
from mnistlab.config import LoopSettings
from mnistlab.data import Batch
from mnistlab.distributed import SINGLE, World

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where training stands. Checkpoints save it, so a resumed run continues exactly."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken (the global batch index)
    epoch_step: int = 0  # batches done in the current epoch
    epoch_samples: int = 0
    samples: int = 0  # samples trained on, all epochs
    seconds: float = 0.0  # time spent training, all epochs
    skipped: int = 0  # batches dropped for a non-finite loss (nan_policy=skip)
    window_steps: int = 0  # batches since the last logging point
    window_samples: int = 0
    # Running sums stay on the device; they are read only at logging points.
    epoch_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    window_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    epoch_correct: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    window_correct: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    val: dict[str, float] = field(default_factory=dict)  # the last validation metrics
    wall_seconds: float = 0.0  # wall-clock time in `fit`, all the run's parts up to now
    resumes: list[dict] = field(default_factory=list)  # each resume's step and overrides

    @classmethod
    def on(cls, device: torch.device, step: int = 0) -> "Progress":
        """A fresh start at `step`, with the running sums on `device`."""
        # Separate tensors: the loop adds to each in place.
        sums = {name: torch.zeros((), device=device) for name in SUMS}
        return cls(step=step, **sums)

    def start_epoch(self) -> None:
        self.epoch_step, self.epoch_samples = 0, 0
        self.epoch_loss = torch.zeros((), device=self.epoch_loss.device)
        self.epoch_correct = torch.zeros((), device=self.epoch_loss.device)


# The running sums of `Progress` that live on the device (checkpoint.restore moves them).
SUMS = ("epoch_loss", "window_loss", "epoch_correct", "window_correct")


class NonFiniteLoss(SettingError):
    """The loss became NaN or infinite: the run stops as failed."""


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    settings: LoopSettings,
    progress: Progress,
    *,
    total: int,
    log: Callable[[int, dict[str, float]], None],
    after_step: Callable[[], bool] = lambda: False,
    description: str = "",
    world: World = SINGLE,
) -> bool:
    """Train over `batches`, updating `progress`; return False if `after_step` asked to stop.

    Losses and correct counts stay on the device and are only read every
    `log_every_n_batches` steps (and at the epoch's end), so the loop never waits for the
    device on ordinary steps. `log(step, {"loss", "accuracy", "lr"})` gets each window's means.
    """
    loss_fn = nn.CrossEntropyLoss()
    device = progress.epoch_loss.device
    model.train()
    every, skip_bad = settings.log_every_n_batches, settings.nan_policy == "skip"
    with tqdm(
        total=total,
        initial=progress.epoch_step,
        desc=description,
        disable=None if world.is_main else True,  # one progress bar: rank 0's
        leave=False,
        mininterval=0.5,
    ) as bar:
        for inputs, targets in batches:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            logits = model(inputs)  # 1. forward
            loss = loss_fn(logits, targets)  # 2. loss
            if skip_bad and not torch.isfinite(loss):  # a device sync: only with nan_policy=skip
                progress.skipped += 1
            else:
                optimizer.zero_grad(set_to_none=True)  # 3. clear old gradients
                loss.backward()  # 4. backward
                if settings.grad_clip_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip_norm)
                optimizer.step()  # 5. update
                loss = loss.detach()
                progress.epoch_loss.add_(loss, alpha=len(targets))  # in place: one small kernel
                progress.window_loss.add_(loss)
                # Counted per window only (the epoch's count gathers them at logging points):
                # about 1% of a lesson-MLP step on CPU.
                progress.window_correct.add_((logits.detach().argmax(dim=1) == targets).sum())
            progress.step += 1
            progress.epoch_step += 1
            progress.epoch_samples += len(targets)
            progress.window_steps += 1
            progress.window_samples += len(targets)
            bar.update()
            if progress.step % every == 0:
                window = log_window(progress, optimizer, log, world)
                bar.set_postfix(loss=f"{window:.4f}", refresh=False)
            if after_step():
                return False
    if progress.window_steps:  # the epoch's last, partial window reaches the curve too
        log_window(progress, optimizer, log, world)
    return True


def log_window(progress: Progress, optimizer, log: Callable, world: World) -> float:
    """Read the window's sums (one device sync), log their means, start a new window."""
    first, steps = progress.step - progress.window_steps + 1, progress.window_steps
    where = f"steps {first}-{progress.step}" if steps > 1 else f"step {progress.step}"
    loss = world.mean(progress.window_loss).item() / steps
    accuracy = world.mean(progress.window_correct).item() / progress.window_samples
    progress.epoch_correct.add_(progress.window_correct)
    log(progress.step, {"loss": loss, "accuracy": accuracy, "lr": optimizer.param_groups[0]["lr"]})
    check_finite(loss, f"training loss at {where}")  # after logging: the curve shows it
    device = progress.window_loss.device
    progress.window_loss = torch.zeros((), device=device)
    progress.window_correct = torch.zeros((), device=device)
    progress.window_steps, progress.window_samples = 0, 0
    return loss


def check_finite(value: float, what: str) -> float:
    """Return `value`, or raise NonFiniteLoss saying which loss went bad, and where."""
    if not math.isfinite(value):
        raise NonFiniteLoss(f"the {what} became {value}")
    return value


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
