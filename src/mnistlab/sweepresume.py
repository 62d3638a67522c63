"""A sweep re-run into its folder: each job goes on from what an earlier run left in its folder.

`mnistlab-train -m <the same arguments> hydra.sweep.dir=<the sweep>` (the command an
interrupted sweep prints; mnistlab.sweeprecord refuses any other sweep there) finishes the
sweep. Job numbers and folder names follow from the arguments, so each job finds its own
folder, and `decide` says what it does with it:
- REUSE, a completed or pruned job (its metrics.json): not trained again; the objective it
  recorded goes back to the sweeper; its files stay as they are.
- FAILED, a failed job: reported failed again, untouched, unless `sweep.retry_failed=true`
  makes it FRESH.
- RESUME, a checkpoint.pt (interrupted, or killed after a checkpoint): continued as
  `loop.resume=<its folder>` continues a run (mnistlab.resume), bit for bit, with the settings
  a re-run may change (sweeprecord.MAY_DIFFER).
- FRESH, nothing to go on from (a new job, one killed before its first checkpoint, a failed
  one retried): its old outputs are removed and it trains from the start.
Hydra saves a job's config into its folder before the job runs: `config_subfolder` sends a
re-run job's to `.hydra/resumed_<time>/`, as a single run's resume does, so the job's first
`.hydra/` stays; `start_job` removes it again where nothing is trained.
Kept free of torch: a job decides before it imports torch.
"""

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mnistlab import rundir, sweeprecord, sweepstop
from mnistlab.outputs import METRICS_FILE

REUSE, RESUME, FRESH, FAILED = "reuse", "resume", "fresh", "failed"
FINISHED = ("completed", "pruned")  # statuses of jobs that a re-run does not train again
NOTES = {REUSE: "reused", RESUME: "resumed", FAILED: "not retried"}  # for the progress line
_decided: dict[Path, str] = {}  # job folder -> what its job did, in this process


class FailedBefore(CompactHydraException):
    """A job that failed in an earlier run of the sweep, and is not retried."""


def recorded(folder: Path) -> dict[str, Any] | None:
    """A job folder's metrics.json, or None where there is none to read."""
    try:
        metrics = json.loads((folder / METRICS_FILE).read_text())
    except (OSError, ValueError):  # absent, or damaged: the checkpoint says more
        return None
    return metrics if isinstance(metrics, dict) else None


def decide(folder: Path, retry_failed: bool) -> str:
    """What a sweep's job does with what an earlier run left in its folder."""
    status = (recorded(folder) or {}).get("status")
    if status in FINISHED:
        return REUSE
    if status == "failed":
        return FRESH if retry_failed else FAILED
    return RESUME if (folder / rundir.CHECKPOINT_FILE).is_file() else FRESH


def config_subfolder(resume: str | None, retry_failed: bool = False) -> str:
    """Where Hydra saves a job's config: `.hydra/`, or beside it for a run to go on from."""
    if resume is None and HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        folder = OmegaConf.select(hydra_cfg, "runtime.output_dir", default=None)
        sweeping = hydra_cfg.mode is RunMode.MULTIRUN and isinstance(folder, str)
        if sweeping and decide(Path(folder), retry_failed) != FRESH:
            return rundir.resumed_subfolder()
    return rundir.config_subfolder(resume)


def start_job(cfg: DictConfig, out_dir: Path, record: Path | None) -> Any:
    """Before a sweep's job trains: the objective of a job to reuse; else None, cfg set to go."""
    action = _decided[out_dir] = decide(out_dir, cfg.sweep.retry_failed)
    if action in (REUSE, FAILED):
        drop(record)  # the config Hydra saved for a job that does not run
    metrics = recorded(out_dir) or {}
    if action == REUSE:
        return metrics[cfg.objective]
    if action == FAILED:
        error = str(metrics.get("error", "no error recorded")).splitlines()[0][:160]
        raise FailedBefore(
            f"{out_dir.name} failed in an earlier run of this sweep ({error}): not trained "
            "again; re-run with sweep.retry_failed=true to train it again"
        )
    if action == RESUME:
        cfg.loop.resume = str(out_dir)
    else:
        fresh_start(out_dir)
    return None


def fresh_start(folder: Path) -> None:
    """Remove what an earlier run of the job left (its first `.hydra/` is Hydra's new one)."""
    for pattern in rundir.RUN_OUTPUTS:
        for path in folder.glob(pattern):
            path.unlink()
    for path in folder.glob(f".hydra/{rundir.RESUMED_PREFIX}*"):
        shutil.rmtree(path)


def drop(record: Path | None) -> None:
    """Remove `.hydra/resumed_<time>/` where Hydra saved the config of a job that did not run."""
    if record is not None and record.name.startswith(rundir.RESUMED_PREFIX):
        shutil.rmtree(record, ignore_errors=True)


def not_started(out_dir: Path, record: Path | None) -> None:
    """A job a stopped sweep did not start: its folder goes back to what it was before."""
    if rundir.holds_run(out_dir):
        drop(record)
        return
    for name in rundir.HYDRA_OUTPUTS:  # what Hydra wrote for it: its config, its log's start
        path = out_dir / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    if not any(out_dir.iterdir()):
        out_dir.rmdir()


def changeable(overrides: Sequence[str]) -> list[str]:
    """The overrides a resumed job applies to its saved config: those a re-run may change."""
    return [item for item in overrides if sweeprecord.may_differ(item.partition("=")[0])]


def note_of(folder: Path) -> str:
    """`reused`, `resumed` or `not retried` for a job this process re-ran from its folder."""
    return NOTES.get(_decided.get(folder, FRESH), "")


class SweepResume(Callback):
    """Hydra callback: before any job, continue the sweep recorded in the folder, or refuse."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir).absolute()
        with rundir.refusal():
            sweeprecord.check(sweep, config)
        sweepstop.start(sweep, str(OmegaConf.select(config, "hydra.launcher._target_")))
