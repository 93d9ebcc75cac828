"""Inference with prepacked bf16 convolution weights (CPU, oneDNN).

Under bf16 autocast every ``nn.Conv2d`` call hands oneDNN an fp32 weight: autocast casts it to
bf16 (once per autocast region) and oneDNN reorders it into its blocked layout (on every call).
At batch 1 that reorder is a large share of a convolution: a recurrent model calls each gate
convolution once per frame, so the official 4 x 128 PredRNN reorders its 24M weights 19 times per
clip. ``pack_convolutions`` returns a copy of a model whose convolutions hold their weight in
bf16, reordered once per input shape they meet (``torch.ops.mkldnn._reorder_convolution_weight``,
as inductor's freezing does; at batch 1 that is once), and call oneDNN with it directly
(``torch.ops.mkldnn._convolution_pointwise``). The arithmetic is autocast's (bf16 inputs and
weights, bf16 out), so the forecast is the same: bit for bit on the machine it was measured on
(tests allow bf16 rounding, since another CPU's kernels may pick another algorithm for either
path).

Gain and cost, measured (``benchmarks/batch1.py``,
``benchmarks/results/batch1-forecast-official-predrnn-pt2.14-cpu-xeon-amx.json``, the AMX Xeon):
the official PredRNN's gate convolutions at batch 1 ran 1.75-2.6x as fast packed (e.g. ``conv_h``
0.92 -> 0.49 ms at one thread, 0.60 -> 0.23 ms at two), its clip 1.7x (README "Benchmarks");
the cost is a bf16 copy of the weights (half the fp32 model) and one reorder per input shape.
Not measured on other CPUs, so the Forecaster's default ``pack_weights="auto"`` packs only where ``pays`` measures the
packed copy at least ``PACK_GAIN`` (1.2x) as fast on this machine: a forward pass at batch 1,
each way, within ``PACK_SECONDS``, cached with the precision probe's results (``packed/`` beside
``precision/``). Off: ``Forecaster(pack_weights=False)``; ``True`` packs without measuring.

Used by the ``Forecaster`` when it runs bf16-mixed on a CPU; a model for training is never
packed (its weights change every step). Both ops are private PyTorch API: where they are
missing, where oneDNN has no native bf16 (an AVX2-only CPU, ARM), on a GPU, or where a
convolution is not a plain zero-padded ``nn.Conv2d``, it is left as it is, silently
(``framecast.speed.support``).
"""

import copy
import hashlib
import json
import time
from typing import Any

import torch
from torch import Tensor, nn

from framecast.speed import support

PACK_GAIN = 1.2  # pack_weights="auto": the packed copy must be at least this much faster
PACK_SECONDS = 2.0  # what measuring that may take (a warm-up and up to 3 rounds of each)


class PackedConv2d(nn.Module):
    """An ``nn.Conv2d`` for bf16 inference on the CPU: its weight in bf16, in oneDNN's layout.

    Made for bf16 autocast, as the Forecaster runs it: it computes in bf16 and returns bf16
    whether or not autocast is on (a plain convolution outside autocast would run in fp32).

    The weight is reordered for the input shape (and thread count) it meets, once per shape: a
    layout picked without the input's shape can send oneDNN to a slow kernel. Measured here
    (``benchmarks/batch1.py``): the official PredRNN's 128 -> 384 5x5 ``conv_m`` at batch 1 and
    one thread took 84-120 ms packed without the shape, 0.33-0.44 ms with it (0.6-0.8 ms unpacked)."""

    max_shapes = 4  # reordered weights kept, one per input shape and thread count (least recently used dropped)

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.padding = list(conv.padding)
        self.stride, self.dilation, self.groups = list(conv.stride), list(conv.dilation), conv.groups
        self.weight = conv.weight.detach().to(torch.bfloat16)  # kept to reorder for a new shape
        self._reorder(None)  # a shape or build oneDNN does not take raises here (RuntimeError)
        self._packed: dict[tuple, Tensor] = {}
        self._last: Tensor | None = None  # the weight of the latest eager call
        self.bias = None if conv.bias is None else conv.bias.detach().to(torch.bfloat16)
        self.channels_last = _channels_last(conv.weight)

    def _reorder(self, input_size: list[int] | None) -> Tensor:
        return torch.ops.mkldnn._reorder_convolution_weight(
            self.weight, self.padding, self.stride, self.dilation, self.groups, input_size
        )

    def packed_for(self, x: Tensor) -> Tensor:
        """The weight reordered for ``x``'s shape and this thread count (made on first use)."""
        key = (tuple(x.shape), torch.get_num_threads())
        w = self._packed.pop(key, None)  # put back below as the newest: the least recently used goes first
        if w is None:
            if len(self._packed) >= self.max_shapes:
                del self._packed[next(iter(self._packed))]
            w = self._reorder(list(x.shape))
        self._packed[key] = w
        self._last = w
        return w

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling() and self._last is not None:
            # torch.compile traces the weight of the eager call before it (the Forecaster warms
            # up every path eagerly first), not the lookup. A shape first met compiled (a
            # recompilation) gets that weight too: the same result, oneDNN re-lays it out per call
            w = self._last
        else:
            w = self.packed_for(x)
        y = torch.ops.mkldnn._convolution_pointwise(
            x.to(torch.bfloat16), w, self.bias, self.padding, self.stride, self.dilation,
            self.groups, "none", [], "",
        )  # fmt: skip
        # F.conv2d's layout: channels-last if its input or weight is (what follows, e.g. a
        # GroupNorm, sums in another order in the other layout); oneDNN's own may differ
        cl = self.channels_last or _channels_last(x)
        return y.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)


