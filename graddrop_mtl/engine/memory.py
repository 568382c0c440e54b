"""Keep freed memory in the process instead of returning it to the kernel (glibc ``mallopt``).

glibc's ``malloc`` serves every request above its mmap threshold (at most 32 MiB on 64-bit Linux) with a fresh
``mmap`` and gives it back with ``munmap`` when freed. A training step that creates a tensor of that size each
iteration then pays a page fault per 4 KiB page, every iteration (CelebA's 40 per-task gradients at the 8 x 8 map
are 42 MB at batch 8, PointPillars' neck activation 78 MB). The conv trunks' activation maps and their gradients
are such tensors, and so is the multitask wrapper's ``[T, *activation.shape]`` stack of per-task gradients.
Measured effect (``tools/analysis/benchmark_mtl.py`` with ``GRADDROP_KEEP_FREED_MEMORY=0`` and without):
docs/benchmarks.md ("Freed memory").

:func:`keep_freed_memory` turns ``mmap`` off for ``malloc`` (``M_MMAP_MAX = 0``: large blocks come from the
heap, and freed ones are reused) and raises the trim threshold, so that freed heap memory up to ``trim_threshold``
bytes stays mapped. This is what the jemalloc / tcmalloc ``LD_PRELOAD`` of PyTorch's CPU performance guides
achieves, without a preload or a dependency. The price: the process keeps up to ``trim_threshold`` bytes of free
memory at the top of its heap, and blocks freed below it until they are reused, so its resident size follows the
peak of a step rather than its average.

``tools/train.py``, ``tools/test.py`` and ``tools/analysis/benchmark_{mtl,combine,celeba,transfer}.py`` call it at
start-up; ``GRADDROP_KEEP_FREED_MEMORY=0`` in the environment turns it off. Elsewhere than glibc Linux it does
nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: glibc's ``mallopt`` parameters (``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

#: Environment variable that turns :func:`keep_freed_memory` off when set to ``0``.
ENV_FLAG = 'GRADDROP_KEEP_FREED_MEMORY'

_applied: bool | None = None


def keep_freed_memory(trim_threshold: int = 2**31 - 1) -> bool:
    """Make glibc keep freed memory for reuse (see the module docstring). Returns whether the setting is in force
    (``False`` when disabled by ``GRADDROP_KEEP_FREED_MEMORY=0``, or not on glibc). ``trim_threshold``: bytes of
    free memory at the top of the heap that stay mapped (at most ``2**31 - 1``, ``mallopt``'s int). Idempotent."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV_FLAG, '1') == '0' or not sys.platform.startswith('linux'):
        return False
    name = ctypes.util.find_library('c') or 'libc.so.6'
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trim = max(0, min(int(trim_threshold), 2**31 - 1))
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, trim))
    return _applied
