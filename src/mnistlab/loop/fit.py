"""The training loop, all of it: epochs, the five-step batch loop, validation, test, `Progress`.

`fit` trains what `mnistlab.run.training` built (a `Trainee`, a batch `Source`, a `Plan`) and reports
through `Outputs`; `train_epoch` is the plain five steps (forward, loss, zero_grad, backward,
step) with the bookkeeping that makes a run resumable. `Progress` changes only here and in
`mnistlab.run.checkpoint.restore`.
"""

import logging
import math
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from mnistlab import SettingError
from mnistlab.data.splits import Batch
from mnistlab.loop.signals import Interrupts, NotStarted
from mnistlab.names import (
    BEST_FILE,
    CHECKPOINT_FILE,
    COMPLETED,
    INTERRUPTED,
    PRUNED,
    TAGS,
    better,
    reached,
)
from mnistlab.parts import precision
from mnistlab.parts.distributed import SINGLE, World
from mnistlab.run import board

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


class NonFiniteLoss(SettingError):
    """The loss became NaN or infinite: the run stops as failed."""


@dataclass(frozen=True)
class StepOptions:
    """How `train_epoch` takes each step: the loop settings it needs, and no more."""

    log_every: int = 100  # read the running sums and log their means every this many steps
    grad_clip_norm: float | None = None
    skip_nonfinite: bool = False  # drop a batch whose loss is NaN/Inf (a device sync per step)
    precision: str = "32"  # the forward pass's: 32, bf16 or 16-mixed (mnistlab.parts.precision)
    label_smoothing: float = 0.0
    channels_last: bool = False  # 4-D input batches in channels-last memory order


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    *,
    total: int,
    log: Callable[[int, dict[str, float]], None],
    options: StepOptions = StepOptions(),
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
    with tqdm(
        total=total,
        initial=progress.epoch_step,
        desc=description,
        disable=None if world.is_main else True,  # one progress bar: rank 0's
        leave=False,
        mininterval=0.5,
    ) as bar:
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
    progress.window_correct.add_((logits.argmax(dim=1) == targets).sum())


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
    options: StepOptions = StepOptions(),
) -> tuple[float, float]:
    """Mean loss and accuracy of `model` over `batches`, in the precision it trains in."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for inputs, targets in batches:
        inputs, targets = to_device(inputs, device, options.channels_last), targets.to(device)
        with precision.autocast(options.precision, device):
            logits = model(inputs).float()
        loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum")
        correct += (logits.argmax(dim=1) == targets).sum()
        count += len(targets)
    return loss_sum.item() / count, correct.item() / count


@dataclass
class Trainee:
    """What `fit` trains: the model (wrapped for torchrun or not), its optimizer and schedule."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | None
    device: torch.device
    world: World = SINGLE
    scaler: torch.amp.GradScaler | None = None  # loop.precision=16-mixed only

    @property
    def net(self) -> nn.Module:
        """The model itself, unwrapped from DistributedDataParallel where it is wrapped."""
        return getattr(self.model, "module", self.model)


@dataclass(frozen=True)
class Source:
    """Where `fit` gets its batches."""

    train: Callable[[int, int], Iterable[Batch]]  # (epoch, first batch) -> this rank's batches
    steps_per_epoch: int  # batches per epoch on this rank
    val: Callable[[], Iterable[Batch]]
    test: Callable[[], Iterable[Batch]] | None  # None: the data has no test split


@dataclass(frozen=True)
class Plan:
    """How long to train, when to evaluate and checkpoint, and when to stop early."""

    epochs: int
    options: StepOptions
    checkpoint_every: int | None = None  # steps; besides the checkpoint at each epoch's end
    objective: str = "val_loss"  # what best.pt and early stopping go by (history.HIGHER_IS_BETTER)
    patience: int | None = None  # evaluations without improvement before stopping; None: never
    min_delta: float = 0.0
    target: tuple[str, float] | None = None  # (metric, value): stop once reached
    eval_every: int | None = None  # steps; also evaluate mid-epoch
    test_on: str = "final"  # or "best"
    # After each epoch's validation but the last: (epochs done, that epoch's values) -> a
    # reason to stop the run as pruned, or None (mnistlab.sweep.prune). Every rank calls it.
    prune: Callable[[int, dict[str, float]], str | None] | None = None
    prune_nonfinite: bool = False  # a NaN/Inf loss prunes the run instead of failing it


