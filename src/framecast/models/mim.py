"""MIM: Memory In Memory.

Wang et al., "Memory In Memory: A Predictive Neural Network for Learning Higher-Order
Non-Stationarity from Spatiotemporal Dynamics", CVPR 2019, https://arxiv.org/abs/1811.07490

Frames are patched (space-to-depth, patch 4 for 64x64) and run frame by frame through a stack of
L recurrent layers with frame feedback, like PredRNN. Layer 1 is PredRNN's ST-LSTM cell; layers
2..L are MIM blocks. The spatiotemporal memory M zigzags through all layers (bottom to top within
a step, top at t-1 to bottom at t), so every layer has one width nh. All gate convolutions are
bias-free with kernel k; ``*`` is a convolution, ``.`` a per-pixel product, s the sigmoid.

MIM-N (the non-stationary module, one per MIM block) is a conv LSTM with per-pixel peephole
weights W_ci, W_cf, W_co (nh, H', W') on its cell N, run on the differences of hidden states:

    X_t^2 = H_t^1 - H_{t-1}^1,   X_t^l = D_t^{l-1} for l > 2      (from t = 1 on; D = 0 at t = 0)
    i, g, f, o = split(W_h * D_{t-1}^l + W_x * X_t^l)
    N_t = s(f + W_cf . N_{t-1} + 1) . N_{t-1} + s(i + W_ci . N_{t-1}) . tanh(g)
    D_t^l = s(o + W_co . N_t) . tanh(N_t)

MIM-S (the stationary module) is the same LSTM with its own weights: input D_t^l, hidden state the
block's previous temporal memory C_{t-1}^l, its own cell S; its output T_t replaces the forget
path of the temporal memory. The MIM block (input X = H_t^{l-1}, shapes (B, nh, H', W')):

    i_x, g_x, f_x, o_x = split(W_x * X);  i_t, g_t, o_t = split(W_t * H_{t-1});
    i_s, g_s, f_s, o_s = split(W_s * M)
    T_t, S_t = MIM-S(D_t^l, C_{t-1}, S_{t-1})
    C_t = T_t + s(i_x + i_t) . tanh(g_x + g_t)
    M'  = s(f_x + f_s + 1) . M + s(i_x + i_s) . tanh(g_x + g_s)
    H_t = s(o_x + o_t + o_s) . tanh(W_1x1 * [C_t, M'])

A bias-free 1x1 head (no sigmoid) maps the top hidden state to the next patched frame; the loop
runs over t = 0..T-2 and every step's prediction is returned (K = T-1 frames), with scheduled
sampling through the teacher-forcing mask (``framecast.layers.feedback_rollout``).

Follows OpenSTL: openstl/models/mim_model.py, openstl/modules/mim_modules.py (``MIMBlock``,
``MIMN``), openstl/modules/predrnn_modules.py (the ST-LSTM cell, here imported from
``framecast.models.predrnn``, whose names and math are OpenSTL's), configs/mmnist/MIM.py and
openstl/methods/mim.py. Module and parameter names are OpenSTL's (``stlstm_layer.{i}``,
``stlstm_layer_diff.{i}``, ``conv_last``), so its weights load by name (``from_openstl``).

Departures, named:

* State per sequence. OpenSTL keeps the MIM-S cell S (``MIMBlock.convlstm_c``) on the module and
  never resets it, so each batch starts from the last batch's final S (hence its check that the
  training and validation batch sizes are equal); framecast starts every state, S included, at
  zero for every sequence, as the paper's TensorFlow code does. A converted checkpoint gives
  OpenSTL's frames for a sequence that OpenSTL runs on a freshly built model.
* Gradient through S. OpenSTL detaches S at every step (no gradient through MIM-S's cell across
  time); framecast back-propagates through it as the paper's code does. Frames are unchanged.
* ``MIMN.conv_last`` (a 1x1, 2 nh -> nh per MIM-N) is built by OpenSTL but never used in its
  forward pass: framecast does not build it and ``from_openstl`` drops it (3 x 32,768 weights
  at the published size).
* OpenSTL calls each MIM-N once at t = 0 on zeros and discards the result; framecast skips that
  call (no effect on any output).
* From the paper's TensorFlow code (Yunbo426/MIM, whose block equations OpenSTL and framecast
  keep): its convolutions have biases and its peephole weights start random; here, as in
  OpenSTL, the convolutions are bias-free and the peepholes start at zero.
* The gate convolutions stay separate, as in OpenSTL (one conv over [C, D] in place of MIM-S's
  two measured no faster on a CPU), so weights convert by name and layer norm stays per conv.

The peephole weights are per pixel of the patched frame, so the weights fix the frame size
(``fixed_size``). Sizes (``size=``): ``published`` is OpenSTL's Moving MNIST 4 x 128, filter 5,
patch 4 (37.9 M parameters; 358 GFLOPs per 10 -> 10 clip, a multiply-add counted as 2, i.e.
OpenSTL's 179.2 G); ``cpu`` is 3 x 48, filter 3, patch 8 (1.6 M, 3.6 GFLOPs); ``test`` runs in a
second.
"""

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from framecast.errors import ConfigError, FramecastError
from framecast.layers import as_hw, check_patch
from framecast.models.base import FeedbackPredictor, check_cells
from framecast.models.predrnn import SpatioTemporalLSTMCell
from framecast.registry import register_model


