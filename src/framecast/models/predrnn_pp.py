"""PredRNN++: causal LSTMs with a gradient highway unit.

Wang, Gao, Long, Wang and Yu, "PredRNN++: Towards A Resolution of the Deep-in-Time Dilemma in
Spatiotemporal Predictive Learning", ICML 2018, https://arxiv.org/abs/1804.06300

Frames are patched (space-to-depth, patch 4 for 64x64) into x_t (B, p*p*C, H/p, W/p). A stack
of causal LSTM cells runs over t = 0..T-2; cell k keeps a temporal memory C^k and passes the
spatiotemporal memory M up the stack, zigzagging from the top cell at t-1 to the bottom cell
at t as in PredRNN. One cell step (convolutions bias-free with filter ``filter_size``, sigma =
sigmoid, each named piece (B, nh, H/p, W/p); the pieces are in OpenSTL's channel order):

    x_i, x_f, x_g, x_i', x_f', x_g', x_o = conv_x(x)          (the cell's input: 7 nh channels)
    h_i, h_f, h_g, h_o = conv_h(H^k_{t-1});   c_i, c_f, c_g = conv_c(C^k_{t-1})
    m_i', m_f', m_m = conv_m(M^{k-1}_t)                       (M from the cell below)
    C^k_t = sigma(x_f + h_f + c_f + 1) * C^k_{t-1} + sigma(x_i + h_i + c_i) * tanh(x_g + h_g + c_g)
    n_i', n_g', n_f', n_o = conv_c2m(C^k_t)                   (the cascade: M's gates read the new C)
    M^k_t = sigma(x_f' + m_f' + n_f' + 1) * tanh(m_m) + sigma(x_i' + m_i' + n_i') * tanh(x_g' + n_g')
    o = tanh(x_o + h_o + n_o + conv_om(M^k_t))
    H^k_t = o * tanh(conv_last([C^k_t, M^k_t]))               (conv_last: 1x1, 2 nh -> nh)

Between the first two cells the gradient highway unit (GHU) carries Z across time; Z_t, not
H^1_t, is the second cell's input (Z_{-1} = 0):

    p, s = x_concat(H^1_t) + z_concat(Z_{t-1})                (each nh -> 2 nh)
    Z_t = sigma(s) * tanh(p) + (1 - sigma(s)) * Z_{t-1}

A 1x1 bias-free head (no sigmoid) maps the top hidden state to the next patched frame; every
step's prediction is returned (K = T-1) and steps read true or predicted frames by the
teacher-forcing mask (``framecast.layers.feedback_rollout``).

Follows OpenSTL (chengtan9907/OpenSTL): openstl/modules/predrnnpp_modules.py (CausalLSTMCell,
GHU), openstl/models/predrnnpp_model.py, openstl/methods/predrnnpp.py and
configs/mmnist/PredRNNpp.py; module names equal OpenSTL's, so its weights load by name
(``from_openstl``). Departures, named:

* OpenSTL builds a per-cell ``conv_o`` (2 nh -> nh, 3.3 M parameters at the published size)
  that its forward pass never uses: framecast builds none, and conversion drops it.
* With ``layer_norm``, OpenSTL's GHU normalises over (nh, H, W) after convolutions that give
  2 nh channels, so OpenSTL cannot run it; here each GHU layer norm spans (2 nh, H, W) (as the
  authors' TensorFlow code normalises the whole 2 nh output), and conversion refuses OpenSTL's
  mis-shaped ones. Cell layer norms are OpenSTL's: over (C, H, W) with per-element affine.
* The code (OpenSTL and the authors' TensorFlow code alike, so here too) departs from the
  paper's equations, where (g', i', f') come from W_2 * [X_t, C^k_t, M^{k-1}_t] and o from
  W_4 * [X_t, C^k_t, M^k_t]: g' reads no M term, o also reads H^k_{t-1}, forget gates get +1;
  as in OpenSTL and unlike the TensorFlow code, convolutions have no bias and the cells keep
  PyTorch's default initialisation (TensorFlow: U(-0.001, 0.001) for cells and GHU alike;
  OpenSTL and framecast: for the GHU only).
* At least two cells (the GHU sits between the first two), all of one width (M passes through
  every cell); OpenSTL's ``stride`` (only 1 works) is not a field.
* Scheduled sampling is training policy (``train.sampling: scheduled``, ``framecast.training.schedules``).

The convolutions are OpenSTL's: in the first phase their inputs (x, H, C, M) differ and their
outputs sum in different patterns, so no exact fusion has fewer than these four; fusing the
GHU's two measured no faster on a CPU. The loop follows ``self.memory_format`` (channels-last).

Sizes (``size=``): ``published`` is OpenSTL's Moving MNIST 4 x 128, filter 5, patch 4 (35.3 M
parameters, OpenSTL counts 38.6 M with the unused ``conv_o``); ``cpu`` 2 x 48, filter 3,
patch 8; ``test`` runs in seconds.
"""

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from framecast.errors import FramecastError
from framecast.layers import as_hw, check_patch
from framecast.models.base import FeedbackPredictor, check_cells
from framecast.registry import register_model

