"""mnistlab-evaluate's work: a run's saved model measured on a split, as the run measured it.

Everything that can fail comes first (settings, device, data, split, the model's fit to the
data), then one pass of mnistlab.loop.step.evaluate over the batches the run's own evaluations
take (mnistlab.run.build.batches_to_evaluate), in its precision and layout
(mnistlab.run.trained). On the data it trained on, the figures are those the run recorded.
Other data is standardised as the run's was: where its builder standardised it with other
statistics (another IDX set's training images), its inputs are mapped to the run's.
"""

import datetime
import logging
from pathlib import Path
from typing import Any

from mnistlab import SettingError, names
from mnistlab.data.splits import Splits, TensorPairs
from mnistlab.data.splits import build as build_data
from mnistlab.files import write_json
from mnistlab.loop.step import StepOptions, evaluate
from mnistlab.parts.device import describe
from mnistlab.run import inputs, trained
from mnistlab.run.build import batches_to_evaluate, data_record
from mnistlab.run.saved import Saved

log = logging.getLogger(__name__)


def evaluate_run(saved: Saved, split: str) -> dict[str, Any]:
    """Measure the saved model on `split`; what to print and keep: figures, model, data."""
    settings, device = trained.settings_of(saved)
    data = build_data(saved.cfg.dataset.source)
    record = data_record(data, saved.cfg.dataset.source)
    part = split_of(data, split, saved.cfg.dataset.source._target_)
    takes = inputs.read(saved.state, saved.source)
    if takes is not None:
        check_fits(takes, inputs.of(data), saved)
        part = restandardised(part, data.scale, takes.scale)
    if settings.loader.mode == "tensor" and isinstance(part, TensorPairs):
        part = part.to(device)
    model = trained.model_of(saved, settings, device, takes or inputs.of(data))
    options = trained.options_of(saved, settings)
    batches = batches_to_evaluate(settings.loader, part)
    loss, accuracy = evaluate(model, batches, device, options)
    figures = {f"{split}_loss": loss, f"{split}_accuracy": accuracy, "samples": len(part)}
    how = {"device": describe(device), "precision": options.precision}
    return described(saved, split, record) | figures | how | {"layout": layout(options)}


def described(saved: Saved, split: str, record: dict[str, Any]) -> dict[str, Any]:
    """What was evaluated: the run, its checkpoint, the split, the data and the overrides."""
    progress = saved.state["progress"]
    trained_on = (saved.state.get("data") or {}).get("fingerprint")
    return {
        "run": str(saved.folder),
        "checkpoint": saved.choice,
        "file": saved.path.name,
        "epoch": progress["epoch"],
        "step": progress["step"],
        "split": split,
        "overrides": list(saved.overrides),
        "data_source": record["source"],
        "data_fingerprint": record["fingerprint"],
        "trained_on_this_data": None if trained_on is None else trained_on == record["fingerprint"],
        "evaluated_at": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def layout(options: StepOptions) -> str:
    """The memory layout of image batches, as the run had them."""
    return "channels_last" if options.channels_last else "contiguous"


def split_of(data: Splits, split: str, target: str) -> Any:
    """The split `split` names; one line where the data has none."""
    part = {"val": data.val, "test": data.test}[split]
    if part is None:
        raise SettingError(
            f"split={split}: the dataset ({target}) has no {split} split: use split=val, or a "
            "dataset with a test split (dataset=mnist or dataset=idx)"
        )
    return part


def check_fits(takes: inputs.Inputs, found: inputs.Inputs, saved: Saved) -> None:
    """Refuse data whose input shape or class count is not the model's, naming both."""
    if (takes.shape, takes.classes) != (found.shape, found.classes):
        raise SettingError(
            f"the dataset ({saved.cfg.dataset.source._target_}) has {found}, but the model in "
            f"{saved.path} takes {takes}: evaluate it on data of that shape and class count "
            "(dataset=..., dataset.source.root=...), or on the run's own (no dataset overrides)"
        )


def restandardised(
    part: Any, have: tuple[float, float] | None, want: tuple[float, float] | None
) -> Any:
    """The split's inputs standardised with the run's (mean, std) `want` instead of `have`."""
    if have is None or want is None or have == want or not isinstance(part, TensorPairs):
        return part
    (mean, std), (run_mean, run_std) = have, want
    log.info("inputs standardised as the run's (mean %g, std %g), not %g, %g", *want, *have)
    restored = part.inputs.mul(std).add_(mean)  # the pixels in [0, 1], as the builder had them
    return TensorPairs(restored.sub_(run_mean).div_(run_std), part.targets)


def recorded_figures(saved: Saved, found: dict[str, Any]) -> dict[str, float]:
    """The figures metrics.json holds for this model on this split and data; {} if none does."""
    metrics, split = saved.recorded or {}, found["split"]
    if not found["trained_on_this_data"] or metrics.get("status") != names.COMPLETED:
        return {}
    same_model = (split == "test" and metrics.get("tested_on") == saved.choice) or (
        split == "val" and saved.choice == "final" and metrics.get("steps") == found["step"]
    )
    keys = (f"{split}_loss", f"{split}_accuracy")
    if not same_model or not all(key in metrics for key in keys):
        return {}
    return {key: metrics[key] for key in keys}


def write_evaluation(folder: Path, found: dict[str, Any]) -> Path:
    """<run>/evaluations/<time>_<checkpoint>_<split>.json, never through a link."""
    where = folder / names.EVALUATIONS_DIR
    if where.is_symlink() or (where.exists() and not where.is_dir()):
        raise SettingError(f"{where} is a link or a file: mnistlab writes only into a folder")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    path = where / f"{stamp}_{found['checkpoint']}_{found['split']}.json"
    try:
        where.mkdir(exist_ok=True)
        write_json(path, found, durable=False)
    except OSError as error:
        raise SettingError(
            f"cannot write {path} ({error.strerror or error}): the figures above are not kept; "
            "make the run folder writable"
        ) from None
    return path
