"""The SimVP family: a per-frame CNN encoder, a translator over the time-stacked latents, a
per-frame CNN decoder; all future frames in one pass.

* ``simvp`` (SimVP v2, gSTA): Tan et al., "SimVP: Towards Simple yet Powerful Spatiotemporal
  Predictive Learning", arXiv 2022, https://arxiv.org/abs/2211.12509
* ``simvp_incepu`` (SimVP v1, Inception-UNet): Gao et al., "SimVP: Simpler yet Better Video
  Prediction", CVPR 2022, https://arxiv.org/abs/2206.05099
* ``tau``: Tan et al., "Temporal Attention Unit: Towards Efficient Spatiotemporal Predictive
  Learning", CVPR 2023, https://arxiv.org/abs/2206.12126

Data flow, T = n_context context frames (B, T, C, H, W), s = 2^(N_S/2):

* encoder, per frame: N_S x [conv k -> GroupNorm(2) -> SiLU], stride 2 at every second one ->
  latent (B*T, hid_S, H/s, W/s); the first layer's output (B*T, hid_S, H, W) is kept as a skip;
* translator on the latents stacked over time as channels, (B, T*hid_S, H/s, W/s) in and out:
  - gSTA: N_T MetaFormer blocks x + ls1 * Attn(BN(x)), x + ls2 * MLP(BN(x)) with
    Attn(x) = x + 1x1(sigmoid(g) * f), (f, g) = 1x1(DWD7x7,d3(DW5x5(GELU(1x1(x))))) and
    MLP = 1x1 -> DW3x3 -> GELU -> 1x1 (width mlp_ratio x); the first block works at T*hid_S
    and a 1x1 reduces it to hid_T, the last expands back;
  - TAU: the same blocks with the attention unit SA * DA * x, static SA = 1x1(DWD(DW(x))) and
    dynamic DA = sigmoid(FC(ReLU(FC(avgpool(x))))), a squeeze-excitation;
  - IncepU: a UNet of N_T Inception blocks down and N_T up (1x1 to hid_T/2, then the sum of
    grouped 3/5/7/11 convolutions -> GroupNorm -> LeakyReLU), skips concatenated;
* decoder, per frame: the encoder mirrored (pixel-shuffle up-convolutions), the skip added
  before its last layer, a 1x1 readout (no sigmoid) -> (B, T, C, H, W).

TAU's differential divergence regulariser (``alpha`` > 0, training only, in
``Prediction.losses["diff_div"]``): the differences of consecutive predicted and true frames,
each softmaxed over all its C*H*W values at temperature 0.1, KL(pred || true) averaged over
everything, times alpha (0.1 in the TAU config); skipped when fewer than 3 frames are predicted.

Follows OpenSTL (chengtan9907/OpenSTL): openstl/models/simvp_model.py (SimVP_Model, Encoder,
Decoder, MidIncepNet, MidMetaNet, MetaBlock), openstl/modules/simvp_modules.py (ConvSC,
gInception_ST, GASubBlock, TAUSubBlock and their attention units), openstl/modules/layers/van.py
(MixMlp), openstl/methods/simvp.py (horizons) and tau.py (the regulariser), the Moving MNIST
configs configs/mmnist/simvp/SimVP_gSTA.py, SimVP_IncepU.py and configs/mmnist/TAU.py. Names are
OpenSTL's, so its weights convert by name (``from_openstl``).

Departures, named:

* From the SimVP v1 paper's code (A4Bio/SimVP), as OpenSTL builds ``simvp_incepu``: the encoder
  and decoder are v2's (SiLU instead of LeakyReLU, pixel-shuffle instead of transposed
  up-convolutions, the skip added instead of concatenated) and hid_T is 512.
* OpenSTL's stochastic-depth schedule is kept: the translator blocks' drop-path rates run
  linearly from ``drop_path_first`` (0.01) to ``drop_path``, so with the configs' drop_path 0
  the first N_T - 1 blocks still drop branches in training (rates 0.01 down to 0.01/(N_T-1)).
  Set drop_path_first 0 for none; it is a field here, a constant in OpenSTL.
* Frames per pass: the network predicts as many frames as it reads (T in, T out, each output
  frame decoded with the skip of the context frame at its position). OpenSTL slices the first
  n_future when n_future < n_context, and rolls whole passes (the output is the next input) when
  n_future > n_context. Here a pass decodes only min(n_future, n_context) frames (the same
  frames as OpenSTL's slice, without decoding the rest), and longer horizons are predicted in
  chunks with the predictions appended to the context and the last n_context frames read
  again: OpenSTL's rolling when n_future = n_context, and never the untrained frames of a pass
  when n_future < n_context.
* Configurations OpenSTL would silently change are refused with a ConfigError: an odd N_S
  (OpenSTL then builds N_S - 1 layers) and IncepU widths its 8 groups do not divide (OpenSTL
  falls back to one group, or fails in its GroupNorm).
* ``alpha`` is a field of all three models (0 for the two SimVPs, whose OpenSTL method has no
  such term); ``simvp_incepu`` has no mlp_ratio, drop or drop_path fields (OpenSTL accepts and
  ignores them for IncepU). The regulariser is a model loss term here, in OpenSTL's TAU method
  it is added in the training loop: the same sum.
* Speed, the same math: the layer scale and residual add are one ``addcmul`` (the per-sample
  drop-path mask folded into the scale), the decoder runs only on the frames kept, SiLU runs in
  place when no backward pass needs its input, and a channels-last model runs channels-last
  throughout (1.2-1.5x faster on a CPU).
  On a CPU the 7x7 depthwise convolution of dilation 3 runs on its 3 x 3 phase sub-grids as a
  plain depthwise one, and under bf16 autocast the 5x5 depthwise one runs in fp32 (the same
  math, summed in another order; both in layers/simvp_blocks.py, where the figures are).

Sizes (``size=``): ``published`` is OpenSTL's Moving MNIST size (hid_S 64, hid_T 512, N_S 4,
N_T 8, mlp_ratio 8: 46.77 M / 57.95 M / 44.66 M parameters for gSTA / IncepU / TAU, OpenSTL's
table says 46.8 / 58.0 / 44.7 M); ``cpu`` (hid_S 16, hid_T 256, N_T 4, mlp_ratio 4) trains on a
2-core CPU; ``test`` runs in about a second.
"""

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from framecast.errors import ConfigError, FramecastError, InputError
from framecast.layers.simvp_blocks import (
    ATTN_DILATION,
    ATTN_KERNEL,
    INCEP_GROUPS,
    INCEP_KERNELS,
    Decoder,
    Encoder,
    MidIncepNet,
    MidMetaNet,
)
from framecast.models.base import Prediction, Predictor
from framecast.registry import register_model

