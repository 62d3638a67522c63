"""One training run: check the config, build data, model and optimizer, fit, write metrics.

`train(cfg, out_dir)` is plain Python (tests call it); `mnistlab.cli.train` runs it under Hydra.
"""

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler

from mnistlab import SettingError, names
from mnistlab.config import checks, schemas
from mnistlab.data.splits import Batch, Splits, batches, check_sizes, num_batches
from mnistlab.data.splits import build as build_data
from mnistlab.files import write_text
from mnistlab.loop import prune
from mnistlab.loop.fit import Outputs, Plan, Source, Trainee, fit
from mnistlab.loop.progress import Progress
from mnistlab.loop.signals import Interrupted, Interrupts
from mnistlab.loop.step import NonFiniteLoss, StepOptions
from mnistlab.names import COMPLETED, FAILED, PRUNED, write_metrics
from mnistlab.parts import distributed, precision, schedulers
from mnistlab.parts.device import configure as configure_device
from mnistlab.parts.device import denormals, describe, resolve_device
from mnistlab.parts.distributed import World
from mnistlab.parts.models import build as build_model
from mnistlab.parts.optimizers import build_optimizer
from mnistlab.parts.optimizers import probe as probe_optimizer
from mnistlab.run import board, checkpoint, resume, rundir
from mnistlab.run.scalars import History

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class InSweep:
    """What a sweep's job hands its run (mnistlab.cli.train builds it; None for a single run)."""

    folder: Path  # the sweep folder, whose other jobs the median rule reads
    # objective -> a hook that reports each epoch to the job's Optuna trial, or None
    trial: Callable[[str], prune.Hook | None] | None = None


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
                checkpoint.save(path, self.cfg, *parts, progress, self.scaler)
            except checkpoint.DiskFull as err:
                failed = {"status": FAILED, "error": str(err), "step": progress.step}
                with suppress(OSError):  # the disk may be too full for this small file too
                    write_metrics(self.out_dir, failed)
                raise


class NoWriter:
    """Stands in for SummaryWriter on ranks other than 0, which write nothing."""

    def add_scalar(self, *args: object, **kwargs: object) -> None:
        pass

    def close(self) -> None:
        pass


def train(
    cfg: DictConfig,
    out_dir: Path,
    overrides: Sequence[str] = (),
    config_sources: Sequence[str] = resume.DEFAULT_SOURCES,
    config_record: Path | None = None,
    sweep: InSweep | None = None,
) -> dict[str, Any]:
    """Train and evaluate as `cfg` says; write TensorBoard events and metrics.json to out_dir.

    With `loop.resume`, the run continues in its own folder from its saved config, changed by
    those of `overrides` (the command's explicit ones) that a resume allows (mnistlab.run.resume),
    and writes the config it continues with to `config_record`/config.yaml.
    `config_sources` are where the config groups live: what a saved config may call.
    `sweep`: in a sweep's job, the sweep folder (and Optuna trial) its pruning reads.
    """
    resumed = None
    if cfg.loop.resume is not None:
        resumed = resume.prepare(cfg, overrides, config_sources)
        if resumed.finished is not None:
            return resumed.finished  # nothing to do, and nothing is touched
        cfg, out_dir = resumed.cfg, resumed.folder
        if config_record is not None:
            write_text(config_record / "config.yaml", OmegaConf.to_yaml(cfg))
    with Interrupts() as stop:
        run = build(cfg, out_dir, resumed, sweep)
        stop.hold()  # the writer below must be closed cleanly: no exception from a signal
        with closing(open_writer(run, resumed is not None)) as writer:
            metrics = record_run(run, writer, stop, resumed is None)
    if run.world.is_main:
        write_metrics(out_dir, metrics)
    if metrics["status"] == PRUNED:
        say_pruned(out_dir, metrics["pruned_at_epoch"])
        # Pruned before its first validation it has no objective value: a sweeper gets NaN.
        return {cfg.objective: math.nan} | metrics
    if stop.signum is not None:
        raise Interrupted(stop.signum)
    return metrics


def open_writer(run: Run, resumed: bool) -> Any:
    """The run's TensorBoard writer (rank 0 only: `NoWriter` on the other ranks)."""
    if not run.world.is_main:
        return NoWriter()
    from torch.utils.tensorboard import SummaryWriter  # heavy import: only when a run starts

    # purge_step hides events a killed process logged after its last checkpoint. TensorBoard
    # takes a run's first session START for its beginning and purges only at later ones,
    # so a new run writes one too (at step 0).
    purge = run.progress.step + 1 if resumed else None
    start = 0 if purge is None else purge
    return History(SummaryWriter(log_dir=str(run.out_dir), purge_step=start), run.out_dir, purge)


def record_run(run: Run, writer: Any, stop: Interrupts, new: bool) -> dict[str, Any]:
    """Fit the run with its HParams session, predictions and end status in TensorBoard."""
    is_main = run.world.is_main
    if new and is_main:
        board.write_session_start(writer, board.hparams_of(run.cfg) | facts(run))
        board.write_config(writer, run.cfg)
    try:
        metrics = fit_run(run, writer, stop)
    except NonFiniteLoss as err:
        raise diverged(run, writer, err) from None
    except Exception as error:  # recorded in TensorBoard, then raised as it was
        if is_main:
            failed = {"status": FAILED, "error": f"{type(error).__name__}: {error}"}
            board.write_end(writer, failed, run.progress.step)
        raise
    if is_main:
        if metrics["status"] == COMPLETED:
            write_predictions(run, writer)
        board.write_end(writer, metrics, run.progress.step)
    return metrics


