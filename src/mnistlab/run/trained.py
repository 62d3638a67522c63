"""A saved model set up as it trained: its settings, device, precision, threads, and the net.

mnistlab-evaluate and mnistlab-predict run the model in the precision and memory layout the
run trained in (metrics.json's precision where the run chose it with loop.precision=auto), with
the thread count its checkpoint keeps (sums add up in the same order), built as
mnistlab.run.build.build_net builds it: the same figures, to the last bit, on the same data.
"""

import dataclasses
from typing import Any

import torch
from torch import nn

from mnistlab import SettingError
from mnistlab.config import checks, schemas
from mnistlab.loop.step import StepOptions
from mnistlab.parts.device import configure as configure_device
from mnistlab.parts.device import resolve_device
from mnistlab.parts.models import build as build_model
from mnistlab.run.build import plan, with_precision
from mnistlab.run.inputs import Inputs
from mnistlab.run.saved import Saved

PRECISIONS = ("32", "bf16", "16-mixed")  # what loop.precision=auto may have chosen


def settings_of(saved: Saved) -> tuple[schemas.Settings, torch.device]:
    """The run's settings (checked, precision as trained) and device; the CPU threads set."""
    settings = checks.check(saved.cfg)
    device = resolve_device(settings.device.name)
    settings, _ = with_precision(as_trained(settings, saved.recorded), device)
    configure_device(settings.device)
    return settings, device


def as_trained(settings: schemas.Settings, recorded: dict[str, Any] | None) -> schemas.Settings:
    """With loop.precision=auto, the precision the run chose (its metrics.json says which)."""
    chosen = (recorded or {}).get("precision")
    if settings.loop.precision != "auto" or chosen not in PRECISIONS:
        return settings
    loop = dataclasses.replace(settings.loop, precision=chosen)
    return dataclasses.replace(settings, loop=loop)


def options_of(saved: Saved, settings: schemas.Settings) -> StepOptions:
    """How the run evaluated: its precision and layout (mnistlab.run.build.plan's options)."""
    return plan(settings.loop, saved.cfg.objective).options


def model_of(
    saved: Saved, settings: schemas.Settings, device: torch.device, inputs: Inputs
) -> nn.Module:
    """The saved model for `inputs`, its weights loaded, on `device`, in eval mode."""
    model = build_model(saved.cfg.model, inputs.shape, inputs.classes).to(device)
    if settings.loop.channels_last:  # as build_net: the layout its figures were measured in
        model = model.to(memory_format=torch.channels_last)
    try:
        model.load_state_dict(saved.state["model"])
    except (RuntimeError, KeyError, ValueError) as error:
        reason = " ".join(str(error).split())[:300]
        raise SettingError(
            f"{saved.source}: its model does not take {inputs} ({reason}): use data with "
            "the input shape and class count the run trained on"
        ) from None
    if settings.loop.compile:
        model.compile()  # as build_net: in place, after the weights (its keys stay the same)
    return model.eval()