@dataclass
class Outputs:
    """Where `fit` reports: a SummaryWriter (or stand-in), checkpoints, and signals."""

    writer: Any
    save: Callable[[Progress, str], None]  # write a checkpoint of this progress as this file
    best: Callable[[], dict[str, torch.Tensor]]  # the weights saved as best.pt
    stop: Interrupts
    clock: float  # perf_counter() at the run's time 0 (earlier parts of a resumed run included)


# Under torchrun the ranks must stop at the same step, so they agree on it: an all-reduce of
# one flag every STOP_EVERY steps, and at every epoch's end. With gloo on 2 CPU processes that
# all-reduce took ~0.5 ms, against ~7 ms per step of the lesson MLP at batch 64; whole 2-epoch
# runs (median of 3, on a loaded 2-core machine, so roughly) lost 18% checking every step,
# 4% every 5 steps, which stops a run within 5 steps of SIGTERM. One process checks every step
# for free. (The logging points agreed before: 28.6 s late with a large log_every_n_batches.)
STOP_EVERY = 5


def fit(
    trainee: Trainee, source: Source, plan: Plan, progress: Progress, out: Outputs
) -> dict[str, Any]:
    """Train the remaining epochs (validating and checkpointing each), then test if there is one."""
    world, stop = trainee.world, out.stop
    if stop.agreed(world, trainee.device):  # a signal while the TensorBoard writer was made
        raise NotStarted(stop.signum)
    if progress.stop_reason == PRUNED:  # a pruned run resumed: it trains on
        progress.stop_reason = progress.prune_reason = None
    fitting = Fitting(trainee, source, plan, progress, out)
    interrupted = False
    try:
        interrupted = fitting.epochs()
    except NonFiniteLoss as err:  # raised alike on every rank: losses are averaged over them
        if not plan.prune_nonfinite:
            raise
        lr = trainee.optimizer.param_groups[0]["lr"]  # the last good checkpoint stays as it is
        progress.stop_reason, progress.prune_reason = PRUNED, f"{err} with optimizer.lr={lr:g}"
        log.info("pruned: %s", progress.prune_reason)
    if not interrupted:
        stop.finish()
    metrics = summary(progress, plan, interrupted, world, out.clock)
    if not interrupted and source.test is not None and progress.stop_reason != PRUNED:
        metrics.update(final_test(trainee, source.test, plan, progress, out, fitting.tested))
    if stop.late is not None:
        name = signal.Signals(stop.late).name
        log.warning("%s came after training had finished: the run completed anyway", name)
    return metrics


@dataclass
class Fitting:
    """One call of `fit`: the epochs, and the checks between steps."""

    trainee: Trainee
    source: Source
    plan: Plan
    progress: Progress
    out: Outputs
    # A test-metric target evaluates the test split; the values of the model as it was then
    # (keyed by step) serve the final test too, when no step has been taken since.
    tested: dict[int, dict[str, float]] = field(default_factory=dict)

    def epochs(self) -> bool:
        """Train the remaining epochs, each validated, judged and saved; True if interrupted."""
        trainee, progress, plan = self.trainee, self.progress, self.plan
        interrupted = False
        while progress.epoch < plan.epochs and progress.stop_reason is None and not interrupted:
            finished = run_epoch(trainee, self.source, plan, progress, self.out.writer, self.step)
            if finished:
                values = progress.val | test_values(trainee, self.source, plan)
                self.evaluated(values)
                judge(progress, plan, values, self.save, self.out.clock)
                consider_pruning(progress, plan, values, trainee)
            self.save()
            # Agreed at every epoch's end too: no rank may start an epoch that another skips.
            interrupted = progress.stop_reason is None and (
                not finished or self.out.stop.agreed(trainee.world, trainee.device)
            )
        return interrupted

    def step(self) -> bool:
        """After each step: checkpoint and evaluate where due; True when the run must stop."""
        progress, plan = self.progress, self.plan
        if plan.checkpoint_every is not None and progress.step % plan.checkpoint_every == 0:
            if not torch.isfinite(progress.epoch_loss):
                raise NonFiniteLoss(
                    f"the training loss became non-finite before step {progress.step}"
                )
            self.save()
        mid_epoch = progress.epoch_step < self.source.steps_per_epoch  # the epoch's end comes next
        if plan.eval_every is not None and progress.step % plan.eval_every == 0 and mid_epoch:
            values = validate(self.trainee, self.source, plan, progress.step, self.out.writer)
            self.evaluated(values)
            progress.val |= {key: values[key] for key in ("val_loss", "val_accuracy")}
            judge(progress, plan, values, self.save, self.out.clock)
            if progress.stop_reason is not None:
                return True  # every rank evaluates alike, so every rank stops here
        world = self.trainee.world
        every = STOP_EVERY if world.size > 1 else 1
        return progress.step % every == 0 and self.out.stop.agreed(world, self.trainee.device)

    def evaluated(self, values: dict[str, float]) -> None:
        """Keep the test figures of the model as it is now, for the final test."""
        self.tested.clear()
        self.tested[self.progress.step] = test_part(values)

    def save(self, name: str = CHECKPOINT_FILE) -> None:
        """A checkpoint of the run as it is now, with the wall time it has taken."""
        self.progress.wall_seconds = time.perf_counter() - self.out.clock
        self.out.save(self.progress, name)


