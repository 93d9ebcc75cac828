"""PhyDNet: a physical branch (PhyCell) beside a ConvLSTM, in a shared encoded space.

Le Guen & Thome, "Disentangling Physical Dynamics from Unknown Factors for Unsupervised Video
Prediction", CVPR 2020, https://arxiv.org/abs/2003.01460

Data flow of one step, for a frame u_t (B, C, H, W) and the downsampling p = ``patch_size``:

    e   = E(u_t)                                   # (B, hidden_dim, H/p, W/p), encoder_E
    h_p = PhyCell(E_p(e), h_p)                     # physics: see below
    h_r = ConvLSTM(E_r(e), (h_r, c_r))             # residual: ``convlstm_hidden`` layers
    u_{t+1} = sigmoid(D(D_p(h_p) + D_r(h_r)))      # decoder_D of the summed branches

``E`` is three 3x3 conv / GroupNorm(16) / LeakyReLU(0.2) blocks (strides 2, 1, p/2), ``E_p`` and
``E_r`` two stride-1 blocks each, ``D_p``, ``D_r`` and ``D`` their transposed mirrors. A PhyCell
layer predicts and then corrects with a gate K (the paper's Kalman-like filter):

    h~  = h + Phi(h),   Phi = conv1x1(GroupNorm(conv_kxk(h)))          # F.conv1, F.bn1, F.conv2
    K   = sigmoid(conv3x3([x, h]))                                     # convgate
    h'  = h~ + K * (x - h~)

The moment loss makes filter k i + j of ``F.conv1`` (k x k, for every input channel) a finite
difference of d^{i+j} / dy^i dx^j (i down the rows): its moment matrix M w M^T, M[a, b] = (b - (k-1)/2)^a / a!,
is pulled to the indicator of (i, j) by an MSE, summed over the input channels, as OpenSTL does.
In training, ``losses["moment"] = moment_weight * moment term / (T - 1)``: OpenSTL adds the
moment term to the *sum* of the T-1 frame MSEs, framecast's task to their mean, so weight 1
keeps OpenSTL's balance. The rollout is the PredRNN family's frame feedback (``feedback_rollout``):
T-1 next-frame predictions, input_t = m * true_t + (1 - m) * prediction_t under a teacher-forcing
mask.

Official code followed: OpenSTL (chengtan9907/OpenSTL) openstl/modules/phydnet_modules.py,
openstl/models/phydnet_model.py, openstl/methods/phydnet.py, configs/mmnist/PhyDNet.py, which
follow the authors' vincent-leguen/PhyDNet (models/models.py, main.py). Module names are
OpenSTL's without its ``encoder.`` prefix (``encoder_E.c1.main.0.weight``,
``phycell.cell_list.0.F.conv1.weight``, ``convcell.cell_list.0.conv.weight``), so its weights
convert by name (``from_openstl``).

Departures, named:

* From the paper: the PhyCell corrects with the encoded input at every step, also where that
  input is the model's own prediction (the paper's prediction mode has K = 0 there); both
  OpenSTL and the authors' code never take their ``decoding`` branch, and neither does framecast.
* From OpenSTL: the widths it hard-codes (encoder 32 / 64, PhyCell 49 filters of 7 x 7, ConvLSTM
  128, 128, 64 of 3 x 3) are config fields with those defaults; the PhyCell and ConvLSTM are
  registered once (OpenSTL registers them on the model and inside the encoder, so its state dict
  holds them twice); the k2m buffers are not kept (the moment matrix is rebuilt from k); the two
  per-branch reconstructions it decodes at every step for visualisation only (``out_phys``,
  ``out_conv``, never in a loss) are not computed (one decoder pass a step, not three).
* The PhyCell's group norm has ``phycell_kernel`` groups (OpenSTL: 7, the same at k = 7).
* ``patch_size`` is the encoder's downsampling (2 or 4, strided convolutions), not space-to-depth.
* Training policy, not in the model (the task's): OpenSTL's training step sets the teacher
  forcing ratio max(0, 1 - 0.003 * epoch) (openstl/methods/phydnet.py; the authors' main.py:
  0.01 per epoch), and PhyDNet_Model.forward draws one coin per batch (random.random() < ratio)
  that feeds all future inputs either the true or the predicted frames; context inputs are
  always true; framecast's ``train.sampling: teacher_forcing`` (schedules.py) draws the same
  mask, one draw per batch, with ``train.teacher_forcing_decay`` 0.003. That step then takes ``MSELoss(L, batch_y)`` of the model's scalar loss L
  against the target frames, i.e. minimises mean((L - y)^2), the gradient of L scaled by
  2 (L - mean(y)); framecast minimises the losses themselves.

Sizes (``size=``): ``published`` is OpenSTL's Moving MNIST PhyDNet (3.09 M parameters); ``cpu``
has half the encoder width and a 64, 32 ConvLSTM (~5 GFLOPs a 10 -> 10 clip); ``test`` runs in
seconds.
"""

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from framecast.errors import ConfigError, FramecastError
from framecast.layers import ConvLSTMCell, check_patch, feedback_rollout
from framecast.models.base import Prediction, Predictor
from framecast.registry import register_model

