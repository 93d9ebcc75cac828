"""The machine a figure was measured on: CPU model and the flags that decide bf16 speed, cores,
torch threads, torch and oneDNN versions (and the precision and layout a run used).

Every benchmark output and comparison report records ``machine_profile()``: a speed figure
means nothing without it, because the same code runs bf16 at 0.6x fp32 on one 2-core CPU and
at 1.6-4x on another. ``profile_key`` is the part that decides which precision is fastest; the
precision probe (``framecast.speed``) caches its measurements under it. A description only: it
changes nothing on the machine, and reports (``framecast.evaluation.compare``) read it too.
"""

import functools
import hashlib
import json
import os
import platform
import re
from typing import Any

import torch

# The CPU flags that decide what bf16 costs: AMX tiles (Sapphire Rapids and later) run bf16
# matrix products several times faster than fp32; AVX512-BF16 alone may not beat fp32.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


_allocator: str | None = None


def note_allocator(description: str | None) -> None:
    """Record how the C library's allocator was tuned in this process (``framecast.speed``'s
    malloc tuning calls it), so every figure says so."""
    global _allocator
    _allocator = description


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """CPU model name and which of ``CPU_FLAGS`` it has (from /proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or platform.machine() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        text = ""
    name = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    if name:
        model = name.group(1).strip()
    line = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    if line:
        flags = set(line.group(1).split())
    return {"cpu": model, "cpu_flags": [f for f in CPU_FLAGS if f in flags]}


@functools.lru_cache(maxsize=1)
def onednn_version() -> str | None:
    """oneDNN's version as torch was built with it (``torch.__config__.show()``), or None."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        m = re.search(r"(?:oneDNN|MKL-DNN) v([0-9.]+)", torch.__config__.show())
    except Exception:  # pragma: no cover - a build without the config string
        return None
    return m.group(1) if m else "unknown"


def _cpu_capability() -> str:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # pragma: no cover - older torch
        return "unknown"


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def gpu_name() -> str | None:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine_profile(precision: str | None = None, layout: str | None = None) -> dict[str, Any]:
    """This machine, as every figure records it; ``precision`` / ``layout``: what the figure used."""
    prof = {
        **cpu_info(),
        "cores": os.cpu_count() or 1,
        "usable_cores": _usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onednn": onednn_version(),
        "cpu_capability": _cpu_capability(),
        "gpu": gpu_name(),
        "allocator": _allocator or "C library default",  # framecast.speed's malloc tuning, if applied
    }
    if precision is not None:
        prof["precision"] = precision
    if layout is not None:
        prof["layout"] = layout
    return prof


def profile_key(profile: dict[str, Any] | None = None) -> dict[str, Any]:
    """What decides the fastest precision and layout: CPU model and flags, torch and oneDNN
    versions, torch threads (and the GPU, if any)."""
    p = profile or machine_profile()
    return {k: p.get(k) for k in ("cpu", "cpu_flags", "torch", "onednn", "torch_threads", "gpu")}


def profile_hash(profile: dict[str, Any] | None = None) -> str:
    return hashlib.sha256(json.dumps(profile_key(profile), sort_keys=True).encode()).hexdigest()[:16]


def describe(profile: dict[str, Any] | None = None) -> str:
    """One line: ``Intel Xeon ... (avx2, avx512f, avx512_bf16), 2 cores, 2 torch threads, torch 2.14.1, oneDNN 3.12.0``."""
    p = profile or machine_profile()
    flags = ", ".join(p["cpu_flags"]) or "no AVX2"
    line = (
        f"{p['cpu']} ({flags}), {p['usable_cores']} cores, {p['torch_threads']} torch threads, "
        f"torch {p['torch']}, oneDNN {p['onednn'] or '-'}"
    )
    if p.get("gpu"):
        line += f", GPU {p['gpu']}"
    if p.get("precision"):
        line += f"; precision {p['precision']}" + (f", {p['layout']}" if p.get("layout") else "")
    return line