def _channels_last(t: Tensor) -> bool:
    """Whether torch takes ``t`` for channels-last: its strides are that layout's (for a tensor
    with size-1 dimensions, which is contiguous in both senses, the strides still tell)."""
    if t.dim() != 4:
        return False
    n, c, h, w = t.shape
    return t.stride() == (h * w * c, 1, w * c, c) and t.stride() != (c * h * w, h * w, w, 1)


def packable(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and conv.weight.device.type == "cpu"
    )


def available() -> bool:
    """The private oneDNN ops, with native bf16 (``support.has_packing_ops``)."""
    return support.has_packing_ops()


def pack_convolutions(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` (eval mode) with every packable convolution packed, and how many were;
    ``model`` itself and 0 where nothing can be packed. The caller's model is never changed."""
    if not available() or not any(packable(m) for m in model.modules()):
        return model, 0
    twin = copy.deepcopy(model).eval()
    count = 0
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if packable(child):
                try:
                    setattr(parent, name, PackedConv2d(child))
                except RuntimeError:  # a shape or build oneDNN does not take: left as it is
                    continue
                count += 1
    return (twin, count) if count else (model, 0)


def pays(
    model: nn.Module, twin: nn.Module, n_context: int, n_future: int, size, use_cache: bool = True
) -> dict[str, Any]:
    """Whether the packed ``twin`` of ``model`` forecasts at least ``PACK_GAIN`` times as fast at
    batch 1 in bf16 on this machine: ``{"pays": bool, "speedup": float, "source": measured|cached}``."""
    from framecast.config import to_dict
    from framecast.io import atomic_write_text
    from framecast.machine import profile_key
    from framecast.speed import probe
    from framecast.speed.precision import cache_dir, code_fingerprint

    nc, nf = probe.probe_frames(model, n_context, n_future)
    key = {
        "version": 1,
        "code": code_fingerprint(),
        "machine": profile_key(),
        "model": getattr(model, "model_name", type(model).__name__),
        "config": to_dict(model.config) if hasattr(model, "config") else None,
        "frames": [nc, nf],
        "image_size": size,
        "channels_last": _channels_last(next((p for p in model.parameters() if p.dim() == 4), torch.empty(0))),
    }
    key = json.loads(json.dumps(key, default=str))
    path = cache_dir() / "packed" / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]}.json"
    if use_cache:
        try:
            entry = json.loads(path.read_text())
            if entry.get("key") == key:
                return {**entry["result"], "source": "cached"}
        except (OSError, ValueError, KeyError, TypeError):
            pass
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        plain = probe._step(model, probe.BF16, "infer", 1, nc, nf, size)
        packed = probe._step(twin, probe.BF16, "infer", 1, nc, nf, size)
        start = time.perf_counter()
        best = {"plain": probe._timed(plain), "packed": probe._timed(packed)}  # warm-up: kernels, reorders
        for _ in range(3):
            if time.perf_counter() - start + sum(best.values()) > PACK_SECONDS:
                break
            best = {
                "plain": min(best["plain"], probe._timed(plain)),
                "packed": min(best["packed"], probe._timed(packed)),
            }
    speedup = best["plain"] / max(best["packed"], 1e-12)
    result = {"pays": speedup >= PACK_GAIN, "speedup": round(speedup, 3)}
    if use_cache:
        try:
            atomic_write_text(path, json.dumps({"key": key, "result": result}, indent=2))
        except OSError:
            pass  # a read-only cache: measured again next time
    return {**result, "source": "measured"}
