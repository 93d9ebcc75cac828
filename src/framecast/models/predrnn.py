"""PredRNN and PredRNN-V2: spatiotemporal LSTMs with zigzag memory.

* PredRNN: Wang et al., "PredRNN: Recurrent Neural Networks for Predictive Learning using
  Spatiotemporal LSTMs", NeurIPS 2017, https://papers.nips.cc/paper/6689
* PredRNN-V2: Wang et al., "PredRNN: A Recurrent Neural Network for Spatiotemporal Predictive
  Learning", TPAMI 2022, https://arxiv.org/abs/2103.09504

Faithful to the official PyTorch code (thuml/predrnn-pytorch): frames are patched
(space-to-depth, patch 4 for 64x64); each ST-LSTM cell has bias-free gate convolutions
``conv_x`` (in -> 7 nh: i, f, g, i', f', g', o), ``conv_h`` (nh -> 4 nh: i, f, g, o),
``conv_m`` (nh -> 3 nh: i', f', g'), ``conv_o`` (2 nh -> nh over [C', M']) and a 1x1
``conv_last`` (2 nh -> nh), each optionally followed by a layer norm over (channels, H, W);
forget biases are +1. The spatiotemporal memory M zigzags: bottom to top within a step, and
from the top layer at t-1 to the bottom layer at t. A 1x1 bias-free head (no sigmoid) maps the
top hidden state to the next patched frame; the loop runs over t = 0..T-2 and every step's
prediction is returned (the loss covers all T-1).

PredRNN-V2 adds the memory decoupling loss: a shared 1x1 adapter (nh -> nh, no bias) maps
the increments delta_c = i * g and delta_m = i' * g'; after L2-normalising over pixels, the
mean absolute cosine similarity per layer and step is averaged over all (T-1) * L layer-steps
and weighted by ``decouple_beta`` (0.1 on Moving MNIST, 0.01 on KTH). Reverse scheduled
sampling is training policy and lives in ``framecast.training.schedules``.

Sizes (``size=``): ``published`` is the papers' Moving MNIST 4 x 128, filter 5, patch 4; ``cpu``
is the model section of ``configs/cpu/<name>.yaml``; ``test`` runs in seconds.

Module names equal the official ones (``cell_list.{i}.conv_x.0.weight``, ``conv_last.weight``,
``adapter.weight``), so official weights load by name (``framecast convert``).
"""

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from framecast.errors import ConfigError, FramecastError
from framecast.layers import as_hw, check_patch, feedback_rollout, patchify, unpatchify
from framecast.layers.saved import recomputable
from framecast.models.base import Prediction, Predictor, check_cells
from framecast.registry import register_model


@dataclass
class PredRNNConfig:
    channels: int = 1  # frame channels (follows data.channels)
    image_size: int | tuple[int, int] = 64  # an int (square) or (H, W)
    num_hidden: tuple[int, ...] = (128, 128, 128, 128)  # channels of each ST-LSTM cell, bottom to top
    filter_size: int = 5  # gate convolution kernel (odd)
    stride: int = 1  # gate convolution stride (the official code's; only 1 is supported)
    patch_size: int = 4  # frames enter as patch x patch pixel blocks stacked as channels
    layer_norm: bool = False  # layer normalisation after each gate convolution (the official code's)
    decouple_beta: float = 0.0  # weight of the memory decoupling loss (PredRNN-V2)
    # Trade compute for memory in training: keep only each cell step's inputs and recompute its
    # gates in the backward pass (torch.utils.checkpoint). Same results; ~1/3 more compute.
    # true: every cell; a number k: the bottom k cells only (k / layers of the cost and saving).
    checkpoint_cells: bool | int = False

    def __post_init__(self) -> None:
        check_cells("predrnn", self.num_hidden, self.filter_size, shared="the zigzag memory passes through all")
        if not isinstance(self.checkpoint_cells, bool) and not 0 <= self.checkpoint_cells <= len(self.num_hidden):
            raise ConfigError(
                f"checkpoint_cells must be true, false or a number of cells 0..{len(self.num_hidden)}, "
                f"got {self.checkpoint_cells}"
            )
        if self.stride != 1:
            raise ConfigError(f"stride must be 1 (the official configs use 1), got {self.stride}")
        check_patch(self.image_size, self.patch_size, "predrnn")


