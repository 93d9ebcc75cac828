"""Space-to-depth patching as in the official PredRNN code (``reshape_patch``).

A frame (C, H, W) becomes (p*p*C, H/p, W/p); the channel index runs over (row in patch,
column in patch, channel), so ``(p1 p2 c)`` below, which keeps official weights loadable.
"""

from einops import rearrange
from torch import Tensor

from framecast.errors import ConfigError


def as_hw(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """A frame size as (H, W): an int is a square, a pair is (H, W)."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def show_size(image_size: int | tuple[int, int] | list[int]) -> str:
    """``32x64`` for (32, 64) (and ``64x64`` for 64)."""
    h, w = as_hw(image_size)
    return f"{h}x{w}"


def check_patch(image_size: int | tuple[int, int], patch_size: int, what: str = "model") -> None:
    """Raise ``ConfigError`` (a ``ValueError``) unless ``patch_size`` divides ``image_size``
    (an int, or (H, W): both sides)."""
    h, w = as_hw(image_size)
    if patch_size < 1 or h % patch_size or w % patch_size:
        fits = [p for p in range(1, min(h, w, 16) + 1) if h % p == 0 and w % p == 0]
        shown = image_size if isinstance(image_size, int) else show_size(image_size)
        raise ConfigError(
            f"{what}: patch_size {patch_size} does not divide image_size {shown}; patch sizes that fit: {fits}"
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
