"""One training run: check the config, build data, model and optimizer, fit, write metrics.

`train(cfg, out_dir)` is plain Python (tests call it); `mnistlab.train` runs it under Hydra.
"""

import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from mnistlab import SettingError, board, checkpoint, config, distributed, resume, rundir
from mnistlab.data import Batch, Splits, batches, check_sizes, num_batches
from mnistlab.data import build as build_data
from mnistlab.device import configure as configure_device
from mnistlab.device import denormals, describe, resolve_device
from mnistlab.distributed import World
from mnistlab.history import History
from mnistlab.loop import NonFiniteLoss, Progress, check_finite, evaluate, train_epoch
from mnistlab.models import build as build_model
from mnistlab.optim import build_optimizer
from mnistlab.optim import probe as probe_optimizer
from mnistlab.outputs import write_metrics

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
    """The parts of one training run, built from its config."""

    cfg: DictConfig
    settings: config.Settings
    device: torch.device
    data: Splits
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    out_dir: Path
    progress: Progress
    world: World
    clock: float = dataclasses.field(init=False)  # perf_counter() when the run's time was 0

    def __post_init__(self) -> None:
        # A resumed run's clock goes on from the time its earlier parts took.
        self.clock = time.perf_counter() - self.progress.wall_seconds

    @property
    def net(self) -> torch.nn.Module:
        """The model itself, unwrapped from DistributedDataParallel where it is wrapped."""
        return getattr(self.model, "module", self.model)

    def save_checkpoint(self) -> None:
        if self.world.is_main:
            self.progress.wall_seconds = time.perf_counter() - self.clock
            path = self.out_dir / checkpoint.FILENAME
            try:
                checkpoint.save(path, self.cfg, self.net, self.optimizer, self.progress)
            except checkpoint.DiskFull as err:
                failed = {"status": "failed", "error": str(err), "step": self.progress.step}
                with suppress(OSError):  # the disk may be too full for this small file too
                    write_metrics(self.out_dir, failed)
                raise