State = tuple[list[Tensor], list[tuple[Tensor, Tensor]]]  # PhyCell h per layer, ConvLSTM (h, c) per layer


@dataclass
class PhyDNetConfig:
    channels: int = 1  # frame channels (follows data.channels)
    image_size: int | tuple[int, int] = 64  # an int (square) or (H, W)
    patch_size: int = 4  # the encoder's downsampling: 2 or 4 (strided convolutions, OpenSTL's patch_size)
    nf: int = 32  # channels of the outer encoder and decoder blocks (encoder_E, decoder_D); a multiple of 16
    hidden_dim: int = 64  # channels of the encoded frame and of the PhyCell state (OpenSTL: 2 nf); a multiple of 16
    # hidden channels of Phi in each PhyCell layer; the first must be phycell_kernel^2 for the moment loss
    phycell_hidden: tuple[int, ...] = (49,)
    phycell_kernel: int = 7  # kernel of Phi's first convolution, the filters the moment loss constrains (odd)
    convlstm_hidden: tuple[int, ...] = (128, 128, 64)  # channels of each ConvLSTM layer; the last a multiple of 16
    convlstm_kernel: int = 3  # ConvLSTM gate convolution kernel (odd)
    moment_weight: float = 1.0  # weight of the moment loss relative to OpenSTL's (see the module docstring)

    def __post_init__(self) -> None:
        check_patch(self.image_size, self.patch_size, "phydnet")
        if self.patch_size not in (2, 4):
            raise ConfigError(f"phydnet: patch_size must be 2 or 4 (the encoder's strides), got {self.patch_size}")
        if (
            not self.phycell_hidden
            or not self.convlstm_hidden
            or min((*self.phycell_hidden, *self.convlstm_hidden)) < 1
        ):
            raise ConfigError(
                f"phydnet: phycell_hidden and convlstm_hidden must list positive widths, "
                f"got {self.phycell_hidden} and {self.convlstm_hidden}"
            )
        for name in ("nf", "hidden_dim"):
            if getattr(self, name) < 16 or getattr(self, name) % 16:
                raise ConfigError(
                    f"phydnet: {name} must be a multiple of 16 (GroupNorm(16)), got {getattr(self, name)}"
                )
        if self.convlstm_hidden[-1] % 16:
            raise ConfigError(
                f"phydnet: the last convlstm_hidden width must be a multiple of 16 (decoder_Dr's GroupNorm(16)), "
                f"got {self.convlstm_hidden}"
            )
        k = self.phycell_kernel
        if k < 1 or k % 2 == 0 or self.convlstm_kernel < 1 or self.convlstm_kernel % 2 == 0:
            raise ConfigError(
                f"phydnet: phycell_kernel and convlstm_kernel must be odd, got {k} and {self.convlstm_kernel}"
            )
        if any(f % k for f in self.phycell_hidden):
            raise ConfigError(
                f"phydnet: phycell_hidden widths must be multiples of phycell_kernel {k} (GroupNorm({k})), "
                f"got {self.phycell_hidden}"
            )
        if self.moment_weight < 0:
            raise ConfigError(f"phydnet: moment_weight must be >= 0, got {self.moment_weight}")
        if self.moment_weight > 0 and self.phycell_hidden[0] != k * k:
            raise ConfigError(
                f"phydnet: the moment loss constrains one filter per moment, so phycell_hidden[0] must be "
                f"phycell_kernel^2 = {k * k}, got {self.phycell_hidden[0]} (or set moment_weight 0)"
            )