DIV_TEMPERATURE = 0.1  # TAU's softmax temperature (OpenSTL's diff_div_reg tau)


@dataclass
class SimVPConfig:
    channels: int = 1  # frame channels (follows data.channels)
    n_context: int = 10  # context frames read per pass, stacked in the translator (follows data.n_context)
    # frames predicted per pass: min(n_future, n_context); longer horizons roll forward in chunks
    # (follows data.n_future)
    n_future: int = 10
    hid_S: int = 64  # channels of the per-frame encoder and decoder
    hid_T: int = 512  # channels inside the translator
    N_S: int = 4  # encoder layers (and decoder layers); every second one halves H and W (even)
    N_T: int = 8  # translator blocks (IncepU: blocks down, and as many up)
    spatio_kernel_enc: int = 3  # encoder convolution kernel (odd)
    spatio_kernel_dec: int = 3  # decoder convolution kernel (odd)
    alpha: float = 0.0  # weight of TAU's differential divergence regulariser (training only)

    def __post_init__(self) -> None:
        if min(self.channels, self.n_context, self.n_future) < 1:
            raise ConfigError(
                f"simvp: channels, n_context and n_future must be >= 1, got {self.channels}, {self.n_context}, {self.n_future}"
            )
        if self.N_S < 2 or self.N_S % 2:
            raise ConfigError(
                f"simvp: N_S must be even and >= 2 (layers come in pairs: same size, then stride 2), got {self.N_S}"
            )
        if self.N_T < 2:
            raise ConfigError(f"simvp: N_T must be >= 2 (a block in and a block out), got {self.N_T}")
        if self.hid_S < 2 or self.hid_S % 2:
            raise ConfigError(f"simvp: hid_S must be even (GroupNorm of 2 groups), got {self.hid_S}")
        if self.hid_T < 1:
            raise ConfigError(f"simvp: hid_T must be >= 1, got {self.hid_T}")
        for name in ("spatio_kernel_enc", "spatio_kernel_dec"):
            k = getattr(self, name)
            if k < 1 or k % 2 == 0:
                raise ConfigError(f"simvp: {name} must be odd (a centred kernel), got {k}")
        if self.alpha < 0:
            raise ConfigError(f"simvp: alpha must be >= 0, got {self.alpha}")