@dataclass
class MIMConfig:
    channels: int = 1  # frame channels (follows data.channels)
    image_size: int | tuple[int, int] = 64  # an int (square) or (H, W); the peephole weights fix it
    # channels of each layer, bottom to top: an ST-LSTM, then MIM blocks (at least one; one width)
    num_hidden: tuple[int, ...] = (128, 128, 128, 128)
    filter_size: int = 5  # gate convolution kernel (odd)
    stride: int = 1  # gate convolution stride (OpenSTL's; only 1 is supported)
    patch_size: int = 4  # frames enter as patch x patch pixel blocks stacked as channels
    layer_norm: bool = False  # layer normalisation after each gate convolution (OpenSTL's option)

    def __post_init__(self) -> None:
        check_cells(
            "mim",
            self.num_hidden,
            self.filter_size,
            least=2,
            least_why=" (an ST-LSTM, then MIM blocks; for one layer use predrnn)",
            shared="the zigzag memory passes through all",
        )
        if self.stride != 1:
            raise ConfigError(f"mim: stride must be 1 (OpenSTL's configs use 1), got {self.stride}")
        check_patch(self.image_size, self.patch_size, "mim")


def _conv(cin: int, cout: int, k: int, norm_hw: tuple[int, int] | None) -> nn.Sequential:
    """A bias-free conv, then a layer norm over (cout, H, W) when ``norm_hw`` = (H, W) is given."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)]
    if norm_hw is not None:
        layers.append(nn.LayerNorm([cout, *norm_hw]))
    return nn.Sequential(*layers)


class PeepholeLSTM(nn.Module):
    """The conv LSTM of MIM-N and MIM-S: per-pixel peepholes from the cell, gates i, g, f, o."""

    def __init__(self, nh: int, hw: tuple[int, int], k: int, layer_norm: bool) -> None:
        super().__init__()
        self.forget_bias = 1.0
        ln = hw if layer_norm else None
        self.ct_weight = nn.Parameter(torch.zeros(2 * nh, *hw))  # peepholes c -> (i, f)
        self.oc_weight = nn.Parameter(torch.zeros(nh, *hw))  # peephole new c -> o
        self.conv_h_concat = _conv(nh, 4 * nh, k, ln)
        self.conv_x_concat = _conv(nh, 4 * nh, k, ln)

    def lstm(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """The new (h, c) from input ``x``; all (B, nh, H', W')."""
        i_h, g_h, f_h, o_h = self.conv_h_concat(h).chunk(4, dim=1)
        i_x, g_x, f_x, o_x = self.conv_x_concat(x).chunk(4, dim=1)
        w_ci, w_cf = self.ct_weight.chunk(2, dim=0)
        i = torch.sigmoid(i_h + i_x + w_ci * c)
        f = torch.sigmoid(f_h + f_x + w_cf * c + self.forget_bias)
        c_new = f * c + i * torch.tanh(g_h + g_x)
        h_new = torch.sigmoid(o_h + o_x + self.oc_weight * c_new) * torch.tanh(c_new)
        return h_new, c_new


class MIMN(PeepholeLSTM):
    """MIM-N, the non-stationary module: the peephole LSTM over differences of hidden states."""

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        return self.lstm(x, h, c)


class MIMBlock(PeepholeLSTM):
    """The MIM block; the peephole LSTM it is built on is its MIM-S (OpenSTL's names, on the block).

    ``forward(x, diff_h, h, c, m, s)`` returns the new (h, c, m, s): ``diff_h`` is MIM-N's
    output D, ``s`` the MIM-S cell; all tensors are (B, nh, H', W').
    """

    def __init__(self, nh: int, hw: tuple[int, int], k: int, layer_norm: bool) -> None:
        super().__init__(nh, hw, k, layer_norm)
        ln = hw if layer_norm else None
        self.conv_t_cc = _conv(nh, 3 * nh, k, ln)  # from H_{t-1}: i, g, o
        self.conv_s_cc = _conv(nh, 4 * nh, k, ln)  # from M: i', g', f', o
        self.conv_x_cc = _conv(nh, 4 * nh, k, ln)  # from the layer below: i, g, f', o
        self.conv_last = nn.Conv2d(2 * nh, nh, 1, bias=False)

    def forward(
        self, x: Tensor, diff_h: Tensor, h: Tensor, c: Tensor, m: Tensor, s: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        i_t, g_t, o_t = self.conv_t_cc(h).chunk(3, dim=1)
        i_s, g_s, f_s, o_s = self.conv_s_cc(m).chunk(4, dim=1)
        i_x, g_x, f_x, o_x = self.conv_x_cc(x).chunk(4, dim=1)
        m_new = torch.sigmoid(f_x + f_s + self.forget_bias) * m + torch.sigmoid(i_x + i_s) * torch.tanh(g_x + g_s)
        stationary, s_new = self.lstm(diff_h, c, s)  # MIM-S: hidden = C_{t-1}, input = D
        c_new = stationary + torch.sigmoid(i_x + i_t) * torch.tanh(g_x + g_t)
        o = torch.sigmoid(o_x + o_t + o_s)
        h_new = o * torch.tanh(self.conv_last(torch.cat([c_new, m_new], dim=1)))
        return h_new, c_new, m_new, s_new


class MIMState(NamedTuple):
    """The stack's recurrent state between steps; lists run bottom to top."""

    h: list[Tensor]  # hidden state per layer
    c: list[Tensor]  # temporal memory per layer
    m: Tensor  # the zigzag spatiotemporal memory
    diff_h: list[Tensor] | None  # MIM-N output D per MIM block; None at t = 0 (no difference yet)
    diff_c: list[Tensor]  # MIM-N cell per MIM block
    s: list[Tensor]  # MIM-S cell per MIM block


@register_model(
    "mim",
    MIMConfig,
    sizes={
        "published": {},
        "cpu": {"num_hidden": (48, 48, 48), "filter_size": 3, "patch_size": 8},
        "test": {"num_hidden": (8, 8), "filter_size": 3},
    },
    description="MIM: ST-LSTM + memory-in-memory blocks for non-stationarity (CVPR 2019), 4 x 128, patch 4",
    paper="https://arxiv.org/abs/1811.07490",
)
class MIM(FeedbackPredictor):
    """MIM (see module docstring)."""

    fixed_size = True  # the peephole weights are per pixel of the patched frame

    def __init__(self, config: MIMConfig) -> None:
        super().__init__(config)
        c = config.channels * config.patch_size**2
        nh, k, ln = config.num_hidden[0], config.filter_size, config.layer_norm
        hw = tuple(s // config.patch_size for s in as_hw(config.image_size))
        layers: list[nn.Module] = [SpatioTemporalLSTMCell(c, nh, hw, k, ln)]
        layers += [MIMBlock(nh, hw, k, ln) for _ in config.num_hidden[1:]]
        self.stlstm_layer = nn.ModuleList(layers)
        self.stlstm_layer_diff = nn.ModuleList(MIMN(nh, hw, k, ln) for _ in config.num_hidden[1:])
        self.conv_last = nn.Conv2d(nh, c, 1, bias=False)

    @classmethod
    def from_openstl(cls, state: dict[str, Tensor], channels: int = 1) -> tuple[dict, dict[str, Tensor], list[str]]:
        """OpenSTL's MIM_Model carries these very names; the config is read off the shapes:
        layers and width from ``stlstm_layer``, filter size from the kernels, patch size from
        the head, frame size from the peephole weights, layer norm from the norm weights. Each
        MIM-N's ``conv_last``, never used in OpenSTL's forward pass, is dropped."""
        layers = sorted({int(g.group(1)) for k in state if (g := re.match(r"stlstm_layer\.(\d+)\.", k))})
        needed = [f"stlstm_layer.{i}.conv_s_cc.0.weight" for i in layers[1:]]
        needed += ["stlstm_layer.0.conv_m.0.weight", "stlstm_layer_diff.0.ct_weight", "conv_last.weight"]
        if len(layers) < 2 or any(k not in state for k in needed):
            raise FramecastError(
                "these weights are not OpenSTL's MIM (no stlstm_layer.0.conv_m, stlstm_layer.*.conv_s_cc, "
                "stlstm_layer_diff.*.ct_weight or conv_last.weight)"
            )
        widths = [state["stlstm_layer.0.conv_h.0.weight"].shape[1]]
        widths += [state[f"stlstm_layer.{i}.conv_s_cc.0.weight"].shape[1] for i in layers[1:]]
        out_c = state["conv_last.weight"].shape[0]
        patch = math.isqrt(out_c // channels)
        if patch * patch * channels != out_c:
            raise FramecastError(f"head has {out_c} output channels, not patch^2 x {channels}; pass --set channels=N")
        h, w = (patch * s for s in state["stlstm_layer_diff.0.ct_weight"].shape[-2:])
        cfg: dict = {
            "channels": channels,
            "image_size": h if h == w else (h, w),
            "num_hidden": tuple(widths),
            "filter_size": state["stlstm_layer.0.conv_x.0.weight"].shape[-1],
            "patch_size": patch,
            "layer_norm": "stlstm_layer.0.conv_x.1.weight" in state,
        }
        unused = re.compile(r"stlstm_layer_diff\.\d+\.conv_last\.")
        renamed = {k: v for k, v in state.items() if not unused.match(k)}
        notes = []
        if len(renamed) < len(state):
            notes.append("dropped stlstm_layer_diff.*.conv_last (built by OpenSTL, never used in its forward pass)")
        notes.append(
            "the MIM-S cell (OpenSTL's MIMBlock.convlstm_c, kept across batches there) starts at zero every sequence"
        )
        return cfg, renamed, notes

    def step(self, x: Tensor, state: MIMState | None) -> tuple[Tensor, MIMState]:
        """One step of the stack on a patchified frame (B, p*p*C, H', W')."""
        n_blocks = len(self.stlstm_layer) - 1
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.config.num_hidden[0], *x.shape[-2:]).contiguous(
                memory_format=self.memory_format
            )
            layers = len(self.stlstm_layer)
            state = MIMState([zeros] * layers, [zeros] * layers, zeros, None, [zeros] * n_blocks, [zeros] * n_blocks)
        h, c, m, s = list(state.h), list(state.c), state.m, list(state.s)
        first = state.diff_h is None
        diff_h = [torch.zeros_like(h[0])] * n_blocks if first else list(state.diff_h)
        diff_c = list(state.diff_c)

        h_prev = h[0]
        h[0], c[0], m, _, _ = self.stlstm_layer[0](x, h[0], c[0], m)
        for i in range(1, n_blocks + 1):
            j = i - 1  # this block's MIM-N
            if not first:  # MIM-N reads the first difference of H^1, or the MIM-N below it
                inp = h[0] - h_prev if j == 0 else diff_h[j - 1]
                diff_h[j], diff_c[j] = self.stlstm_layer_diff[j](inp, diff_h[j], diff_c[j])
            h[i], c[i], m, s[j] = self.stlstm_layer[i](h[i - 1], diff_h[j], h[i], c[i], m, s[j])
        return self.conv_last(h[-1]), MIMState(h, c, m, diff_h, diff_c, s)
