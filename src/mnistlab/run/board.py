"""What a run shows in TensorBoard besides its curves: HParams session, config, errors, mistakes.

HParams builds its table from every run's session-start record (the hyper-parameters) and
takes each metric as the last value of a scalar tag; a session lacking a metric is left out of
the parallel-coordinates and scatter views. So every run logs the same tags
(`history.TAGS`), whose last values are the numbers metrics.json holds: one number, one name.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from mnistlab.names import (
    COMPLETED,
    EVENTS_PATTERN,
    FAILED,
    INTERRUPTED,
    PROVENANCE_TAG,
    PRUNED,
    PRUNED_TAG,
    TAGS,
)

# An interrupted or pruned run writes no end: TensorBoard keeps the first end status a run
# writes (its reader keeps a tag's first metadata, which holds the status, and no purge drops
# it; tried: a resumed run stayed a failure), and it has no "stopped" or "pruned". So it shows
# as unknown, with a text saying why, until its resumed run ends it for good.
STATUSES = {COMPLETED: api_pb2.STATUS_SUCCESS, FAILED: api_pb2.STATUS_FAILURE}
GROUPS = ("dataset", "model", "optimizer", "scheduler", "loop")
MAX_MISTAKES = 32


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """Every setting as a flat name -> bool, number or text (lists as text, null left out)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, prefix if key == "_target_" else f"{prefix}.{key}")
        elif isinstance(node, list):
            flat[prefix] = json.dumps(node)
        elif node is not None:
            # `_target_` names the component: "torch.optim.Adam" -> optimizer = "Adam"
            named = prefix in ("optimizer", "scheduler", "model", "dataset.source")
            flat[prefix] = node.rsplit(".", 1)[-1] if named else node

    for group in GROUPS:
        walk(OmegaConf.to_container(cfg[group], resolve=True), group)
    flat.pop("loop.resume", None)  # where a run came from, not how it trains
    return flat


def value_of(value: Any) -> Any:
    """A protobuf Value holding `value` with its own type (bool before int: bool is an int)."""
    from google.protobuf import struct_pb2

    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, int | float):
        return struct_pb2.Value(number_value=value)
    return struct_pb2.Value(string_value=str(value))


def plugin_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    data.version = metadata.PLUGIN_DATA_VERSION
    plugin = SummaryMetadata.PluginData(
        plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString()
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])


def session_name(cfg: DictConfig, folder: Path, sweep: Path | None) -> str:
    """A run's name in HParams' table: its folder, then its sweep's name (`sweep.name`, else the
    sweep folder's), so that `--logdir outputs` reads `3_adam+lr:0.1 (grid)`, not
    `sweeps/2026-12-0…`; a single run's folder alone."""
    if sweep is None:
        return folder.name
    return f"{folder.name} ({OmegaConf.select(cfg, 'sweep.name') or sweep.name})"


def write_session_start(writer: Any, hparams: dict[str, Any], name: str = "") -> None:
    """Open the run's HParams session in its own event file (add_hparams makes a sub-run),
    named `name` in HParams' table (else by its folder's path from TensorBoard's --logdir)."""
    start = plugin_data_pb2.SessionStartInfo(group_name=name)
    for name, value in hparams.items():
        start.hparams[name].CopyFrom(value_of(value))
    data = plugin_data_pb2.HParamsPluginData(session_start_info=start)
    writer.file_writer.add_summary(plugin_summary(metadata.SESSION_START_INFO_TAG, data))


def write_session_end(writer: Any, status: str, step: int) -> None:
    """Close the session as SUCCESS or FAILURE."""
    end = plugin_data_pb2.SessionEndInfo(status=STATUSES[status])
    data = plugin_data_pb2.HParamsPluginData(session_end_info=end)
    writer.file_writer.add_summary(plugin_summary(metadata.SESSION_END_INFO_TAG, data), step)


def add_text(writer: Any, tag: str, text: str, step: int) -> None:
    """Text under `tag` itself (SummaryWriter.add_text would file it as `tag/text_summary`)."""
    from torch.utils.tensorboard import summary

    proto = summary.text(tag, text)
    proto.value[0].tag = tag
    writer.file_writer.add_summary(proto, step)


def write_config(writer: Any, cfg: DictConfig) -> None:
    """The resolved config as text (indented: TensorBoard renders text as Markdown)."""
    yaml = OmegaConf.to_yaml(cfg, resolve=True)
    add_text(writer, "config", "\n".join("    " + line for line in yaml.splitlines()), 0)


def write_provenance(writer: Any, text: str, step: int) -> None:
    """Where the run came from (mnistlab.run.provenance.as_text), in its Text tab."""
    add_text(writer, PROVENANCE_TAG, text, step)


def write_error(writer: Any, message: str, step: int) -> None:
    """The reason a run did not complete, in its Text tab."""
    add_text(writer, "error", message, step)


