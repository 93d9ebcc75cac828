"""Where each piece of the CPU speed machinery can work: one function per condition, in one
place, so that every piece steps aside (silently: no warning, no log line) where it cannot.

- the model runs on a GPU (or another device), ``on_cpu``: the arena and packed weights step
  aside; the probe is not run (a GPU picks bf16 where it has it);
- macOS, ``is_macos``, and no glibc (musl, Windows), ``has_glibc``: malloc tuning and
  ``malloc_trim`` step aside;
- ARM (aarch64, arm64), ``is_arm``: packed weights and the probe's bf16 candidates (oneDNN's
  x86 bf16 kernels), and malloc tuning (not measured there);
- no native oneDNN bf16 (an AVX2-only x86 CPU, a build without oneDNN), ``has_onednn_bf16``:
  packed weights and the probe's bf16 candidates (one bf16 step costs ~25 fp32 ones there);
- a torch without the arena's private autograd and storage calls, ``has_arena_calls``: the arena.

Tests replace these functions (``monkeypatch.setattr(support, "is_arm", lambda: True)``): every
piece asks through this module at call time, never caches the answer.
"""

import ctypes
import ctypes.util
import functools
import platform
import sys

import torch


def on_cpu(device: "str | torch.device") -> bool:
    """Whether ``device`` (a torch device or a Lightning accelerator name) is the CPU."""
    kind = device.type if isinstance(device, torch.device) else str(device).lower()
    if kind == "auto":
        return not torch.cuda.is_available()
    return kind == "cpu"


def is_macos() -> bool:
    return sys.platform == "darwin"


def is_arm() -> bool:
    return platform.machine().lower() in ("aarch64", "arm64", "armv7l", "armv8l")


@functools.lru_cache(maxsize=1)
def _glibc_mallopt() -> bool:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") and hasattr(libc, "gnu_get_libc_version")
    except OSError:
        return False


def has_glibc() -> bool:
    """Linux with glibc (``mallopt`` and ``malloc_trim`` present): not musl, macOS or Windows."""
    return not is_macos() and _glibc_mallopt()


def has_onednn_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX512-BF16, AMX or AVX-NE-CONVERT): torch built
    with oneDNN, an x86 CPU, and ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` (private API)."""
    if is_arm():
        return False
    try:
        ops = getattr(torch.ops, "mkldnn", None)
        return bool(torch.backends.mkldnn.is_available() and ops is not None and ops._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def has_packing_ops() -> bool:
    """oneDNN bf16 and the private ops that run a prepacked convolution."""
    ops = getattr(torch.ops, "mkldnn", None)
    return has_onednn_bf16() and hasattr(ops, "_reorder_convolution_weight") and hasattr(ops, "_convolution_pointwise")


def has_arena_calls() -> bool:
    """The private calls the activation arena needs: a storage's use count (to reuse blocks)
    and the innermost saved-tensor hooks (to find the arena from ``recomputable``)."""
    return (
        getattr(torch._C, "_storage_Use_Count", None) is not None
        and getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None) is not None
    )
