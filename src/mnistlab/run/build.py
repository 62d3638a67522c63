"""Building one run from its config: checks first, then data, model, optimizer and schedule.

Every check that can fail comes before training: the settings alone first (before any data
loads), then what depends on the data (sizes, objective, model on its inputs). A resumed run
restores its parts from the checkpoint instead of starting them fresh.
"""

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, open_dict
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler

from mnistlab import SettingError, names
from mnistlab.config import checks, schemas
from mnistlab.data.memory import refuse_beyond, size
from mnistlab.data.splits import (
    Batch,
    Splits,
    batches,
    check_mode,
    check_sizes,
    fingerprint,
    num_batches,
)
from mnistlab.data.splits import build as build_data
from mnistlab.data.stream import Stream
from mnistlab.loop import prune
from mnistlab.loop.fit import Plan, Source, Trainee
from mnistlab.loop.progress import Progress
from mnistlab.loop.step import StepOptions
from mnistlab.names import FAILED, write_metrics
from mnistlab.parts import distributed, memory, precision, schedulers
from mnistlab.parts.device import configure as configure_device
from mnistlab.parts.device import denormals, describe, resolve_device
from mnistlab.parts.distributed import World
from mnistlab.parts.models import build as build_model
from mnistlab.parts.optimizers import build_optimizer
from mnistlab.parts.optimizers import probe as probe_optimizer
from mnistlab.run import checkpoint, fulldisk, inputs, resume

log = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 1024  # at least: evaluation keeps no gradients
# The model settings that set its size, named when it will not fit in memory.
MODEL_SIZES = ("hidden", "channels")
NEEDS = ("parameters", "gradients", "optimizer state", "activations")  # memory.Needs' fields


@dataclasses.dataclass(frozen=True)
class InSweep:
    """What a sweep's job hands its run (mnistlab.cli.train builds it; None for a single run)."""

    folder: Path  # the sweep folder, whose other jobs the median rule reads
    # objective -> a hook that reports each epoch to the job's Optuna trial, or None
    trial: Callable[[str], prune.Hook | None] | None = None
    parallel: int = 1  # the sweep's jobs that run at once on this machine: they share its cores


@dataclasses.dataclass
class Run:
    """The parts of one training run, built from its config."""

    cfg: DictConfig
    settings: schemas.Settings
    device: torch.device
    data: Splits
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | None
    out_dir: Path
    progress: Progress
    world: World
    clock: float = dataclasses.field(init=False)  # perf_counter() when the run's time was 0
    best_weights: dict[str, torch.Tensor] | None = None  # as saved in best.pt by this process
    precision_note: str = "as set"  # why loop.precision is what it is (auto's choice)
    threads_note: str = "as set"  # why the run has the CPU threads it has (mnistlab.parts.cores)
    data_record: dict[str, Any] | None = None  # what the data is (data_record): checkpoints keep it
    scaler: torch.amp.GradScaler | None = None  # loop.precision=16-mixed only
    sweep: InSweep | None = None  # a sweep's job: what the sweep hands it

    def __post_init__(self) -> None:
        # A resumed run's clock goes on from the time its earlier parts took.
        self.clock = time.perf_counter() - self.progress.wall_seconds

    @property
    def net(self) -> torch.nn.Module:
        """The model itself, unwrapped from DistributedDataParallel where it is wrapped."""
        return getattr(self.model, "module", self.model)

    def best(self) -> dict[str, torch.Tensor]:
        """The best weights: kept since they were saved, or else (after a resume) best.pt's."""
        if self.best_weights is None:
            self.best_weights = checkpoint.load(self.out_dir / names.BEST_FILE)["model"]
        return self.best_weights

    def save_checkpoint(self, progress: Progress, name: str) -> None:
        """Write checkpoint.pt or best.pt (rank 0); a full disk is recorded in metrics.json too."""
        if name == names.BEST_FILE:  # every rank keeps the best weights for loop.test_on=best
            self.best_weights = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        if self.world.is_main:
            path = self.out_dir / name
            parts = (self.net, self.optimizer, self.scheduler)
            try:
                checkpoint.save(path, self.cfg, *parts, progress, self.scaler, self.data_record)
            except fulldisk.DiskFull as err:
                failed = {"status": FAILED, "error": str(err), "step": progress.step}
                with suppress(OSError):  # the disk may be too full for this small file too
                    write_metrics(self.out_dir, failed)
                raise


