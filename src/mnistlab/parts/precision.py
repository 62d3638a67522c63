"""Numeric precision of the forward pass: fp32, bf16 autocast, or fp16 with a gradient scaler.

`loop.precision`: "32" (default) computes in float32. "auto" picks bf16 where the device
computes it natively (a CPU with AVX512-BF16 or AMX, a GPU with bf16 units) and float32
elsewhere, and says which and why. "bf16" runs the forward pass under
autocast to bfloat16 on CPU or CUDA: matmuls and convolutions in bf16, weights, gradients and
the optimizer in float32; it pays where the hardware has bf16 units (recent x86 with
AVX512-BF16/AMX, Ampere GPUs and newer). "16-mixed" autocasts to float16 on CUDA and scales the
loss so small gradients do not underflow (torch's GradScaler).
"""

import logging
from contextlib import AbstractContextManager, nullcontext

import torch

from mnistlab import SettingError
from mnistlab.private import torch as torch_private

log = logging.getLogger(__name__)
EMULATED = (
    "this CPU has no native bf16 (no AVX512-BF16 or AMX), so bf16 is emulated: slower than "
    "float32 (1.5x on an AVX-512 Xeon, 10x on an AVX2 EPYC, measured)"
)


def choose(precision: str, device: torch.device) -> tuple[str, str]:
    """The precision to run in, and why: `auto` decided here; an emulated bf16 warned of."""
    if precision not in ("auto", "bf16"):
        return precision, "as set"  # no bf16 in it: the hardware is not asked
    native, why = bf16_native(device)
    if precision == "bf16" and not native:
        log.warning("loop.precision=bf16: %s; loop.precision=auto would use float32", why)
    if precision != "auto":
        return precision, "as set"
    return ("bf16", f"auto: {why}") if native else ("32", f"auto: {why}")


def bf16_native(device: torch.device) -> tuple[bool, str]:
    """Whether `device` computes bfloat16 natively, and the reason in words."""
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
        return native, f"{torch.cuda.get_device_name(device)} {'has' if native else 'lacks'} bf16"
    if device.type == "cpu":
        if torch_private.cpu_bf16_native():
            return True, "this CPU computes bf16 natively (AVX512-BF16 or AMX)"
        return False, EMULATED
    return False, f"bf16 is not used on {device.type}"


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
