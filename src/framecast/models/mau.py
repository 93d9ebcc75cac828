"""MAU: the motion-aware unit.

Chang, Zhang, Wang, Ma, Ye, Xiang and Gao, "MAU: A Motion-Aware Unit for Video Prediction and
Beyond", NeurIPS 2021, https://openreview.net/forum?id=qwtfY-3ibt7

Data flow, one step per frame (nh = the cells' width, p = patch_size, s = sr_size):

    x_t (B, p*p*C, H/p, W/p) -> encoders: 1x1 conv + LeakyReLU(0.2), then log2(s) stride-2 3x3
    convs + LeakyReLU -> S^0_t (B, nh, H/(p s), W/(p s)) -> L MAU cells -> decoders: log2(s)
    stride-2 3x3 transposed convs (LeakyReLU between them, none after the last) -> 1x1 conv
    ``srcnn`` -> x_{t+1}, with no sigmoid (the output is unbounded).

Cell k at step t reads its temporal state T^k_{t-1}, the spatial state S^{k-1}_t from below, and
the last tau temporal states T^k_{t-tau..t-1} and spatial inputs S^{k-1}_{t-tau..t-1} (zeros
before the clip starts). Each cell convolution ``*`` is followed by a layer norm over (C, H, W):

    attention:  S' = W_s' * S^{k-1}_t,  T' = W_t' * T^k_{t-1}            (conv_s_next, conv_t_next)
                a_j = softmax_j(<S^{k-1}_{t-j}, S'> / sqrt(nh h w)),  j = 1..tau (h, w: the feature map)
                T_att = sum_j a_j T^k_{t-j};   U_f = sigmoid(T')
                T_AMI = U_f T^k_{t-1} + (1 - U_f) T_att                  (augmented motion information)
    fusion:     [t_u, t_t, t_s] = W_t * T_AMI,  [s_u, s_t, s_s] = W_s * S^{k-1}_t     (conv_t, conv_s)
                T^k_t = sigmoid(t_u) t_t + (1 - sigmoid(t_u)) s_t
                S^k_t = sigmoid(s_u) s_s + (1 - sigmoid(s_u)) t_s  (+ S^{k-1}_t with cell_mode residual)

``model_mode: recall`` (the paper's information recalling) adds to each decoder output the
encoder feature of the same resolution. The rollout is PredRNN's (``feedback_rollout``): T-1
next-frame predictions, the input at steps 1..T-2 mixed with the model's own prediction by the
teacher-forcing mask it is handed; the state (per cell, the last tau T and S) streams frame by frame.

Follows OpenSTL (chengtan9907/OpenSTL): openstl/models/mau_model.py, openstl/modules/
mau_modules.py (MAUCell), openstl/methods/mau.py and configs/mmnist/MAU.py, which match the
official code (ZhengChang467/MAU, core/models/MAU.py, core/layers/MAUCell.py). Module names are
OpenSTL's (``cell_list.{k}.conv_t.0.weight``, ``encoders.0.encoder_t_conv-1.weight``,
``decoders.{i}.c_decoder{i}.weight``, ``srcnn.0.weight``), so its weights load by name. Departures:

* scheduled sampling is training policy (``framecast.training.schedules``): the model honours the mask it
  is handed, at steps 1..T-2; OpenSTL's mask covers the future inputs only (its context inputs
  are always true), which is a mask of ones at the context steps here. openstl/methods/mau.py
  (the current, Lightning version) keeps ``self.eta = 1.0`` and discards the rate
  ``schedule_sampling`` returns, so its rate never decays: 1 - 2e-5 (true future frames with probability 0.99998) for the first 50 000
  steps, then 0 (free-running). The official code decays it linearly from 1 to 0 over 50 000
  iterations (2e-5 per step);
* ``merge`` (2 nh -> nh) and ``conv_last_sr`` (2 p*p*C -> p*p*C), built by OpenSTL and the
  official code but never used in their forward pass, are not built (dropped in conversion);
* frames are patched (space-to-depth, as PredRNN) when ``patch_size > 1``; OpenSTL sizes its
  layers for p*p*C channels but never patches the frames, so it runs only at patch 1 (the
  published size, identical here);
* OpenSTL's ``stride`` (cell convolution stride; only 1 fits the shapes) and ``layer_norm`` (its
  cell normalises regardless) are not fields; the cells share one width (OpenSTL's cell shapes
  need it too);
* the published size keeps OpenSTL's ``model_mode: normal`` (no information recalling) and
  ``cell_mode: normal``, as its Moving MNIST config does; both are fields.

The cell's two convolutions of S are not fused into one: measured on a 2-core CPU at the
published width, one 4 nh convolution plus the two layer norms on its slices was slower.

Sizes (``size=``): ``published`` is OpenSTL's Moving MNIST 4 x 64, filter 5, patch 1, sr_size 4,
tau 5 (4.48 M parameters; 35.5 GFLOPs per 10 -> 10 clip at 64x64, a multiply-add counted as 2);
``cpu`` is 2 x 64, filter 3, patch 4, sr_size 2 (0.80 M; 1.6 GFLOPs per 10 -> 10 clip); ``test`` runs in seconds.
"""