class NoWriter:
    """Stands in for SummaryWriter on ranks other than 0, which write nothing."""

    def add_scalar(self, *args: object, **kwargs: object) -> None:
        pass

    def close(self) -> None:
        pass


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGUSR2 came during training; a checkpoint was saved, the run stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class NotStarted(SystemExit):
    """SIGINT or SIGTERM arrived before training started: nothing to save, the process ends.

    A SystemExit (code 130 or 143), since it may surface anywhere in data loading or model
    building, where an `except Exception` (Hydra's instantiate has one) would wrap it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.message = (
            f"interrupted before training started ({signal.Signals(signum).name}): "
            "no checkpoint written; run the same command again"
        )


class Interrupts:
    """SIGINT/SIGTERM/SIGUSR2 for one run, in three phases.

    SIGUSR2 is SLURM's early warning under submitit (a time limit or preemption ahead):
    mnistlab.slurm requeues the job once the run has saved its checkpoint.

    Building (from `with` to `hold()`): a signal ends the run at once with NotStarted, so a
    long data load or download stops at once. Training (from `hold()`): a signal sets
    `signum`, and the loop stops at a step boundary, saving a checkpoint. After `finish()`
    (the final test): nothing is left to stop, so a signal is only noted in `late`.
    """

    signum: int | None = None
    late: int | None = None
    building, finished = True, False

    def __enter__(self) -> "Interrupts":
        self.previous = {}
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.building:
            raise NotStarted(signum)
        if self.finished:
            self.late = signum
        else:
            self.signum = signum

    def hold(self) -> None:
        """From now on a signal waits for the loop, which stops at a step boundary."""
        self.building = False

    def requested(self) -> bool:
        """Whether this process should stop: a signal came, or torchrun's agent is gone."""
        if self.signum is None and distributed.launcher_gone():
            log.warning("the torchrun agent that started this rank is gone: stopping")
            self.signum = signal.SIGTERM
        return self.signum is not None

    def agreed(self, world: World, device: torch.device) -> bool:
        """Whether any rank should stop; every rank gets the same answer at the same step."""
        if not world.any(self.requested(), device):
            return False
        self.signum = self.signum or signal.SIGTERM  # where it was another rank's signal
        return True

    def finish(self) -> None:
        """Training is over: a signal from now on has nothing left to stop."""
        self.finished = True
        if self.signum is not None:
            self.late, self.signum = self.signum, None

    def __exit__(self, kind: type | None, error: BaseException | None, trace: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if isinstance(error, NotStarted):
            log.warning(error.message)


def train(
    cfg: DictConfig,
    out_dir: Path,
    overrides: Sequence[str] = (),
    config_sources: Sequence[str] = resume.DEFAULT_SOURCES,
    config_record: Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate as `cfg` says; write TensorBoard events and metrics.json to out_dir.

    With `loop.resume`, the run continues in its own folder from its saved config, changed by
    those of `overrides` (the command's explicit ones) that a resume allows (mnistlab.resume),
    and writes the config it continues with to `config_record`/config.yaml.
    `config_sources` are where the config groups live: what a saved config may call.
    """
    state = None
    if cfg.loop.resume is not None:
        resumed = resume.prepare(cfg, overrides, config_sources)
        if resumed.finished is not None:
            return resumed.finished  # nothing to do, and nothing is touched
        state, cfg, out_dir = resumed.state, resumed.cfg, resumed.folder
        if config_record is not None:
            OmegaConf.save(cfg, config_record / "config.yaml")
    with Interrupts() as stop:
        run = build(cfg, out_dir, state)
        if state is not None:
            resume.carry_on(run.optimizer, run.progress, resumed.changes)
        stop.hold()  # the writer below must be closed cleanly: no exception from a signal

        from torch.utils.tensorboard import SummaryWriter  # heavy import: only when a run starts

        is_main = run.world.is_main
        # purge_step hides events a killed process logged after its last checkpoint.
        purge = run.progress.step + 1 if state is not None else None
        writer = (
            History(SummaryWriter(log_dir=str(out_dir), purge_step=purge), out_dir, purge)
            if is_main
            else NoWriter()
        )
        with closing(writer):
            if state is None and is_main:
                board.write_session_start(writer, board.hparams_of(cfg) | facts(run))
                board.write_config(writer, cfg)
            try:
                metrics = fit(run, writer, stop)
            except NonFiniteLoss as err:
                lr = run.optimizer.param_groups[0]["lr"]
                saved = out_dir / checkpoint.FILENAME
                kept = (
                    f"the last good checkpoint is kept: continue from it with a lower rate, "
                    f"{rundir.resume_command(out_dir)} optimizer.lr=<lower>"
                    if saved.exists()
                    else "no checkpoint yet"
                )
                message = f"{err} with optimizer.lr={lr:g}: run marked failed; {kept}"
                if is_main:
                    failed = {"status": "failed", "error": message, "step": run.progress.step}
                    write_metrics(out_dir, failed)
                    board.write_end(writer, failed, run.progress.step)
                raise NonFiniteLoss(message) from None
            except Exception as error:  # recorded in TensorBoard, then raised as it was
                if is_main:
                    failed = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
                    board.write_end(writer, failed, run.progress.step)
                raise
            if is_main:
                if metrics["status"] == "completed":
                    write_predictions(run, writer)
                board.write_end(writer, metrics, run.progress.step)
    if is_main:
        write_metrics(out_dir, metrics)
    if stop.signum is not None:
        raise Interrupted(stop.signum)
    return metrics


def build(cfg: DictConfig, out_dir: Path, state: dict[str, Any] | None) -> Run:
    """Check the config, then build data, model and optimizer in that order (or restore them).

    Every check that can fail comes before training: the settings alone first (before any
    data loads), then what depends on the data (sizes, objective, model on its inputs).
    """
    settings, layout = config.check(cfg), distributed.world()
    device = resolve_device(settings.device.name)
    distributed.check_devices(device, layout)
    if layout.size > 1 and settings.loop.nan_policy == "skip":
        raise SettingError("loop.nan_policy=skip is single-process only (ranks must step together)")
    configure_device(settings.device)
    probe_optimizer(cfg.optimizer)
    log.info("device: %s; CPU denormal floats %s", describe(device), denormals())
    torch.manual_seed(settings.loop.seed)
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
    model = build_model(cfg.model, data.input_shape, data.num_classes).to(device)
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
    optimizer = build_optimizer(
        cfg.optimizer, model.parameters(), device, settings.loop.fast_optimizer
    )
    if state is not None:
        progress = checkpoint.restore(state, getattr(model, "module", model), optimizer, device)
        log.info("resumed at epoch %d, step %d", progress.epoch, progress.step)
    else:
        progress = Progress.on(device)
    return Run(cfg, settings, device, data, model, optimizer, out_dir, progress, layout)


def check_data(cfg: DictConfig, data: Splits, batch_size: int, ranks: int) -> None:
    """What the settings could not show alone: split sizes, and an objective the data has."""
    check_sizes(data, cfg.dataset.source, batch_size, ranks)
    if cfg.objective.startswith("test_") and data.test is None:
        raise SettingError(
            f"objective={cfg.objective} needs a test split, but {cfg.dataset.source._target_} "
            "has none: use objective=val_loss or val_accuracy, or a dataset with a test split "
            "(dataset=mnist or idx)"
        )


# Under torchrun the ranks must stop at the same step, so they agree on it: an all-reduce of
# one flag every STOP_EVERY steps, and at every epoch's end. With gloo on 2 CPU processes that
# all-reduce took ~0.5 ms, against ~7 ms per step of the lesson MLP at batch 64; whole 2-epoch
# runs (median of 3, on a loaded 2-core machine, so roughly) lost 18% checking every step,
# 4% every 5 steps, which stops a run within 5 steps of SIGTERM. One process checks every step
# for free. (The logging points agreed before: 28.6 s late with a large log_every_n_batches.)
STOP_EVERY = 5


def fit(run: Run, writer, stop: Interrupts) -> dict[str, Any]:
    """Train the remaining epochs (validating and checkpointing each), then test if there is one."""
    loop, loader, progress = run.settings.loop, run.settings.loader, run.progress
    world = run.world
    steps_per_epoch = num_batches(len(run.data.train) // world.size, loader.batch_size)
    every = STOP_EVERY if world.size > 1 else 1

    def after_step() -> bool:
        checkpoint_every = loop.checkpoint_every_n_steps
        if checkpoint_every is not None and progress.step % checkpoint_every == 0:
            if not torch.isfinite(progress.epoch_loss):
                raise NonFiniteLoss(
                    f"the training loss became non-finite before step {progress.step}"
                )
            run.save_checkpoint()
        return progress.step % every == 0 and stop.agreed(world, run.device)

    if stop.agreed(world, run.device):  # a signal while the TensorBoard writer was made
        raise NotStarted(stop.signum)
    interrupted = False
    while progress.epoch < loop.epochs and not interrupted:
        tick, samples_before = time.perf_counter(), progress.epoch_samples
        epoch_batches = batches(
            run.data.train,
            loader,
            seed=loop.seed,
            epoch=progress.epoch,
            start=progress.epoch_step,
            rank=world.rank,
            world_size=world.size,
        )
        finished = train_epoch(
            run.model,
            epoch_batches,
            run.optimizer,
            loop,
            progress,
            total=steps_per_epoch,
            log=lambda step, values: board.log_batch(writer, step, values),
            after_step=after_step,
            description=f"epoch {progress.epoch + 1}/{loop.epochs}",
            world=world,
        )
        progress.seconds += time.perf_counter() - tick
        progress.samples += progress.epoch_samples - samples_before
        if finished:
            trained = world.size * (progress.epoch_samples - samples_before)  # since a resume too
            end_epoch(run, writer, trained / (time.perf_counter() - tick))
        run.save_checkpoint()
        # Agreed at every epoch's end too: no rank may start an epoch that another skips.
        interrupted = not finished or stop.agreed(world, run.device)
    if not interrupted:
        stop.finish()
    metrics = {
        "status": "interrupted" if interrupted else "completed",
        **progress.val,
        "epochs": progress.epoch,
        "steps": progress.step,
        "samples_per_second": world.size * progress.samples / max(progress.seconds, 1e-9),
        "world_size": world.size,
        "global_batch_size": world.size * loader.batch_size,
        "wall_time_s": time.perf_counter() - run.clock,  # all the run's parts
        "device": describe(run.device),
        **({"resumes": progress.resumes} if progress.resumes else {}),
    }
    if not interrupted and run.data.test is not None:
        metrics.update(test(run, writer))
    if stop.late is not None:
        name = signal.Signals(stop.late).name
        log.warning("%s came after training had finished: the run completed anyway", name)
    return metrics


def end_epoch(run: Run, writer, samples_per_second: float) -> None:
    """Validate, log the epoch's metrics, and move `progress` on to the next epoch."""
    progress, epochs, step = run.progress, run.settings.loop.epochs, run.progress.step
    mean_loss = run.world.mean(progress.epoch_loss / progress.epoch_samples).item()
    train_loss = check_finite(mean_loss, f"training loss by step {step}")
    train_accuracy = run.world.mean(progress.epoch_correct).item() / progress.epoch_samples
    val_loss, val_accuracy = evaluate(run.net, eval_batches(run, run.data.val), run.device)
    check_finite(val_loss, f"validation loss after step {step}")
    progress.val = {
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
    }
    for key, value in progress.val.items():
        writer.add_scalar(board.TAGS[key], value, step)
    log.info(
        "epoch %d/%d  train_loss %.4f  train_accuracy %.2f%%  val_loss %.4f  val_accuracy %.2f%%"
        "  (%.0f samples/s)",
        progress.epoch + 1,
        epochs,
        train_loss,
        100 * train_accuracy,
        val_loss,
        100 * val_accuracy,
        samples_per_second,
    )
    progress.epoch += 1
    progress.start_epoch()


def test(run: Run, writer) -> dict[str, float]:
    """Evaluate on the test split once training is done."""
    loss, accuracy = evaluate(run.net, eval_batches(run, run.data.test), run.device)
    writer.add_scalar(board.TAGS["test_loss"], loss, run.progress.step)
    writer.add_scalar(board.TAGS["test_accuracy"], accuracy, run.progress.step)
    log.info("test_loss %.4f  test_accuracy %.2f%%", loss, 100 * accuracy)
    return {"test_loss": loss, "test_accuracy": accuracy}


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
