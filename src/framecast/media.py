"""Writing animations: the one GIF and MP4 writer of the package (imageio: Pillow for GIF,
PyAV/FFmpeg for MP4), written atomically so a killed run never leaves half a file."""

from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from framecast.errors import FramecastError
from framecast.io import atomic_write_bytes

SUFFIXES = (".gif", ".mp4")


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(..., C, H, W) floats in [0, 1] -> (..., H, W, 3) uint8 (grey repeated to RGB)."""
    x = frames.detach().float().clamp(0, 1).cpu()
    if x.shape[-3] == 1:
        x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    return (x.movedim(-3, -1) * 255).round().to(torch.uint8).numpy()


def write_animation(frames: Sequence[np.ndarray], out: str | Path, fps: float) -> Path:
    """Write uint8 RGB frames, each (H, W, 3), as ``out`` (.gif or .mp4) at ``fps`` frames per
    second. MP4 is H.264 where FFmpeg has it (else MPEG-4 Part 2), frames cropped to even sides
    (yuv420p needs them)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise FramecastError(f"{out}: write a .gif or an .mp4")
    stack = np.stack([np.asarray(f, np.uint8) for f in frames])  # (T, H, W, 3)
    if suffix == ".gif":
        data = iio.imwrite("<bytes>", stack, extension=".gif", duration=int(1000 / fps), loop=0)
    else:
        import av

        h, w = (stack.shape[1] // 2) * 2, (stack.shape[2] // 2) * 2
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        data = iio.imwrite(
            "<bytes>", np.ascontiguousarray(stack[:, :h, :w]), extension=".mp4", plugin="pyav", codec=codec, fps=fps
        )
    atomic_write_bytes(out, data)
    return out
