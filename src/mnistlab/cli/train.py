"""mnistlab-train: one training run, or with -m a sweep of them, composed by Hydra.

mnistlab-train                                   # synthetic digits, lesson MLP, Adam, 3 epochs
mnistlab-train optimizer=sgd optimizer.lr=0.1 loop.epochs=5
mnistlab-train -m optimizer=sgd,adam,rmsprop optimizer.lr=0.1,0.01,0.001
mnistlab-train loop.resume=outputs/runs/<run>    # continue an interrupted run

Only Hydra loads with this module; torch and the training code (mnistlab.run.training) load
when a job starts, so `--help` and `--cfg job` answer in a fraction of torch's own import time.
`main` does only Hydra's part (the folder, the sweep's context, the objective to return);
`mnistlab.run.training.run_training` is plain Python.
"""

import logging
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mnistlab import names
from mnistlab.cli import arguments, logfile, process, resolvers
from mnistlab.loop import signals
from mnistlab.parts import cores  # noqa: F401  # its measure of other processes' load starts now
from mnistlab.report import markup
from mnistlab.run import rundir
from mnistlab.sweep import context, interrupt, optuna_study, rerun
from mnistlab.sweep.context import SweepContext

log = logging.getLogger(__name__)
resolvers.register()


@hydra.main(version_base="1.3", config_path=names.CONF_DIR, config_name=names.TRAIN_CONFIG)
def main(cfg: DictConfig) -> Any:
    """Hydra entry point: train in Hydra's output folder, return the objective for sweepers."""
    hydra_cfg = HydraConfig.get()
    logfile.one_line_on_failure()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    # Where Hydra saved this command's config: .hydra/resumed_<time>/ when resuming.
    record = None if hydra_cfg.output_subdir is None else out_dir / hydra_cfg.output_subdir
    sweeping = hydra_cfg.mode is RunMode.MULTIRUN
    sweep = context.read(hydra_cfg.sweep.dir) if sweeping else None
    stopped_by_sweep = sweep is not None and sweep.stoppable()  # SLURM's jobs requeue instead
    try:
        return job(cfg, hydra_cfg, record, sweeping, sweep)
    except signals.Interrupted as stop:
        if stopped_by_sweep:  # the sweep prints the command that continues it, this job included
            log.warning("%s: checkpoint saved", stop)
            interrupt.job_interrupted(stop.exit_code - 128)
        folder = rundir.resumed_folder(cfg.loop.resume) or out_dir
        log.warning("%s: checkpoint saved; continue with: %s", stop, rundir.resume_command(folder))
        raise SystemExit(stop.exit_code) from None
    except signals.NotStarted as stop:  # while torch or the data loaded
        if stopped_by_sweep:
            rerun.not_started(out_dir, record)
            interrupt.job_interrupted(int(stop.code or 0) - 128, started=False)
        raise
    except interrupt.JobInterrupted:  # a pooled worker's job that a stopped sweep did not start
        rerun.not_started(out_dir, record)
        raise


def job(
    cfg: DictConfig,
    hydra_cfg: DictConfig,
    record: Path | None,
    sweeping: bool,
    sweep: SweepContext | None,
) -> Any:
    """Train (or, in a sweep re-run into its folder, reuse or resume) the job; its objective."""
    out_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    if sweeping and cfg.loop.resume is None:  # not a SLURM job requeued with loop.resume
        if sweep is not None:
            interrupt.job_starting(sweep)
        if rerun.start_job(cfg, out_dir, record) == rerun.REUSE:
            return rerun.reused_objective(out_dir, cfg.objective)
        overrides = rerun.changeable(overrides)
    # A signal while torch loads (a second or more) ends the job in one line, as in data loading.
    with signals.Interrupts():
        with process.lasting_imports():  # torch loads here, once a job really starts
            import torch._dynamo  # noqa: F401  # which torch's optimizers load: frozen with it

            from mnistlab.parts import distributed
            from mnistlab.run import build, training
        distributed.adopt_slurm()
        if distributed.world().size > 1:
            rundir.set_started(distributed.join())  # a SLURM task; torchrun's joined in `cli`
    # A resume applies the command's explicit overrides to the saved config; a saved config
    # may call only what the config groups on this command's search path offer.
    sources = [f"{source.schema}://{source.path}" for source in hydra_cfg.runtime.config_sources]
    in_sweep = None
    if sweeping:
        parallel = 1 if sweep is None else sweep.parallel
        in_sweep = build.InSweep(Path(hydra_cfg.sweep.dir), optuna_study.trial_hook, parallel)
    metrics = training.run_training(cfg, out_dir, overrides, sources, record, in_sweep)
    if not sweeping and distributed.world().is_main:
        say_where(out_dir if cfg.loop.resume is None else Path(cfg.loop.resume))
    return metrics[cfg.objective]