@dataclass
class SimVPMetaConfig(SimVPConfig):
    mlp_ratio: float = 8.0  # width of each block's MLP, a multiple of its channels (> 1)
    drop: float = 0.0  # dropout inside the MLPs (training only)
    drop_path: float = 0.0  # stochastic depth of the last translator block (training only)
    # stochastic depth of the first translator block; the rates run linearly to drop_path.
    # OpenSTL's schedule starts at 0.01 even when drop_path is 0; 0 here turns it off.
    drop_path_first: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mlp_ratio <= 1:
            raise ConfigError(f"simvp: mlp_ratio must be > 1 (OpenSTL's MetaFormer MLPs widen), got {self.mlp_ratio}")
        for name in ("drop", "drop_path", "drop_path_first"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"simvp: {name} is a probability in [0, 1), got {getattr(self, name)}")


def differential_divergence(pred: Tensor, true: Tensor, tau: float = DIV_TEMPERATURE, eps: float = 1e-12) -> Tensor:
    """TAU's regulariser: KL(softmax(diff(pred) / tau) || softmax(diff(true) / tau)) with each
    frame difference softmaxed over all its values, averaged (OpenSTL's ``diff_div_reg``).

    Args:
        pred, true: (B, T, C, H, W) predicted and true frames, T >= 2.
    """
    gp = rearrange(pred[:, 1:] - pred[:, :-1], "b t c h w -> b t (c h w)")
    gt = rearrange(true[:, 1:] - true[:, :-1], "b t c h w -> b t (c h w)")
    p, q = F.softmax(gp / tau, dim=-1), F.softmax(gt / tau, dim=-1)
    return (p * torch.log(p / (q + eps) + eps)).mean()


# Sizes at 64x64 (FLOPs of one 10 -> 10 clip, multiply-adds counted as 2): published = OpenSTL's
# Moving MNIST configs (33 / 39 / 32 G for gSTA / IncepU / TAU); cpu = a quarter of the encoder
# width, half the translator's width and depth (2 / 4 / 2 G); test = about a second on a CPU.
CPU = {"hid_S": 16, "hid_T": 256, "N_T": 4}
TEST = {"n_context": 4, "n_future": 4, "hid_S": 8, "hid_T": 32, "N_S": 2, "N_T": 2}
META_SIZES = {"published": {}, "cpu": {**CPU, "mlp_ratio": 4.0}, "test": {**TEST, "mlp_ratio": 4.0}}