def build(
    cfg: DictConfig, out_dir: Path, resumed: resume.Resume | None, sweep: InSweep | None
) -> Run:
    """Check the config, then build data, model, optimizer and schedule (or restore them).

    Every check that can fail comes before training: the settings alone first (before any
    data loads), then what depends on the data (sizes, objective, model on its inputs).
    """
    settings, layout = checks.check(cfg), distributed.world()
    device = resolve_device(settings.device.name)
    distributed.check_devices(device, layout)
    settings, why = with_precision(settings, device)
    if layout.size > 1 and settings.loop.nan_policy == "skip":
        raise SettingError("loop.nan_policy=skip is single-process only (ranks must step together)")
    threads = configure_device(settings.device, 1 if sweep is None else sweep.parallel)
    probe_optimizer(cfg.optimizer)
    schedulers.probe(cfg.scheduler, settings.loop.epochs)
    log.info("device: %s; CPU denormal floats %s", describe(device), denormals())
    say = log.warning if threads.crowded else log.info
    say("threads: %d (%s)", threads.count, threads.reason)
    log.info("precision: %s (%s)", settings.loop.precision, why)
    torch.manual_seed(settings.loop.seed)
    data, record = load_data(cfg, settings, device, layout)
    if resumed is not None:
        resume.check_data(resumed, record)
    check_memory(cfg, settings, data, device, layout)
    model = build_net(cfg, settings, data, device, layout)
    optimizer = build_optimizer(
        cfg.optimizer, model.parameters(), device, settings.loop.fast_optimizer
    )
    steps = num_batches(len(data.train) // layout.size, settings.loader.batch_size)
    scheduler = schedulers.build(cfg.scheduler, optimizer, settings.loop.epochs * steps, steps)
    scaler = precision.grad_scaler(settings.loop.precision, device)
    parts = (model, optimizer, scheduler)
    progress = start(resumed, *parts, device, scaler)
    if settings.device.threads is None:  # its checkpoints resume with the count chosen now
        cfg = with_threads(cfg, threads.count)
    built = (cfg, settings, device, data, *parts, out_dir, progress, layout)
    notes = {"precision_note": why, "threads_note": threads.reason}
    return Run(*built, scaler=scaler, sweep=sweep, data_record=record, **notes)


def with_threads(cfg: DictConfig, count: int) -> DictConfig:
    """`cfg` with device.threads set to the `count` chosen for it (mnistlab.parts.cores).

    Saved so in checkpoints: a resumed run adds its sums up in the same order as the
    uninterrupted one would, whatever the load of the machine is when it resumes.
    """
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.device.threads = count
    return cfg


def with_precision(
    settings: schemas.Settings, device: torch.device
) -> tuple[schemas.Settings, str]:
    """The settings with loop.precision decided (`auto`), and why; refused where it cannot run."""
    chosen, why = precision.choose(settings.loop.precision, device)
    precision.check(chosen, device)
    loop = dataclasses.replace(settings.loop, precision=chosen)
    return dataclasses.replace(settings, loop=loop), why


def start(
    resumed: resume.Resume | None,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None,
    device: torch.device,
    scaler: torch.amp.GradScaler | None,
) -> Progress:
    """Where training starts: a resumed run's parts restored from its checkpoint, or step 0."""
    if resumed is None:
        return Progress.on(device)
    net, changes = getattr(model, "module", model), resumed.changes
    overrides = [str(change) for change in changes]
    progress = checkpoint.restore(
        resumed.state, net, optimizer, scheduler, device, overrides, scaler, resumed.path
    )
    resume.carry_on(optimizer, changes)
    log.info("resumed at epoch %d, step %d", progress.epoch, progress.step)
    return progress


def load_data(
    cfg: DictConfig, settings: schemas.Settings, device: torch.device, layout: World
) -> tuple[Splits, dict[str, Any]]:
    """The dataset, checked against the settings, on the device in tensor mode; its record."""
    data = build_data(cfg.dataset.source)
    check_data(cfg, data, settings.loader.batch_size, layout.size)
    check_mode(data, settings.loader, cfg.dataset.source)
    record = data_record(data, cfg.dataset.source)
    if settings.loader.mode == "tensor":
        data = data.to(device)
    log.info(
        "data: %d train / %d val samples, input %s, %d classes",
        len(data.train),
        len(data.val),
        data.input_shape,
        data.num_classes,
    )
    return data, record


def data_record(data: Splits, source: DictConfig) -> dict[str, Any]:
    """What the run trains on, as its checkpoints record it: a fingerprint, where it is from,
    and what the model takes in (mnistlab-evaluate and mnistlab-predict read it)."""
    started = time.perf_counter()
    found = fingerprint(data)  # on the CPU, before the splits move to the device
    where = data.origin.what if data.origin is not None else f"the data of {source._target_}"
    log.debug("data fingerprint %s (%.2f s): %s", found, time.perf_counter() - started, where)
    return {"fingerprint": found, "source": where, inputs.KEY: inputs.record(inputs.of(data))}


def check_memory(
    cfg: DictConfig, settings: schemas.Settings, data: Splits, device: torch.device, layout: World
) -> None:
    """Refuse, before the model is built, one whose training will not fit in memory."""
    batch = settings.loader.batch_size
    needs = memory.estimate(
        cfg.model, data.input_shape, data.num_classes, cfg.optimizer, (batch, eval_size(batch))
    )
    if needs is None:  # a model the meta device cannot run: not estimated
        return
    ranks = layout.size if device.type == "cpu" else 1  # CPU ranks share the machine's memory
    sizes = [cfg.model._target_.rsplit(".", 1)[-1]] + [
        f"model.{key}={show(cfg.model[key])}" for key in MODEL_SIZES if key in cfg.model
    ]
    held = ", ".join(
        f"{name} {size(figure * ranks)}"
        for name, figure in zip(NEEDS, dataclasses.astuple(needs), strict=True)
    )
    each = f" on each of {ranks} ranks" if ranks > 1 else ""
    refuse_beyond(
        needs.total * ranks,
        device,
        f"training the model ({', '.join(sizes)}) with dataset.loader.batch_size={batch}{each} "
        f"({held})",
        "use a smaller model or batch size",
    )


def show(value: Any) -> str:
    """A setting as the command line writes it: lists in brackets, no spaces."""
    if isinstance(value, ListConfig):
        return "[" + ",".join(str(item) for item in value) + "]"
    return str(value)


def build_net(
    cfg: DictConfig, settings: schemas.Settings, data: Splits, device: torch.device, layout: World
) -> torch.nn.Module:
    """The model on the device: channels-last, compiled, wrapped for torchrun, as set."""
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
    if settings.loop.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if settings.loop.compile:
        model.compile()  # in place: the module, its parameters and state_dict keys stay the same
    if layout.size > 1:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        torch.manual_seed(settings.loop.seed + layout.rank)  # dropout differs between ranks
        log.info(
            "rank %d of %d; global batch size %d",
            layout.rank,
            layout.size,
            settings.loader.batch_size * layout.size,
        )
    return model


def check_data(cfg: DictConfig, data: Splits, batch_size: int, ranks: int) -> None:
    """What the settings could not show alone: split sizes, and an objective the data has."""
    check_sizes(data, cfg.dataset.source, batch_size, ranks)
    target = cfg.loop.target.metric or ""
    for key, metric in (("objective", cfg.objective), ("loop.target.metric", target)):
        if metric.startswith("test_") and data.test is None:
            raise SettingError(
                f"{key}={metric} needs a test split, but {cfg.dataset.source._target_} has "
                "none: use val_loss or val_accuracy, or a dataset with a test split "
                "(dataset=mnist or idx)"
            )


def trainee(run: Run) -> Trainee:
    """The parts `fit` trains."""
    return Trainee(run.model, run.optimizer, run.scheduler, run.device, run.world, run.scaler)


def source(run: Run) -> Source:
    """This rank's batches for `fit`: each epoch's training batches, validation and test."""
    loader, world, seed = run.settings.loader, run.world, run.settings.loop.seed

    def train_batches(epoch: int, start: int) -> Iterator[Batch]:
        return batches(
            run.data.train,
            loader,
            seed=seed,
            epoch=epoch,
            start=start,
            rank=world.rank,
            world_size=world.size,
        )

    if loader.mode == "dataloader":  # one DataLoader for the run: its workers live on
        train_batches = Stream(run.data.train, loader, seed, world.rank, world.size).epoch
    test = run.data.test
    return Source(
        train=train_batches,
        steps_per_epoch=num_batches(len(run.data.train) // world.size, loader.batch_size),
        val=lambda: eval_batches(run, run.data.val),
        test=None if test is None else lambda: eval_batches(run, test),
    )


def plan(loop: schemas.LoopSettings, objective: str) -> Plan:
    """What `fit` needs of the loop settings."""
    options = StepOptions(
        log_every=loop.log_every_n_batches,
        grad_clip_norm=loop.grad_clip_norm,
        skip_nonfinite=loop.nan_policy == "skip",
        precision=loop.precision,
        label_smoothing=loop.label_smoothing,
        channels_last=loop.channels_last,
    )
    target = None if loop.target.metric is None else (loop.target.metric, loop.target.value)
    return Plan(
        epochs=loop.epochs,
        options=options,
        checkpoint_every=loop.checkpoint_every_n_steps,
        objective=objective,
        patience=loop.early_stopping.patience,
        min_delta=loop.early_stopping.min_delta,
        target=target,
        eval_every=loop.eval_every_n_steps,
        test_on=loop.test_on,
    )


def eval_size(batch_size: int) -> int:
    """Evaluation batches are larger, since no gradients are kept."""
    return max(batch_size, EVAL_BATCH_SIZE)


def eval_batches(run: Run, split) -> Iterator[Batch]:
    """Batches for evaluation: in order, and larger, since no gradients are kept."""
    return batches_to_evaluate(run.settings.loader, split)


def batches_to_evaluate(loader: schemas.LoaderSettings, split) -> Iterator[Batch]:
    """`eval_batches` for a run's loader settings (mnistlab-evaluate's, as in training)."""
    loader = dataclasses.replace(loader, shuffle=False, batch_size=eval_size(loader.batch_size))
    return batches(split, loader, seed=0, epoch=0)


def facts(run: Run) -> dict[str, Any]:
    """What HParams shows beside the settings: where and how big the run was."""
    parameters = sum(parameter.numel() for parameter in run.net.parameters())
    return {"device": describe(run.device), "world_size": run.world.size, "parameters": parameters}
