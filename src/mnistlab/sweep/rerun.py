"""A sweep re-run into its folder: each job goes on from what an earlier run left in its folder.

`mnistlab-train -m <the same arguments> hydra.sweep.dir=<the sweep>` (the command an
interrupted sweep prints; mnistlab.sweep.record refuses any other sweep there) finishes the
sweep. Job numbers and folder names follow from the arguments, so each job finds its own
folder, and `decide` says what it does with it:
- REUSE, a completed or pruned job (its metrics.json): not trained again; the objective it
  recorded goes back to the sweeper; its files stay as they are.
- FAILED, a failed job: reported failed again, untouched, unless `sweep.retry_failed=true`
  makes it FRESH.
- RESUME, a checkpoint.pt (interrupted, or killed after a checkpoint): continued as
  `loop.resume=<its folder>` continues a run (mnistlab.run.resume), bit for bit, with the settings
  a re-run may change (mnistlab.config.changeable.RERUN_MAY_DIFFER).
- FRESH, nothing to go on from (a new job, one killed before its first checkpoint, a failed
  one retried): its old outputs are removed and it trains from the start.
Hydra saves a job's config into its folder before the job runs: `config_subfolder` sends a
re-run job's to `.hydra/resumed_<time>/`, as a single run's resume does, so the job's first
`.hydra/` stays; `start_job` removes it again where nothing is trained.
Kept free of torch: a job decides before it imports torch.
"""

import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mnistlab import SettingError, files, names
from mnistlab.names import METRICS_FILE, recorded_metrics
from mnistlab.run import guard, rundir
from mnistlab.sweep import record

REUSE, RESUME, FRESH, FAILED = "reuse", "resume", "fresh", "failed"
FINISHED = (names.COMPLETED, names.PRUNED)  # a re-run does not train these again
NOTES = {REUSE: "reused", RESUME: "resumed", FAILED: "not retried"}  # for the progress line
_decided: dict[Path, str] = {}  # job folder -> what its job does, for the job's lifetime


class FailedBefore(CompactHydraException):
    """A job that failed in an earlier run of the sweep, and is not retried."""


def decide(folder: Path, retry_failed: bool) -> str:
    """What a sweep's job does with what an earlier run left in its folder."""
    status = (recorded_metrics(folder) or {}).get("status")
    if status in FINISHED:
        return REUSE
    if status == names.FAILED:
        return FRESH if retry_failed else FAILED
    return RESUME if (folder / names.CHECKPOINT_FILE).is_file() else FRESH


def decided(folder: Path, retry_failed: bool) -> str:
    """What the job in `folder` does, decided once per job: the first to ask decides.

    Hydra asks first (`config_subfolder`, before it writes the job's `.hydra/`), then the job
    (`start_job`), then the progress line (`note_of`); `forget` ends it with the job.
    """
    if folder not in _decided:
        _decided[folder] = decide(folder, retry_failed)
    return _decided[folder]


def forget(folder: Path) -> None:
    """The job in `folder` has ended: a later job there decides afresh."""
    _decided.pop(folder, None)


def config_subfolder(resume: str | None, retry_failed: bool = False) -> str:
    """Where Hydra saves a job's config: `.hydra/`, or beside it for a run to go on from."""
    if resume is None and HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        folder = OmegaConf.select(hydra_cfg, "runtime.output_dir", default=None)
        sweeping = hydra_cfg.mode is RunMode.MULTIRUN and isinstance(folder, str)
        if sweeping and decided(Path(folder), retry_failed) != FRESH:
            return rundir.resumed_subfolder()
    return rundir.config_subfolder(resume)


def start_job(cfg: DictConfig, out_dir: Path, config_dir: Path | None) -> str:
    """Before a sweep's job trains: decide, and prepare its folder and `cfg` for what it does.

    REUSE: return `reused_objective` instead of training. RESUME: `cfg.loop.resume` now names
    the folder. FRESH: the folder holds nothing of an earlier run. FAILED raises FailedBefore.
    """
    # A job folder turned into a link since the sweep began: its files are not this sweep's.
    guard.check_links(out_dir.parent, "hydra.sweep.dir", (out_dir.name,))
    action = decided(out_dir, cfg.sweep.retry_failed)
    if action in (REUSE, FAILED):
        drop(config_dir)  # the config Hydra saved for a job that does not run
    if action == REUSE:
        check_objective(out_dir, cfg.objective)
    if action == FAILED:
        error = str((recorded_metrics(out_dir) or {}).get("error", "no error recorded"))
        raise FailedBefore(
            f"{out_dir.name} failed in an earlier run of this sweep ({error.splitlines()[0][:160]}"
            "): not trained again; re-run with sweep.retry_failed=true to train it again"
        )
    if action == RESUME:
        cfg.loop.resume = str(out_dir)
    elif action == FRESH:
        fresh_start(out_dir)
    return action


