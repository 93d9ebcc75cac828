"""ConvLSTM (Shi et al., NeurIPS 2015, https://arxiv.org/abs/1506.04214).

Two forms:

* ``convlstm_seq2seq``: the tutorial seed's encoder-decoder. Two encoder cells (in -> 64,
  64 -> 64) read the context; two decoder cells (64 -> 64), from zero states, unroll the
  future. The decoder's first input is the encoder's last top hidden state, then its own top
  hidden state. A per-frame 3x3 convolution maps each top hidden state to a frame, then a
  sigmoid. Cells: one biased 3x3 convolution over ``[x, h]``, gates (i, f, o, g), no
  peepholes. 1,036,097 parameters for one grey channel.
* ``convlstm``: the stacked benchmark form used by PredRNN and OpenSTL: 4 cells of 128
  channels, filter 5, on patched frames (patch 4), with the frame-feedback rollout and the
  1x1 output head (no bias, no sigmoid) that PredRNN uses.

Departures: the seq2seq head is a ``Conv2d`` applied per frame, which equals the tutorial's
``Conv3d`` with kernel (1, 3, 3) (same parameter count). ``patch_size`` of the seq2seq form
defaults to 1 (the tutorial); larger values are a CPU speed option, not the tutorial. The
stacked cells use no bias and a forget bias of +1, as the PredRNN family's cells do.

Sizes (``size=``): ``published`` is the tutorial's 2+2 x 64 for the seq2seq form and PredRNN's
ConvLSTM baseline (4 x 128, filter 5, patch 4) for the stacked one; ``cpu`` is the model section
of ``configs/cpu/<name>.yaml``; ``test`` runs in seconds.
"""

import math
import re
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from framecast.errors import ConfigError, FramecastError
from framecast.layers import ConvLSTMCell, check_patch, patchify, unpatchify
from framecast.models.base import FeedbackPredictor, Prediction, Predictor, check_cells
from framecast.registry import register_model


@dataclass
class ConvLSTMSeq2SeqConfig:
    channels: int = 1  # frame channels (follows data.channels)
    image_size: int | tuple[int, int] = 64  # an int (square) or (H, W)
    hidden: int = 64  # channels of every encoder and decoder cell
    kernel_size: int = 3  # convolution kernel of the cells and the head (odd)
    patch_size: int = 1  # frames enter as patch x patch pixel blocks stacked as channels (1: whole pixels)

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"hidden must be >= 1 and kernel_size odd, got {self.hidden}, {self.kernel_size}")
        check_patch(self.image_size, self.patch_size, "convlstm_seq2seq")


