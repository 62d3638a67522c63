"""`benchmark=time_to_accuracy`: train on real MNIST until a target test accuracy."""

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.utils import instantiate
from torch import nn

from mnistlab.benchmark.output import format_table, write_results
from mnistlab.benchmark.settings import TimeToAccuracySettings
from mnistlab.config import LoaderSettings
from mnistlab.data import Splits, batches, num_batches
from mnistlab.data import build as build_data
from mnistlab.device import describe, synchronize
from mnistlab.loop import Progress, StepOptions, evaluate, train_epoch
from mnistlab.optim import adam_config, build_optimizer

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


def load_data(node: dict[str, Any], device: torch.device) -> tuple[Splits, float]:
    """Build the dataset `node` names and move it to the device; return it and the seconds taken."""
    started = time.perf_counter()
    if str(node["_target_"]).startswith("mnistlab.mnist."):
        node = {**node, "key": "benchmark.data"}  # its messages then name this job's settings
    data = build_data(node)
    data = data.to(device)
    synchronize(device)
    return data, time.perf_counter() - started


@dataclass
class Race:
    """One model trained until it reaches its target: every evaluation, and the outcome."""

    split: str  # what the accuracy is measured on: "test", or "val" for data without a test set
    evaluations: list[dict[str, float]] = field(default_factory=list)
    eval_seconds: float = 0.0
    reached: bool = False


def race(
    model: nn.Module,
    data: Splits,
    settings: TimeToAccuracySettings,
    device: torch.device,
    writer: "SummaryWriter",
) -> Race:
    """Train with a one-cycle schedule, evaluating at each epoch's end (and every N steps)."""
    recipe = settings.recipe
    eval_split = data.test if data.test is not None else data.val
    outcome = Race(split="test" if data.test is not None else "val")
    loader = LoaderSettings(batch_size=recipe.batch_size, shuffle=True, mode="tensor")
    steps_per_epoch = num_batches(len(data.train), recipe.batch_size)
    optimizer = build_optimizer(
        adam_config(recipe.lr), model.parameters(), device, fast=settings.fast_optimizer
    )
    # OneCycleLR: warm up to the peak lr, then anneal far below it over `epochs` epochs.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch
    )
    progress = Progress.on(device)
    eval_loader = LoaderSettings(batch_size=settings.eval_batch_size, shuffle=False)
    started = time.perf_counter()

    def reached() -> bool:
        """Evaluate now; True once the target is met."""
        tick = time.perf_counter()
        _, accuracy = evaluate(model, batches(eval_split, eval_loader, seed=0, epoch=0), device)
        model.train()  # evaluate() switched to eval mode; a mid-epoch check must switch back
        now = time.perf_counter()
        outcome.eval_seconds += now - tick
        outcome.evaluations.append(
            {
                "epoch": progress.step / steps_per_epoch,
                "step": progress.step,
                "seconds": now - started,
                "accuracy": accuracy,
            }
        )
        writer.add_scalar(f"{outcome.split}/accuracy", accuracy, progress.step)
        return accuracy >= recipe.target_accuracy

    def after_step() -> bool:
        scheduler.step()  # per step: one-cycle changes the lr every batch
        every = settings.eval_every_n_steps
        mid_epoch = progress.epoch_step < steps_per_epoch  # the epoch's end is checked below
        return every is not None and progress.step % every == 0 and mid_epoch and reached()

    for epoch in range(recipe.epochs):
        progress.start_epoch()
        finished = train_epoch(
            model,
            batches(data.train, loader, seed=settings.seed, epoch=epoch),
            optimizer,
            progress,
            total=steps_per_epoch,
            log=lambda step, values: writer.add_scalar("train/batch_loss", values["loss"], step),
            options=StepOptions(log_every=settings.log_every_n_batches),
            after_step=after_step,
            description=f"epoch {epoch + 1}/{recipe.epochs}",
        )
        if not finished or reached():  # not finished: after_step met the target mid-epoch
            outcome.reached = True
            break
    return outcome