def _conv(cin: int, cout: int, k: int, norm_shape: list[int] | None) -> nn.Sequential:
    """A bias-free conv, then a layer norm over (C, H, W) when ``norm_shape`` is given."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)]
    if norm_shape is not None:
        layers.append(nn.LayerNorm(norm_shape))
    return nn.Sequential(*layers)


def _cat_channels(a: Tensor, b: Tensor) -> Tensor:
    return torch.cat([a, b], dim=1)


class SpatioTemporalLSTMCell(nn.Module):
    """The ST-LSTM cell; returns the new (h, c, m) and the increments (delta_c, delta_m)."""

    def __init__(self, in_channels: int, nh: int, width: int | tuple[int, int], k: int, layer_norm: bool) -> None:
        super().__init__()
        self.nh = nh
        self.forget_bias = 1.0
        h, w = as_hw(width)  # the patched frame's (H, W); an int is a square
        ln = (lambda c: [c, h, w]) if layer_norm else (lambda c: None)
        self.conv_x = _conv(in_channels, 7 * nh, k, ln(7 * nh))
        self.conv_h = _conv(nh, 4 * nh, k, ln(4 * nh))
        self.conv_m = _conv(nh, 3 * nh, k, ln(3 * nh))
        self.conv_o = _conv(2 * nh, nh, k, ln(nh))
        self.conv_last = nn.Conv2d(2 * nh, nh, 1, bias=False)

    def forward(self, x: Tensor, h: Tensor, c: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = self.conv_x(x).chunk(7, dim=1)
        i_h, f_h, g_h, o_h = self.conv_h(h).chunk(4, dim=1)
        i_m, f_m, g_m = self.conv_m(m).chunk(3, dim=1)

        i = torch.sigmoid(i_x + i_h)
        f = torch.sigmoid(f_x + f_h + self.forget_bias)
        g = torch.tanh(g_x + g_h)
        delta_c = recomputable(i * g, torch.mul, i, g)  # the decoupling term saves it: kept as i, g
        c_new = f * c + delta_c

        i_p = torch.sigmoid(i_xp + i_m)
        f_p = torch.sigmoid(f_xp + f_m + self.forget_bias)
        g_p = torch.tanh(g_xp + g_m)
        delta_m = recomputable(i_p * g_p, torch.mul, i_p, g_p)
        m_new = f_p * m + delta_m

        # (B, 2 nh, H, W); saved by conv_o and conv_last, kept as c', m' (the next step saves them)
        mem = recomputable(torch.cat([c_new, m_new], dim=1), _cat_channels, c_new, m_new)
        o = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        h_new = o * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new, delta_c, delta_m


def decoupling_similarity(delta_c: Tensor, delta_m: Tensor, adapter: nn.Module) -> Tensor:
    """Mean over batch and channels of |cos| between adapted, pixel-normalised increments.

    Args:
        delta_c, delta_m: (B, nh, H, W) memory increments of one layer at one step.
    """
    dc = F.normalize(rearrange(adapter(delta_c), "b c h w -> b c (h w)"), dim=2)
    dm = F.normalize(rearrange(adapter(delta_m), "b c h w -> b c (h w)"), dim=2)
    return (dc * dm).sum(dim=2).abs().mean()  # cosine of unit vectors = their dot product


@register_model(
    "predrnn",
    PredRNNConfig,
    sizes={
        "published": {},
        "cpu": {"num_hidden": (48, 48), "filter_size": 3, "patch_size": 8},
        "test": {"num_hidden": (8, 8), "filter_size": 3},
    },
    description="PredRNN: ST-LSTM with zigzag memory (NeurIPS 2017), 4 x 128, patch 4",
    paper="https://papers.nips.cc/paper/6689",
)
class PredRNN(Predictor):
    """PredRNN (see module docstring). ``decouple_beta > 0`` adds PredRNN-V2's decoupling loss."""

    uses_mask = True
    streams = True  # frame_step (Predictor) runs self.step frame by frame

    def __init__(self, config: PredRNNConfig) -> None:
        super().__init__(config)
        c = config.channels * config.patch_size**2
        nh = config.num_hidden[0]
        width = tuple(s // config.patch_size for s in as_hw(config.image_size))
        self.cell_list = nn.ModuleList(
            SpatioTemporalLSTMCell(c if i == 0 else nh, nh, width, config.filter_size, config.layer_norm)
            for i in range(len(config.num_hidden))
        )
        self.conv_last = nn.Conv2d(nh, c, 1, bias=False)
        if self.has_adapter:
            self.adapter = nn.Conv2d(nh, nh, 1, bias=False)

    has_adapter = False
    fixed_size = property(lambda self: self.config.layer_norm)  # layer norm weights fix (H, W)

    @classmethod
    def from_openstl(cls, state: dict[str, Tensor], channels: int = 1) -> tuple[dict, dict[str, Tensor], list[str]]:
        """Official PredRNN and OpenSTL weights carry these very names; the config is read off
        the shapes: layers and widths from ``cell_list``, filter size from the kernels, patch size
        from the head, layer norm (and the frame width) from the norm weights."""
        layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"cell_list\.(\d+)\.", k))})
        if not layers or "conv_last.weight" not in state or "cell_list.0.conv_m.0.weight" not in state:
            raise FramecastError("these weights are not a PredRNN network (no cell_list.*.conv_m or conv_last.weight)")
        if "adapter.weight" in state and not cls.has_adapter:
            raise FramecastError("has a decoupling adapter, so it is PredRNN-V2: use --model predrnn_v2")
        widths = [state[f"cell_list.{i}.conv_h.0.weight"].shape[1] for i in layers]
        out_c = state["conv_last.weight"].shape[0]
        patch = math.isqrt(out_c // channels)
        if patch * patch * channels != out_c:
            raise FramecastError(
                f"head has {out_c} output channels, not patch^2 x {channels} channels; pass --set channels=N"
            )
        cfg: dict = {
            "channels": channels,
            "num_hidden": tuple(widths),
            "filter_size": state["cell_list.0.conv_x.0.weight"].shape[-1],
            "patch_size": patch,
        }
        ln = state.get("cell_list.0.conv_x.1.weight")
        cfg["layer_norm"] = ln is not None
        if ln is not None:
            cfg["image_size"] = ln.shape[-1] * patch
        return cfg, dict(state), []

    def step(self, x: Tensor, state, decouple: list[Tensor] | None = None):
        """One step of the stack on a patchified frame; ``state`` = (h per layer, c per layer, m)."""
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.config.num_hidden[0], *x.shape[-2:]).contiguous(
                memory_format=self.memory_format
            )
            state = ([zeros] * len(self.cell_list), [zeros] * len(self.cell_list), zeros)
        h, c, m = list(state[0]), list(state[1]), state[2]
        inp = x
        cc = self.config.checkpoint_cells
        lean = len(self.cell_list) if cc is True else int(cc)  # the bottom `lean` cells are recomputed
        for i, cell in enumerate(self.cell_list):
            if i < lean and torch.is_grad_enabled():
                h[i], c[i], m, delta_c, delta_m = checkpoint(cell, inp, h[i], c[i], m, use_reentrant=False)
            else:
                h[i], c[i], m, delta_c, delta_m = cell(inp, h[i], c[i], m)
            if decouple is not None:
                if torch.is_grad_enabled():  # recomputed in backward (a 1x1 conv): 4 nh-tensors less kept per cell step
                    decouple.append(
                        checkpoint(decoupling_similarity, delta_c, delta_m, self.adapter, use_reentrant=False)
                    )
                else:
                    decouple.append(decoupling_similarity(delta_c, delta_m, self.adapter))
            inp = h[i]
        return self.conv_last(h[-1]), (h, c, m)

    def predict(self, context: Tensor, n_future: int, future: Tensor | None, mask: Tensor | None) -> Prediction:
        p = self.config.patch_size
        ctx = patchify(context, p)  # (B, Tc, p*p*C, H/p, W/p)
        fut = None if future is None else patchify(future, p)
        want_decouple = self.has_adapter and self.training and self.config.decouple_beta > 0
        decouple: list[Tensor] | None = [] if want_decouple else None

        def step(x: Tensor, state):
            return self.step(x, state, decouple)

        frames = feedback_rollout(step, ctx, n_future, fut, mask, memory_format=self.memory_format)
        losses = {"decouple": self.config.decouple_beta * torch.stack(decouple).mean()} if decouple else {}
        return Prediction(unpatchify(frames, p), losses)


@register_model(
    "predrnn_v2",
    PredRNNConfig,
    defaults={"decouple_beta": 0.1},
    sizes={
        "published": {},
        "cpu": {"num_hidden": (48, 48), "filter_size": 3, "patch_size": 8},
        "test": {"num_hidden": (8, 8), "filter_size": 3},
    },
    description="PredRNN-V2: + memory decoupling loss, reverse scheduled sampling (TPAMI 2022), 4 x 128, patch 4",
    paper="https://arxiv.org/abs/2103.09504",
)
class PredRNNv2(PredRNN):
    """PredRNN-V2 (see module docstring): the v2 cell's increments feed the decoupling loss."""

    has_adapter = True
