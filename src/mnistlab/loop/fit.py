"""`fit`: the epochs of a run, with validation, checkpoints, early stopping, target and test.

`fit` trains what `mnistlab.run.training` built (a `Trainee`, a batch `Source`, a `Plan`) and
reports through `Outputs`; each epoch's steps are `mnistlab.loop.step.train_epoch`, the plain
five steps with the bookkeeping that makes a run resumable.
"""

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from mnistlab.data.splits import Batch
from mnistlab.loop.progress import Progress
from mnistlab.loop.signals import Interrupts, NotStarted
from mnistlab.loop.step import NonFiniteLoss, StepOptions, check_finite, evaluate, train_epoch
from mnistlab.names import (
    BATCH_TAGS,
    BEST_FILE,
    CHECKPOINT_FILE,
    COMPLETED,
    EARLY_STOPPING,
    INTERRUPTED,
    PRUNED,
    TAGS,
    TARGET_REACHED,
    better,
    reached,
)
from mnistlab.parts.distributed import SINGLE, World

log = logging.getLogger(__name__)


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
    checkpoint_every: int | None  # steps; besides the checkpoint at each epoch's end
    objective: str  # what best.pt and early stopping go by (names.HIGHER_IS_BETTER)
    patience: int | None  # evaluations without improvement before stopping; None: never
    min_delta: float
    target: tuple[str, float] | None  # (metric, value): stop once reached
    eval_every: int | None  # steps; also evaluate mid-epoch
    test_on: str  # "final" or "best"
    # Set by a sweep, not by the loop settings. After each epoch's validation but the last:
    # (epochs done, that epoch's values) -> a reason to stop the run as pruned, or None
    # (mnistlab.loop.prune). Every rank calls it.
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
    # What else sees the final test's batches (inputs, targets, logits): the run's predictions.
    tested: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None


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


def log_batch(writer: Any, step: int, values: dict[str, float]) -> None:
    """One logging point of the training loop: window loss and accuracy, and the lr."""
    for key, value in values.items():
        writer.add_scalar(BATCH_TAGS[key], value, step)


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
    return test(trainee, batches, out, progress.step, plan.options, known)


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
        log=lambda step, values: log_batch(writer, step, values),
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
                progress.stop_reason = EARLY_STOPPING
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
            progress.stop_reason = TARGET_REACHED
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
        "per_epoch": progress.per_epoch,  # what other jobs' median rule reads (mnistlab.loop.prune)
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
    out: Outputs,
    step: int,
    options: StepOptions,
    known: dict[str, float] | None = None,
) -> dict[str, float]:
    """Evaluate on the test split once training is done (`known`: already measured, reused)."""
    writer = out.writer
    if known is None:
        loss, accuracy = evaluate(trainee.net, batches(), trainee.device, options, out.tested)
    else:
        loss, accuracy = known["test_loss"], known["test_accuracy"]
    writer.add_scalar(TAGS["test_loss"], loss, step)
    writer.add_scalar(TAGS["test_accuracy"], accuracy, step)
    log.info("test_loss %.4f  test_accuracy %.2f%%", loss, 100 * accuracy)
    return {"test_loss": loss, "test_accuracy": accuracy}
