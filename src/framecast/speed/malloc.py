"""glibc's mmap threshold (malloc tuning; off by default, ``trainer.malloc: fixed`` turns it on)
and ``malloc_trim``.

A recurrent model's training step allocates a few thousand activation tensors of one size (e.g.
2 MiB: batch 16 x 128 channels x 16 x 16 in fp32), keeps them for the backward pass and frees
them all. glibc's malloc serves a block above its mmap threshold with ``mmap`` and gives it back
on free, but it raises the threshold to the size of each mmapped block freed (its "dynamic
threshold", up to 32 MiB; glibc manual, "Memory Allocation Tunables", and mallopt(3)). After the
first activations every one therefore comes from the heap, where freed blocks sit between live
ones and small objects pin the holes.

``fix_mmap_threshold`` sets ``M_MMAP_THRESHOLD`` to a fixed 1 MiB with ``mallopt`` (which turns
the dynamic threshold off): blocks at least that large are always mmapped and returned on free;
and ``M_TRIM_THRESHOLD`` to 256 MiB, since a fixed mmap threshold also pins the trim threshold at
128 KiB, and trimming the heap's top after every free made small models' steps slower. Results
are bit for bit the same (the allocator does not change what is computed).

Gain and cost, measured (``benchmarks/memory.py``, ``benchmarks/speed.py``; the AMX Xeon,
``benchmarks/results/study-malloc-fixed-mmap-threshold-pt2.14-cpu-xeon-amx/``): official 4 x 128
PredRNN, fp32, batch 16, three steps, without the arena: peak 3.16 GiB, PredRNN-V2 3.46 GiB
(``memory-train-official-fp32-default-fixed.json``); a step takes 12% / 26% longer (44.8 -> 50.2 s,
47.1 -> 59.4 s, medians: the page faults of fresh mmapped pages); at the cpu sizes of the RNNs
(activations below 1 MiB) peak and step time unchanged within noise; SimVP / TAU at their cpu
sizes, whose full-resolution activations are tens of MiB, ran much slower (gSTA training 10.2 ->
9.1, inference 44 -> 25 samples/s, ``speed-train-infer-quick-auto-zoo-fixed.json``). With the
arena on (the default) the arena does the same job without the page faults, so this piece is
off by default: its speed cost is never under 1.2x where it saves memory.

On: ``trainer.malloc: fixed`` (``--trainer.malloc fixed``), or ``FRAMECAST_MALLOC=fixed`` in the
environment (``framecast fit`` applies it then); by hand, without framecast,
``MALLOC_MMAP_THRESHOLD_=1048576 MALLOC_TRIM_THRESHOLD_=268435456``. It steps aside silently
without glibc (musl, macOS; ``support.has_glibc``) and on ARM (``support.is_arm``: not measured).
"""

import ctypes
import ctypes.util
import os

from framecast import machine
from framecast.speed import support

ENV = "FRAMECAST_MALLOC"  # "fixed": fix glibc's mmap threshold in framecast fit's process
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
DEFAULT_THRESHOLD = 1 << 20  # 1 MiB: activations above it are mmapped; small tensors stay on the heap
TRIM_THRESHOLD = 256 << 20  # free memory the heap's top may keep before it is given back

_applied: str | None = None


def wanted() -> bool:
    """Whether the environment asks for the fixed threshold (``FRAMECAST_MALLOC=fixed``)."""
    return os.environ.get(ENV, "default") == "fixed"


def fix_mmap_threshold(threshold: int = DEFAULT_THRESHOLD, force: bool = False) -> str | None:
    """Fix glibc's mmap threshold at ``threshold`` bytes (once per process) when
    ``FRAMECAST_MALLOC=fixed`` is set, or ``force``; returns what was done, or None where it does
    not apply (not asked for, not glibc, ARM)."""
    global _applied
    if _applied is not None:
        return _applied
    if not (force or wanted()) or not support.has_glibc() or support.is_arm():
        return None
    try:
        libc = _libc()
        mallopt, version = libc.mallopt, libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    if mallopt(M_MMAP_THRESHOLD, int(threshold)) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return None
    _applied = f"glibc {version().decode()} mmap threshold fixed at {threshold // 1024} KiB"
    machine.note_allocator(_applied)
    return _applied


def applied() -> str | None:
    """What ``fix_mmap_threshold`` did in this process, if anything."""
    return _applied


def _libc() -> ctypes.CDLL:
    """The C library (raises OSError where there is none to load)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


_libc_trim = None


def malloc_trim() -> None:
    """glibc's ``malloc_trim(0)``: free heap pages given back to the system (elsewhere: nothing)."""
    global _libc_trim
    if not support.has_glibc():
        return
    if _libc_trim is None:
        try:
            _libc_trim = _libc().malloc_trim
        except (OSError, AttributeError):
            _libc_trim = False
    if _libc_trim:
        _libc_trim(0)
