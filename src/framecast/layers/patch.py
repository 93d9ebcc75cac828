"""Space-to-depth patching as in the official PredRNN code (``reshape_patch``).

A frame (C, H, W) becomes (p*p*C, H/p, W/p); the channel index runs over (row in patch,
column in patch, channel), so ``(p1 p2 c)`` below, which keeps official weights loadable.
"""

from einops import rearrange
from torch import Tensor

from framecast.errors import ConfigError


def check_patch(image_size: int, patch_size: int, what: str = "model") -> None:
    """Raise ``ConfigError`` (a ``ValueError``) unless ``patch_size`` divides ``image_size``."""
    if patch_size < 1 or image_size % patch_size:
        fits = [p for p in range(1, min(image_size, 16) + 1) if image_size % p == 0]
        raise ConfigError(
            f"{what}: patch_size {patch_size} does not divide image_size {image_size}; patch sizes that fit: {fits}"
        )


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, T, C, H, W) -> (B, T, p*p*C, H/p, W/p)."""
    if p == 1:
        return x
    return rearrange(x, "b t c (h p1) (w p2) -> b t (p1 p2 c) h w", p1=p, p2=p)


def unpatchify(x: Tensor, p: int) -> Tensor:
    """(B, T, p*p*C, H/p, W/p) -> (B, T, C, H, W)."""
    if p == 1:
        return x
    return rearrange(x, "b t (p1 p2 c) h w -> b t c (h p1) (w p2)", p1=p, p2=p)
