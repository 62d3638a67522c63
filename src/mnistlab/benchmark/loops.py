"""The three training loops `benchmark=training` compares, one epoch each, on one workload:
the lesson's (Dataset + DataLoader + the five steps), mnistlab's own, and a bare loop over
the same in-memory tensors with nothing recorded.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader

from mnistlab.benchmark.settings import TrainingSettings
from mnistlab.config.schemas import LoaderSettings
from mnistlab.data.splits import TensorPairs, batches, num_batches
from mnistlab.loop.progress import Progress
from mnistlab.loop.step import StepOptions, train_epoch
from mnistlab.parts.optimizers import adam_config, build_optimizer

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter  # heavy: only the benchmark job loads it


@dataclass(frozen=True)
class Workload:
    """What every variant trains on: the same samples, on the host and on the device."""

    host: TensorPairs  # where the lesson's Dataset keeps its samples
    on_device: TensorPairs  # what the fast paths slice (the same tensors on a CPU run)
    settings: TrainingSettings
    device: torch.device
    writer: "SummaryWriter | None"  # mnistlab's loop logs train/loss here, as a real run does

    def head(self, count: int) -> "Workload":
        """The first `count` samples: a short epoch for warming up."""
        host = TensorPairs(self.host.inputs[:count], self.host.targets[:count])
        on_device = TensorPairs(self.on_device.inputs[:count], self.on_device.targets[:count])
        return Workload(host, on_device, self.settings, self.device, self.writer)


@dataclass
class Contender:
    """One variant's own model and optimizer; each round trains it one more epoch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    losses: list[float] = field(default_factory=list)


# An epoch function trains a contender one epoch of a workload and returns the samples seen.
EpochFn = Callable[[Contender, Workload, int], int]


def plain_step(log_every: int) -> StepOptions:
    """The lesson's step, as mnistlab's loop takes it: float32, no clipping, no smoothing."""
    return StepOptions(
        log_every=log_every,
        grad_clip_norm=None,
        skip_nonfinite=False,
        precision="32",
        label_smoothing=0.0,
        channels_last=False,
    )


def lesson_epoch(contender: Contender, work: Workload, epoch: int) -> int:
    """(1) The lesson's loop: a Dataset of single samples, a shuffling DataLoader, five steps."""
    model, optimizer, criterion = contender.model, contender.optimizer, nn.CrossEntropyLoss()
    loader = DataLoader(work.host, batch_size=work.settings.batch_size, shuffle=True)
    model.train()
    samples = 0
    for step, (images, labels) in enumerate(loader, start=1):
        images, labels = images.to(work.device), labels.to(work.device)
        outputs = model(images)
        loss = criterion(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        samples += len(labels)
        if step % work.settings.log_every_n_batches == 0:
            contender.losses.append(loss.item())  # the lesson prints the loss here
    return samples


def mnistlab_epoch(contender: Contender, work: Workload, epoch: int) -> int:
    """(2) mnistlab's loop, called as a run calls `fit` (tensor mode, logging on)."""
    settings = work.settings
    loader = LoaderSettings(
        batch_size=settings.batch_size, shuffle=True, mode="tensor", num_workers=0
    )
    steps_per_epoch = num_batches(len(work.on_device), loader.batch_size)
    progress = Progress.on(work.device, step=epoch * steps_per_epoch)
    train_epoch(
        contender.model,
        batches(work.on_device, loader, seed=0, epoch=epoch),
        contender.optimizer,
        progress,
        total=steps_per_epoch,
        log=lambda step, values: work.writer.add_scalar("train/batch_loss", values["loss"], step),
        options=plain_step(settings.log_every_n_batches),
        description=f"mnistlab loop, epoch {epoch}",
    )
    return progress.epoch_samples


def bare_epoch(contender: Contender, work: Workload, epoch: int) -> int:
    """(3) The lower bound: tensors on the device, one randperm, sliced batches, no logging."""
    model, optimizer, criterion = contender.model, contender.optimizer, nn.CrossEntropyLoss()
    order = torch.randperm(len(work.on_device), device=work.device)
    inputs, targets = work.on_device.inputs[order], work.on_device.targets[order]
    size = work.settings.batch_size
    model.train()
    for first in range(0, len(targets), size):
        loss = criterion(model(inputs[first : first + size]), targets[first : first + size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return len(targets)


# An optimizer factory builds a variant's Adam from the model's parameters.
OptimizerFn = Callable[
    [Iterable[nn.Parameter], TrainingSettings, torch.device], torch.optim.Optimizer
]


def plain_adam(
    params: Iterable[nn.Parameter], settings: TrainingSettings, device: torch.device
) -> torch.optim.Optimizer:
    """The lesson's `torch.optim.Adam(model.parameters(), lr=...)`: torch's default kernels."""
    return torch.optim.Adam(params, lr=settings.lr)


def fused_adam(
    params: Iterable[nn.Parameter], settings: TrainingSettings, device: torch.device
) -> torch.optim.Optimizer:
    """The same Adam with `fused=True`: one kernel updates every parameter."""
    return torch.optim.Adam(params, lr=settings.lr, fused=True)


def mnistlab_adam(
    params: Iterable[nn.Parameter], settings: TrainingSettings, device: torch.device
) -> torch.optim.Optimizer:
    """Adam exactly as mnistlab-train builds it: conf/optimizer/adam.yaml via build_optimizer."""
    return build_optimizer(adam_config(settings.lr), params, device, fast=settings.fast_optimizer)