def check_objective(out_dir: Path, objective: str) -> None:
    """A finished job's metrics.json must hold its objective as a number, or the job fails here."""
    value = reused_objective(out_dir, objective)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FailedBefore(
            f"{out_dir.name}: its {METRICS_FILE} says it finished, but {objective} is {value!r} "
            "there, not a number: re-run with sweep.retry_failed=true to train it again"
        )


def reused_objective(out_dir: Path, objective: str) -> Any:
    """What a reused job returns to the sweeper: the objective its metrics.json recorded."""
    metrics = recorded_metrics(out_dir) or {}
    if metrics.get("status") == names.PRUNED and metrics.get(objective) is None:
        return math.nan  # pruned before its first validation: as it returned then (run.train)
    return metrics.get(objective)  # None where it recorded none


def fresh_start(folder: Path) -> None:
    """Remove what an earlier run of the job left (its first `.hydra/` is Hydra's new one)."""
    # Every task of a multi-task SLURM job may clean up at once: what is gone already is fine.
    for pattern in rundir.RUN_OUTPUTS:
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)
    for path in folder.glob(f".hydra/{rundir.RESUMED_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)


def drop(config_dir: Path | None) -> None:
    """Remove `.hydra/resumed_<time>/` where Hydra saved the config of a job that did not run."""
    if config_dir is not None and config_dir.name.startswith(rundir.RESUMED_PREFIX):
        shutil.rmtree(config_dir, ignore_errors=True)


def not_started(out_dir: Path, config_dir: Path | None) -> None:
    """A job a stopped sweep did not start: its folder goes back to what it was before."""
    if rundir.holds_run(out_dir):
        drop(config_dir)
        return
    # What Hydra wrote for it (its config, its log's start) and what the run had begun to write
    # (a signal after its TensorBoard writer was made: the events' first lines, scalars.csv).
    rundir.remove_outputs(out_dir)


def changeable(overrides: Sequence[str]) -> list[str]:
    """The overrides a resumed job applies to its saved config: those a re-run may change."""
    return [item for item in overrides if record.may_differ(item.partition("=")[0])]


def note_of(folder: Path) -> str:
    """`reused`, `resumed` or `not retried` for a job this process re-ran from its folder."""
    return NOTES.get(_decided.get(folder, FRESH), "")


def begin(sweep: Path, config: DictConfig) -> None:
    """Before any job: hold the sweep folder, and continue the sweep recorded there or refuse."""
    try:
        hold(sweep)
        guard.check_links(sweep, "hydra.sweep.dir")  # Hydra writes its files through links
        record.check(sweep, config)
    except (OSError, ValueError) as error:
        raise SettingError(
            f"hydra.sweep.dir={sweep} could not be checked ({type(error).__name__}: "
            f"{error}): repair or remove what it names, or choose another hydra.sweep.dir"
        ) from None


_lock: int | None = None  # the sweep folder, open and locked; the system unlocks it at exit
_made: Path | None = None  # the topmost folder this sweep had to create


def refused(sweep: Path) -> None:
    """The grid was refused before any job ran: its records go, and the folders made for it."""
    record.forget(sweep)
    if _made is not None:
        guard.remove_fresh(sweep, _made, everything=False)


def hold(sweep: Path) -> None:
    """Refuse a second mnistlab-train in this sweep folder while one runs there."""
    global _lock, _made
    _made = guard.first_missing(sweep)
    sweep.mkdir(parents=True, exist_ok=True)
    _lock = files.hold(sweep)
    if _lock is None:
        raise SettingError(
            f"hydra.sweep.dir={sweep} is in use by another mnistlab-train: wait for it to end "
            "(two at once would train the same jobs twice), or choose another hydra.sweep.dir"
        )