@register_model(
    "simvp",
    SimVPMetaConfig,
    sizes=META_SIZES,
    description="SimVP v2: CNN encoder, gSTA translator over stacked frames, all frames in one pass (arXiv 2022)",
    paper="https://arxiv.org/abs/2211.12509",
)
class SimVP(Predictor):
    """SimVP (see module docstring): ``model_type`` picks the translator."""

    model_type = "gsta"
    names = {"gsta": "simvp", "incepu": "simvp_incepu", "tau": "tau"}  # translator -> registered name

    def __init__(self, config: SimVPConfig) -> None:
        super().__init__(config)
        c = config.n_context * config.hid_S  # the translator's channels: the latents stacked over time
        self.enc = Encoder(config.channels, config.hid_S, config.N_S, config.spatio_kernel_enc)
        if self.model_type == "incepu":
            if config.hid_T % (2 * INCEP_GROUPS) or c % INCEP_GROUPS:
                raise ConfigError(
                    f"simvp_incepu: hid_T ({config.hid_T}) must be a multiple of {2 * INCEP_GROUPS} and "
                    f"n_context * hid_S ({c}) of {INCEP_GROUPS}: the Inception blocks use {INCEP_GROUPS} groups"
                )
            self.hid = MidIncepNet(c, config.hid_T, config.N_T)
        else:
            if self.model_type == "tau" and min(c, config.hid_T) < 4:
                raise ConfigError(
                    f"tau: hid_T ({config.hid_T}) and n_context * hid_S ({c}) must be >= 4 (squeeze-excitation)"
                )
            rates = torch.linspace(config.drop_path_first, config.drop_path, config.N_T, device="cpu").tolist()
            self.hid = MidMetaNet(
                c, config.hid_T, config.N_T, config.mlp_ratio, config.drop, rates, tau=self.model_type == "tau"
            )
        self.dec = Decoder(config.hid_S, config.channels, config.N_S, config.spatio_kernel_dec)

    def chunk(self, frames: Tensor, n_out: int) -> Tensor:
        """(B, n_context, C, H, W) -> the first ``n_out`` <= n_context predicted frames (B, n_out, C, H, W)."""
        b, t = frames.shape[:2]
        mf = self.memory_format
        x = rearrange(frames, "b t c h w -> (b t) c h w").contiguous(memory_format=mf)
        latent, skip = self.enc(x)  # (B*T, hid_S, H/s, W/s), (B*T, hid_S, H, W)
        z = rearrange(latent, "(b t) c h w -> b (t c) h w", b=b).contiguous(memory_format=mf)
        z = self.hid(z)  # (B, T*hid_S, H/s, W/s)
        z = rearrange(z, "b (t c) h w -> b t c h w", t=t)[:, :n_out]
        z = rearrange(z, "b t c h w -> (b t) c h w").contiguous(memory_format=mf)
        if n_out < t:  # output frame i is decoded with the skip of context frame i
            skip = rearrange(rearrange(skip, "(b t) c h w -> b t c h w", b=b)[:, :n_out], "b t c h w -> (b t) c h w")
        y = self.dec(z, skip)  # (B*n_out, C, H, W)
        return rearrange(y, "(b t) c h w -> b t c h w", b=b)

    def predict(self, context: Tensor, n_future: int, future: Tensor | None, mask: Tensor | None) -> Prediction:
        cfg = self.config
        nc, s = cfg.n_context, 2 ** (cfg.N_S // 2)
        if context.shape[1] < nc:
            raise InputError(f"{self.names[self.model_type]} reads {nc} context frames, got {context.shape[1]}")
        h, w = context.shape[-2:]
        if h % s or w % s:
            raise InputError(
                f"frame size {h}x{w} is not divisible by {s}, the encoder's stride (2^(N_S/2), N_S {cfg.N_S})"
            )
        per_pass = min(cfg.n_future, nc)
        frames, out, done = context[:, -nc:], [], 0
        while done < n_future:
            y = self.chunk(frames, min(per_pass, n_future - done))
            out.append(y)
            done += y.shape[1]
            if done < n_future:
                frames = torch.cat([frames, y], dim=1)[:, -nc:]
        pred = torch.cat(out, dim=1)  # (B, n_future, C, H, W)
        losses = {}
        if self.training and cfg.alpha > 0 and future is not None and n_future > 2:
            losses["diff_div"] = cfg.alpha * differential_divergence(pred, future)
        return Prediction(pred, losses)

    @classmethod
    def from_openstl(
        cls, state: dict[str, Tensor], channels: int = 1
    ) -> tuple[dict[str, Any], dict[str, Tensor], list[str]]:
        """OpenSTL's ``SimVP_Model`` (model_type gSTA, IncepU or tau): the names are kept but
        for three flattened wrappers; the config is read off the shapes, ``channels`` too (from
        the first convolution, so the argument is not needed). OpenSTL builds no weight that its
        forward pass leaves unused here, so nothing is dropped."""
        first = state.get("enc.enc.0.conv.conv.weight")
        translator = "hid.enc.0.block.norm1.weight" in state or "hid.enc.0.conv1.weight" in state
        if first is None or "dec.readout.weight" not in state or not translator:
            raise FramecastError(
                "these weights are not an OpenSTL SimVP_Model (no enc.enc.0.conv.conv, dec.readout, hid.enc.0)"
            )
        if "hid.enc.0.conv1.weight" in state:
            kind = "incepu"
        elif "hid.enc.0.block.attn.spatial_gating_unit.fc.0.weight" in state:
            kind = "tau"
        elif "hid.enc.0.block.attn.spatial_gating_unit.conv1.weight" in state:
            kind = "gsta"
        else:
            raise FramecastError(
                "an OpenSTL SimVP translator other than gSTA, IncepU or tau: framecast has no such model"
            )
        if kind != cls.model_type:
            raise FramecastError(
                f"these are OpenSTL SimVP weights with the {kind} translator: use --model {cls.names[kind]}"
            )

        def count(prefix: str) -> int:
            return len({m.group(1) for k in state if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))})

        hid_s, n_s, n_t = first.shape[0], count("enc.enc."), count("hid.enc.")
        up = state.get("dec.dec.0.conv.conv.0.weight", state.get("dec.dec.0.conv.conv.weight"))
        if up is None:
            raise FramecastError("no dec.dec.0.conv.conv weight: not an OpenSTL SimVP decoder")
        if kind == "incepu":
            c = state["hid.enc.0.conv1.weight"].shape[1]
            hid_t = state["hid.enc.0.layers.0.conv.weight"].shape[0]
            kernels = tuple(
                state[f"hid.enc.0.layers.{j}.conv.weight"].shape[-1] for j in range(count("hid.enc.0.layers."))
            )
            groups = (hid_t // 2) // state["hid.enc.0.layers.0.conv.weight"].shape[1]
            if kernels != INCEP_KERNELS or groups != INCEP_GROUPS:
                raise FramecastError(
                    f"Inception kernels {kernels} in {groups} groups; framecast builds OpenSTL's {INCEP_KERNELS} in {INCEP_GROUPS}"
                )
            extra: dict[str, Any] = {}
        else:
            c = state["hid.enc.0.block.norm1.weight"].shape[0]
            red = state.get("hid.enc.0.reduction.weight")
            hid_t = c if red is None else red.shape[0]
            ratio = state["hid.enc.0.block.mlp.fc1.weight"].shape[0] / c
            unit = "hid.enc.0.block.attn.spatial_gating_unit."
            kernels = (state[unit + "conv0.weight"].shape[-1], state[unit + "conv_spatial.weight"].shape[-1])
            k1 = ATTN_KERNEL // ATTN_DILATION + (ATTN_KERNEL // ATTN_DILATION) % 2 - 1
            if kernels != (2 * ATTN_DILATION - 1, k1):
                raise FramecastError(
                    f"attention kernels {kernels}; framecast builds OpenSTL's kernel 21: (5, 7) of dilation 3"
                )
            extra = {"mlp_ratio": ratio}
        if c % hid_s:
            raise FramecastError(f"the translator's {c} channels are not a multiple of hid_S {hid_s}")
        n_context = c // hid_s
        cfg = {
            "channels": first.shape[1],
            "n_context": n_context,
            "n_future": n_context,
            "hid_S": hid_s,
            "hid_T": hid_t,
            "N_S": n_s,
            "N_T": n_t,
            "spatio_kernel_enc": first.shape[-1],
            "spatio_kernel_dec": up.shape[-1],
            **extra,
        }
        flat = [
            (re.compile(r"^((?:enc\.enc|dec\.dec)\.\d+\.)conv\.conv\.(?:0\.)?"), r"\1conv."),
            (re.compile(r"^((?:enc\.enc|dec\.dec)\.\d+\.)conv\.norm\."), r"\1norm."),
            (re.compile(r"\.mlp\.dwconv\.dwconv\."), ".mlp.dwconv."),
        ]
        renamed = {}
        for k, v in state.items():
            for pattern, to in flat:
                k = pattern.sub(to, k)
            renamed[k] = v
        notes = [
            f"n_future = n_context = {n_context}: an OpenSTL SimVP pass predicts as many frames as it reads",
            f"{'alpha' if kind == 'incepu' else 'alpha, drop, drop_path and drop_path_first'}: training settings "
            "the weights do not hold, so the registered defaults",
        ]
        return cfg, renamed, notes


@register_model(
    "simvp_incepu",
    SimVPConfig,
    sizes={"published": {}, "cpu": CPU, "test": TEST},
    description="SimVP v1: CNN encoder, Inception-UNet translator over stacked frames (CVPR 2022)",
    paper="https://arxiv.org/abs/2206.05099",
)
class SimVPIncepU(SimVP):
    """SimVP v1 (see module docstring): the Inception-UNet translator."""

    model_type = "incepu"


@register_model(
    "tau",
    SimVPMetaConfig,
    defaults={"alpha": 0.1},
    sizes=META_SIZES,
    description="TAU: SimVP with temporal attention units and the differential divergence loss (CVPR 2023)",
    paper="https://arxiv.org/abs/2206.12126",
)
class TAU(SimVP):
    """TAU (see module docstring): temporal attention translator blocks, ``alpha`` = 0.1."""

    model_type = "tau"
