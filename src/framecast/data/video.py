"""Real video: reading (PyAV), frame folders, a decode-once cache, and clips for training.

Videos are decoded with PyAV (FFmpeg): any container and codec FFmpeg reads. A folder of frame
images counts as one video, its frames in natural order (``frame2`` before ``frame10``, never
sorted as strings). Frames are center-cropped to a square (``crop: center``) or stretched
(``crop: none``), resized with bilinear filtering to ``image_size`` and kept grey (1 channel,
ITU-R 601 luma) or RGB (3). A zero-size packet in an AVI index (a dropped frame, as variable-rate
captures and screen recordings write them) is the previous frame repeated, as players show it.

Decoding happens once: the resized uint8 frames of each video are written to
``<cache_dir>/<name>-<key>.npy`` and memory-mapped afterwards. The key hashes the source's
path, size and modification time and the frame options, so a changed file or option builds a
new entry and a stale one is never read.
"""

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from framecast.errors import FramecastError, warn
from framecast.io import atomic_write

VIDEO_EXTS = (".avi", ".mp4", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv", ".gif", ".ogv")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
CACHE_VERSION = 2  # 2: zero-size AVI packets repeat the previous frame


def natural_key(text: str) -> list:
    """Sort key that orders embedded numbers by value: ``f2 < f10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


@dataclass(frozen=True)
class FrameOptions:
    """How decoded frames are shaped: square ``image_size``, 1 (grey) or 3 (RGB) channels."""

    image_size: int = 64
    channels: int = 1
    crop: str = "center"  # center: crop to a square first | none: stretch

    def __post_init__(self) -> None:
        if self.crop not in ("center", "none"):
            raise FramecastError(f"data.crop must be center or none, got {self.crop!r}")


def shape_frame(img, opts: FrameOptions) -> np.ndarray:
    """A PIL image -> (C, S, S) uint8 by ``opts``."""
    from PIL import Image

    if opts.crop == "center":
        w, h = img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    img = img.convert("L" if opts.channels == 1 else "RGB")
    img = img.resize((opts.image_size, opts.image_size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTS for p in path.iterdir())


def frame_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS), key=lambda p: natural_key(p.name))


def video_fps(path: str | Path) -> float | None:
    """Frames per second of a video file (None for frame folders or unknown rates)."""
    path = Path(path)
    if path.is_dir():
        return None
    import av

    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            return float(rate) if rate else None
    except Exception:
        return None


def read_frames(
    path: str | Path, opts: FrameOptions, start: int = 0, count: int | None = None, strict: bool = True
) -> np.ndarray:
    """Decode ``path`` (a video file or a folder of frames) into (T, C, S, S) uint8 frames.

    ``start`` / ``count`` select frames by index. Every failure is a ``FramecastError`` naming
    the file: missing, not a video, no video stream, a codec this FFmpeg cannot decode, corrupt
    data, or (``strict``) a truncated file that ends before its header says it does. Frame
    indices count the repeats that zero-size AVI packets stand for (``_timeline``).
    """
    path = Path(path)
    if not path.exists():
        raise FramecastError(f"{path}: file not found")
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise FramecastError(f"{path}: a folder with no frame images ({', '.join(IMAGE_EXTS)})")
        return _read_images(files[start : None if count is None else start + count], opts)
    import av
    from av.error import FFmpegError

    frames: list[np.ndarray] = []
    try:
        container = av.open(str(path))
    except FFmpegError as e:
        raise FramecastError(
            f"{path}: not a readable video: corrupt, truncated or not a video file ({_reason(e)})"
        ) from None
    with container:
        if not container.streams.video:
            raise FramecastError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        expected = stream.frames or 0
        if stream.codec_context is None:
            raise FramecastError(f"{path}: video codec not supported by this FFmpeg build")
        index, last = 0, None  # frames so far (repeats included); the last one shaped, as (frame, array)
        try:
            for frame in _timeline(container, stream, expected):
                index += 1
                if index > start:
                    if last is None or last[0] is not frame:
                        last = frame, shape_frame(frame.to_image(), opts)
                    frames.append(last[1])
                    if count is not None and len(frames) >= count:
                        break
        except FFmpegError as e:
            if index == 0:
                raise FramecastError(f"{path}: corrupt or unsupported video data ({_reason(e)})") from None
            if strict:
                raise FramecastError(
                    f"{path}: corrupt or truncated video: decoding failed after {index} frames ({_reason(e)})"
                ) from None
        if strict and count is None and expected > 0 and index < 0.9 * expected:
            raise FramecastError(
                f"{path}: truncated video: its header announces {expected} frames, only {index} decode"
            )
    if index == 0:
        raise FramecastError(f"{path}: no frames could be decoded")
    return np.stack(frames) if frames else np.zeros((0, opts.channels, opts.image_size, opts.image_size), np.uint8)


def _timeline(container, stream, expected: int) -> Iterator:
    """The decoded frames of ``stream``, each at its place in time.

    An AVI index may hold zero-size entries: a dropped frame, shown by every player as a repeat
    of the previous one (variable-rate captures, screen recordings). FFmpeg skips them, but AVI
    video timestamps count index entries, so each skipped entry is a one-tick gap before the
    next frame: the previous frame is yielded again for it, never past the ``expected`` frames
    of the header. A file that really ends early has no gaps and stays short.
    """
    avi = "avi" in container.format.name.split(",")
    origin, done, prev = None, 0, None
    for frame in container.decode(stream):
        if avi and origin is not None and frame.pts is not None:
            gap = frame.pts - origin - done
            if gap > 0 and (not expected or done + gap < expected):
                for _ in range(gap):
                    yield prev
                done += gap
        if done == 0:
            origin = frame.pts
        yield frame
        done, prev = done + 1, frame


def _reason(e: Exception) -> str:
    return " ".join(str(e).split())[:160] or type(e).__name__


def _read_images(files: Sequence[Path], opts: FrameOptions) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    out = []
    for f in files:
        try:
            with Image.open(f) as img:
                out.append(shape_frame(img, opts))
        except (UnidentifiedImageError, OSError) as e:
            raise FramecastError(f"{f}: not a readable image ({_reason(e)})") from None
    return np.stack(out)


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    import os

    return Path(os.environ.get("FRAMECAST_CACHE", Path.home() / ".cache" / "framecast")) / "frames"


def _source_stamp(path: Path) -> list:
    if path.is_dir():
        files = frame_files(path)
        return [len(files), max((f.stat().st_mtime_ns for f in files), default=0), sum(f.stat().st_size for f in files)]
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def cache_path(path: Path, opts: FrameOptions, cache_dir: Path) -> Path:
    key = json.dumps([str(path.resolve()), _source_stamp(path), asdict(opts), CACHE_VERSION])
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', path.stem)[:60]}-{digest}.npy"


def cached_frames(path: str | Path, opts: FrameOptions, cache_dir: str | Path | None = None) -> Path:
    """Decode ``path`` once into the cache; returns the .npy file of its (T, C, S, S) frames."""
    path = Path(path)
    target = cache_path(path, opts, Path(cache_dir) if cache_dir else default_cache_dir())
    if not target.is_file():
        frames = read_frames(path, opts)
        atomic_write(target, lambda f: np.save(f, frames, allow_pickle=False))
    return target


def cache_videos(
    paths: Iterable[Path], opts: FrameOptions, cache_dir: str | Path | None, min_length: int
) -> list[tuple[Path, Path, int]]:
    """Decode every video once; returns ``(source, cache file, n_frames)`` for the usable ones.

    A file that cannot be read (corrupt, truncated, not a video) or is shorter than
    ``min_length`` frames is skipped with a warning naming it, and counted.
    """
    from tqdm.auto import tqdm

    paths = list(paths)
    out, bad, short = [], 0, 0
    for path in tqdm(paths, desc="decoding videos (once; cached)", unit="video", disable=len(paths) < 20):
        try:
            file = cached_frames(path, opts, cache_dir)
        except FramecastError as e:
            warn(f"skipped {e}")
            bad += 1
            continue
        n = int(np.load(file, mmap_mode="r").shape[0])
        if n < min_length:
            short += 1
            continue
        out.append((path, file, n))
    if bad or short:
        warn(
            f"{len(out)} of {len(paths)} videos used: {bad} unreadable, {short} shorter than the {min_length} frames a clip needs"
        )
    return out


# --------------------------------------------------------------------------- clips


class VideoClips(Dataset):
    """Clips of ``length`` consecutive frames from cached videos, as (T, C, H, W) floats in [0, 1].

    ``index``: ``(video number, first frame)`` per clip. The cache files are memory-mapped
    lazily, in whichever process reads them (DataLoader workers included).
    """

    def __init__(self, files: Sequence[Path], index: Sequence[tuple[int, int]], length: int) -> None:
        self.files, self.index, self.length = list(files), list(index), length
        self._arrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    def clip_starts(self) -> list[tuple[int, int]]:
        """``(video, first frame)`` of every clip, in order: which clips share frames."""
        return [(int(v), int(s)) for v, s in self.index]

    def _array(self, v: int) -> np.ndarray:
        if v not in self._arrays:
            try:
                self._arrays[v] = np.load(self.files[v], mmap_mode="r")
            except (OSError, ValueError) as e:
                raise FramecastError(
                    f"{self.files[v]}: cached frames vanished or are damaged ({_reason(e)}); "
                    f"run the same command again to rebuild the cache and resume"
                ) from None
        return self._arrays[v]

    def __getitem__(self, i: int) -> torch.Tensor:
        v, s = self.index[i]
        clip = np.array(self._array(v)[s : s + self.length])  # a copy: memory maps are read-only
        return torch.from_numpy(clip).float().div_(255)

    def __getstate__(self) -> dict:  # never pickle open memory maps into workers
        return {**self.__dict__, "_arrays": {}}


def clip_starts(n_frames: int, length: int, stride: int, first: int = 0) -> list[int]:
    """First frames of the clips of ``length`` consecutive frames among frames ``first`` to
    ``n_frames - 1``, every ``stride`` frames."""
    return list(range(first, n_frames - length + 1, stride))


def make_clips(
    videos: Sequence[tuple[Path, Path, int]],
    length: int,
    stride: int | Sequence[int],
    spans: Sequence[tuple[int, int]] | None = None,
) -> VideoClips:
    """Clips over ``videos`` (from ``cache_videos``); ``stride`` is one number or one per video.

    ``spans``: per video, the frames ``[first, end)`` the clips lie in (default: all of it), so
    splits of one video by time are start ranges over the same cached array, never a copy.
    """
    strides = [stride] * len(videos) if isinstance(stride, int) else list(stride)
    spans = list(spans) if spans is not None else [(0, n) for _, _, n in videos]
    index = [(v, s) for v, (a, b) in enumerate(spans) for s in clip_starts(b, length, strides[v], a)]
    return VideoClips([f for _, f, _ in videos], index, length)


def subsample(ds: VideoClips, size: int) -> VideoClips:
    """At most ``size`` clips, evenly spaced (0: all)."""
    if not size or size >= len(ds):
        return ds
    keep = np.linspace(0, len(ds) - 1, size).round().astype(int)
    return VideoClips(ds.files, [ds.index[i] for i in keep], ds.length)


def find_videos(root: str | Path) -> list[Path]:
    """Video files and frame-image folders under ``root``, in natural order."""
    root = Path(root)
    if not root.is_dir():
        raise FramecastError(f"data.root: folder not found: {root}")
    found = []
    for p in sorted(root.rglob("*"), key=lambda p: natural_key(str(p.relative_to(root)))):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS or is_frame_folder(p):
            found.append(p)
    if not found:
        raise FramecastError(
            f"{root}: no videos ({', '.join(VIDEO_EXTS)}) or folders of frame images found; point data.root at them"
        )
    return found