def final_test(
    trainee: Trainee,
    batches: Callable[[], Iterable[Batch]],
    plan: Plan,
    progress: Progress,
    out: Outputs,
    tested: dict[int, dict[str, float]],
) -> dict[str, float]:
    """The test of the final model, or of the best one (loop.test_on=best); reused if measured."""
    tested_step = progress.step
    if plan.test_on == "best" and progress.best_step is not None:
        trainee.net.load_state_dict(out.best())
        tested_step = progress.best_step
    known = tested.get(tested_step) or None
    return test(trainee, batches, out.writer, progress.step, plan.options, known)


def run_epoch(
    trainee: Trainee,
    source: Source,
    plan: Plan,
    progress: Progress,
    writer: Any,
    after_step: Callable[[], bool],
) -> bool:
    """Train (the rest of) one epoch and, if it finished, validate; False if it stopped early."""
    world = trainee.world
    tick, samples_before = time.perf_counter(), progress.epoch_samples
    finished = train_epoch(
        trainee.model,
        source.train(progress.epoch, progress.epoch_step),
        trainee.optimizer,
        progress,
        total=source.steps_per_epoch,
        log=lambda step, values: board.log_batch(writer, step, values),
        options=plan.options,
        scheduler=trainee.scheduler,
        scaler=trainee.scaler,
        after_step=after_step,
        description=f"epoch {progress.epoch + 1}/{plan.epochs}",
        world=world,
    )
    progress.seconds += time.perf_counter() - tick
    progress.samples += progress.epoch_samples - samples_before
    if finished:
        trained = world.size * (progress.epoch_samples - samples_before)  # since a resume too
        speed = trained / (time.perf_counter() - tick)
        end_epoch(trainee, source, plan, progress, writer, speed)
    return finished


def validate(
    trainee: Trainee, source: Source, plan: Plan, step: int, writer: Any
) -> dict[str, float]:
    """A mid-epoch evaluation: validation loss and accuracy (logged), and test ones for a target."""
    loss, accuracy = evaluate(trainee.net, source.val(), trainee.device, plan.options)
    trainee.model.train()  # evaluate() switched to eval mode; the epoch goes on
    check_finite(loss, f"validation loss after step {step}")
    writer.add_scalar(TAGS["val_loss"], loss, step)
    writer.add_scalar(TAGS["val_accuracy"], accuracy, step)
    return {"val_loss": loss, "val_accuracy": accuracy} | test_values(trainee, source, plan)


def test_values(trainee: Trainee, source: Source, plan: Plan) -> dict[str, float]:
    """The test split's loss and accuracy where the target is a test metric (else nothing)."""
    if plan.target is None or not plan.target[0].startswith("test_") or source.test is None:
        return {}
    loss, accuracy = evaluate(trainee.net, source.test(), trainee.device, plan.options)
    trainee.model.train()
    return {"test_loss": loss, "test_accuracy": accuracy}


def test_part(values: dict[str, float]) -> dict[str, float]:
    """The test split's figures among an evaluation's values (none unless a target asked)."""
    return {key: value for key, value in values.items() if key.startswith("test_")}


def judge(
    progress: Progress,
    plan: Plan,
    values: dict[str, float],
    save: Callable[[str], None],
    clock: float,
) -> None:
    """After an evaluation: keep the best model, count toward patience, check the target."""
    value = values.get(plan.objective)
    if value is not None:
        if better(plan.objective, value, progress.best, plan.min_delta):
            progress.best, progress.best_step, progress.stale = value, progress.step, 0
            save(BEST_FILE)
        else:
            progress.stale += 1
            if plan.patience is not None and progress.stale >= plan.patience:
                progress.stop_reason = "early_stopping"
                log.info(
                    "early stopping: %s has not improved for %d evaluations",
                    plan.objective,
                    progress.stale,
                )
    if plan.target is not None and progress.target_step is None:
        metric, goal = plan.target
        if metric in values and reached(metric, values[metric], goal):
            progress.target_step = progress.step
            progress.target_seconds = time.perf_counter() - clock
            progress.stop_reason = "target_reached"
            log.info(
                "target %s >= %g reached at step %d: %g",
                metric,
                goal,
                progress.step,
                values[metric],
            )


