"""One training run, recorded: build it (mnistlab.run.build), fit it, and write what it did.

TensorBoard gets its curves, HParams session, config and predictions; metrics.json its status
and figures, also when it fails.

`run_training(cfg, out_dir)` is plain Python (tests call it); `mnistlab.cli.train` runs it under
Hydra, `mnistlab.cli.api.train` from a script.
"""

import dataclasses
import datetime
import logging
import math
import sys
from collections.abc import Sequence
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

try:
    import resource
except ImportError:  # Windows: no peak RSS
    resource = None  # type: ignore[assignment]

import torch
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

from mnistlab import names
from mnistlab.data.splits import labels
from mnistlab.files import write_text
from mnistlab.loop import prune
from mnistlab.loop.fit import Outputs, fit
from mnistlab.loop.signals import Interrupted, Interrupts
from mnistlab.loop.step import NonFiniteLoss
from mnistlab.names import COMPLETED, FAILED, PRUNED, write_metrics
from mnistlab.parts.device import describe
from mnistlab.run import board, checkpoint, fulldisk, provenance, resume, rundir
from mnistlab.run.build import InSweep, Run, build, eval_batches, facts, plan, source, trainee
from mnistlab.run.scalars import History

log = logging.getLogger(__name__)


class NoWriter:
    """Stands in for SummaryWriter on ranks other than 0, which write nothing."""

    def add_scalar(self, *args: object, **kwargs: object) -> None:
        pass

    def close(self) -> None:
        pass


def run_training(
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
    began, resumed = datetime.datetime.now(), None
    if cfg.loop.resume is not None:
        resumed = resume.prepare(cfg, overrides, config_sources)
        if resumed.finished is not None:
            return resumed.finished  # nothing to do, and nothing is touched
        cfg, out_dir = resumed.cfg, resumed.folder
        if config_record is not None:
            write_text(config_record / "config.yaml", OmegaConf.to_yaml(cfg))
    with Interrupts() as stop, fulldisk.one_line(out_dir):
        run = build(cfg, out_dir, resumed, sweep)
        stop.hold()  # the writer below must be closed cleanly: no exception from a signal
        with closing(open_writer(run, resumed is not None)) as writer:
            where_from(run, writer, began, None if resumed is None else config_record)
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


def where_from(run: Run, writer: Any, began: datetime.datetime, resumed: Path | None) -> None:
    """Rank 0 records where the run came from: in its folder (a resume's beside its config,
    in `resumed`) and its Text tab. Never fatal (mnistlab.run.provenance)."""
    if run.world.is_main:
        found = provenance.record(resumed or run.out_dir, began, run.device)
        board.write_provenance(writer, provenance.as_text(found), run.progress.step)


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
        sweep = None if run.sweep is None else Path(run.sweep.folder)
        name = board.session_name(run.cfg, run.out_dir, sweep)
        board.write_session_start(writer, board.hparams_of(run.cfg) | facts(run), name)
        board.write_config(writer, run.cfg)
    seen = board.Predictions(run.data.num_classes, run.device)  # by the final test, if any
    try:
        metrics = fit_run(run, writer, stop, seen)
    except NonFiniteLoss as err:
        raise diverged(run, writer, err) from None
    except Exception as error:  # recorded in metrics.json and TensorBoard, then raised
        error = rank_lost(run, error) or error
        if is_main:
            failed = {"status": FAILED, "error": f"{type(error).__name__}: {error}"}
            with suppress(OSError):  # a full disk is the error being reported
                write_metrics(run.out_dir, failed | {"step": run.progress.step})
            board.write_end(writer, failed, run.progress.step)
        raise error from None
    if is_main:
        if metrics["status"] == COMPLETED:
            write_predictions(run, writer, seen)
        board.write_end(writer, metrics, run.progress.step)
    return metrics


class RankLost(CompactHydraException):
    """Another rank of a distributed run ended (killed, out of memory): this one cannot go on."""


def rank_lost(run: Run, error: Exception) -> RankLost | None:
    """The one-line error for a collective that failed because another rank is gone."""
    lost = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")
    if run.world.size == 1 or not any(text in str(error) for text in lost):
        return None
    kept = (
        f"continue it with the same torchrun command and {rundir.resume_override(run.out_dir)}"
        if (run.out_dir / checkpoint.FILENAME).exists()
        else "it has no checkpoint yet"
    )
    return RankLost(
        f"another rank of this {run.world.size}-process run ended at step {run.progress.step} "
        f"(its log or torchrun's report says why): the run is marked failed; {kept}"
    )


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


def fit_run(
    run: Run, writer: Any, stop: Interrupts, seen: board.Predictions | None = None
) -> dict[str, Any]:
    """Train the run with `mnistlab.loop.fit.fit`; its metrics, with where and how big it ran.
    `seen` gathers the predictions of the final test."""
    out = Outputs(writer, run.save_checkpoint, run.best, stop, run.clock, seen)
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
        "precision": run.settings.loop.precision,  # what it ran in: loop.precision=auto decides
        "precision_reason": run.precision_note,
        "threads_reason": run.threads_note,  # the count is in `device`
        "chance_accuracy": chance_of(run),  # below it, or near: diverged (report.html says so)
        # What the run trained on (checkpoints keep it too: a resume on other data is refused).
        **{f"data_{key}": value for key, value in (run.data_record or {}).items()},
        **peak_memory(run.device),
    }


def peak_memory(device: torch.device) -> dict[str, float]:
    """The process's peak resident memory so far (MB), and the GPU's peak where it used one.

    The process's: a sweep's jobs in one process (the basic launcher) share it, so a later
    job reports the highest of all so far.
    """
    peaks = {}
    if resource is not None:  # Unix; Linux gives kB, macOS bytes
        scale = 1 if sys.platform == "darwin" else 1024
        peaks["peak_rss_mb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6, 1
        )
    if device.type == "cuda":
        peaks["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 1e6, 1)
    return peaks


def chance_of(run: Run) -> float:
    """The validation accuracy of always guessing the most common class."""
    targets = labels(run.data.val)
    return torch.bincount(targets).max().item() / len(targets)


def prune_hook(run: Run) -> prune.Hook | None:
    """The sweep.prune rules for this run (mnistlab.loop.prune); rank 0 alone reads other jobs."""
    chance = chance_of(run)
    in_sweep = run.sweep if run.world.is_main else None
    settings, objective = run.settings.sweep.prune, run.cfg.objective
    sweep = None if in_sweep is None else in_sweep.folder
    rules = prune.rules(settings, objective, run.progress.per_epoch, chance, sweep, run.out_dir)
    trial = None if in_sweep is None or in_sweep.trial is None else in_sweep.trial(objective)
    return prune.either(rules, trial)


def write_predictions(run: Run, writer, seen: board.Predictions) -> None:
    """The confusion matrix and mistakes on the test split, or else the validation split:
    as the final test saw them (`seen`), or from a pass of their own where it saw none (no test
    split, or its figures were measured at the last evaluation and reused)."""
    name, split = ("test", run.data.test) if run.data.test is not None else ("val", run.data.val)
    if name == "test" and seen.count == len(split):
        confusion, mistakes = seen.result()
    else:
        batches = eval_batches(run, split)
        confusion, mistakes = board.predictions(run.net, batches, run.device, run.data.num_classes)
    board.write_predictions(writer, name, confusion, mistakes, run.progress.step)