class Predictions:
    """The confusion matrix (true x predicted) and up to MAX_MISTAKES misclassified inputs,
    gathered batch by batch: from the final test's own batches (`fit`'s `Outputs.tested`), or
    from a pass of their own (`predictions`)."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.num_classes, self.count = num_classes, 0  # samples seen
        self.confusion = torch.zeros(num_classes**2, dtype=torch.long, device=device)
        self.mistakes: list[tuple[torch.Tensor, int, int]] = []

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, logits: torch.Tensor) -> None:
        predicted = logits.argmax(dim=1)
        pairs = targets * self.num_classes + predicted
        self.confusion += torch.bincount(pairs, minlength=self.confusion.numel())
        self.count += len(targets)
        if len(self.mistakes) < MAX_MISTAKES:  # a sync per batch, only until the grid is full
            for index in (predicted != targets).nonzero()[:, 0].tolist():
                image = inputs[index].cpu()
                self.mistakes.append((image, int(targets[index]), int(predicted[index])))

    def result(self) -> tuple[torch.Tensor, list[tuple[torch.Tensor, int, int]]]:
        size = self.num_classes
        return self.confusion.view(size, size).cpu(), self.mistakes[:MAX_MISTAKES]


@torch.no_grad()
def predictions(model: torch.nn.Module, batches, device: torch.device, num_classes: int):
    """`Predictions` of `model` over `batches`, in float32."""
    model.eval()
    seen = Predictions(num_classes, device)
    for inputs, targets in batches:
        inputs, targets = inputs.to(device), targets.to(device)
        seen(inputs, targets, model(inputs))
    return seen.result()


def write_predictions(writer: Any, split: str, confusion: torch.Tensor, mistakes, step: int):
    """The confusion matrix as a table and a heat map; the mistakes as a grid and a legend."""
    counts = confusion.numpy()
    header = "| true \\ predicted | " + " | ".join(map(str, range(len(counts)))) + " |"
    lines = [header, "|---" * (len(counts) + 1) + "|"]
    lines += [f"| **{t}** | " + " | ".join(map(str, row)) + " |" for t, row in enumerate(counts)]
    # A tag belongs to one plugin: the image and the table need names of their own.
    add_text(writer, f"{split}/confusion_counts", "\n".join(lines), step)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)  # each true class's share
    cells = np.kron(rows, np.ones((16, 16)))  # 16 pixels per cell
    writer.add_image(f"{split}/confusion_matrix", (255 * (1 - cells))[None].astype(np.uint8), step)
    # Pictures only (28 x 28, or one channel of it), not the `random` dataset's 3 features.
    images = [image.squeeze(0) for image, _, _ in mistakes if image.squeeze(0).dim() == 2]
    if images:
        writer.add_image(f"{split}/misclassified", grid(images), step)
        legend = ", ".join(f"{n + 1}: {t}→{p}" for n, (_, t, p) in enumerate(mistakes))
        text = f"true→predicted, row by row: {legend}"
        add_text(writer, f"{split}/misclassified_labels", text, step)


def grid(images: list[torch.Tensor], columns: int = 8) -> np.ndarray:
    """Images side by side, 8 to a row, each scaled to 0-255, 2 pixels apart (1 x H x W)."""
    height, width = images[0].shape
    rows = -(-len(images) // columns)
    canvas = np.full((rows * (height + 2), columns * (width + 2)), 128, dtype=np.uint8)
    for n, image in enumerate(images):
        pixels = image.float().numpy()
        span = max(float(pixels.max() - pixels.min()), 1e-12)
        top, left = (n // columns) * (height + 2) + 1, (n % columns) * (width + 2) + 1
        canvas[top : top + height, left : left + width] = 255 * (pixels - pixels.min()) / span
    return canvas[None]


def write_end(writer: Any, metrics: dict[str, Any], step: int) -> None:
    """Close the run in TensorBoard: its speed, its error as text, its session's end status."""
    for key in ("samples_per_second", "wall_time_s"):
        if key in metrics:
            writer.add_scalar(TAGS[key], metrics[key], step)
    if metrics["status"] == INTERRUPTED:
        # At the step after the checkpoint's: resuming purges it (it purges from there on).
        message = f"interrupted after step {step}: continue with loop.resume=<this run>"
        write_error(writer, message, step + 1)
        return
    if metrics["status"] == PRUNED:  # at the step after the checkpoint's, as above
        epoch, reason = metrics["pruned_at_epoch"], metrics["prune_reason"]
        message = f"pruned after epoch {epoch}: {reason}. Train on with loop.resume=<this run>"
        add_text(writer, PRUNED, message, step + 1)
        writer.add_scalar(PRUNED_TAG, epoch, step + 1)
        return
    if "error" in metrics:
        write_error(writer, metrics["error"], step)
    write_session_end(writer, metrics["status"], step)


def write_failed_session(folder: Path, cfg: DictConfig, error: str, name: str = "") -> None:
    """For a run that failed before it wrote any TensorBoard events (a setting found wrong in
    the job, data missing): a FAILURE session with its settings and its error, so that HParams
    lists it with the jobs that trained. A run that wrote events has recorded its own end."""
    if any(folder.glob(EVENTS_PATTERN)):
        return
    try:
        hparams = hparams_of(cfg)
    except Exception:  # the settings may be what failed (an interpolation): the error stays
        hparams = {}
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    try:
        write_session_start(writer, hparams, name)
        write_error(writer, error, 0)
        write_session_end(writer, FAILED, 0)
    finally:
        writer.close()
