"""The lesson's sanity checks: autograd agrees with calculus, and the MLP's gradients are right."""

import torch

from mnistlab.parts.models import MNISTClassifier


def test_autograd_matches_calculus_for_x_cubed_plus_five():
    x = torch.tensor(4.0, requires_grad=True)
    y = x**3 + 5
    y.backward()
    assert y.item() == 69.0
    assert x.grad.item() == 48.0 == 3 * 4**2


def test_gradcheck_passes_on_the_mlp_in_float64():
    torch.manual_seed(0)
    model = MNISTClassifier((6,), 3, hidden=5, dropout=0.0).double()
    inputs = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (inputs,), eps=1e-6, atol=1e-4)


def test_gradcheck_catches_a_wrong_gradient():
    # The check above can fail: a function whose backward lies is caught.
    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x**2

        @staticmethod
        def backward(ctx, grad):
            return grad  # should be 2 * x * grad

    inputs = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert not torch.autograd.gradcheck(Wrong.apply, (inputs,), raise_exception=False)
