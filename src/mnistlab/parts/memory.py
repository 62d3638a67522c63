"""What training a model needs in memory, estimated before the model is built.

The model is made on PyTorch's "meta" device (shapes only, no storage) and run once on a meta
batch, counting every layer's output. The estimate: parameters, their gradients and the
optimizer's state (Adam keeps two copies of the parameters), plus the larger of a training
step's activations (kept for the backward pass, and their gradients) and an evaluation
batch's largest pair of layer outputs. It is a floor, not a ceiling: kernels' scratch space
is left out, so a refusal is certain and a pass is no promise.
"""

from dataclasses import dataclass

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

FLOAT_BYTES = 4  # parameters and activations are float32 (bf16 autocast halves some)


@dataclass(frozen=True)
class Needs:
    """Bytes a training run needs, by what holds them."""

    parameters: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.activations


def estimate(
    model: DictConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    optimizer: DictConfig,
    batch_sizes: tuple[int, int],
) -> Needs | None:
    """What training `model` with `optimizer` on (train, eval) batches of these sizes needs.

    None for a model that cannot be made or run on the meta device (some custom layers):
    then nothing is estimated, and nothing refused.
    """
    try:
        with torch.device("meta"):
            net = instantiate(model, input_shape=input_shape, num_classes=num_classes)
        train = outputs(net.train(), input_shape, batch_sizes[0])
        evaluation = outputs(net.eval(), input_shape, batch_sizes[1])
    except (InstantiationException, RuntimeError, NotImplementedError, TypeError, ValueError):
        return None
    parameters = sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
    # Training keeps every output for the backward pass, which makes a gradient of each.
    activations = max(2 * sum(train), 2 * max(evaluation, default=0))
    slots = state_slots(optimizer)
    return Needs(parameters, parameters, slots * parameters, activations)


def outputs(net: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> list[int]:
    """The bytes of the input and of every layer's output, for one meta batch."""
    sizes = [batch_size * FLOAT_BYTES * int(torch.Size(input_shape).numel())]

    def count(module: nn.Module, args: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    layers = [module for module in net.modules() if not list(module.children())]
    hooks = [layer.register_forward_hook(count) for layer in layers]
    try:
        with torch.no_grad():
            net(torch.empty(batch_size, *input_shape, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def state_slots(optimizer: DictConfig) -> int:
    """How many parameter-sized tensors the optimizer keeps (SGD with momentum: one)."""
    name = str(optimizer._target_).rsplit(".", 1)[-1]
    on = {key: key in optimizer and bool(optimizer[key]) for key in ("momentum", "amsgrad")}
    on["centered"] = "centered" in optimizer and bool(optimizer.centered)
    if name == "SGD":
        return int(on["momentum"])
    if name == "RMSprop":
        return 1 + int(on["momentum"]) + int(on["centered"])
    if name in ("Adam", "AdamW"):
        return 2 + int(on["amsgrad"])
    return 2  # the others keep one or two (Adagrad one; Adadelta, NAdam, RAdam two)
