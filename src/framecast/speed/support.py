"""Where each piece of the CPU speed machinery can work: one function per condition, in one
place, so that every piece steps aside (silently: no warning, no log line) where it cannot.

| condition | function | pieces that step aside |
| --- | --- | --- |
| the model runs on a GPU (or another device) | ``on_cpu`` | arena, packed weights, probe (a GPU picks bf16 without it) |
| macOS | ``is_macos`` | malloc tuning, ``malloc_trim`` |
| no glibc (musl, Windows, macOS) | ``has_glibc`` | malloc tuning, ``malloc_trim`` |
| ARM (aarch64, arm64) | ``is_arm`` | packed weights (oneDNN's x86 bf16 kernels), malloc tuning |
| no oneDNN bf16 (an AVX2-only x86 CPU, a build without oneDNN) | ``has_onednn_bf16`` | packed weights; the probe's bf16 candidates |
| this torch lacks the private autograd and storage calls | ``has_arena_calls`` | arena |

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
