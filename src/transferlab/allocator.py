"""The C allocator's settings for training on a CPU.

glibc's malloc hands an allocation of 128 KiB or more straight to ``mmap`` and returns it
to the system when freed, raising that threshold only as large blocks come and go. A CPU
training step allocates and frees the same activation and gradient tensors (MiBs each)
every step, so a step pays for fresh zeroed pages each time. PyTorch's CPU performance
guide recommends preloading jemalloc or tcmalloc for this; a preload has to be set up
before the interpreter starts, which a ``pip install``-ed tool cannot do for its users,
so this sets glibc's own knobs instead (``mallopt``): allocations up to 32 MiB (the most
glibc accepts) come from the heap, and freed memory up to 1 GiB stays with the process.
Measured for tf_efficientnet_lite0 at 112 px, batch 32, on a 2-core CPU: a step per
image 0.0106 s -> 0.0094 s (benchmarks/README.md, "Time to accuracy").

Elsewhere (macOS, Windows, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 1024 * 1024 * 1024


@functools.cache
def tune_for_training() -> bool:
    """Set the thresholds once per process; True when they were set (Linux, glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: its own allocator, left as it is
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    logger.debug("malloc thresholds for training set: %s", ok)
    return ok
