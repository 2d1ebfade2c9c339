"""Large CPU tensors reuse freed memory instead of faulting in fresh pages (glibc's allocator).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh `mmap` and unmaps it
when it is freed, so the next tensor of that size starts on pages the kernel must fault in and zero
again. A CPU training step makes several such tensors and frees them each micro-batch: the gradient of
the [vocabulary, hidden] embedding (113 MB for SmolLM2's 49,152 x 576 in fp32), its bf16 cast under
autocast, the LM head's chunks. On a 2-core AMD EPYC with AVX512-BF16, a bf16 training step of the default
spent more time filling and copying those pages than in its matrix products (torch.profiler: `fill_` of
[49152, 576] ~115 ms a call). `keep_freed_memory` tells glibc to serve every allocation from its heap
(`M_MMAP_MAX` = 0) and to keep freed memory in the process (`M_TRIM_THRESHOLD` at its maximum): the
process's memory stays at its high-water mark instead of going back to the system between steps, and
the bf16 training step of the default runs ~1.3x as fast (benchmarks/README.md). No arithmetic changes,
but bf16 CPU training is not bitwise the same across memory layouts (identical runs differ run to run in
the 4th digit of a loss, with this and without), so a bf16 run prints other digits than before it, inside
their intervals; fp32 runs print the same. Set QRPO_KEEP_FREED_MEMORY=0 to leave glibc's defaults.
Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt's parameter numbers (glibc's malloc.h)
INT_MAX = 2**31 - 1

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (once per process); True if it now does."""
    global _applied
    if _applied:
        return True
    if os.environ.get("QRPO_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        os.confstr("CS_GNU_LIBC_VERSION")  # raises (or returns None) where the C library is not glibc
        libc = ctypes.CDLL("libc.so.6")
    except (ValueError, OSError, AttributeError):
        return False
    _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, INT_MAX))
    return _applied
