"""`Progress`: where training stands, all of it that a checkpoint saves.

It changes only in the loop (mnistlab.loop.step and .fit) and in
`mnistlab.run.checkpoint.restore`, so a resumed run continues exactly.
"""

from dataclasses import dataclass, field

import torch


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
    best: float | None = None  # the objective's best value so far, and the step it came at
    best_step: int | None = None
    stale: int = 0  # evaluations since the objective last improved (for early stopping)
    target_step: int | None = None  # when loop.target was first reached
    target_seconds: float | None = None  # wall-clock seconds of the run by then
    stop_reason: str | None = None  # early_stopping, target_reached or pruned, once decided
    prune_reason: str | None = None  # why `Plan.prune` stopped the run
    per_epoch: dict[str, list[float]] = field(default_factory=dict)  # each epoch end's values

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

    def advance(self, samples: int) -> None:
        """One batch of `samples` done: the step, epoch and logging-window counts move on."""
        self.step += 1
        self.epoch_step += 1
        self.epoch_samples += samples
        self.window_steps += 1
        self.window_samples += samples


# The running sums of `Progress` that live on the device (checkpoint.restore moves them).
SUMS = ("epoch_loss", "window_loss", "epoch_correct", "window_correct")