FORGET_BIAS = 1.0  # added to both forget gates before the sigmoid (OpenSTL's and the authors' code)
GHU_INIT = 0.001  # the GHU's convolution weights start as U(-GHU_INIT, GHU_INIT)

# (h per cell, c per cell, m, z): the recurrent state between frames
State = tuple[list[Tensor], list[Tensor], Tensor, Tensor]


@dataclass
class PredRNNppConfig:
    channels: int = 1  # frame channels (follows data.channels)
    image_size: int | tuple[int, int] = 64  # an int (square) or (H, W)
    # channels of each causal LSTM cell, bottom to top (at least 2: the GHU sits between the first two)
    num_hidden: tuple[int, ...] = (128, 128, 128, 128)
    filter_size: int = 5  # kernel of every gate convolution (odd)
    patch_size: int = 4  # frames enter as patch x patch pixel blocks stacked as channels
    layer_norm: bool = False  # layer normalisation after each gate convolution (OpenSTL's option)

    def __post_init__(self) -> None:
        check_cells(
            "predrnn_pp",
            self.num_hidden,
            self.filter_size,
            least=2,
            least_why=" (the gradient highway sits between the first two cells)",
            shared="the zigzag memory passes through all",
        )
        check_patch(self.image_size, self.patch_size, "predrnn_pp")