@register_model(
    "convlstm_seq2seq",
    ConvLSTMSeq2SeqConfig,
    sizes={
        "published": {},
        "cpu": {"hidden": 32, "patch_size": 4},  # the CPU speed benchmark's; configs/cpu/convlstm_seq2seq.yaml
        "test": {"hidden": 8, "patch_size": 2},
    },
    description="ConvLSTM encoder-decoder (tutorial seed), 2+2 cells x 64",
    paper="https://arxiv.org/abs/1506.04214",
)
class ConvLSTMSeq2Seq(Predictor):
    """The ConvLSTM encoder-decoder of the tutorial seed (see module docstring)."""

    bounded_output = True  # the per-frame head ends in a sigmoid

    def __init__(self, config: ConvLSTMSeq2SeqConfig) -> None:
        super().__init__(config)
        c, k, nh = config.channels * config.patch_size**2, config.kernel_size, config.hidden
        self.encoder = nn.ModuleList([ConvLSTMCell(c, nh, k), ConvLSTMCell(nh, nh, k)])
        self.decoder = nn.ModuleList([ConvLSTMCell(nh, nh, k), ConvLSTMCell(nh, nh, k)])
        self.head = nn.Conv2d(nh, c, k, padding=k // 2)

    def predict(self, context: Tensor, n_future: int, future: Tensor | None, mask: Tensor | None) -> Prediction:
        p = self.config.patch_size
        x = patchify(context, p)  # (B, Tc, p*p*C, H/p, W/p)
        fmt = self.memory_format
        enc = [None, None]
        for t in range(x.shape[1]):
            h = x[:, t].contiguous(memory_format=fmt)
            for i, cell in enumerate(self.encoder):
                enc[i] = cell(h, enc[i])
                h = enc[i][0]
        dec = [None, None]
        outputs = []
        for _ in range(n_future):
            for i, cell in enumerate(self.decoder):
                dec[i] = cell(h, dec[i])
                h = dec[i][0]
            outputs.append(h)
        hidden = torch.stack(outputs, dim=1)  # (B, n_future, nh, H/p, W/p)
        b = hidden.shape[0]
        frames = self.head(rearrange(hidden, "b t c h w -> (b t) c h w").contiguous(memory_format=fmt))
        frames = rearrange(frames, "(b t) c h w -> b t c h w", b=b)
        return Prediction(unpatchify(torch.sigmoid(frames), p))


@dataclass
class ConvLSTMConfig:
    channels: int = 1  # frame channels (follows data.channels)
    image_size: int | tuple[int, int] = 64  # an int (square) or (H, W)
    num_hidden: tuple[int, ...] = (128, 128, 128, 128)  # channels of each stacked cell, bottom to top
    filter_size: int = 5  # gate convolution kernel (odd)
    patch_size: int = 4  # frames enter as patch x patch pixel blocks stacked as channels
    # False: each gate convolution runs as conv_x(x) + conv_h(h), as in the official code (same
    # weights and results); the reference style of benchmarks/. True: one convolution over [x, h].
    fused_gates: bool = True
    # added to the forget gate before its sigmoid: 1 in the PredRNN family's code; OpenSTL's
    # ConvLSTM cell defines a forget bias of 1 but never adds it (converted weights get 0)
    forget_bias: float = 1.0

    def __post_init__(self) -> None:
        check_cells("convlstm", self.num_hidden, self.filter_size)
        check_patch(self.image_size, self.patch_size, "convlstm")


@register_model(
    "convlstm",
    ConvLSTMConfig,
    sizes={
        "published": {},
        "cpu": {"num_hidden": (64, 64), "filter_size": 3, "patch_size": 8},
        "test": {"num_hidden": (8, 8), "filter_size": 3},
    },
    description="stacked ConvLSTM benchmark form (4 x 128, filter 5, patch 4, frame feedback)",
    paper="https://arxiv.org/abs/1506.04214",
)
class ConvLSTM(FeedbackPredictor):
    """Stacked ConvLSTM with PredRNN's frame-feedback loop and scheduled sampling."""

    def __init__(self, config: ConvLSTMConfig) -> None:
        super().__init__(config)
        c = config.channels * config.patch_size**2
        widths = (c, *config.num_hidden)
        self.cells = nn.ModuleList(
            ConvLSTMCell(
                widths[i],
                widths[i + 1],
                config.filter_size,
                bias=False,
                forget_bias=config.forget_bias,
                fused=config.fused_gates,
            )
            for i in range(len(config.num_hidden))
        )
        self.head = nn.Conv2d(config.num_hidden[-1], c, 1, bias=False)

    @classmethod
    def from_openstl(cls, state: dict[str, Tensor], channels: int = 1) -> tuple[dict, dict[str, Tensor], list[str]]:
        """OpenSTL's ConvLSTM_Model (openstl/models/convlstm_model.py, modules/convlstm_modules.py):
        per cell ``conv_x`` (in -> 4 nh) and ``conv_h`` (nh -> 4 nh), gates ordered (i, f, g, o),
        become the fused gate convolution over ``[x, h]`` ordered (i, f, o, g); ``conv_last`` is
        the head. Its cells' ``conv_o`` and ``conv_last`` are never used in its forward pass and
        are dropped; its forget bias is never added, so ``forget_bias`` is 0."""
        layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"cell_list\.(\d+)\.conv_x\.", k))})
        if not layers or "conv_last.weight" not in state or "cell_list.0.conv_m.0.weight" in state:
            raise FramecastError(
                "these weights are not OpenSTL's ConvLSTM (no cell_list.*.conv_x, or a PredRNN conv_m)"
            )
        if "cell_list.0.conv_x.1.weight" in state:
            raise FramecastError("OpenSTL ConvLSTM with layer_norm is not supported by framecast's convlstm")
        out_c = state["conv_last.weight"].shape[0]
        patch = math.isqrt(out_c // channels)
        if patch * patch * channels != out_c:
            raise FramecastError(f"head has {out_c} output channels, not patch^2 x {channels}; pass --set channels=N")
        widths, renamed = [], {}
        for i in layers:
            wx, wh = state[f"cell_list.{i}.conv_x.0.weight"], state[f"cell_list.{i}.conv_h.0.weight"]
            nh = wh.shape[1]
            widths.append(nh)
            order = [0, 1, 3, 2]  # OpenSTL (i, f, g, o) -> framecast (i, f, o, g)
            fuse = torch.cat([wx, wh], dim=1).reshape(4, nh, -1, *wx.shape[-2:])[order]
            renamed[f"cells.{i}.conv.weight"] = fuse.reshape(4 * nh, -1, *wx.shape[-2:]).clone()
        renamed["head.weight"] = state["conv_last.weight"]
        dropped = {k.split(".")[2] for k in state if k.startswith("cell_list.")} - {"conv_x", "conv_h"}
        cfg = {
            "channels": channels,
            "num_hidden": tuple(widths),
            "filter_size": state["cell_list.0.conv_x.0.weight"].shape[-1],
            "patch_size": patch,
            "forget_bias": 0.0,
        }
        notes = [
            f"dropped cell_list.*.{name} (built by OpenSTL, never used in its forward pass)" for name in sorted(dropped)
        ]
        notes.append("forget_bias 0: OpenSTL's ConvLSTM cell never adds its forget bias")
        return cfg, renamed, notes

    def step(self, x: Tensor, state: list | None) -> tuple[Tensor, list]:
        state = list(state) if state else [None] * len(self.cells)  # never mutate the caller's
        h = x
        for i, cell in enumerate(self.cells):
            state[i] = cell(h, state[i])
            h = state[i][0]
        return self.head(h), state
