"""Learning-rate schedules: the `scheduler` config group's builders.

The loop builds one with `instantiate(cfg.scheduler, optimizer=..., total_steps=...,
steps_per_epoch=...)` and steps it after every optimizer step, so every schedule here is
written in steps; epoch-based settings (warm-up, step size) are converted with
`steps_per_epoch`. A builder may return None: no schedule, the optimizer's lr throughout.
The ranges of their settings (pct_start, gamma...) are checked with every component's, by
parameter name, in `mnistlab.config.targets.RANGES`, before a run starts.
"""

import math

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, StepLR

from mnistlab import SettingError

# Schedules that set every step's lr from optimizer.lr and the run's length (loop.epochs): a
# resume may change neither without changing the schedule the checkpoint is part of.
WHOLE_RUN = ("mnistlab.parts.schedulers.onecycle", "mnistlab.parts.schedulers.cosine")
# A checkpoint from before schedulers trained without one.
NONE = {"_target_": "mnistlab.parts.schedulers.constant"}


def build(
    node: DictConfig, optimizer: Optimizer, total_steps: int, steps_per_epoch: int
) -> LRScheduler | None:
    """`instantiate(node, optimizer=..., ...)`; what the builder or torch refuses, in one line."""
    try:
        return instantiate(
            node, optimizer=optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch
        )
    except InstantiationException as err:
        if isinstance(err.__cause__, SettingError):
            raise err.__cause__ from None
        cause = str(err.__cause__).partition("\n")[0]
        raise SettingError(f"scheduler ({node._target_}) refuses its settings: {cause}") from None


def probe(node: DictConfig, epochs: int) -> None:
    """Build the schedule for a stand-in optimizer: bad settings fail before data loads."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    build(node, optimizer, total_steps=epochs * 1000, steps_per_epoch=1000)


def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> None:
    """`scheduler=none`: keep the optimizer's learning rate."""
    return None


def onecycle(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    max_lr: float,
    pct_start: float,
    div_factor: float,
    final_div_factor: float,
) -> LRScheduler:
    """Warm up from max_lr/div_factor to max_lr, then anneal (cosine) far below it."""
    return OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )


def cosine(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float,
    min_factor: float,
) -> LRScheduler:
    """Linear warm-up over `warmup_epochs`, then a cosine from the lr down to lr * min_factor."""
    warmup = round(warmup_epochs * steps_per_epoch)
    if not 0 <= warmup < total_steps:
        raise SettingError(
            f"scheduler.warmup_epochs={warmup_epochs} must be >= 0 and shorter than the run "
            f"({total_steps / steps_per_epoch:g} epochs)"
        )
    return LambdaLR(optimizer, CosineFactor(total_steps, warmup, min_factor))


class CosineFactor:
    """The multiplier of the base lr at a given step (an object, so LambdaLR can save it)."""

    def __init__(self, total_steps: int, warmup: int, min_factor: float) -> None:
        self.total_steps, self.warmup, self.min_factor = total_steps, warmup, min_factor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        done = min(1.0, (step - self.warmup) / max(1, self.total_steps - self.warmup))
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * done))


def step(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    every_epochs: int,
    gamma: float,
) -> LRScheduler:
    """Multiply the lr by `gamma` every `every_epochs` epochs."""
    return StepLR(optimizer, step_size=every_epochs * steps_per_epoch, gamma=gamma)
