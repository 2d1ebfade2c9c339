"""The run's arithmetic: bf16 autocast over fp32 weights where the hardware has bf16 matrix units, else fp32.

`precision=auto` (conf/config.yaml) resolves once per device to "bf16" or "fp32":
- CUDA: bf16 where `torch.cuda.is_bf16_supported()` (Ampere and later), else fp32;
- CPU: bf16 where the processor has bf16 matrix instructions (AMX-BF16 or AVX512-BF16, as torch's
  own CPU feature checks report them), else fp32: elsewhere bf16 is emulated and slower than fp32.
"bf16" and "fp32" force a choice ("no", accelerate's name for fp32, is accepted too).

bf16 means `torch.autocast(device, bfloat16)`: weights stay fp32 (the optimiser's master copy), matrix
products run in bf16 with fp32 accumulation, softmax / log-softmax and the losses stay fp32. Sampling,
reference log-probs, training and eval log-probs use the same context, so pi_ref is one model: the
reference samples, their log-probs and the training targets come from the same arithmetic. Every
step's artifact key holds the resolved value, never "auto" (a cache is never shared across arithmetics).
"""

from __future__ import annotations

import contextlib
import functools

import torch

from qrpo.config.sections import PRECISIONS


@functools.cache
def cpu_has_bf16_matmul() -> bool:
    """The processor has bf16 matrix instructions (AMX-BF16 or AVX512-BF16) that torch's CPU kernels use."""
    checks = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def has_bf16_matmul(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_bf16_matmul()
    return False  # meta, mps, ...: no claim


def resolve(choice: str, device: torch.device | str | None = None) -> str:
    """"bf16" or "fp32" for `choice` (one of PRECISIONS) on `device` (None: CUDA if there is one, else the CPU)."""
    if choice not in PRECISIONS:
        raise ValueError(f"precision={choice!r} is not one of auto, bf16, fp32")
    if choice == "auto":
        device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        return "bf16" if has_bf16_matmul(device) else "fp32"
    return "fp32" if choice == "no" else choice


def autocast(precision: str, device: torch.device | str):
    """The context every forward pass of a run uses: bf16 autocast for "bf16", nothing for "fp32"."""
    device = torch.device(device)
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