def say_pruned(out_dir: Path, epoch: int) -> None:
    """How to train a pruned run to the end, where it has a checkpoint to go on from."""
    if not (out_dir / names.CHECKPOINT_FILE).exists():
        log.warning("pruned before its first checkpoint: there is nothing to resume")
        return
    log.warning(
        "pruned after epoch %d; to train it to the end: %s %s",
        epoch,
        rundir.resume_command(out_dir),
        "sweep.prune.median=false sweep.prune.diverged=false",
    )


def diverged(run: Run, writer: Any, err: NonFiniteLoss) -> NonFiniteLoss:
    """Mark the run failed (metrics.json, TensorBoard); the error to raise, with what to do."""
    lr = run.optimizer.param_groups[0]["lr"]
    kept = (
        f"the last good checkpoint is kept: continue from it with a lower rate, "
        f"{rundir.resume_command(run.out_dir)} optimizer.lr=<lower>"
        if (run.out_dir / checkpoint.FILENAME).exists()
        else "no checkpoint yet"
    )
    message = f"{err} with optimizer.lr={lr:g}: run marked failed; {kept}"
    if run.world.is_main:
        failed = {"status": FAILED, "error": message, "step": run.progress.step}
        write_metrics(run.out_dir, failed)
        board.write_end(writer, failed, run.progress.step)
    return NonFiniteLoss(message)


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
    precision.check(settings.loop.precision, device)
    if layout.size > 1 and settings.loop.nan_policy == "skip":
        raise SettingError("loop.nan_policy=skip is single-process only (ranks must step together)")
    configure_device(settings.device)
    probe_optimizer(cfg.optimizer)
    schedulers.probe(cfg.scheduler, settings.loop.epochs)
    log.info("device: %s; CPU denormal floats %s", describe(device), denormals())
    torch.manual_seed(settings.loop.seed)
    data = load_data(cfg, settings, device, layout)
    model = build_net(cfg, settings, data, device, layout)
    optimizer = build_optimizer(
        cfg.optimizer, model.parameters(), device, settings.loop.fast_optimizer
    )
    steps = num_batches(len(data.train) // layout.size, settings.loader.batch_size)
    scheduler = schedulers.build(cfg.scheduler, optimizer, settings.loop.epochs * steps, steps)
    scaler = precision.grad_scaler(settings.loop.precision, device)
    if resumed is not None:
        net, changes = getattr(model, "module", model), resumed.changes
        progress = checkpoint.restore(
            resumed.state, net, optimizer, scheduler, device, [str(c) for c in changes], scaler
        )
        resume.carry_on(optimizer, changes)
        log.info("resumed at epoch %d, step %d", progress.epoch, progress.step)
    else:
        progress = Progress.on(device)
    parts = (model, optimizer, scheduler)
    return Run(
        cfg, settings, device, data, *parts, out_dir, progress, layout, scaler=scaler, sweep=sweep
    )


def load_data(
    cfg: DictConfig, settings: schemas.Settings, device: torch.device, layout: World
) -> Splits:
    """The dataset, checked against the settings, on the device in tensor mode."""
    data = build_data(cfg.dataset.source)
    check_data(cfg, data, settings.loader.batch_size, layout.size)
    if settings.loader.mode == "tensor":
        data = data.to(device)
    log.info(
        "data: %d train / %d val samples, input %s, %d classes",
        len(data.train),
        len(data.val),
        data.input_shape,
        data.num_classes,
    )
    return data


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


def fit_run(run: Run, writer: Any, stop: Interrupts) -> dict[str, Any]:
    """Train the run with `mnistlab.loop.fit.fit`; its metrics, with where and how big it ran."""
    out = Outputs(writer, run.save_checkpoint, run.best, stop, run.clock)
    prune_settings = run.settings.sweep.prune
    loop_plan = dataclasses.replace(
        plan(run.settings.loop, run.cfg.objective),
        prune=prune_hook(run),
        prune_nonfinite=prune_settings.diverged,
    )
    parts = trainee(run), source(run), loop_plan
    metrics = fit(*parts, run.progress, out)
    return metrics | {
        "world_size": run.world.size,
        "global_batch_size": run.world.size * run.settings.loader.batch_size,
        "device": describe(run.device),
    }


def prune_hook(run: Run) -> prune.Hook | None:
    """The sweep.prune rules for this run (mnistlab.loop.prune); rank 0 alone reads other jobs."""
    targets = run.data.val.targets
    chance = torch.bincount(targets).max().item() / len(targets)  # always the commonest class
    in_sweep = run.sweep if run.world.is_main else None
    settings, objective = run.settings.sweep.prune, run.cfg.objective
    sweep = None if in_sweep is None else in_sweep.folder
    rules = prune.rules(settings, objective, run.progress.per_epoch, chance, sweep, run.out_dir)
    trial = None if in_sweep is None or in_sweep.trial is None else in_sweep.trial(objective)
    return prune.either(rules, trial)


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


def eval_batches(run: Run, split) -> Iterator[Batch]:
    """Batches for evaluation: in order, and larger, since no gradients are kept."""
    loader = run.settings.loader
    loader = dataclasses.replace(loader, shuffle=False, batch_size=max(loader.batch_size, 1024))
    return batches(split, loader, seed=0, epoch=0)


def facts(run: Run) -> dict[str, Any]:
    """What HParams shows beside the settings: where and how big the run was."""
    parameters = sum(parameter.numel() for parameter in run.net.parameters())
    return {"device": describe(run.device), "world_size": run.world.size, "parameters": parameters}


def write_predictions(run: Run, writer) -> None:
    """The confusion matrix and mistakes on the test split, or else the validation split."""
    name, split = ("test", run.data.test) if run.data.test is not None else ("val", run.data.val)
    confusion, mistakes = board.predictions(
        run.net, eval_batches(run, split), run.device, run.data.num_classes
    )
    board.write_predictions(writer, name, confusion, mistakes, run.progress.step)
