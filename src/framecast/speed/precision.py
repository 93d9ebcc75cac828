"""``precision: auto`` and ``channels_last: auto``: the arithmetic and memory layout chosen by
measurement on the machine a run lands on.

No constant is right on a CPU: bf16-mixed ran at 0.56-0.96x fp32 on one 2-core Xeon (AVX512-BF16,
no AMX) and at 1.6-4x on others (AMX), and channels-last is -8% to +20% per convolution (the
probe's figures: ``benchmarks/results/precision-layout-conv-pt2.14-cpu-xeon-amx.json``,
``precision-auto-fit-quick-pt2.14-cpu-xeon-amx.json``). So on a CPU ``resolve`` times the model's
own training step (forward, backward and an Adam step; the forward pass alone for testing and
forecasting) in each candidate, fp32 and bf16-mixed, contiguous and channels-last, on a 3-frame
clip (a recurrent model's per-frame work is the same at any length) at the run's batch where
that is cheap enough (``probe.py``: at most 5 s per model shape at the cpu sizes, 10 s at the
published ones, on any CPU; a candidate clearly slower is timed no further), and keeps the
fastest time of each. bf16-mixed is chosen only if it is at least ``BF16_MARGIN`` times as fast
as the best fp32 candidate (it rounds: noise must not buy it). Where oneDNN has no native bf16
(an AVX2-only CPU, ARM; ``support.has_onednn_bf16``), where one bf16 step costs ~25 fp32 ones,
bf16 is not a candidate. The result is cached per machine profile
(``framecast.machine.profile_key``: CPU model and flags, torch and oneDNN versions, thread
count) and model shape, in ``$FRAMECAST_CACHE`` (else ``$XDG_CACHE_HOME/framecast``, else
``~/.cache/framecast``), under ``precision/``: the second run on the same machine pays nothing.
A probe during which other processes took more than ``BUSY_SHARE`` of the CPU (Linux:
/proc/stat) says so and is cached for ``BUSY_TTL`` (an hour) only, then measured again.

Off: an explicit ``trainer.precision`` and ``trainer.channels_last`` (or the Forecaster's
``precision`` and ``channels_last``), or ``$FRAMECAST_PRECISION``; nothing is measured then.

On a GPU ``auto`` picks bf16-mixed where the GPU supports it (no probe), and channels-last for
training (the Forecaster keeps the model's own layout). An
explicit precision (``32``, ``bf16-mixed``, ...) or layout (``true`` / ``false``) is always
obeyed; with both explicit nothing is measured.

One log line says what was chosen and why:

    precision: auto -> bf16-mixed, channels-last (2.9x fp32 on this CPU; channels-last 1.17x contiguous; measured now in 4.2 s)
"""

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from framecast.errors import ConfigError
from framecast.machine import machine_profile, profile_key
from framecast.speed import probe as probing
from framecast.speed import support
from framecast.speed.malloc import malloc_trim
from framecast.speed.probe import BF16, FP32, layout_name

AUTO = "auto"
# $FRAMECAST_PRECISION=32 (or bf16-mixed) pins what `auto` resolves to on this machine: no probe,
# no log line (CI and the test suite pin it, so their runs never depend on a timing).
ENV_PIN = "FRAMECAST_PRECISION"
BF16_MARGIN = 1.10  # bf16-mixed must be this much faster than the best fp32 candidate
BUSY_SHARE = 0.25  # a probe while other processes took more than this share of the CPU ...
BUSY_TTL = 3600.0  # ... is cached for this many seconds only (the same choice for runs close in time)
PROBE_VERSION = 3  # bump when the probe changes what it measures: older cache entries are ignored


