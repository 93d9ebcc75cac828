"""Blocks of the SimVP family (``models/simvp.py``): the spatial encoder and decoder, and the
translators over time-stacked channels (SimVP v1's Inception-UNet, SimVP v2's gSTA, TAU).

Module and parameter names are OpenSTL's (``openstl/models/simvp_model.py``,
``openstl/modules/simvp_modules.py``) wherever its nesting is kept, so that converted weights
load by name; ``SimVP.from_openstl`` renames the three places where one wrapper level is
flattened here (``conv.conv.`` and ``conv.norm.`` in the encoder and decoder, ``dwconv.dwconv.``
in the MLP). Every block is a plain convolution network (no layer norm over (H, W)), so any frame
size divisible by the encoder's stride runs, and channels-last weights give channels-last
activations throughout.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# SimVP v1's Inception kernels and groups (fixed in OpenSTL's MidIncepNet as in the v1 code).
INCEP_KERNELS = (3, 5, 7, 11)
INCEP_GROUPS = 8
# Large-kernel attention of gSTA and TAU: a 21 x 21 receptive field from a 5 x 5 depthwise
# convolution and a 7 x 7 depthwise convolution of dilation 3 (OpenSTL's MetaBlock).
ATTN_KERNEL = 21
ATTN_DILATION = 3


def strided(n_layers: int) -> list[bool]:
    """Which of the encoder's ``n_layers`` convolutions have stride 2: every second, starting
    with the second (the decoder mirrors it)."""
    return [i % 2 == 1 for i in range(n_layers)]


class ConvSC(nn.Module):
    """Convolution -> GroupNorm(2) -> SiLU: stride 2 to go down; to go up, 4x the channels and
    a pixel shuffle (OpenSTL's ``ConvSC`` around ``BasicConv2d``, flattened)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, down: bool = False, up: bool = False) -> None:
        super().__init__()
        stride = 2 if down else 1
        self.up = up
        self.conv = nn.Conv2d(c_in, 4 * c_out if up else c_out, kernel, stride, (kernel - stride + 1) // 2)
        self.norm = nn.GroupNorm(2, c_out)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        if self.up:
            y = F.pixel_shuffle(y, 2)  # (N, 4C, h, w) -> (N, C, 2h, 2w)
        y = self.norm(y)
        return F.silu(y, inplace=not y.requires_grad)  # in place (a third faster) when no backward needs y


class Encoder(nn.Module):
    """(N, C, H, W) frames -> the (N, hid, H/s, W/s) latent, s = 2^(layers/2), and the output
    of the first layer (N, hid, H, W), the decoder's skip."""

    def __init__(self, c_in: int, hid: int, n_layers: int, kernel: int) -> None:
        super().__init__()
        self.enc = nn.ModuleList(
            ConvSC(c_in if i == 0 else hid, hid, kernel, down=s) for i, s in enumerate(strided(n_layers))
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        skip = latent = self.enc[0](x)
        for layer in self.enc[1:]:
            latent = layer(latent)
        return latent, skip


class Decoder(nn.Module):
    """The encoder mirrored: (N, hid, H/s, W/s) latent and (N, hid, H, W) skip -> (N, C, H, W);
    the skip is added before the last layer, and a 1x1 ``readout`` (no sigmoid) ends it."""

    def __init__(self, hid: int, c_out: int, n_layers: int, kernel: int) -> None:
        super().__init__()
        self.dec = nn.ModuleList(ConvSC(hid, hid, kernel, up=s) for s in reversed(strided(n_layers)))
        self.readout = nn.Conv2d(hid, c_out, 1)

    def forward(self, z: Tensor, skip: Tensor) -> Tensor:
        for layer in self.dec[:-1]:
            z = layer(z)
        return self.readout(self.dec[-1](z + skip))


# ----------------------------------------------------------------------------- SimVP v1: IncepU


class GroupConv2d(nn.Module):
    """Grouped convolution -> GroupNorm(groups) -> LeakyReLU(0.2)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups)
        self.norm = nn.GroupNorm(groups, c_out)

    def forward(self, x: Tensor) -> Tensor:
        # in place on the norm's output, which its backward does not keep
        return F.leaky_relu_(self.norm(self.conv(x)), 0.2)


class InceptionBlock(nn.Module):
    """SimVP v1's Inception module (OpenSTL's ``gInception_ST``): a 1x1 convolution to
    ``c_hid`` channels, then the sum of grouped convolutions of kernels 3, 5, 7 and 11."""

    def __init__(self, c_in: int, c_hid: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_hid, 1)
        self.layers = nn.ModuleList(GroupConv2d(c_hid, c_out, k, INCEP_GROUPS) for k in INCEP_KERNELS)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        y = self.layers[0](x)
        for layer in self.layers[1:]:
            y = y + layer(x)
        return y


class MidIncepNet(nn.Module):
    """The Inception-UNet translator: ``n`` Inception blocks down (to ``hid`` channels), ``n``
    up, each up block after the first reading ``[z, skip]`` from its mirror; (B, c, h, w) in
    and out, c = T * hid_S."""

    def __init__(self, c: int, hid: int, n: int) -> None:
        super().__init__()
        self.enc = nn.ModuleList(InceptionBlock(c if i == 0 else hid, hid // 2, hid) for i in range(n))
        self.dec = nn.ModuleList(
            InceptionBlock(hid if i == 0 else 2 * hid, hid // 2, c if i == n - 1 else hid) for i in range(n)
        )

    def forward(self, z: Tensor) -> Tensor:
        skips = []
        for layer in self.enc:
            z = layer(z)
            skips.append(z)
        z = self.dec[0](z)
        for layer, skip in zip(self.dec[1:], reversed(skips[:-1]), strict=True):
            z = layer(torch.cat([z, skip], dim=1))
        return z


# ----------------------------------------------------------------------- SimVP v2: gSTA, and TAU


class FP32DepthwiseConv2d(nn.Conv2d):
    """A depthwise convolution that runs in fp32 under CPU bf16 autocast: oneDNN's bf16 depthwise
    backward ran 3x slower than its fp32 one on this CPU (5x5, 256 channels, 16 x 16, batch 16:
    30 vs 9 ms forward + backward, channels-last); the forward is fp32 too (more precise, not
    slower). Elsewhere, and in fp32, it is ``nn.Conv2d``."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            return super().forward(x.float())


class PhaseDilatedConv2d(nn.Conv2d):
    """A depthwise convolution of dilation d with 'same' padding, computed on a CPU as a plain
    (undilated) depthwise convolution over the d x d phase sub-grids of its input, stacked in
    the batch (the space-to-batch form of an atrous convolution): an output pixel of phase
    (y mod d, x mod d) reads only input pixels of that phase, and the zeros padded to a multiple
    of d are the zeros of the original padding. The same products, summed in another order
    (equal to 1e-5, tested). oneDNN's dilated depthwise kernels are slow on a CPU: 7x7 of
    dilation 3, 256 channels, 16 x 16, batch 16, bf16 channels-last: forward 18.4 -> 3.9 ms,
    forward + backward 68 -> 53 ms this way; with ``FP32DepthwiseConv2d`` a gSTA / TAU training
    step at the cpu size ran 1.13x / 1.08x faster in bf16-mixed, 1.2x in fp32. Same parameters as
    ``nn.Conv2d`` (converted weights load by name); on other devices it is ``nn.Conv2d``."""

    def forward(self, x: Tensor) -> Tensor:
        d = self.dilation[0]
        same = self.padding == tuple(d * (k - 1) // 2 for k in self.kernel_size) and self.stride == (1, 1)
        if x.device.type != "cpu" or d == 1 or not same or self.dilation[1] != d or self.padding_mode != "zeros":
            return super().forward(x)
        b, c, h, w = x.shape
        hp, wp = -(-h // d) * d, -(-w // d) * d
        x = F.pad(x, (0, wp - w, 0, hp - h))
        x = x.reshape(b, c, hp // d, d, wp // d, d).permute(0, 3, 5, 1, 2, 4).reshape(b * d * d, c, hp // d, wp // d)
        y = F.conv2d(x, self.weight, self.bias, 1, self.kernel_size[0] // 2, 1, self.groups)
        y = y.reshape(b, d, d, c, hp // d, wp // d).permute(0, 3, 4, 1, 5, 2).reshape(b, c, hp, wp)
        return y[:, :, :h, :w]


def large_kernel_convs(dim: int) -> tuple[nn.Conv2d, nn.Conv2d]:
    """The large-kernel decomposition gSTA and TAU share: a depthwise (2d - 1)^2 convolution,
    then a depthwise dilated one (dilation d = ATTN_DILATION) covering ATTN_KERNEL pixels."""
    d = ATTN_DILATION
    k0 = 2 * d - 1
    k1 = ATTN_KERNEL // d + (ATTN_KERNEL // d) % 2 - 1
    conv0 = FP32DepthwiseConv2d(dim, dim, k0, padding=k0 // 2, groups=dim)
    conv_spatial = PhaseDilatedConv2d(dim, dim, k1, padding=d * (k1 - 1) // 2, groups=dim, dilation=d)
    return conv0, conv_spatial


class AttentionModule(nn.Module):
    """gSTA's gated large-kernel attention: depthwise 5x5 -> depthwise 7x7 of dilation 3 -> a
    1x1 convolution to 2 * dim channels (f, g) -> sigmoid(g) * f."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0, self.conv_spatial = large_kernel_convs(dim)
        self.conv1 = nn.Conv2d(dim, 2 * dim, 1)  # f and g in one convolution

    def forward(self, x: Tensor) -> Tensor:
        f, g = self.conv1(self.conv_spatial(self.conv0(x))).chunk(2, dim=1)
        return torch.sigmoid(g) * f


class TemporalAttentionModule(nn.Module):
    """TAU's attention: static (depthwise 5x5 -> depthwise dilated 7x7 -> 1x1) times dynamic (a
    squeeze-excitation over the channels) times the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0, self.conv_spatial = large_kernel_convs(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        # OpenSTL's squeeze width: dim // max(dim // 16, 4), i.e. 16 channels once dim >= 64
        squeeze = dim // max(dim // 16, 4)
        self.fc = nn.Sequential(
            nn.Linear(dim, squeeze, bias=False), nn.ReLU(), nn.Linear(squeeze, dim, bias=False), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        static = self.conv1(self.conv_spatial(self.conv0(x)))
        dynamic = self.fc(x.mean(dim=(2, 3)))[:, :, None, None]  # (B, dim, 1, 1)
        return dynamic * static * x


class Attention(nn.Module):
    """1x1 -> GELU -> the attention unit -> 1x1, plus the input (OpenSTL's ``SpatialAttention``
    and ``TemporalAttention``, which differ only in the unit)."""

    def __init__(self, dim: int, unit: nn.Module) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.spatial_gating_unit = unit
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj_2(self.spatial_gating_unit(F.gelu(self.proj_1(x)))) + x


class MixMlp(nn.Module):
    """1x1 up to ``hidden`` -> depthwise 3x3 -> GELU -> 1x1 back, with dropout ``drop``."""

    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = drop

    def forward(self, x: Tensor) -> Tensor:
        x = F.dropout(F.gelu(self.dwconv(self.fc1(x))), self.drop, self.training)
        return F.dropout(self.fc2(x), self.drop, self.training)


class GASubBlock(nn.Module):
    """A MetaFormer block: x + ls1 * attn(BN(x)), then x + ls2 * mlp(BN(x)), each branch dropped
    per sample with probability ``drop_path`` in training (stochastic depth, kept branches
    scaled by 1 / (1 - drop_path)). ``tau`` picks TAU's attention unit instead of gSTA's."""

    def __init__(self, dim: int, mlp_ratio: float, drop: float, drop_path: float, tau: bool) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = Attention(dim, TemporalAttentionModule(dim) if tau else AttentionModule(dim))
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = MixMlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), 1e-2))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), 1e-2))
        self.drop_path = drop_path

    def residual(self, x: Tensor, scale: Tensor, branch: Tensor) -> Tensor:
        """x + scale * branch in one kernel; the per-sample stochastic-depth mask is drawn after
        the branch, as timm's ``DropPath`` (which OpenSTL uses) draws it."""
        scale = scale[:, None, None]  # (dim, 1, 1)
        if self.training and self.drop_path > 0:
            keep = 1 - self.drop_path
            scale = scale * x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep).div_(keep)  # (B, dim, 1, 1)
        return torch.addcmul(x, scale, branch)

    def forward(self, x: Tensor) -> Tensor:
        x = self.residual(x, self.layer_scale_1, self.attn(self.norm1(x)))
        return self.residual(x, self.layer_scale_2, self.mlp(self.norm2(x)))


class MetaBlock(nn.Module):
    """A translator block at ``c_in`` channels, then a 1x1 ``reduction`` to ``c_out`` when they differ."""

    def __init__(self, c_in: int, c_out: int, mlp_ratio: float, drop: float, drop_path: float, tau: bool) -> None:
        super().__init__()
        self.block = GASubBlock(c_in, mlp_ratio, drop, drop_path, tau)
        self.reduction = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.reduction(self.block(x))


class MidMetaNet(nn.Module):
    """The gSTA / TAU translator: ``n`` blocks, the first at c = T * hid_S channels reduced to
    ``hid``, the middle ones at ``hid``, the last at ``hid`` expanded back to c; stochastic depth
    rates ``drop_path`` run over the blocks (OpenSTL's schedule, see models/simvp.py)."""

    def __init__(
        self, c: int, hid: int, n: int, mlp_ratio: float, drop: float, drop_path: list[float], tau: bool
    ) -> None:
        super().__init__()
        widths = [c] + [hid] * (n - 1) + [c]
        self.enc = nn.ModuleList(
            MetaBlock(widths[i], widths[i + 1], mlp_ratio, drop, drop_path[i], tau) for i in range(n)
        )

    def forward(self, z: Tensor) -> Tensor:
        for layer in self.enc:
            z = layer(z)
        return z
