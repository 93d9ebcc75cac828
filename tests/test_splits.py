"""Splits you can trust: no UCF101 group in two splits; one long video split by time with gaps."""

import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from test_video import data_cfg, write_video

from framecast.data import build_datasets
from framecast.errors import FramecastError


def test_ucf101_study_splits_by_group_never_by_video(tmp_path):
    root = tmp_path / "UCF-101"
    sizes = {g: 1 + g % 4 for g in range(1, 13)}  # 12 groups of 1-4 clips: 30 videos per class
    for cls in ("Rowing", "Surfing"):
        for g, n in sizes.items():
            for c in range(1, n + 1):
                write_video(root / cls / f"v_{cls}_g{g:02d}_c{c:02d}.avi", 5, moving=False)
    cfg = data_cfg(tmp_path, name="ucf101", root=str(root), protocol="study", n_context=4, n_future=1)
    cfg.classes = ["Rowing", "Surfing"]  # the study's classes, two of them
    ds = build_datasets(cfg)
    held = {}  # (class, group) -> splits; the cache file names start with the source's name
    for split in ("train", "val", "test"):
        for v, _ in ds[split].index:
            cls, g = re.match(r"v_([A-Za-z]+)_g(\d+)_c", Path(ds[split].files[v]).name).groups()
            held.setdefault((cls, int(g)), set()).add(split)
    assert len(held) == 2 * 12 and all(len(s) == 1 for s in held.values()), held  # one split per group
    for cls in ("Rowing", "Surfing"):  # one clip per video; test and val each near a tenth (3) of 30
        n = {s: sum(sizes[g] for (c, g), splits in held.items() if c == cls and s in splits) for s in ds}
        assert 2 <= n["test"] <= 4 and 2 <= n["val"] <= 4 and n["train"] == 30 - n["test"] - n["val"]
    assert len(ds["train"]) + len(ds["val"]) + len(ds["test"]) == 60
    again = build_datasets(cfg)
    assert again["test"].index == ds["test"].index and again["test"].files == ds["test"].files  # seeded


def write_ramp(path: Path, n: int) -> Path:
    """An MJPEG .avi of ``n`` flat frames, frame ``t`` of brightness ``t``: a clip shows where it starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=Fraction(25))
        s.width, s.height, s.pix_fmt = 32, 24, "yuvj420p"
        for t in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((24, 32, 3), t, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_one_long_video_is_split_by_time_with_a_clip_length_gap(tmp_path, capsys):
    root = tmp_path / "camera"
    write_ramp(root / "cam.avi", 240)
    ds = build_datasets(data_cfg(tmp_path, name="video_folder", root=str(root), image_size=16))
    err = capsys.readouterr().err
    assert (
        f"framecast: warning: {root}: 1 video for 3 splits: splitting each video by time "
        f"(train 80%, val 10%, test 10%, 20-frame gaps)"
    ) in err
    frames = {
        s: [(i, s0, s0 + ds[s].length) for i, (_, s0) in enumerate(ds[s].index)] for s in ("train", "val", "test")
    }
    assert all(frames[s] for s in frames) and all(ds[s].length == 20 for s in frames)
    assert ds["train"].files == ds["val"].files == ds["test"].files and len(ds["train"].files) == 1  # one cache
    lo = {s: min(a for _, a, _ in frames[s]) for s in frames}
    hi = {s: max(b for _, _, b in frames[s]) for s in frames}  # one past the last frame used
    assert lo["train"] == 0 and hi["test"] <= 240
    assert lo["val"] - hi["train"] >= 20 and lo["test"] - hi["val"] >= 20  # disjoint, one clip apart
    for s in frames:  # each clip holds the frames it says: brightness = frame number
        i, start, _ = frames[s][-1]
        clip = ds[s][i].numpy() * 255
        np.testing.assert_allclose(clip.reshape(20, -1).mean(1), np.arange(start, start + 20), atol=2.5)
    # 10 -> 20 test clips: 30-frame gaps, and the last 10% of 356 - 2 x 30 frames is the first to hold a test clip
    with pytest.raises(
        FramecastError, match=r"cam\.avi: 240 frames is too short to split by time .* at least 356 frames"
    ):
        build_datasets(data_cfg(tmp_path, name="video_folder", root=str(root), image_size=16, test_n_future=20))
