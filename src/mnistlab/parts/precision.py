"""Numeric precision of the forward pass: fp32, bf16 autocast, or fp16 with a gradient scaler.

`loop.precision`: "32" (default) computes in float32. "bf16" runs the forward pass under
autocast to bfloat16 on CPU or CUDA: matmuls and convolutions in bf16, weights, gradients and
the optimizer in float32; it pays where the hardware has bf16 units (recent x86 with
AVX512-BF16/AMX, Ampere GPUs and newer). "16-mixed" autocasts to float16 on CUDA and scales the
loss so small gradients do not underflow (torch's GradScaler).
"""

from contextlib import AbstractContextManager, nullcontext

import torch

from mnistlab import SettingError


def check(precision: str, device: torch.device) -> None:
    """Refuse a precision this device cannot run (config.check has refused unknown ones)."""
    if precision == "16-mixed" and device.type != "cuda":
        raise SettingError(
            f"loop.precision=16-mixed needs CUDA (this run is on {device.type}): "
            "use loop.precision=bf16 or 32"
        )


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The context the forward pass and loss run in."""
    if precision == "32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for float16 training; None where none is needed."""
    return torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