class ConvBlock(nn.Module):
    """3x3 convolution, GroupNorm(16), LeakyReLU(0.2) (OpenSTL's dcgan_conv)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(16, cout), nn.LeakyReLU(0.2)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


def transposed(cin: int, cout: int, stride: int) -> nn.ConvTranspose2d:
    """3x3 transposed convolution that multiplies the size by ``stride`` (1 or 2)."""
    return nn.ConvTranspose2d(cin, cout, 3, stride=stride, padding=1, output_padding=stride - 1)


class UpConvBlock(nn.Module):
    """3x3 transposed convolution, GroupNorm(16), LeakyReLU(0.2) (OpenSTL's dcgan_upconv)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.main = nn.Sequential(transposed(cin, cout, stride), nn.GroupNorm(16, cout), nn.LeakyReLU(0.2))

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


def blocks(**named: nn.Module) -> nn.Sequential:
    """A sequential with OpenSTL's block names (c1, c2, ... / upc1, upc2, ...)."""
    return nn.Sequential(OrderedDict(named))


class PhyCellCell(nn.Module):
    """One PhyCell layer: prediction h~ = h + F(h), gated correction towards the input x."""

    def __init__(self, dim: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.F = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(dim, hidden, kernel, padding=kernel // 2),
                bn1=nn.GroupNorm(kernel, hidden),
                conv2=nn.Conv2d(hidden, dim, 1),
            )
        )
        self.convgate = nn.Conv2d(2 * dim, dim, 3, padding=1)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        gate = torch.sigmoid(self.convgate(torch.cat([x, h], dim=1)))  # K
        h_tilde = h + self.F(h)
        return h_tilde + gate * (x - h_tilde)


class PhyCell(nn.Module):
    """Stacked PhyCell layers; each layer reads the one below (the first reads E_p(e))."""

    def __init__(self, dim: int, hidden: tuple[int, ...], kernel: int) -> None:
        super().__init__()
        self.cell_list = nn.ModuleList(PhyCellCell(dim, f, kernel) for f in hidden)

    def forward(self, x: Tensor, state: list[Tensor] | None) -> list[Tensor]:
        h = [torch.zeros_like(x)] * len(self.cell_list) if state is None else list(state)
        for j, cell in enumerate(self.cell_list):
            h[j] = cell(x if j == 0 else h[j - 1], h[j])
        return h


class ConvLSTMStack(nn.Module):
    """Stacked ConvLSTM cells (biased gates (i, f, o, g), no forget bias: OpenSTL's PhyD_ConvLSTM)."""

    def __init__(self, dim: int, hidden: tuple[int, ...], kernel: int) -> None:
        super().__init__()
        ins = (dim, *hidden[:-1])
        self.cell_list = nn.ModuleList(ConvLSTMCell(a, b, kernel) for a, b in zip(ins, hidden, strict=True))

    def forward(self, x: Tensor, state: list[tuple[Tensor, Tensor]] | None) -> list[tuple[Tensor, Tensor]]:
        hc: list[Any] = [None] * len(self.cell_list) if state is None else list(state)
        for j, cell in enumerate(self.cell_list):
            hc[j] = cell(x if j == 0 else hc[j - 1][0], hc[j])
        return hc


def moment_matrix(k: int, device: torch.device | None = None) -> Tensor:
    """(k, k) float64: row a holds the a-th Taylor moment (b - (k-1)/2)^a / a! of a k-tap stencil."""
    offsets = torch.arange(k, dtype=torch.float64, device=device) - (k - 1) // 2
    powers = torch.arange(k, dtype=torch.float64, device=device)
    factorials = torch.tensor([math.factorial(a) for a in range(k)], dtype=torch.float64, device=device)
    return offsets[None, :] ** powers[:, None] / factorials[:, None]


def moment_term(weight: Tensor) -> Tensor:
    """OpenSTL's moment term of ``F.conv1.weight`` (k^2, C_in, k, k): for every input channel, the
    MSE between the moment matrices M w M^T of its k^2 filters and the indicators (filter k i + j ->
    1 at (i, j)), summed over the input channels. Moments in float64, as OpenSTL takes them."""
    n, _, k, _ = weight.shape
    m = moment_matrix(k, weight.device)
    moments = torch.einsum("ai,bj,ncij->ncab", m, m, weight.double()).to(weight.dtype)  # (k^2, C_in, k, k)
    target = torch.eye(n, dtype=weight.dtype, device=weight.device).reshape(n, 1, k, k)
    return (moments - target).pow(2).mean(dim=(0, 2, 3)).sum()


@register_model(
    "phydnet",
    PhyDNetConfig,
    sizes={
        "published": {},
        "cpu": {"nf": 16, "hidden_dim": 32, "convlstm_hidden": (64, 32)},
        "test": {"nf": 16, "hidden_dim": 16, "phycell_hidden": (9,), "phycell_kernel": 3, "convlstm_hidden": (16,)},
    },
    description="PhyDNet: PhyCell (moment-constrained physics) beside a ConvLSTM (CVPR 2020), patch 4",
    paper="https://arxiv.org/abs/2003.01460",
)
class PhyDNet(Predictor):
    """PhyDNet (see module docstring)."""

    uses_mask = True
    streams = True
    bounded_output = True  # the decoder ends in a sigmoid

    def __init__(self, config: PhyDNetConfig) -> None:
        super().__init__(config)
        c, nf, dim, s = config.channels, config.nf, config.hidden_dim, config.patch_size // 2
        last = config.convlstm_hidden[-1]
        # Registered first, as in OpenSTL: Predictor.memory_format reads the first spatial weight,
        # and encoder_E's first one has `channels` inputs, whose two layouts look alike when it is 1.
        self.phycell = PhyCell(dim, config.phycell_hidden, config.phycell_kernel)
        self.convcell = ConvLSTMStack(dim, config.convlstm_hidden, config.convlstm_kernel)
        self.encoder_E = blocks(c1=ConvBlock(c, nf, 2), c2=ConvBlock(nf, nf, 1), c3=ConvBlock(nf, dim, s))
        self.encoder_Ep = blocks(c1=ConvBlock(dim, dim, 1), c2=ConvBlock(dim, dim, 1))
        self.encoder_Er = blocks(c1=ConvBlock(dim, dim, 1), c2=ConvBlock(dim, dim, 1))
        self.decoder_Dp = blocks(upc1=UpConvBlock(dim, dim, 1), upc2=UpConvBlock(dim, dim, 1))
        self.decoder_Dr = blocks(upc1=UpConvBlock(last, last, 1), upc2=UpConvBlock(last, dim, 1))
        self.decoder_D = blocks(upc1=UpConvBlock(dim, nf, 2), upc2=UpConvBlock(nf, nf, 1), upc3=transposed(nf, c, s))

    def step(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """One step on a (B, C, H, W) frame; ``state`` = (PhyCell h per layer, ConvLSTM (h, c) per layer)."""
        e = self.encoder_E(x)  # (B, hidden_dim, H/p, W/p)
        phys = self.phycell(self.encoder_Ep(e), None if state is None else state[0])
        lstm = self.convcell(self.encoder_Er(e), None if state is None else state[1])
        d = self.decoder_Dp(phys[-1]) + self.decoder_Dr(lstm[-1][0])
        y = torch.sigmoid(self.decoder_D(d))  # (B, C, H, W)
        return y, (phys, lstm)

    def frame_step(self, frame: Tensor, state: State | None) -> tuple[Tensor, State]:
        """``step`` on the frame as it is: the encoder downsamples it (no space-to-depth)."""
        return self.step(frame.contiguous(memory_format=self.memory_format), state)

    def predict(self, context: Tensor, n_future: int, future: Tensor | None, mask: Tensor | None) -> Prediction:
        frames = feedback_rollout(self.step, context, n_future, future, mask, memory_format=self.memory_format)
        losses = {}
        if self.training and self.config.moment_weight > 0:
            scale = self.config.moment_weight / frames.shape[1]  # frames.shape[1] = T - 1
            losses["moment"] = scale * moment_term(self.phycell.cell_list[0].F.conv1.weight)
        return Prediction(frames, losses)

    @classmethod
    def from_openstl(
        cls, state: dict[str, Tensor], channels: int = 1
    ) -> tuple[dict[str, Any], dict[str, Tensor], list[str]]:
        """OpenSTL's PhyDNet_Model (openstl/models/phydnet_model.py): the encoder's weights keep
        their names without ``encoder.``; the model-level ``phycell.*`` and ``convcell.*`` are the
        same modules registered a second time and are dropped once checked equal; the ``k2m``
        buffers are constants. The authors' EncoderRNN state dict (no ``encoder.``) loads too.
        ``channels`` is read off the weights; ``patch_size`` is not in them (strides) and is 4."""
        prefix = "encoder." if "encoder.encoder_E.c1.main.0.weight" in state else ""
        if (
            f"{prefix}encoder_E.c1.main.0.weight" not in state
            or f"{prefix}phycell.cell_list.0.F.conv1.weight" not in state
        ):
            raise FramecastError(
                "these weights are not OpenSTL's PhyDNet (no encoder.encoder_E.c1 or encoder.phycell.cell_list.0.F.conv1)"
            )
        renamed: dict[str, Tensor] = {}
        notes: list[str] = []
        duplicates: set[str] = set()
        for key, value in state.items():
            if key.startswith("k2m."):
                continue
            if prefix and not key.startswith(prefix):
                twin = state.get(prefix + key)
                if twin is None or not torch.equal(twin, value):
                    raise FramecastError(f"{key} is not a copy of {prefix}{key}: not one OpenSTL PhyDNet")
                duplicates.add(key.split(".")[0])
                continue
            renamed[key[len(prefix) :]] = value
        notes += [
            f"dropped {name}.* (OpenSTL registers the same module again as {prefix}{name}; kept once)"
            for name in sorted(duplicates)
        ]
        if any(k.startswith("k2m.") for k in state):
            notes.append("dropped k2m._M*, k2m._invM* (constant moment matrices, rebuilt from the kernel size)")

        def layers(module: str, weight: str) -> list[Tensor]:
            found, j = [], 0
            while (w := renamed.get(f"{module}.cell_list.{j}.{weight}")) is not None:
                found.append(w)
                j += 1
            return found

        phys, lstm = layers("phycell", "F.conv1.weight"), layers("convcell", "conv.weight")
        if not lstm:
            raise FramecastError("these weights are not OpenSTL's PhyDNet (no convcell.cell_list.*.conv)")
        first = renamed["encoder_E.c1.main.0.weight"]  # (nf, C, 3, 3)
        config = {
            "channels": first.shape[1],
            "patch_size": 4,
            "nf": first.shape[0],
            "hidden_dim": renamed["encoder_E.c3.main.0.weight"].shape[0],
            "phycell_hidden": tuple(w.shape[0] for w in phys),
            "phycell_kernel": phys[0].shape[-1],
            "convlstm_hidden": tuple(w.shape[0] // 4 for w in lstm),
            "convlstm_kernel": lstm[0].shape[-1],
        }
        notes.append("patch_size 4 assumed (OpenSTL's Moving MNIST config; strides are not in the weights)")
        if config["channels"] != channels:
            notes.append(f"channels {config['channels']} read off encoder_E.c1 (not the {channels} given)")
        return config, renamed, notes