def code_fingerprint() -> str:
    """A digest of the code a probe times (``framecast/models``, ``framecast/layers``, this module
    and ``probe.py``): a new kernel (a faster depthwise convolution, say) changes the speeds without
    changing a model's config, so it invalidates the cached choices (``PROBE_VERSION`` alone
    only covers changes to the probe itself)."""
    global _FINGERPRINT
    if _FINGERPRINT is None:
        root = Path(__file__).resolve().parent.parent  # framecast/
        h = hashlib.sha256()
        for f in sorted([*root.joinpath("models").rglob("*.py"), *root.joinpath("layers").rglob("*.py")]):
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
        h.update(Path(__file__).read_bytes())
        h.update(Path(probing.__file__).read_bytes())
        _FINGERPRINT = h.hexdigest()[:16]
    return _FINGERPRINT


_FINGERPRINT: str | None = None


def cache_dir() -> Path:
    """framecast's cache folder: ``$FRAMECAST_CACHE``, else ``$XDG_CACHE_HOME/framecast``, else
    ``~/.cache/framecast``."""
    if os.environ.get("FRAMECAST_CACHE"):
        return Path(os.environ["FRAMECAST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "framecast"


def parse_channels_last(value: Any) -> bool | str:
    """``true`` / ``false`` / ``auto`` (bools, or the strings YAML and the command line give)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", AUTO):
        v = value.lower()
        return AUTO if v == AUTO else v in ("true", "yes", "1")
    raise ValueError(f"channels_last must be true, false or auto, got {value!r}")


@dataclass
class Choice:
    """What ``resolve`` picked and why (``record()`` goes into train_stats.json / metrics.json)."""

    precision: str
    channels_last: bool
    requested: dict[str, Any]  # {"precision": ..., "channels_last": ...} as configured
    source: str  # explicit | measured | cached | gpu | resumed | fixed
    reason: str = ""
    step_seconds: dict[str, float] = field(default_factory=dict)  # "32/contiguous" -> s per probe step
    probe: dict[str, Any] = field(default_factory=dict)  # batch, frames, rounds, seconds

    @property
    def layout(self) -> str:
        return layout_name(self.channels_last)

    @property
    def bf16_speedup(self) -> float | None:
        """Best fp32 step time over best bf16-mixed step time, where both were measured."""
        f = [t for k, t in self.step_seconds.items() if k.startswith(FP32 + "/")]
        b = [t for k, t in self.step_seconds.items() if k.startswith(BF16 + "/")]
        return min(f) / min(b) if f and b else None

    def describe(self) -> str:
        req = self.requested.get("precision")
        line = f"precision: {req} -> {self.precision}, {self.layout}"
        return f"{line} ({self.reason})" if self.reason else line

    def record(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "layout": self.layout,
            "requested": dict(self.requested),
            "source": self.source,
            "reason": self.reason,
            "bf16_speedup": self.bf16_speedup,
            "step_seconds": dict(self.step_seconds),
            "probe": dict(self.probe),
            "machine": machine_profile(self.precision, self.layout),
        }


def device_kind(accelerator: str) -> str:
    """``cpu``, ``cuda`` or ``other`` (mps, tpu, ...) for a Lightning accelerator name."""
    a = str(accelerator).lower()
    if a == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if a in ("gpu", "cuda"):
        return "cuda"
    return "cpu" if a == "cpu" else "other"


def resolve(
    model: nn.Module,
    precision: str = AUTO,
    channels_last: bool | str = AUTO,
    *,
    accelerator: str = "auto",
    kind: str = "train",
    batch: int = 8,
    n_context: int = 10,
    n_future: int = 10,
    image_size: int | tuple[int, int] | None = None,
    num_nodes: int = 1,
    stored: dict[str, Any] | None = None,
    use_cache: bool = True,
    unprobed_layout: bool = True,
    log: Callable[[str], None] | None = None,
) -> Choice:
    """Resolve ``auto`` precision and layout for ``model``; see the module docstring.

    Args:
        kind: ``train`` (time a training step) or ``infer`` (a forward pass without gradients).
        batch, n_context, n_future, image_size: the run's shapes (the probe reduces them).
        stored: the trainer section a checkpoint was trained with; when resuming, ``auto``
            takes its precision and layout (a run keeps its arithmetic; nothing is measured).
        unprobed_layout: what ``channels_last: auto`` resolves to where nothing is measured (a
            pinned precision, a GPU, no parameters): channels-last for training; the model's own
            layout for the ``Forecaster``, which never moves a model without a measurement.
        log: receives the one-line description of an ``auto`` choice.
    """
    channels_last = parse_channels_last(channels_last)
    precision = str(precision)
    requested = {"precision": precision, "channels_last": channels_last}
    choice = _decide(
        model,
        precision,
        channels_last,
        requested,
        accelerator=accelerator,
        kind=kind,
        batch=batch,
        n_context=n_context,
        n_future=n_future,
        image_size=image_size,
        num_nodes=num_nodes,
        stored=stored,
        use_cache=use_cache,
        unprobed_layout=unprobed_layout,
    )
    # Announced when measured or looked up; a pin and a resumed run's own arithmetic are not news.
    if log is not None and AUTO in (precision, channels_last) and choice.source not in ("env", "resumed"):
        log(choice.describe())
    return choice


def _decide(
    model,
    precision,
    channels_last,
    requested,
    *,
    accelerator,
    kind,
    stored,
    num_nodes,
    use_cache,
    unprobed_layout,
    **shape,
) -> Choice:
    fixed_p, fixed_cl = precision != AUTO, channels_last != AUTO
    unprobed = channels_last if fixed_cl else unprobed_layout  # the layout where nothing is measured
    if fixed_p and fixed_cl:
        return Choice(precision, channels_last, requested, "explicit")
    if not any(True for _ in model.parameters()):  # a baseline: no arithmetic to speed up
        return Choice(precision if fixed_p else FP32, unprobed, requested, "fixed", "no parameters")
    pinned = os.environ.get(ENV_PIN, "").strip()
    if pinned and not fixed_p:  # what `auto` means on this machine, set once (CI, a cluster's nodes)
        if pinned not in (FP32, "32-true", BF16, "bf16-true", "16-mixed", "64"):
            raise ConfigError(
                f"${ENV_PIN}={pinned!r}: set it to 32 or bf16-mixed (what trainer.precision: auto means here)"
            )
        return Choice(pinned, unprobed, requested, "env", f"${ENV_PIN}; no probe")
    if stored is not None:  # resuming: the arithmetic the checkpoint was trained with
        sp, scl = stored.get("precision"), stored.get("channels_last")
        if isinstance(scl, str):
            scl = parse_channels_last(scl)
        if sp not in (None, AUTO) and isinstance(scl, bool):
            return Choice(
                precision if fixed_p else str(sp),
                channels_last if fixed_cl else scl,
                requested,
                "resumed",
                "as the checkpoint was trained; resumed",
            )
    dev = device_kind(accelerator)
    if dev == "cuda":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        p = precision if fixed_p else (BF16 if bf16 else FP32)
        why = "the GPU supports bf16" if bf16 else "the GPU has no bf16"
        return Choice(p, unprobed, requested, "gpu", f"{why}; no probe on a GPU")
    if dev == "other" or num_nodes > 1:
        why = (
            "several machines would each measure their own; set trainer.precision to choose"
            if num_nodes > 1
            else f"no probe on {accelerator}"
        )
        return Choice(precision if fixed_p else FP32, unprobed, requested, "fixed", why)
    precisions = [precision] if fixed_p else ([FP32, BF16] if support.has_onednn_bf16() else [FP32])
    if fixed_p and precision not in (FP32, "32-true", BF16):
        # 64, 16-mixed, bf16-true: obeyed; the layout stays the long-standing default
        return Choice(precision, unprobed, requested, "fixed", "layout not probed at this precision")
    layouts = [channels_last] if fixed_cl else [False, True]
    candidates = [(p, cl) for p in precisions for cl in layouts]
    if len(candidates) == 1:  # nothing to choose between (no oneDNN bf16, the layout given)
        return Choice(precisions[0], layouts[0], requested, "fixed", "no oneDNN bf16 on this CPU; no probe")
    times, probe, source = _timings(model, candidates, kind, shape, use_cache)
    return _pick(times, probe, source, precisions, layouts, requested)


def _pick(times, probe, source, precisions, layouts, requested) -> Choice:
    def best(p: str) -> tuple[float, bool]:
        return min((times[probing.key(p, cl)], cl) for cl in layouts)

    fp32 = best(precisions[0])
    why = []
    if len(precisions) > 1:
        bf16 = best(BF16)
        speedup = fp32[0] / bf16[0]
        if speedup >= BF16_MARGIN:
            p, (t, cl) = BF16, bf16
            why.append(f"{speedup:.1f}x fp32 on this CPU")
        else:
            p, (t, cl) = FP32, fp32
            why.append(f"bf16-mixed {speedup:.2f}x fp32 on this CPU")
    else:
        p, (t, cl) = precisions[0], fp32
    if len(layouts) > 1:
        other = times[probing.key(p, not cl)]
        why.append(f"{layout_name(cl)} {other / t:.2f}x {layout_name(not cl)}")
    how = f"measured now in {probe['seconds']:.1f} s" if source == "measured" else "cached"
    others = probe.get("others_cpu_share", 0.0)
    if others > BUSY_SHARE:
        how += f"; other processes took {others:.0%} of the CPU meanwhile: measured again after an hour"
    return Choice(p, cl, requested, source, "; ".join([*why, how]), dict(times), probe)


def _timings(model, candidates, kind, shape, use_cache: bool) -> tuple[dict[str, float], dict[str, Any], str]:
    from framecast.config import to_dict

    nc, nf = probing.probe_frames(model, shape["n_context"], shape["n_future"])
    size = shape.get("image_size") or getattr(model.config, "image_size", 64)
    key = {
        "version": PROBE_VERSION,
        "code": code_fingerprint(),
        "machine": profile_key(),
        "model": getattr(model, "model_name", type(model).__name__),
        "config": to_dict(model.config),
        "kind": kind,
        "batch": shape["batch"],
        "frames": [nc, nf],
        "image_size": size,
        "candidates": [probing.key(p, cl) for p, cl in candidates],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = cache_dir() / "precision" / f"{digest}.json"
    if use_cache:
        try:
            entry = json.loads(path.read_text())
            fresh = not entry.get("busy") or time.time() - entry["measured_at"] < BUSY_TTL
            if entry.get("key") == json.loads(json.dumps(key, default=str)) and fresh:
                return entry["step_seconds"], entry["probe"], "cached"
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no entry, or a broken one: measure again
    times, probe = _run_probe(model, candidates, kind, shape["batch"], nc, nf, size)
    if use_cache:
        try:
            from framecast.io import atomic_write_text

            busy = probe.get("others_cpu_share", 0.0) > BUSY_SHARE  # kept for BUSY_TTL only
            entry = {"key": key, "step_seconds": times, "probe": probe, "measured_at": time.time(), "busy": busy}
            atomic_write_text(path, json.dumps(entry, indent=2, default=str))
        except OSError:
            pass  # a read-only cache: measure again next time
    return times, probe, "measured"


def _run_probe(model, candidates, kind, batch, nc, nf, size) -> tuple[dict[str, float], dict[str, Any]]:
    t0 = time.perf_counter()
    times, info = probing.probe_steps(
        model, candidates, kind=kind, batch=batch, n_context=nc, n_future=nf, image_size=size
    )
    malloc_trim()  # what the probe's steps left on the heap goes back (official PredRNN-V2: ~0.5 GiB)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return {k: float(v) for k, v in times.items()}, info


def static_precision(precision: str, accelerator: str = "auto") -> str:
    """A precision for Lightning without a model to measure: ``auto`` is bf16-mixed on a GPU
    that supports it, else 32 (the choice ``resolve`` makes before measuring)."""
    if precision != AUTO:
        return precision
    cuda = device_kind(accelerator) == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return BF16 if cuda else FP32


def autocast(precision: str, device: str = "cpu"):
    """The autocast context of a Lightning ``precision`` for inference outside a Trainer."""
    if precision == BF16:
        return torch.autocast(device, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device, dtype=torch.float16)
    return torch.autocast(device, enabled=False)
