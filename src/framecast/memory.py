"""The C allocator under training: a fixed mmap threshold, so a training step's peak stays its own.

A recurrent model's training step allocates a few thousand activation tensors of one size (e.g.
2 MiB: batch 16 x 128 channels x 16 x 16 in fp32), keeps them for the backward pass and frees
them all. glibc's malloc serves a block above its mmap threshold with ``mmap`` and gives it back
on free, but it raises the threshold to the size of each mmapped block freed (its "dynamic
threshold", up to 32 MiB). After the first step every activation therefore comes from the heap,
where freed blocks sit between live ones (the optimiser's state, the next step's tensors): the
resident set of the official 4 x 128 PredRNN grew from 4.7 GiB after one step to 6.8 GiB after
two (fp32, batch 16; PredRNN-V2 4.9 -> 6.9), though the tensors alive at any time never changed.

``fix_mmap_threshold`` sets ``M_MMAP_THRESHOLD`` to a fixed 1 MiB with ``mallopt`` (which turns
the dynamic threshold off): blocks at least that large are always mmapped and returned on free;
and ``M_TRIM_THRESHOLD`` to 256 MiB, since a fixed mmap threshold also pins the trim threshold at
128 KiB, and trimming the heap's top after every free made small models' steps slower. Results
are bit for bit the same (the allocator does not change what is computed).

It is opt-in (``FRAMECAST_MALLOC=fixed``; ``framecast fit`` applies it then), because what it
costs depends on the model. Measured here (``benchmarks/memory.py``, ``benchmarks/speed.py``):
official 4 x 128 PredRNN, fp32, batch 16, three steps: peak 6.80 -> 3.16 GiB, PredRNN-V2 6.90 ->
3.46 GiB; a step takes 12% / 26% longer (44.8 -> 50.2 s, 47.1 -> 59.4 s, medians: the page faults
of fresh mmapped pages); at
the cpu sizes of the RNNs (activations below 1 MiB) peak and step time unchanged within noise;
but SimVP / TAU at their cpu sizes, whose full-resolution activations of every frame are tens
of MiB, ran much slower (gSTA inference 44 -> 25 samples/s), since glibc's default keeps such
blocks on the heap for reuse once its threshold has risen. A 4 MiB threshold kept the 6.9 GiB
peak. By hand: ``MALLOC_MMAP_THRESHOLD_=1048576 MALLOC_TRIM_THRESHOLD_=268435456`` in the
environment. Other C libraries (macOS, musl) are left alone.
"""

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
DEFAULT_THRESHOLD = 1 << 20  # 1 MiB: activations above it are mmapped; small tensors stay on the heap
TRIM_THRESHOLD = 256 << 20  # free memory the heap's top may keep before it is given back

_applied: str | None = None


def fix_mmap_threshold(threshold: int = DEFAULT_THRESHOLD, force: bool = False) -> str | None:
    """Fix glibc's mmap threshold at ``threshold`` bytes (once per process) when
    ``FRAMECAST_MALLOC=fixed`` is set, or ``force``; returns what was done, or None where it does
    not apply (not asked for, or not glibc)."""
    global _applied
    if _applied is not None:
        return _applied
    if not (force or os.environ.get("FRAMECAST_MALLOC", "default") == "fixed") or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, version = libc.mallopt, libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    if mallopt(M_MMAP_THRESHOLD, int(threshold)) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return None
    _applied = f"glibc {version().decode()} mmap threshold fixed at {threshold // 1024} KiB"
    return _applied


def applied() -> str | None:
    """What ``fix_mmap_threshold`` did in this process, if anything."""
    return _applied