def _conv(cin: int, cout: int, k: int, norm_shape: list[int] | None) -> nn.Sequential:
    """A bias-free 'same' conv, then a layer norm over ``norm_shape`` = (C, H, W) when given."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)]
    if norm_shape is not None:
        layers.append(nn.LayerNorm(norm_shape))
    return nn.Sequential(*layers)


class CausalLSTMCell(nn.Module):
    """The causal LSTM cell: C is updated first, then M from C (see module docstring)."""

    def __init__(self, in_channels: int, nh: int, hw: tuple[int, int] | None, k: int) -> None:
        """``hw``: the patched frame's (H, W) for layer norms, or None for none."""
        super().__init__()
        ln = (lambda c: [c, *hw]) if hw is not None else (lambda c: None)
        self.conv_x = _conv(in_channels, 7 * nh, k, ln(7 * nh))
        self.conv_h = _conv(nh, 4 * nh, k, ln(4 * nh))
        self.conv_c = _conv(nh, 3 * nh, k, ln(3 * nh))
        self.conv_m = _conv(nh, 3 * nh, k, ln(3 * nh))
        self.conv_c2m = _conv(nh, 4 * nh, k, ln(4 * nh))
        self.conv_om = _conv(nh, nh, k, ln(nh))
        self.conv_last = nn.Conv2d(2 * nh, nh, 1, bias=False)

    def forward(self, x: Tensor, h: Tensor, c: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        xs, hs = self.conv_x(x), self.conv_h(h)  # (B, 7 nh, H, W), (B, 4 nh, H, W)
        nh = hs.shape[1] // 4
        # i, f, g of the temporal memory: one sum over the 3 nh slab of each source
        i, f, g = (xs[:, : 3 * nh] + hs[:, : 3 * nh] + self.conv_c(c)).chunk(3, dim=1)
        c_new = torch.sigmoid(f + FORGET_BIAS) * c + torch.sigmoid(i) * torch.tanh(g)

        i_xp, f_xp, g_xp, o_x = xs[:, 3 * nh :].chunk(4, dim=1)
        i_m, f_m, m_m = self.conv_m(m).chunk(3, dim=1)
        i_c, g_c, f_c, o_c = self.conv_c2m(c_new).chunk(4, dim=1)
        i_p = torch.sigmoid(i_xp + i_m + i_c)
        f_p = torch.sigmoid(f_xp + f_m + f_c + FORGET_BIAS)
        m_new = f_p * torch.tanh(m_m) + i_p * torch.tanh(g_xp + g_c)

        o = torch.tanh(o_x + hs[:, 3 * nh :] + o_c + self.conv_om(m_new))
        h_new = o * torch.tanh(self.conv_last(torch.cat([c_new, m_new], dim=1)))
        return h_new, c_new, m_new


class GHU(nn.Module):
    """The gradient highway unit: Z_t = s * tanh(p) + (1 - s) * Z_{t-1}, (p, s) from x and Z."""

    def __init__(self, nh: int, hw: tuple[int, int] | None, k: int) -> None:
        super().__init__()
        norm = None if hw is None else [2 * nh, *hw]  # OpenSTL's (nh, H, W) cannot run: see module docstring
        self.z_concat = _conv(nh, 2 * nh, k, norm)
        self.x_concat = _conv(nh, 2 * nh, k, norm)
        for conv in (self.z_concat[0], self.x_concat[0]):
            nn.init.uniform_(conv.weight, -GHU_INIT, GHU_INIT)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        p, s = (self.x_concat(x) + self.z_concat(z)).chunk(2, dim=1)
        s = torch.sigmoid(s)
        return s * torch.tanh(p) + (1 - s) * z


@register_model(
    "predrnn_pp",
    PredRNNppConfig,
    sizes={
        "published": {},
        "cpu": {"num_hidden": (48, 48), "filter_size": 3, "patch_size": 8},
        "test": {"num_hidden": (8, 8), "filter_size": 3},
    },
    description="PredRNN++: causal LSTM + gradient highway (ICML 2018), 4 x 128, patch 4",
    paper="https://arxiv.org/abs/1804.06300",
)
class PredRNNpp(FeedbackPredictor):
    """PredRNN++ (see module docstring)."""

    def __init__(self, config: PredRNNppConfig) -> None:
        super().__init__(config)
        c = config.channels * config.patch_size**2
        nh, k = config.num_hidden[0], config.filter_size
        hw = tuple(s // config.patch_size for s in as_hw(config.image_size)) if config.layer_norm else None
        self.gradient_highway = GHU(nh, hw, k)
        self.cell_list = nn.ModuleList(
            CausalLSTMCell(c if i == 0 else nh, nh, hw, k) for i in range(len(config.num_hidden))
        )
        self.conv_last = nn.Conv2d(nh, c, 1, bias=False)

    fixed_size = property(lambda self: self.config.layer_norm)  # layer norm weights fix (H, W)

    def step(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """One step of the stack on a patchified frame (B, p*p*C, H/p, W/p)."""
        n = len(self.cell_list)
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.config.num_hidden[0], *x.shape[-2:])
            zeros = zeros.contiguous(memory_format=self.memory_format)
            state = ([zeros] * n, [zeros] * n, zeros, zeros)
        h, c, m, z = list(state[0]), list(state[1]), state[2], state[3]  # never mutate the caller's
        h[0], c[0], m = self.cell_list[0](x, h[0], c[0], m)
        z = self.gradient_highway(h[0], z)
        inp = z
        for i in range(1, n):
            h[i], c[i], m = self.cell_list[i](inp, h[i], c[i], m)
            inp = h[i]
        return self.conv_last(h[-1]), (h, c, m, z)

    @classmethod
    def from_openstl(
        cls, state: dict[str, Tensor], channels: int = 1
    ) -> tuple[dict[str, Any], dict[str, Tensor], list[str]]:
        """OpenSTL's PredRNNpp_Model: the names are kept; the cells' unused ``conv_o`` is dropped.

        The widths, filter and patch sizes come from the weight shapes; with layer norm, so
        does the frame size (without it the frame size follows the data or ``--set``).
        """
        layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"cell_list\.(\d+)\.conv_c2m\.", k))})
        needs = ("cell_list.0.conv_x.0.weight", "gradient_highway.x_concat.0.weight", "conv_last.weight")
        if len(layers) < 2 or any(key not in state for key in needs):
            raise FramecastError(
                "these weights are not OpenSTL's PredRNN++ (no cell_list.*.conv_c2m, gradient_highway or conv_last)"
            )
        wx = state["cell_list.0.conv_x.0.weight"]  # (7 nh, p*p*C, k, k)
        nh, frame_c, k = wx.shape[0] // 7, wx.shape[1], wx.shape[-1]
        patch = math.isqrt(frame_c // channels)
        if patch * patch * channels != frame_c:
            raise FramecastError(
                f"the first cell reads {frame_c} channels, not patch^2 x {channels}; pass --set channels=N"
            )
        widths = tuple(state[f"cell_list.{i}.conv_h.0.weight"].shape[1] for i in layers)
        cfg: dict[str, Any] = {
            "channels": channels,
            "num_hidden": widths,
            "filter_size": k,
            "patch_size": patch,
            "layer_norm": "cell_list.0.conv_x.1.weight" in state,
        }
        notes: list[str] = []
        if cfg["layer_norm"]:
            hp, wp = state["cell_list.0.conv_x.1.weight"].shape[-2:]
            cfg["image_size"] = hp * patch if hp == wp else (hp * patch, wp * patch)
            ghu_norm = tuple(state["gradient_highway.x_concat.1.weight"].shape)
            if ghu_norm[0] != 2 * nh:
                raise FramecastError(
                    f"gradient_highway.x_concat.1 is a layer norm over {ghu_norm} after a convolution of "
                    f"{2 * nh} channels: OpenSTL cannot run this layer_norm PredRNN++, so its weights were "
                    f"never trained; convert a model whose GHU layer norms span ({2 * nh}, H, W)"
                )
        unused = [key for key in state if re.match(r"cell_list\.\d+\.conv_o\.", key)]
        renamed = {key: v for key, v in state.items() if key not in unused}
        if unused:
            count = sum(state[key].numel() for key in unused)
            notes.append(f"dropped cell_list.*.conv_o ({count:,} parameters; never used in OpenSTL's forward pass)")
        return cfg, renamed, notes