def consider_pruning(
    progress: Progress, plan: Plan, values: dict[str, float], trainee: Trainee
) -> None:
    """At an epoch's end: ask `plan.prune` whether to stop the run; all ranks stop together."""
    if plan.prune is None or progress.stop_reason is not None or progress.epoch >= plan.epochs:
        return  # nothing is saved by pruning after the last epoch
    reason = plan.prune(progress.epoch, values)
    if trainee.world.any(reason is not None, trainee.device):
        progress.stop_reason = PRUNED
        progress.prune_reason = reason or "another rank's prune rule"  # rank 0 writes the files
        log.info("pruned after epoch %d: %s", progress.epoch, progress.prune_reason)


def summary(
    progress: Progress, plan: Plan, interrupted: bool, world: World, clock: float
) -> dict[str, Any]:
    """The figures of a run's training for metrics.json (the test's are added after)."""
    tested_best = plan.test_on == "best" and progress.best_step is not None
    pruned = not interrupted and progress.stop_reason == PRUNED
    optional = {
        "best_value": progress.best,  # of the objective, at best_step: what best.pt holds
        "best_step": progress.best_step,
        "target_reached": None if plan.target is None else progress.target_step is not None,
        "target_step": progress.target_step,
        "target_seconds": progress.target_seconds,  # wall-clock, from the run's start
        "resumes": progress.resumes or None,
        "pruned_at_epoch": progress.epoch if pruned else None,
        "prune_reason": progress.prune_reason if pruned else None,
    }
    status = INTERRUPTED if interrupted else PRUNED if pruned else COMPLETED
    return {
        "status": status,
        "stop_reason": INTERRUPTED if interrupted else progress.stop_reason or COMPLETED,
        **progress.val,
        "epochs": progress.epoch,
        "steps": progress.step,
        "samples_per_second": world.size * progress.samples / max(progress.seconds, 1e-9),
        "wall_time_s": time.perf_counter() - clock,  # all the run's parts
        "tested_on": "best" if tested_best else "final",
        **{key: value for key, value in optional.items() if value is not None},
        "per_epoch": progress.per_epoch,  # what other jobs' median rule reads (mnistlab.sweep.prune)
    }


def end_epoch(
    trainee: Trainee,
    source: Source,
    plan: Plan,
    progress: Progress,
    writer: Any,
    samples_per_second: float,
) -> None:
    """Validate, log the epoch's metrics, and move `progress` on to the next epoch."""
    world, step = trainee.world, progress.step
    mean_loss = world.mean(progress.epoch_loss / progress.epoch_samples).item()
    train_loss = check_finite(mean_loss, f"training loss by step {step}")
    train_accuracy = world.mean(progress.epoch_correct).item() / progress.epoch_samples
    val_loss, val_accuracy = evaluate(trainee.net, source.val(), trainee.device, plan.options)
    check_finite(val_loss, f"validation loss after step {step}")
    progress.val = {
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
    }
    for key, value in progress.val.items():
        writer.add_scalar(TAGS[key], value, step)
        progress.per_epoch.setdefault(key, []).append(value)
    log.info(
        "epoch %d/%d  train_loss %.4f  train_accuracy %.2f%%  val_loss %.4f  val_accuracy %.2f%%"
        "  (%.0f samples/s)",
        progress.epoch + 1,
        plan.epochs,
        train_loss,
        100 * train_accuracy,
        val_loss,
        100 * val_accuracy,
        samples_per_second,
    )
    progress.epoch += 1
    progress.start_epoch()


def test(
    trainee: Trainee,
    batches: Callable[[], Iterable[Batch]],
    writer: Any,
    step: int,
    options: StepOptions,
    known: dict[str, float] | None = None,
) -> dict[str, float]:
    """Evaluate on the test split once training is done (`known`: already measured, reused)."""
    if known is None:
        loss, accuracy = evaluate(trainee.net, batches(), trainee.device, options)
    else:
        loss, accuracy = known["test_loss"], known["test_accuracy"]
    writer.add_scalar(TAGS["test_loss"], loss, step)
    writer.add_scalar(TAGS["test_accuracy"], accuracy, step)
    log.info("test_loss %.4f  test_accuracy %.2f%%", loss, 100 * accuracy)
    return {"test_loss": loss, "test_accuracy": accuracy}
