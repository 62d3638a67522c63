"""Build the configured optimizer with the fastest implementation this torch has for the device.

At batch 64 the default (for-loop) Adam step is about a third of a training step on a CPU;
torch's fused kernels do the same update in one pass. We ask for `fused=True`, fall back to
`foreach=True`, then to the default, trying each on a one-element tensor on the device.
"""

import inspect
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from mnistlab import SettingError
from mnistlab.config import shipped


def fastest_options(optimizer_class: type, device: torch.device) -> dict[str, bool]:
    """{"fused": True}, {"foreach": True} or {}: the fastest the class supports on `device`."""
    accepted = inspect.signature(optimizer_class).parameters
    probe = [torch.zeros(1, device=device, requires_grad=True)]
    for option in ("fused", "foreach"):
        if option not in accepted:
            continue
        try:
            optimizer_class(probe, **{option: True})
        except (RuntimeError, ValueError):  # not supported for this device or dtype
            continue
        return {option: True}
    return {}


def build_optimizer(
    node: DictConfig, params: Any, device: torch.device, fast: bool = True
) -> torch.optim.Optimizer:
    """`instantiate(node, params=...)`, adding the fastest implementation unless `fast` is off.

    An implementation the config names itself (optimizer.fused / optimizer.foreach) wins.
    """
    extra: dict[str, bool] = {}
    if fast and "fused" not in node and "foreach" not in node:
        extra = fastest_options(get_class(node._target_), device)
    return instantiate(node, params=params, **extra)


def probe(node: DictConfig) -> None:
    """Build the optimizer on one tensor: what torch itself refuses fails before data loads.

    `config.check` has named the usual keys already; this catches the combinations only torch
    knows, e.g. SGD's nesterov=true with momentum=0.
    """
    try:
        instantiate(node, params=[torch.zeros(1, requires_grad=True)])
    except InstantiationException as err:
        cause = str(err.__cause__).partition("\n")[0]
        raise SettingError(f"optimizer ({node._target_}) refuses its settings: {cause}") from None


def adam_config(lr: float) -> DictConfig:
    """conf/optimizer/adam.yaml with `lr`: the optimizer config mnistlab-train would use."""
    node = shipped.option("optimizer", "adam")
    node.lr = lr
    return node
