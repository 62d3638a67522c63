"""Every name that several modules share, and the one reader and writer of metrics.json.

Files of a run folder and of a sweep folder, the configs, metric keys and their TensorBoard
tags, run statuses and stop reasons: each is spelled here once. Kept free of torch, so that
`mnistlab-summarize` and `mnistlab-train --help` start quickly.
"""

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from mnistlab.files import read_inside, write_json

# The configs shipped in the package (in a checkout, src/mnistlab/conf links to conf/).
CONF_DIR = str(files("mnistlab") / "conf")
TRAIN_CONFIG = "train"  # mnistlab-train's primary config, in CONF_DIR
# Ranks other than 0 (torchrun, or the tasks of a SLURM job) leave the run folder to rank 0.
OTHER_RANK_OVERRIDES = ("hydra.output_subdir=null", "hydra/job_logging=disabled")
# hydra.launcher._target_ of the Ray launcher (conf/hydra/launcher/ray.yaml, mnistlab.sweep.ray).
RAY_LAUNCHER = "hydra_plugins.mnistlab_ray.RayLauncher"

# In every run folder.
METRICS_FILE = "metrics.json"  # the run's status and final figures (`read_metrics`)
CHECKPOINT_FILE = "checkpoint.pt"  # loop.resume names the folder or this file
BEST_FILE = "best.pt"  # the checkpoint of the best evaluation by the objective, beside it
SCALARS_FILE = "scalars.csv"  # every scalar the run logged, as `step,tag,value` lines
EVENTS_PATTERN = "events.out.tfevents.*"  # TensorBoard's event files
PROVENANCE_FILE = "provenance.json"  # where the run came from (mnistlab.run.provenance)
PATCH_FILE = "uncommitted.patch"  # `git diff HEAD` of the checkout it ran from, where dirty
PROVENANCE_TAG = "provenance"  # TensorBoard's Text tab: the provenance, as text
NOT_A_CHECKOUT = "not a git checkout"  # provenance.json's git note outside a git repository
# mnistlab-evaluate and mnistlab-predict: the file `checkpoint=...` reads, and what they write.
CHECKPOINTS = {"best": BEST_FILE, "final": CHECKPOINT_FILE}  # the first is the default
EVALUATED_SPLITS = ("test", "val")  # `split=...`; the first is the default
EVALUATIONS_DIR = "evaluations"  # <run>/evaluations/<time>_<checkpoint>_<split>.json
PREDICTIONS_FILE = "predictions.csv"  # mnistlab-predict's default --out, in the current folder
PREDICTION_COLUMNS = ("file", "predicted_class", "probability")
# In every sweep folder.
SWEEP_RECORD_FILE = "sweep.yaml"  # what defines the sweep (mnistlab.sweep.record)
HYDRA_SWEEP_FILE = "multirun.yaml"  # Hydra's record of the sweep's config, beside it
SWEEP_CONTEXT_FILE = ".sweep.json"  # what every job needs to know (mnistlab.sweep.context)
SUMMARY_CSV, SUMMARY_MD = "summary.csv", "summary.md"
REPORT_FILE = "report.html"
REPORT_STAMP_FILE = ".report.time"  # during a sweep: when report.html was last built
# What report.html links to in each job folder: Hydra's log of the job (named after the job,
# `train`) and the config it ran with.
CONFIG_LOG_FILES = (("log", "train.log"), ("config", ".hydra/config.yaml"))

# metrics.json key -> TensorBoard tag. Accuracies are fractions in both; people see percent.
TAGS = {
    "train_loss": "train/loss",  # the epoch's mean over all its samples
    "train_accuracy": "train/accuracy",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
    "test_loss": "test/loss",
    "test_accuracy": "test/accuracy",
    "samples_per_second": "train/samples_per_second",
    "wall_time_s": "train/wall_time_s",
}
# Metrics where a larger value is better (the others are losses: smaller is better).
HIGHER_IS_BETTER = frozenset({"train_accuracy", "val_accuracy", "test_accuracy"})
# What `objective` and `loop.target.metric` may name, in the order the summary shows them.
METRICS = ("train_loss", "val_loss", "val_accuracy", "test_loss", "test_accuracy")
# How a run went on its machine, not what it learned: two runs of the same job differ here.
MEASURES = ("samples_per_second", "wall_time_s", "peak_rss_mb", "peak_gpu_mb")

# metrics.json's `status`: how a run ended.
COMPLETED = "completed"
INTERRUPTED = "interrupted"  # by a signal: resume it
FAILED = "failed"
PRUNED = "pruned"  # stopped as hopeless by a sweep.prune rule: resume it to train on
# What the summary says of a job folder without a status of its own.
UNFINISHED = "unfinished"  # no metrics.json: still running, or killed
UNREADABLE = "unreadable"  # a damaged job folder


def better(metric: str, value: float, than: float | None, by: float = 0.0) -> bool:
    """Whether `value` of `metric` improves on `than` (None: nothing yet) by more than `by`."""
    if than is None:
        return True
    return value > than + by if metric in HIGHER_IS_BETTER else value < than - by


def reached(metric: str, value: float, goal: float) -> bool:
    """Whether `value` of `metric` is at least as good as `goal`."""
    return value >= goal if metric in HIGHER_IS_BETTER else value <= goal


# At every logging point: the means over the batches since the last one, and the lr.
BATCH_TAGS = {"loss": "train/batch_loss", "accuracy": "train/batch_accuracy", "lr": "train/lr"}
# A pruned job's epoch, logged where it stopped: HParams has no status for it (a resume may go
# on), so this metric is what finds and filters pruned jobs there.
PRUNED_TAG = "sweep/pruned_at_epoch"


# Why a run stopped before its last epoch (metrics.json's `stop_reason`).
EARLY_STOPPING = "early_stopping"
TARGET_REACHED = "target_reached"


def read_metrics(folder: Path) -> dict[str, Any]:
    """A run folder's metrics.json as plain values.

    FileNotFoundError where there is none; ValueError where it is damaged or not to be read
    (mnistlab.files.read_inside: a link, not a regular file, too big), nested too deeply, or
    not a JSON object.
    """
    raw = read_inside(folder, METRICS_FILE)  # FileNotFoundError, or Refused (a ValueError)
    try:
        metrics = json.loads(raw)
    except RecursionError:
        raise ValueError("it is nested too deeply to be a run's figures") from None
    except ValueError as error:
        if isinstance(error, json.JSONDecodeError | UnicodeDecodeError):
            raise
        raise ValueError("it holds a number of over 4300 digits: not a run's figure") from None
    if not isinstance(metrics, dict):
        raise ValueError(f"it holds a {type(metrics).__name__}, not an object")
    return metrics


def recorded_metrics(folder: Path) -> dict[str, Any] | None:
    """`read_metrics`, or None where there is none to read (absent, half-written, damaged)."""
    try:
        return read_metrics(folder)
    except (OSError, ValueError):
        return None


def write_metrics(folder: Path, metrics: dict[str, Any]) -> None:
    """The run's metrics.json: its status and figures, written atomically."""
    write_json(folder / METRICS_FILE, metrics)
