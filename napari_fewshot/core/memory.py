"""Give freed heap memory back to the operating system during long per-slice loops.

Matching a slice allocates temporaries of 10-40 MB (cells x prototypes). glibc serves allocations of
that size from its heap once its dynamic mmap threshold has grown, and the small long-lived arrays
kept per slice (labels, coarse scores) land between them, so the freed space is never returned: on a
512 x 512 x 600 CT at 384 px the resident size grew by ~4 GiB per pass over the volume (measured; no
object was leaking). `malloc_trim` every few slices keeps it flat at no measurable cost. On other C
libraries and systems this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

TRIM_EVERY = 8  # slices between trims in per-slice loops


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl) or no libc found
        return None


def release_free_memory() -> bool:
    """Return free heap pages to the OS (glibc `malloc_trim(0)`). True when the call was made."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def trim_now(count: int) -> None:
    """Call :func:`release_free_memory` on every TRIM_EVERY-th slice of a loop (`count` from 1)."""
    if count % TRIM_EVERY == 0:
        release_free_memory()
