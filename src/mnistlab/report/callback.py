"""The sweep's Hydra callback: what happens before the first job, after each, and at the end.

The order is stated here, in code: before the first job, the sweep folder is checked and
locked, the sweep recorded or continued (mnistlab.sweep.rerun), its context decided and
written (mnistlab.sweep.context), its signals taken (mnistlab.sweep.interrupt), and one exit
hook registered; after each job, in the job's own process, a failure is recorded and the
summary, the progress line and report.html are brought up to date; at the process's exit, the
ranked table, then the command that continues a stopped sweep. Hydra's on_multirun_end is
not used: Hydra never calls it once a job has raised, nor after Ctrl-C.
"""

import atexit
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from mnistlab import names
from mnistlab.private import hydra as hydra_private
from mnistlab.report import markup
from mnistlab.report.jobs import find_jobs, objective_of
from mnistlab.report.summary import progress_line, record_failure, write_summary
from mnistlab.run import guard
from mnistlab.sweep import context, grid, interrupt, ray, rerun, slurm

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    """Hydra callback (conf/train.yaml): a sweep's steps before its first job and after each."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before any job: check, lock and record the folder; decide the sweep's context."""
        sweep = Path(config.hydra.sweep.dir).absolute()
        with guard.refusal():  # Hydra only warns when a callback raises: end the command
            grid.check_size(config)  # before anything is built for it
            slurm.check_cluster(config)
            ray.check_cluster(config)
            guard.check_folder(sweep, "hydra.sweep.dir")
            rerun.begin(sweep, config)  # continues the sweep recorded there, or refuses
            sweep_context = context.start(config)  # before any job folder is named
        interrupt.start(sweep_context)
        # TensorBoard's modules for the sweep's HParams experiment load now: at the exit hook
        # below, importing them (concurrent.futures registers an exit hook) would fail.
        from mnistlab.report import experiment  # noqa: F401

        # Hydra skips on_multirun_end once a job has failed, and Ctrl-C skips it too; an exit
        # hook runs whether the sweep succeeded, failed or was stopped (after Hydra's error).
        atexit.register(end_of_sweep, Path(config.hydra.sweep.dir), sys.argv[1:])

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """In the job's own process, whichever launcher ran it: the sweep's files, and a line."""
        with guard.refusal():  # a summary that cannot be written stops the sweep, in one line
            self.record_job(config, job_return)

    def record_job(self, config: DictConfig, job_return: JobReturn) -> None:
        """Record a failure; rewrite the summary, print the progress line, refresh the report."""
        if config.hydra.mode is not RunMode.MULTIRUN:
            return  # a single run reports its own failure on the terminal
        sweep, out_dir = Path(config.hydra.sweep.dir), Path(config.hydra.runtime.output_dir)
        error = hydra_private.returned(job_return)
        stopped = isinstance(error, interrupt.JobInterrupted)  # metrics.json says so already
        if stopped and not error.started:
            return  # the sweep stopped before this job began: nothing of it to summarise
        if out_dir.is_symlink():  # refused at its start (mnistlab.run.guard): not ours to write
            log.error("job failed: %s", error)
            return
        if job_return.status is JobStatus.FAILED and not stopped:
            log.error("job failed: %s: %s", type(error).__name__, error)
            record_failure(out_dir, error)
            failed_session(out_dir, config, f"{type(error).__name__}: {error}")
        jobs = find_jobs(sweep)
        write_summary(sweep, jobs)
        line = progress_line(jobs, out_dir.name, rerun.note_of(out_dir), context.read(sweep))
        print(line, flush=True)
        rerun.forget(out_dir)
        from mnistlab.report import page  # matplotlib loads only where a report is drawn

        page.refresh(sweep, config.sweep.report_every)


def failed_session(out_dir: Path, config: DictConfig, error: str) -> None:
    """The job's FAILURE session in TensorBoard where it failed before writing any events."""
    from mnistlab.run import board  # torch: loaded only where a job failed

    name = board.session_name(config, out_dir, Path(config.hydra.sweep.dir))
    try:
        board.write_failed_session(out_dir, config, error, name)
    except OSError as write_error:  # a full disk, a read-only folder: the sweep goes on
        log.warning("no TensorBoard session written for %s: %s", out_dir, write_error)


def end_of_sweep(sweep: Path, argv: list[str]) -> None:
    """At the sweep process's exit: the ranked table and report, then how to continue."""
    print_summary(sweep)
    interrupt.print_continue(argv, sweep)


def print_summary(sweep_dir: Path) -> None:
    """Rebuild the summary and the report and print them, if the sweep started a job."""
    jobs = find_jobs(sweep_dir)
    if jobs:
        print(write_summary(sweep_dir, jobs), flush=True)
        print_report([sweep_dir], sweep_dir / names.REPORT_FILE)
        hparams_experiment(sweep_dir, jobs)


def hparams_experiment(sweep_dir: Path, jobs: list) -> None:
    """TensorBoard's HParams experiment of the sweep, its objective first (never fatal)."""
    objective = objective_of(jobs) or "val_loss"  # no job's config readable: the default
    try:
        from mnistlab.report.experiment import write_experiment  # loaded at the sweep's start

        write_experiment(sweep_dir, jobs, objective)
    except (OSError, ValueError, RuntimeError) as error:  # read-only, damaged, shutting down
        log.warning("TensorBoard's HParams experiment not written in %s: %s", sweep_dir, error)


def print_report(sweep_dirs: list[Path], out: Path, group_over: str = "loop.seed") -> None:
    """Write report.html for `sweep_dirs`; print where it is and how to open TensorBoard."""
    from mnistlab.report import page  # matplotlib loads only here

    try:
        page.write_report(sweep_dirs, out, group_over)
    except OSError as error:  # a read-only sweep folder, a full disk: the table was printed
        log.warning("report.html not written: %s", error)
    else:
        print(f"report: {markup.printable(str(out))}")  # a folder name's bad bytes escaped
    for sweep_dir in sweep_dirs:  # one sweep per logdir: HParams compares like with like
        folder = markup.printable(shlex.quote(str(sweep_dir)))
        print(f"TensorBoard: tensorboard --logdir {folder}", flush=True)
