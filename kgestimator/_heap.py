"""Freed large blocks kept in the C heap while a fit or an evaluation runs (glibc only).

glibc's ``malloc`` serves every block above its mmap threshold (128 KB, raised
on the fly to at most 32 MB) with a fresh ``mmap`` and unmaps it on ``free``:
the next block of that size faults every page in again, and the kernel zeroes
each one. A training step frees and reallocates the same large tensors every
time. NBFNet's per-layer activations on WN18RR (41,000 nodes x batch x 32
floats, 40-170 MB each) and 1vsAll's 64 MB score chunks are above any
threshold, so a step spent more time in page faults than computing: NBFNet on
WN18RR at batch 8 took 2.8 million faults a step, 10.4 s of system time against
6.4 s of user time (BENCHMARKS.md §6, "Issue 21, fourth round").

Inside :func:`freed_blocks_kept`, mmap is off and trimming is deferred, so a
freed block stays in the heap and the next step reuses its pages. The price is
fragmentation: the heap's holes count as resident memory. The peak of a 1vsAll
ComplEx fit on FB15k-237 grew by 19 %, NBFNet's WN18RR steps at batch 8 by 75 %
(4.2 to 7.3 GB over nine steps, still creeping), and at batch 32 past the 24 GB
of the machine, where glibc's default peaks at 15 GB. So a fit keeps freed
blocks only when ``HEADROOM`` times the memory check's estimate of its need (a
lower bound: :func:`kgestimator.memory.check_training_fits`) is free; otherwise
it runs with glibc's defaults, slower and within the memory it always needed.
On exit glibc's defaults come back and ``malloc_trim(0)`` hands the free pages
to the kernel, so the process does not keep the training's peak after ``fit``.

``KGESTIMATOR_KEEP_FREED_MEMORY=0`` turns it off. Where the C library is not
glibc (macOS, Windows, musl) it does nothing.
"""

import contextlib
import ctypes
import functools
import os
import threading

from .memory import available_bytes

#: mallopt's parameter numbers (malloc.h) and glibc's defaults for them
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
#: the largest trim threshold mallopt takes (a C int)
KEPT_TRIM_THRESHOLD = 2**31 - 1
#: free memory, in multiples of a fit's estimated need, below which freed blocks are not kept: the
#: measured peaks with freed blocks kept reached 2.4 times the (lower-bound) estimate
HEADROOM = 4

_lock = threading.Lock()
_depth = 0


@functools.lru_cache(maxsize=1)
def glibc():
    """The process's glibc through ctypes, or None where the C library is another."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # Windows: no handle for the running process
        return None
    if not all(hasattr(libc, name) for name in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    return libc


def enabled():
    """Whether :func:`freed_blocks_kept` changes anything here (glibc, and not turned off)."""
    return os.environ.get("KGESTIMATOR_KEEP_FREED_MEMORY", "1").strip() != "0" and glibc() is not None


def affordable(need):
    """Whether ``HEADROOM * need`` bytes are free in host memory (unknown free memory: no)."""
    have = available_bytes("cpu")
    return have is not None and HEADROOM * need <= have


@contextlib.contextmanager
def freed_blocks_kept(need=0):
    """Run the block with mmap off and trimming deferred in glibc's malloc (see the module docstring).

    ``need``: the bytes the block is estimated to hold at its peak; freed blocks
    are kept only when :func:`affordable`. Nested and concurrent uses (threads)
    share one setting: the outermost exit restores the defaults.
    """
    global _depth
    libc = glibc() if enabled() and affordable(need) else None
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, KEPT_TRIM_THRESHOLD)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
