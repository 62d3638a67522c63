"""torch's internals that mnistlab uses: whether this CPU computes bfloat16 natively, and a
tensor's version counter.

`torch.ops.mkldnn._is_mkldnn_bf16_supported()` is what torch's own CPU autocast tests ask:
True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX), False where bf16 would be
emulated (about ten times slower than float32 on an AVX2 CPU, measured on an AMD EPYC Zen 2).
"""

import torch

from mnistlab.private import require


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (oneDNN's probe)."""
    return bool(require(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", "torch")())


def version(tensor: torch.Tensor) -> int:
    """How many times `tensor` has been changed in place by torch (autograd's own counter)."""
    return int(require(tensor, "_version", "torch"))
