"""One epoch of the five-step loop (forward, loss, zero_grad, backward, step), and evaluation.

`train_epoch` takes the steps with the bookkeeping that makes a run resumable and fast: running
sums kept on the device and read only at logging points; `evaluate` measures a split.
"""

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from mnistlab import SettingError
from mnistlab.data.splits import Batch
from mnistlab.loop.progress import Progress
from mnistlab.parts import precision
from mnistlab.parts.distributed import SINGLE, World


class NonFiniteLoss(SettingError):
    """The loss became NaN or infinite: the run stops as failed."""


class OutOfMemory(SettingError):
    """A step or an evaluation did not fit in memory: the run stops, in one line."""


# How torch's allocators say it: the CPU's "can't allocate memory", CUDA's "out of memory",
# a C++ kernel's std::bad_alloc.
OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "not enough memory", "bad_alloc")


@contextmanager
def within_memory(what: Callable[[], str], device: torch.device) -> Iterator[None]:
    """Turn an allocation that failed into one line saying what ran out and what to change.

    mnistlab.run.build refuses what will clearly not fit before training; this catches what
    its estimate cannot see (a custom model, kernels' scratch space, memory others took since).
    """
    try:
        yield
    except (MemoryError, RuntimeError) as err:
        text = " ".join(str(err).split())
        if not isinstance(err, MemoryError) and not any(s in text.lower() for s in OUT_OF_MEMORY):
            raise
        where = "CPU" if device.type == "cpu" else device.type.upper()
        raise OutOfMemory(
            f"{what()} ran out of {where} memory ({text[:200] or 'MemoryError'}): use a smaller "
            "model or dataset.loader.batch_size, or free some memory"
        ) from None


@dataclass(frozen=True)
class StepOptions:
    """How `train_epoch` takes each step: the loop settings it needs, and no more.

    No defaults: the values come from the `loop` config (mnistlab.run.build.plan)."""

    log_every: int  # read the running sums and log their means every this many steps
    grad_clip_norm: float | None
    skip_nonfinite: bool  # drop a batch whose loss is NaN/Inf (a device sync per step)
    precision: str  # the forward pass's: 32, bf16 or 16-mixed (mnistlab.parts.precision)
    label_smoothing: float
    channels_last: bool  # 4-D input batches in channels-last memory order


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    *,
    total: int,
    log: Callable[[int, dict[str, float]], None],
    options: StepOptions,
    scheduler: LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    after_step: Callable[[], bool] = lambda: False,
    description: str = "",
    world: World = SINGLE,
) -> bool:
    """Train over `batches`, updating `progress`; return False if `after_step` asked to stop.

    Losses and correct counts stay on the device and are only read every `options.log_every`
    steps (and at the epoch's end), so the loop never waits for the device on ordinary
    steps. `log(step, {"loss", "accuracy", "lr"})` gets each window's means. `scheduler`,
    if any, is stepped after every optimizer step.
    """
    loss_fn = nn.CrossEntropyLoss(label_smoothing=options.label_smoothing)
    step = Step(optimizer, loss_fn, options, scheduler, scaler)
    model.train()
    with (
        tqdm(
            total=total,
            initial=progress.epoch_step,
            desc=description,
            disable=None if world.is_main else True,  # one progress bar: rank 0's
            leave=False,
            mininterval=0.5,
        ) as bar,
        within_memory(lambda: f"training step {progress.step + 1}", progress.epoch_loss.device),
    ):
        for inputs, targets in batches:
            train_step(model, inputs, targets, progress, step)
            progress.advance(len(targets))
            bar.update()
            if progress.step % options.log_every == 0:
                window = log_window(progress, optimizer, log, world)
                bar.set_postfix(loss=f"{window:.4f}", refresh=False)
            if after_step():
                return False
    if progress.window_steps:  # the epoch's last, partial window reaches the curve too
        log_window(progress, optimizer, log, world)
    return True


class Step(NamedTuple):
    """What one training step works with besides the model and the batch."""

    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    options: StepOptions
    scheduler: LRScheduler | None
    scaler: torch.amp.GradScaler | None


def train_step(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, progress: Progress, step: Step
) -> None:
    """The lesson's five steps on one batch; a non-finite loss skips it where options say so."""
    device, options = progress.epoch_loss.device, step.options
    inputs = to_device(inputs, device, options.channels_last)
    targets = targets.to(device, non_blocking=True)
    with precision.autocast(options.precision, device):
        logits = model(inputs)  # 1. forward
    loss = step.loss_fn(logits.float(), targets)  # 2. loss
    if options.skip_nonfinite and not torch.isfinite(loss):  # a device sync
        progress.skipped += 1
        return
    step.optimizer.zero_grad(set_to_none=True)  # 3. clear old gradients
    update(model, step.optimizer, loss, step.scaler, options.grad_clip_norm)  # 4. and 5.
    if step.scheduler is not None:
        step.scheduler.step()
    count(progress, loss.detach(), logits.detach(), targets)


def to_device(inputs: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A batch of inputs on the device, images in channels-last order where asked."""
    inputs = inputs.to(device, non_blocking=True)
    if channels_last and inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def update(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    scaler: torch.amp.GradScaler | None,
    clip: float | None,
) -> None:
    """Backward and optimizer step; with a float16 loss scaler, scaled and unscaled around it."""
    if scaler is None:
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if clip is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    scaler.step(optimizer)  # skipped where the scaled gradients overflowed
    scaler.update()


def count(progress: Progress, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor):
    """Add a step's loss and correct predictions to the running sums, on the device."""
    progress.epoch_loss.add_(loss, alpha=len(targets))  # in place: one small kernel
    progress.window_loss.add_(loss)
    # Counted per window only (the epoch's count gathers them at logging points): about 1% of
    # a lesson-MLP step on CPU.
    progress.window_correct.add_(logits.argmax(dim=1).eq_(targets).sum())  # eq_: no new tensor


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
    model: nn.Module,
    batches: Iterable[Batch],
    device: torch.device,
    options: StepOptions,
    seen: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy of `model` over `batches`, in the precision it trains in.

    `seen(inputs, targets, logits)` gets each batch too (the run's predictions, on the test).
    """
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    with within_memory(lambda: "evaluation", device):
        for inputs, targets in batches:
            inputs, targets = to_device(inputs, device, options.channels_last), targets.to(device)
            with precision.autocast(options.precision, device):
                logits = model(inputs).float()
            loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum")
            correct += (logits.argmax(dim=1) == targets).sum()
            count += len(targets)
            if seen is not None:
                seen(inputs, targets, logits)
    return loss_sum.item() / count, correct.item() / count
