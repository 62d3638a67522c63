"""mnistlab.parts.optimizers: the fast (fused / foreach) optimizer kernels and their fallbacks."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from mnistlab.parts.optimizers import build_optimizer, fastest_options

CPU = torch.device("cpu")


def train_a_few_steps(fast: bool, target: str, steps: int = 5) -> list[torch.Tensor]:
    """The parameters of a small MLP after `steps` updates, fast kernels on or off."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    node = OmegaConf.create({"_target_": target, "lr": 0.01})
    optimizer = build_optimizer(node, model.parameters(), CPU, fast=fast)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        inputs = torch.randn(32, 8, generator=generator)
        targets = torch.randint(0, 3, (32,), generator=generator)
        loss = nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("target", ["torch.optim.Adam", "torch.optim.RMSprop"])
def test_fast_and_plain_give_the_same_parameters(target: str) -> None:
    fast, plain = train_a_few_steps(True, target), train_a_few_steps(False, target)
    initial = train_a_few_steps(True, target, steps=0)
    assert all(not torch.equal(p, q) for p, q in zip(fast, initial, strict=True))  # it trained
    for p, q in zip(fast, plain, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_fast_adam_is_fused_and_plain_is_the_default() -> None:
    node = OmegaConf.create({"_target_": "torch.optim.Adam", "lr": 0.01})
    params = [nn.Parameter(torch.zeros(3))]
    assert build_optimizer(node, params, CPU).defaults["fused"] is True
    plain = build_optimizer(node, params, CPU, fast=False).defaults
    assert not plain["fused"] and not plain["foreach"]


def test_an_option_the_config_names_wins() -> None:
    node = OmegaConf.create({"_target_": "torch.optim.Adam", "lr": 0.01, "foreach": True})
    defaults = build_optimizer(node, [nn.Parameter(torch.zeros(3))], CPU).defaults
    assert defaults["foreach"] is True and not defaults["fused"]


def test_fastest_options_falls_back() -> None:
    assert fastest_options(torch.optim.Adam, CPU) == {"fused": True}
    assert fastest_options(torch.optim.RMSprop, CPU) == {"foreach": True}  # it has no `fused`

    class FusedRefused(torch.optim.Adam):  # takes `fused`, but refuses it as some devices do
        def __init__(self, params, lr: float = 1e-3, fused=None, foreach=None) -> None:
            if fused:
                raise RuntimeError("fused=True is not supported here")
            super().__init__(params, lr=lr, foreach=foreach)

    assert fastest_options(FusedRefused, CPU) == {"foreach": True}

    class Neither(torch.optim.SGD):  # neither option in its signature
        def __init__(self, params, lr: float = 0.1) -> None:
            super().__init__(params, lr=lr)

    assert fastest_options(Neither, CPU) == {}