def time_to_accuracy_benchmark(
    settings: TimeToAccuracySettings, device: torch.device, out_dir: Path
) -> dict[str, Any]:
    """Train one recipe on real MNIST until its target test accuracy; report time and epochs."""
    from torch.utils.tensorboard import SummaryWriter  # heavy import: only when a run starts

    recipe = settings.recipe
    data, load_seconds = load_data(settings.data, device)
    torch.manual_seed(settings.seed)
    model = instantiate(recipe.model, input_shape=data.input_shape, num_classes=data.num_classes)
    model = model.to(device)
    print(f"device: {describe(device)}")
    print(
        f"{settings.model}: {describe_model(recipe.model)}, Adam one-cycle to lr {recipe.lr:g}, "
        f"batch {recipe.batch_size}, target {recipe.target_accuracy:.2%}, "
        f"at most {recipe.epochs} epochs"
    )
    print(
        f"data: {len(data.train):,} training samples, loaded in {load_seconds:.2f} s "
        "(not counted in the time below)"
    )
    with SummaryWriter(log_dir=str(out_dir)) as writer:
        outcome = race(model, data, settings, device, writer)
        results = race_results(outcome, settings, device, load_seconds)
        writer.add_scalar("time_to_accuracy/seconds", results["wall_time_s"], 0)
        writer.add_scalar("time_to_accuracy/epochs", results["epochs"], 0)
        writer.add_scalar("time_to_accuracy/accuracy", results["accuracy"], 0)
    print(race_table(outcome))
    print(race_summary(results))
    write_results(out_dir, results, outcome.evaluations)
    return results


def describe_model(node: dict[str, Any]) -> str:
    """ConvNet(channels=[16, 32], hidden=128, dropout=0.25): a model node on one line."""
    arguments = ", ".join(f"{key}={value}" for key, value in node.items() if key != "_target_")
    return f"{node['_target_'].rsplit('.', 1)[-1]}({arguments})"


def race_results(
    outcome: Race, settings: TimeToAccuracySettings, device: torch.device, load_seconds: float
) -> dict[str, Any]:
    """The figures of one race: reached or not, wall time, epochs, final accuracy."""
    last = outcome.evaluations[-1]
    return {
        "benchmark": "time_to_accuracy",
        "device": describe(device),
        "settings": asdict(settings),
        "model": settings.model,
        "target_accuracy": settings.recipe.target_accuracy,
        "split": outcome.split,
        "reached": outcome.reached,
        "wall_time_s": last["seconds"],  # training and evaluation; data loading excluded
        "eval_time_s": outcome.eval_seconds,
        "load_time_s": load_seconds,
        "epochs": last["epoch"],
        "steps": last["step"],
        "accuracy": last["accuracy"],
        "evaluations": outcome.evaluations,
    }


def race_table(outcome: Race) -> str:
    """One line per evaluation: where training stood, the time so far, the accuracy."""
    cells = [["epoch", "step", "time", f"{outcome.split} accuracy"]]
    for row in outcome.evaluations:
        cells.append(
            [
                f"{row['epoch']:.2f}",
                str(row["step"]),
                f"{row['seconds']:.1f} s",
                f"{row['accuracy']:.2%}",
            ]
        )
    return format_table(cells)


def race_summary(results: dict[str, Any]) -> str:
    """The one line to quote: reached (in how long) or not reached (and how close)."""
    r = results
    where = (
        f"{r['wall_time_s']:.1f} s ({r['epochs']:.2f} epochs, {r['steps']} steps; "
        f"{r['eval_time_s']:.2f} s of it evaluating; data loading {r['load_time_s']:.2f} s apart)"
    )
    target = f"{r['target_accuracy']:.2%} {r['split']} accuracy"
    if r["reached"]:
        return f"reached {target} in {where}: {r['accuracy']:.2%}"
    return f"NOT REACHED: {target}; {r['accuracy']:.2%} at the end, after {where}"
