"""A MaxViT frame predictor (Tu et al., "MaxViT: Multi-Axis Vision Transformer", ECCV 2022,
https://arxiv.org/abs/2204.01697), built from timm's MaxViT blocks.

The comparative study's form: the ``n_context`` context frames are stacked as channels, embedded
by a strided convolution (patch ``patch_size``), passed through stages of timm
``MaxxVitBlock`` s (MBConv with squeeze-excitation -> block attention in local windows ->
grid attention over a dilated global grid, each attention followed by an MLP, with relative
position bias), and decoded by a transposed convolution and a sigmoid into ``n_out`` future
frames at once. Longer horizons roll forward in chunks: the predicted frames join the context
and the model predicts the next chunk.

Departures from the seed, named: the seed's stages are kept at one resolution here (no
downsampling between stages), so that window and grid sizes are checked against one feature
map; the patch embedding is a strided convolution; block widths are constant (``dim``).

Sizes (``size=``): there is no published Moving MNIST MaxViT predictor, so ``published`` is the
comparison seed's size (the defaults); ``cpu`` is the model section of ``configs/cpu/<name>.yaml``
(the same size: it trains in the CPU budget); ``test`` runs in seconds with 4 context frames.
"""

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from framecast.errors import ConfigError, InputError, MissingPackage
from framecast.layers import as_hw, check_patch, show_size
from framecast.models.base import Prediction, Predictor
from framecast.registry import register_model


@dataclass
class MaxViTConfig:
    channels: int = 1  # frame channels (follows data.channels)
    image_size: int | tuple[int, int] = 64  # an int (square) or (H, W)
    n_context: int = 10  # context frames, stacked as input channels (follows data.n_context)
    n_out: int = 10  # frames predicted per forward pass
    dim: int = 64  # channels of every block
    depths: tuple[int, ...] = (2, 2, 2, 2)  # MaxViT blocks per stage
    dim_head: int = 32  # channels per attention head
    window_size: int = 4  # block attention: local windows of this many tokens per side
    grid_size: int = 4  # grid attention: a dilated grid of this many tokens per side
    patch_size: int = 4  # the embedding's stride: one token per patch x patch pixels
    # sigmoid: the seed's head; linear: no squashing (the recurrent models' head), trained with
    # train.clip_loss so that values outside [0, 1] cost nothing.
    output: str = "sigmoid"

    def __post_init__(self) -> None:
        if self.output not in ("sigmoid", "linear"):
            raise ConfigError(f"maxvit: output must be sigmoid or linear, got {self.output!r}")
        check_patch(self.image_size, self.patch_size, "maxvit")
        fh, fw = (s // self.patch_size for s in as_hw(self.image_size))  # the feature map
        fits = [d for d in range(1, min(fh, fw) + 1) if fh % d == 0 and fw % d == 0]
        for name in ("window_size", "grid_size"):
            size = getattr(self, name)
            if size < 1 or fh % size or fw % size:
                shown = self.image_size if isinstance(self.image_size, int) else show_size(self.image_size)
                raise ConfigError(
                    f"maxvit: {name} {size} does not divide the {fh}x{fw} feature map "
                    f"(image_size {shown} / patch_size {self.patch_size}); sizes that fit: {fits}"
                )
        if self.dim % self.dim_head:
            raise ConfigError(f"maxvit: dim {self.dim} is not a multiple of dim_head {self.dim_head}")
        if not self.depths or min(self.depths) < 1 or self.n_out < 1 or self.n_context < 1:
            raise ConfigError(
                f"maxvit: depths, n_out and n_context must be positive, got {self.depths}, {self.n_out}, {self.n_context}"
            )


@register_model(
    "maxvit",
    MaxViTConfig,
    sizes={
        "published": {},
        "cpu": {},
        "test": {
            "n_context": 4,
            "n_out": 2,
            "dim": 32,
            "depths": (1,),
            "window_size": 4,
            "grid_size": 4,
            "patch_size": 8,
        },
    },
    description="MaxViT predictor (timm blocks), context stacked as channels, 64x64 grey",
    paper="https://arxiv.org/abs/2204.01697",
)
@register_model(
    "maxvit_rgb",
    MaxViTConfig,
    defaults={"channels": 3, "n_out": 5},
    sizes={
        "published": {},
        "cpu": {},
        "test": {"n_context": 4, "n_out": 2, "dim": 32, "depths": (1,), "patch_size": 8},
    },
    description="MaxViT predictor for 64x64 RGB, 10 -> 5 per pass (the comparison seed's UCF101 form)",
    paper="https://arxiv.org/abs/2204.01697",
)
class MaxViT(Predictor):
    """MaxViT frame predictor (see module docstring)."""

    fixed_size = True  # relative position tables fix the window, the stem fixes channels

    @property
    def bounded_output(self) -> bool:  # the seed's sigmoid head; output: linear is unbounded
        return self.config.output == "sigmoid"

    def __init__(self, config: MaxViTConfig) -> None:
        super().__init__(config)
        try:
            from timm.models.maxxvit import MaxxVitBlock, MaxxVitConvCfg, MaxxVitTransformerCfg
        except ImportError:
            raise MissingPackage("the maxvit model needs timm: pip install 'framecast[maxvit]'") from None
        c, p, d = config.channels, config.patch_size, config.dim
        self.stem = nn.Conv2d(config.n_context * c, d, p, stride=p)
        tcfg = MaxxVitTransformerCfg(
            dim_head=config.dim_head, window_size=(config.window_size,) * 2, grid_size=(config.grid_size,) * 2
        )
        ccfg = MaxxVitConvCfg()
        self.blocks = nn.Sequential(
            *(MaxxVitBlock(d, d, conv_cfg=ccfg, transformer_cfg=tcfg) for _ in range(sum(config.depths)))
        )
        self.head = nn.ConvTranspose2d(d, config.n_out * c, p, stride=p)

    def chunk(self, context: Tensor) -> Tensor:
        """(B, n_context, C, H, W) -> (B, n_out, C, H, W), in [0, 1] with the sigmoid head."""
        x = rearrange(context, "b t c h w -> b (t c) h w")
        y = self.head(self.blocks(self.stem(x)))
        if self.config.output == "sigmoid":
            y = torch.sigmoid(y)
        return rearrange(y, "b (t c) h w -> b t c h w", c=self.config.channels)

    def predict(self, context: Tensor, n_future: int, future: Tensor | None, mask: Tensor | None) -> Prediction:
        nc = self.config.n_context
        if context.shape[1] < nc:
            raise InputError(f"maxvit reads {nc} context frames, got {context.shape[1]}")
        frames = context[:, -nc:]
        out: list[Tensor] = []
        while sum(o.shape[1] for o in out) < n_future:
            y = self.chunk(frames)
            out.append(y)
            frames = torch.cat([frames, y], dim=1)[:, -nc:]
        return Prediction(torch.cat(out, dim=1)[:, :n_future])
