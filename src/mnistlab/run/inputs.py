"""What a model takes in: its input shape, its class count, and how its inputs were standardised.

Written into every checkpoint beside the data's fingerprint (mnistlab.run.build.data_record),
read back by mnistlab-evaluate (does other data fit the model?) and mnistlab-predict (the tensor
an image file must become). Checkpoints written before this was recorded have none: `read`
says None, and the callers work it out from the run's own data.
"""

import math
from dataclasses import dataclass
from typing import Any

from mnistlab import SettingError
from mnistlab.data.splits import Splits

KEY = "inputs"  # in a checkpoint's `data` record; metrics.json shows it as data_inputs


@dataclass(frozen=True)
class Inputs:
    """The inputs a model was trained on."""

    shape: tuple[int, ...]  # one sample's, e.g. (28, 28)
    classes: int
    # (mean, std) that the data's builder standardised them with (mnistlab.data.splits
    # .normalize), as float32 values; None: not standardised (fake_mnist, a user's builder)
    scale: tuple[float, float] | None

    def __str__(self) -> str:
        return f"inputs of shape {self.shape} and {self.classes} classes"


def of(data: Splits) -> Inputs:
    """The inputs of a run's data."""
    return Inputs(tuple(data.input_shape), data.num_classes, data.scale)


def record(inputs: Inputs) -> dict[str, Any]:
    """`inputs` as plain values for a checkpoint (weights-only loading reads them back)."""
    scale = None if inputs.scale is None else list(inputs.scale)
    return {"shape": list(inputs.shape), "classes": inputs.classes, "scale": scale}


def read(state: dict[str, Any], source: str) -> Inputs | None:
    """The inputs a checkpoint records; None for one saved before they were; `source` (the
    setting and file) names a damaged record."""
    data = state.get("data")
    found = data.get(KEY) if isinstance(data, dict) else None
    if found is None:
        return None
    shape, classes, scale = (found.get(key) for key in ("shape", "classes", "scale"))
    fine = (
        isinstance(shape, list)
        and all(isinstance(n, int) and n > 0 for n in shape)
        and isinstance(classes, int)
        and classes > 0
        and (scale is None or wrong_scale(scale) is None)
    )
    if not fine:
        raise SettingError(
            f"{source}: its record of the model's inputs ({str(found)[:120]}) is damaged: "
            "not a checkpoint mnistlab wrote; use one that mnistlab-train wrote"
        )
    return Inputs(tuple(shape), classes, None if scale is None else (scale[0], scale[1]))


def wrong_scale(scale: object) -> str | None:
    """What is wrong with a recorded (mean, std); None if it is two finite floats, std > 0."""
    if not (isinstance(scale, list) and len(scale) == 2):
        return "not a pair"
    if not all(isinstance(x, float) and math.isfinite(x) for x in scale) or scale[1] <= 0:
        return "not a finite mean and a positive std"
    return None