import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from framecast.errors import ConfigError, FramecastError
from framecast.layers import as_hw, check_patch
from framecast.models.base import FeedbackPredictor, check_cells
from framecast.registry import register_model

CELL_MODES = ("normal", "residual")
MODEL_MODES = ("normal", "recall")

# Per cell: the last tau temporal states T^k and the last tau spatial inputs S^{k-1}, oldest first.
MAUState = list[tuple[tuple[Tensor, ...], tuple[Tensor, ...]]]


@dataclass
class MAUConfig:
    channels: int = 1  # frame channels (follows data.channels)
    image_size: int | tuple[int, int] = 64  # an int (square) or (H, W)
    num_hidden: tuple[int, ...] = (64, 64, 64, 64)  # channels of each MAU cell, bottom to top (one width)
    filter_size: int = 5  # cell convolution kernel (odd)
    patch_size: int = 1  # frames enter as patch x patch pixel blocks stacked as channels
    # the encoder downsamples by this (a power of 2: log2 of it stride-2 convs); the decoder upsamples back
    sr_size: int = 4
    tau: int = 5  # past temporal and spatial states each cell attends over
    cell_mode: str = "normal"  # normal, or residual: each cell adds its spatial input to its spatial output
    model_mode: str = "normal"  # normal, or recall: each decoder stage adds the encoder feature of its resolution

    def __post_init__(self) -> None:
        check_cells("mau", self.num_hidden, self.filter_size, shared="the spatial state passes through all")
        if self.tau < 1:
            raise ConfigError(f"mau: tau (past states attended over) must be >= 1, got {self.tau}")
        if self.cell_mode not in CELL_MODES:
            raise ConfigError(f"mau: cell_mode must be one of {', '.join(CELL_MODES)}, got {self.cell_mode!r}")
        if self.model_mode not in MODEL_MODES:
            raise ConfigError(f"mau: model_mode must be one of {', '.join(MODEL_MODES)}, got {self.model_mode!r}")
        check_patch(self.image_size, self.patch_size, "mau")
        h, w = (s // self.patch_size for s in as_hw(self.image_size))  # the patched frame
        s = self.sr_size
        if s < 1 or s & (s - 1) or h % s or w % s:
            fits = [2**i for i in range(8) if h % 2**i == 0 and w % 2**i == 0]
            raise ConfigError(
                f"mau: sr_size {s} must be a power of 2 dividing the {h}x{w} patched frame "
                f"(image_size / patch_size {self.patch_size}); sr sizes that fit: {fits}"
            )


class MAUCell(nn.Module):
    """The motion-aware unit: attention over the last tau states, then the fusion of T and S.

    Args:
        in_channel: channels of the temporal state (OpenSTL's name; equal to ``num_hidden``).
        num_hidden: channels of the spatial and temporal states.
        height, width: the feature map's size (the layer norms span (C, H, W)).
        filter_size: square kernel, padded to keep the size.
        cell_mode: ``normal`` or ``residual`` (S^k_t += S^{k-1}_t).
    """

    def __init__(
        self, in_channel: int, num_hidden: int, height: int, width: int, filter_size: int, cell_mode: str
    ) -> None:
        super().__init__()
        self.residual = cell_mode == "residual"
        self.scale = 1.0 / math.sqrt(num_hidden * height * width)

        def conv_ln(cin: int, cout: int) -> nn.Sequential:
            conv = nn.Conv2d(cin, cout, filter_size, padding=filter_size // 2)
            return nn.Sequential(conv, nn.LayerNorm([cout, height, width]))

        self.conv_t = conv_ln(in_channel, 3 * num_hidden)
        self.conv_t_next = conv_ln(in_channel, num_hidden)
        self.conv_s = conv_ln(num_hidden, 3 * num_hidden)
        self.conv_s_next = conv_ln(num_hidden, num_hidden)

    def forward(
        self, t_prev: Tensor, s_in: Tensor, t_att: tuple[Tensor, ...], s_att: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        """One step.

        Args:
            t_prev: (B, nh, h, w) the cell's temporal state T^k_{t-1}.
            s_in: (B, nh, h, w) the spatial state from below, S^{k-1}_t.
            t_att, s_att: the last tau T^k and S^{k-1} (B, nh, h, w) each, oldest first.

        Returns:
            The new (T^k_t, S^k_t).
        """
        s_next = self.conv_s_next(s_in)
        t_gate = torch.sigmoid(self.conv_t_next(t_prev))
        # one attention weight per sample and past step, from the correlation of whole states
        scores = torch.stack([(s * s_next).sum(dim=(1, 2, 3)) for s in s_att]) * self.scale  # (tau, B)
        weights = scores.softmax(dim=0)[:, :, None, None, None]  # (tau, B, 1, 1, 1)
        t_trend = sum(a * t for a, t in zip(weights, t_att, strict=True))
        t_fusion = t_gate * t_prev + (1 - t_gate) * t_trend
        t_u, t_t, t_s = self.conv_t(t_fusion).chunk(3, dim=1)
        s_u, s_t, s_s = self.conv_s(s_in).chunk(3, dim=1)
        t_u, s_u = torch.sigmoid(t_u), torch.sigmoid(s_u)
        t_new = t_u * t_t + (1 - t_u) * s_t
        s_new = s_u * s_s + (1 - s_u) * t_s
        if self.residual:
            s_new = s_new + s_in
        return t_new, s_new


def _encoder(name: str, cin: int, cout: int, k: int, stride: int, relu: str) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)
    return nn.Sequential(OrderedDict([(name, conv), (relu, nn.LeakyReLU(0.2))]))


@register_model(
    "mau",
    MAUConfig,
    sizes={
        "published": {},
        "cpu": {"num_hidden": (64, 64), "filter_size": 3, "patch_size": 4, "sr_size": 2},
        "test": {"num_hidden": (8, 8), "filter_size": 3, "tau": 2},
    },
    description="MAU: motion-aware unit, attention over the last tau states (NeurIPS 2021), 4 x 64, sr_size 4",
    paper="https://openreview.net/forum?id=qwtfY-3ibt7",
)
class MAU(FeedbackPredictor):
    """MAU (see module docstring)."""

    fixed_size = True  # the cells' layer norms span (C, H, W)

    def __init__(self, config: MAUConfig) -> None:
        super().__init__(config)
        c = config.channels * config.patch_size**2
        nh = config.num_hidden[0]
        h, w = (s // config.patch_size // config.sr_size for s in as_hw(config.image_size))
        self.cell_list = nn.ModuleList(
            MAUCell(nh, nh, h, w, config.filter_size, config.cell_mode) for _ in config.num_hidden
        )
        n = int(math.log2(config.sr_size))
        self.encoders = nn.ModuleList(
            [_encoder("encoder_t_conv-1", c, nh, 1, 1, "relu_t_-1")]
            + [_encoder(f"encoder_t{i}", nh, nh, 3, 2, f"encoder_t_relu{i}") for i in range(n)]
        )
        decoders = []
        for i in range(n):
            layers = OrderedDict([(f"c_decoder{i}", nn.ConvTranspose2d(nh, nh, 3, 2, padding=1, output_padding=1))])
            if i < n - 1:
                layers[f"c_decoder_relu{i}"] = nn.LeakyReLU(0.2)
            decoders.append(nn.Sequential(layers))
        self.decoders = nn.ModuleList(decoders)
        self.srcnn = nn.Sequential(nn.Conv2d(nh, c, 1))

    @classmethod
    def from_openstl(cls, state: dict[str, Tensor], channels: int = 1) -> tuple[dict, dict[str, Tensor], list[str]]:
        """OpenSTL's MAU_Model names its weights as framecast does; the config is read off the
        shapes: layers and width from ``cell_list``, filter size from the kernels, sr_size from the
        number of encoders, patch size from ``srcnn``, the frame size from the layer norms. tau,
        cell_mode and model_mode leave no trace in the weights (``--set`` them if not 5 / normal)."""
        layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"cell_list\.(\d+)\.conv_t_next\.", k))})
        if not layers or "srcnn.0.weight" not in state or "encoders.0.encoder_t_conv-1.weight" not in state:
            raise FramecastError(
                "these weights are not OpenSTL's MAU (no cell_list.*.conv_t_next, srcnn or encoders.0.encoder_t_conv-1)"
            )
        widths = [state[f"cell_list.{i}.conv_s_next.0.weight"].shape[0] for i in layers]
        out_c = state["srcnn.0.weight"].shape[0]
        patch = math.isqrt(out_c // channels)
        if patch * patch * channels != out_c:
            raise FramecastError(f"srcnn has {out_c} output channels, not patch^2 x {channels}; pass --set channels=N")
        n_enc = len({m.group(1) for k in state if (m := re.match(r"encoders\.(\d+)\.", k))})
        sr = 2 ** (n_enc - 1)
        h, w = state["cell_list.0.conv_t.1.weight"].shape[-2:]
        size = (h * sr * patch, w * sr * patch)
        cfg: dict[str, Any] = {
            "channels": channels,
            "num_hidden": tuple(widths),
            "filter_size": state["cell_list.0.conv_t.0.weight"].shape[-1],
            "patch_size": patch,
            "sr_size": sr,
            "image_size": size[0] if size[0] == size[1] else size,
        }
        unused = ("merge.", "conv_last_sr.")
        renamed = {k: v for k, v in state.items() if not k.startswith(unused)}
        notes = [
            f"dropped {name}* (built by OpenSTL, never used in its forward pass)"
            for name in unused
            if any(k.startswith(name) for k in state)
        ]
        notes.append("tau, cell_mode and model_mode are not in the weights: assumed 5, normal, normal (OpenSTL's)")
        return cfg, renamed, notes

    def _zero_state(self, x: Tensor) -> MAUState:
        cfg = self.config
        h, w = (s // cfg.sr_size for s in x.shape[-2:])
        zeros = x.new_zeros(x.shape[0], cfg.num_hidden[0], h, w).contiguous(memory_format=self.memory_format)
        window = (zeros,) * cfg.tau
        return [(window, window) for _ in self.cell_list]

    def step(self, x: Tensor, state: MAUState | None) -> tuple[Tensor, MAUState]:
        """One step on a patchified frame (B, p*p*C, H/p, W/p); ``state`` starts as None."""
        state = self._zero_state(x) if state is None else state
        features = []  # encoder outputs, full resolution first (for model_mode recall)
        s = x
        for encoder in self.encoders:
            s = encoder(s)
            features.append(s)
        new_state: MAUState = []
        for cell, (t_hist, s_hist) in zip(self.cell_list, state, strict=True):
            t, s_out = cell(t_hist[-1], s, t_hist, s_hist)  # the newest T in the window is T^k_{t-1}
            new_state.append((t_hist[1:] + (t,), s_hist[1:] + (s,)))
            s = s_out
        out = s  # (B, nh, H/(p s), W/(p s))
        recall = self.config.model_mode == "recall"
        for i, decoder in enumerate(self.decoders):
            out = decoder(out)
            if recall:
                out = out + features[-2 - i]
        return self.srcnn(out), new_state
