"""torch's internals that mnistlab uses: whether this CPU computes bfloat16 natively, and a
tensor's version counter.

On x86, the CPU's own flags decide (`torch.cpu._is_avx512_bf16_supported()`,
`torch.cpu._is_amx_tile_supported()`: AVX512-BF16 or AMX). oneDNN's probe,
`torch.ops.mkldnn._is_mkldnn_bf16_supported()`, says yes on every AVX-512 CPU, where bf16 is
converted but multiplied in float32: slower than float32 there (speed run on an Intel Xeon
Ice Lake: 8,463 samples/s in bf16, 12,501 in float32), ten times slower on an AVX2 CPU (AMD
EPYC Zen 2, where the probe says no). Elsewhere (Arm), and with a torch that lacks the flags,
oneDNN's probe is asked.
"""

import platform

import torch

from mnistlab.private import require

X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively."""
    flags = [
        getattr(torch.cpu, f"_is_{name}_supported", None) for name in ("avx512_bf16", "amx_tile")
    ]
    if platform.machine().lower() in X86 and all(flags):
        return any(flag() for flag in flags)
    return bool(require(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", "torch")())


def version(tensor: torch.Tensor) -> int:
    """How many times `tensor` has been changed in place by torch (autograd's own counter)."""
    return int(require(tensor, "_version", "torch"))