def say_where(folder: Path) -> None:
    """A single run ends as a sweep does: its folder, and the command that shows it."""
    folder = folder.parent if folder.is_file() else folder  # loop.resume=<run>/checkpoint.pt
    near = os.path.relpath(folder)
    shown = markup.printable(shlex.quote(folder.as_posix() if near.startswith("..") else near))
    print(f"run: {shown}\nTensorBoard: tensorboard --logdir {shown}", flush=True)


def resume_argv(argv: list[str]) -> list[str]:
    """On resume, `key=value` becomes `++key=value`: the settings are the saved run's.

    Hydra composes the command on the default groups, where a setting of the run's own group
    may not exist (dataset.source.root of a dataset=mnist run); `++` adds it there, and
    mnistlab.run.resume applies it to the saved config, or refuses it, as the contract says.
    """
    if not any(arg.startswith("loop.resume=") for arg in argv) or {"-m", "--multirun"} & {*argv}:
        return argv
    setting = re.compile(r"[A-Za-z_]\w*(\.\w+)+=.*", re.DOTALL)
    own = ("hydra.", "loop.resume=")  # Hydra's settings, and the resume itself, stay as they are
    return [
        f"++{arg}" if setting.fullmatch(arg) and not arg.startswith(own) else arg for arg in argv
    ]


def cli() -> None:
    """Console entry point: the command, its exit handlers, then the process ends."""
    try:
        command()
    except SystemExit as end:
        process.leave(end.code)
    process.stop_idle_workers()
    process.leave(0)


def command() -> None:
    """mnistlab-train itself. Under torchrun the ranks meet before Hydra picks the run folder."""
    sys.argv[1:] = resume_argv(sys.argv[1:])
    arguments.prepare(sys.argv[1:])  # bad overrides, and Hydra's errors, in one line each
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # A sweep (-m, or a preset's hydra.mode) that a signal stops exits with 130 / 143
        # and prints the command that continues it (mnistlab.sweep.interrupt).
        if {"-m", "--multirun"} & set(sys.argv[1:]):
            with interrupt.stopping():
                main()  # each job handles its own signals, the sweep those between jobs
            return
        # From Hydra's start to the run's own handling (Hydra composes, opens train.log and
        # writes .hydra/ first): a signal ends the command in one line, exit 130/143.
        with interrupt.stopping(), signals.Interrupts():
            main()
        return
    from mnistlab.parts import distributed

    if {"-m", "--multirun"} & set(sys.argv[1:]):
        raise SystemExit("mnistlab-train: sweeps (-m) do not run under torchrun; start one per job")
    rundir.set_started(distributed.join())  # rank 0's clock names the run folder
    if not distributed.world().is_main:
        # Only rank 0 writes into the run folder: no .hydra/ copy and no log file here.
        sys.argv += names.OTHER_RANK_OVERRIDES
    try:
        main()
    finally:
        distributed.leave()


if __name__ == "__main__":
    # Run the imported module's entry point, not this __main__ copy: launchers that pickle the
    # task function (joblib, submitit) can then send it by reference.
    from mnistlab.cli.train import cli as imported_cli

    imported_cli()
