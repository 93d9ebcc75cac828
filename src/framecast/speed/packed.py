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
path). Measured here, alternating with autocast's convolutions in one process: the official
PredRNN's gate convolutions at batch 1 ran 1.5-1.65x as fast (``benchmarks/batch1.py`` times each
one; README "Benchmarks").

Used by the ``Forecaster`` when it runs bf16-mixed on a CPU; a model for training is never
packed (its weights change every step). Both ops are private PyTorch API: where they are
missing, or a convolution is not a plain zero-padded ``nn.Conv2d``, it is left as it is.
"""

import copy

import torch
from torch import Tensor, nn


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
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return (
            torch.backends.mkldnn.is_available()
            and ops is not None
            and hasattr(ops, "_reorder_convolution_weight")
            and hasattr(ops, "_convolution_pointwise")
            # oneDNN's bf16 convolution needs AVX512 (or AVX-NE-CONVERT); F.conv2d has fallbacks
            and bool(ops._is_mkldnn_bf16_supported())
        )
    except (AttributeError, RuntimeError):
        return False


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
