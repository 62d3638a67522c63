"""TensorBoard's HParams experiment for a sweep, written into the sweep folder at its end: the
objective first among the metrics, so that the HParams table opens on it.

Without one, TensorBoard builds the experiment from the jobs' sessions, listing the metrics in
name order: the table showed test/* and train/* and left val/loss, the objective, unticked.
The settings are the jobs' own session settings (read back from their event files), each
marked as differing between jobs or not: TensorBoard shows the differing ones first. Written
in TensorBoard's record format (no torch, no thread); a re-run of the sweep replaces it.
"""

import io
import time
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from mnistlab.files import write_bytes
from mnistlab.names import BATCH_TAGS, EVENTS_PATTERN, PRUNED, PRUNED_TAG, TAGS
from mnistlab.report.jobs import Job

SUFFIX = ".hparams"  # of the experiment's event file: the one file of its kind, replaced
# Its name: the same whichever machine or launcher ran the sweep (TensorBoard reads any name
# that holds "tfevents"; the time that event files carry in theirs is in its one event).
NAME = f"events.out.tfevents.0.sweep{SUFFIX}"
# The metrics after the objective: validation and training first, which pruned jobs log too
# (HParams shows the first five, and its parallel coordinates leave out every session that
# lacks one of those shown), then the batch curves, test figures and speed.
ORDER = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
LATER = ("test_loss", "test_accuracy", "samples_per_second", "wall_time_s")
KINDS = {"bool_value": api_pb2.DATA_TYPE_BOOL, "number_value": api_pb2.DATA_TYPE_FLOAT64}


def write_experiment(sweep: Path, jobs: list[Job], objective: str) -> None:
    """Replace the sweep folder's experiment: its jobs' settings, the objective's tag first."""
    settings: dict[str, list[Any]] = {}
    for job in jobs:
        for name, value in session_settings(job.folder).items():
            settings.setdefault(name, []).append(value)
    if not settings:
        return  # no job opened a session: TensorBoard has nothing to list
    experiment = api_pb2.Experiment(
        hparam_infos=[setting_info(name, values) for name, values in settings.items()],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in tags(
            jobs, objective)],
    )  # fmt: skip
    for old in sweep.glob(EVENTS_PATTERN + SUFFIX):
        old.unlink()  # a link among them goes, not what it leads to
    data = plugin_data_pb2.HParamsPluginData(experiment=experiment)
    data.version = metadata.PLUGIN_DATA_VERSION
    content = data.SerializeToString()
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content)
    value = Summary.Value(tag=metadata.EXPERIMENT_TAG, metadata=SummaryMetadata(plugin_data=plugin))
    event = Event(wall_time=time.time(), summary=Summary(value=[value]))
    write_bytes(sweep / NAME, records(event), durable=False)


def records(*events: Event) -> bytes:
    """Events in TensorBoard's file format, written here: no writer thread (the sweep's end
    runs at the process's exit, where no thread may start)."""
    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    for event in events:
        writer.write(event.SerializeToString())
    return buffer.getvalue()


def session_settings(folder: Path) -> dict[str, Any]:
    """The settings of a job's HParams session, from the first of its event files that
    opens one (the session start is among a run's first events); none where there is none."""
    for path in sorted(folder.glob(EVENTS_PATTERN)):
        if path.is_symlink() or not path.is_file():
            continue
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == metadata.SESSION_START_INFO_TAG:
                    start = metadata.parse_session_start_info_plugin_data(
                        value.metadata.plugin_data.content
                    )
                    return dict(start.hparams)
            if event.step > 0:
                break  # past the session start's place
    return {}


def setting_info(name: str, values: list[Any]) -> api_pb2.HParamInfo:
    """A setting's type, its values (a list, or their range for numbers), and whether the
    jobs differ in it."""
    kinds = {value.WhichOneof("kind") for value in values}
    kind = KINDS.get(kinds.pop(), api_pb2.DATA_TYPE_STRING) if len(kinds) == 1 else None
    shown = [value.number_value if kind == KINDS["number_value"] else value for value in values]
    info = api_pb2.HParamInfo(name=name, type=kind or api_pb2.DATA_TYPE_STRING)
    info.differs = len({str(value) for value in shown}) > 1
    if kind == KINDS["number_value"]:
        info.domain_interval.min_value, info.domain_interval.max_value = min(shown), max(shown)
    else:
        for value in {str(value): value for value in values}.values():
            info.domain_discrete.values.add().CopyFrom(value)
    return info


def tags(jobs: list[Job], objective: str) -> list[str]:
    """The metrics' tags: the objective's first, then validation, training and batch ones,
    then test ones (where some job has a test figure) and speed; each once."""
    has_test = any("test_loss" in job.metrics for job in jobs)
    later = [key for key in LATER if has_test or not key.startswith("test")]
    first = [TAGS[key] for key in [objective, *ORDER] if key in TAGS]
    pruned = [PRUNED_TAG] if any(job.status == PRUNED for job in jobs) else []
    return list(dict.fromkeys([*first, *BATCH_TAGS.values(), *map(TAGS.get, later), *pruned]))
