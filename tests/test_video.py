"""Real video: small videos written here in the KTH, UCF101 and plain-folder layouts; the
decode-once cache; bad files; forecasting a video from a checkpoint; streaming forecasts."""

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from framecast import Forecaster, create_model
from framecast.checkpoint import save_model_checkpoint
from framecast.config import DataConfig
from framecast.data import build_datasets
from framecast.data import video as V
from framecast.errors import FramecastError


def write_video(path: Path, n: int, value: int = 128, size=(80, 60), fps: int = 25, moving: bool = True) -> Path:
    """An MPEG-4 .avi of ``n`` frames: a flat ``value`` background with a bright square moving right."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for t in range(n):
            img = np.full((h, w, 3), value, np.uint8)
            if moving:
                x = (2 * t) % (w - 10)
                img[h // 2 - 5 : h // 2 + 5, x : x + 10] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def data_cfg(tmp_path, **kw) -> DataConfig:
    base = dict(n_context=10, n_future=10, image_size=32, cache_dir=str(tmp_path / "cache"), val_size=0)
    return DataConfig(**{**base, **kw})


def test_kth_layout_persons_strides_and_clip_counts(tmp_path):
    root = tmp_path / "kth"
    for action in ("boxing", "jogging"):
        for person in (1, 2, 15, 16, 17, 25):
            write_video(root / action / f"person{person:02d}_{action}_d1_uncomp.avi", 40, value=10 * person)
    (root / "boxing" / "00sequences.txt").write_text("not a video\n")
    ds = build_datasets(data_cfg(tmp_path, name="kth", root=str(root), test_n_future=20))
    # boxing stride 20, jogging stride 3; train and val clips 20 frames, test clips 30 (10 -> 20)
    assert (len(ds["train"]), len(ds["val"]), len(ds["test"])) == (2 * (2 + 7), 2 * (2 + 7), 2 * (1 + 4))
    assert ds["train"][0].shape == (20, 1, 32, 32) and ds["test"][0].shape == (30, 1, 32, 32)

    def persons(split):  # the background brightness is 10 x the person number
        return sorted({int(round(float(torch.median(ds[split][i][0])) * 255 / 10)) for i in range(len(ds[split]))})

    split_persons = {split: persons(split) for split in ("train", "val", "test")}
    # validation holds out whole training persons (15-16), never clips of the training videos
    assert split_persons == {"train": [1, 2], "val": [15, 16], "test": [17, 25]}
    assert all(
        not set(split_persons[a]) & set(split_persons[b])
        for a, b in (("train", "val"), ("train", "test"), ("val", "test"))
    )
    first = ds["train"][0]  # consecutive frames: the square moves 2 px (of 80) per frame
    assert not torch.equal(first[0], first[1])


def test_ucf101_official_split_lists_and_study_protocol(tmp_path):
    root = tmp_path / "UCF-101"
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    train, test = [], []
    for cls in ("Rowing", "Surfing", "Diving"):
        for g in (1, 2, 3, 8):
            name = f"v_{cls}_g{g:02d}_c01.avi"
            write_video(root / cls / name, 12)
            (test if g == 1 else train).append(f"{cls}/{name}")
    (lists / "trainlist01.txt").write_text("".join(f"{x} 1\n" for x in train))
    (lists / "testlist01.txt").write_text("".join(f"{x}\n" for x in test))
    cfg = data_cfg(
        tmp_path, name="ucf101", root=str(root), n_context=4, n_future=1, channels=3, classes=["Rowing", "Surfing"]
    )
    ds = build_datasets(cfg)
    # per class: g01 test, g08 (the last training group) validation, g02-g03 train; stride = clip length 5
    assert (len(ds["train"]), len(ds["val"]), len(ds["test"])) == (2 * 2 * 2, 2 * 2, 2 * 2)
    assert ds["train"][0].shape == (5, 3, 32, 32)

    study = tmp_path / "study"
    for cls in ("BreastStroke", "Kayaking", "Rafting", "Rowing", "Surfing", "Diving"):
        for i in range(1, 13):
            write_video(study / cls / f"v_{cls}_g{i:02d}_c01.avi", 6, moving=False)
    ds = build_datasets(
        data_cfg(tmp_path, name="ucf101", root=str(study), protocol="study", n_context=4, n_future=1, channels=3)
    )
    # 5 classes x 12 videos: 1 test, 1 val, 10 train per class, one 5-frame clip each
    assert (len(ds["train"]), len(ds["val"]), len(ds["test"])) == (50, 5, 5)


def test_frame_folders_are_read_in_natural_order(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for t in range(12):  # frame2.png must come before frame10.png
        Image.fromarray(np.full((16, 16), t * 20, np.uint8)).save(folder / f"frame{t}.png")
    frames = V.read_frames(folder, V.FrameOptions(image_size=16, channels=1))
    assert [int(f.mean()) for f in frames] == [t * 20 for t in range(12)]


def test_a_bad_file_in_a_folder_is_skipped_with_a_warning(tmp_path, capsys):
    root = tmp_path / "videos"
    for i in range(4):
        write_video(root / f"clip{i}.avi", 30)
    good = (root / "clip0.avi").read_bytes()
    (root / "truncated.avi").write_bytes(good[: len(good) // 3])
    (root / "notes.mp4").write_text("this is not a video")
    ds = build_datasets(data_cfg(tmp_path, name="video_folder", root=str(root), split_fractions=(0.5, 0.25, 0.25)))
    err = capsys.readouterr().err
    assert "notes.mp4" in err and "truncated.avi" in err and "4 of 6 videos used: 2 unreadable" in err
    assert sum(len(ds[s]) for s in ("train", "val", "test")) == 4  # one 20-frame clip per good video


def test_bad_videos_are_one_clear_error_each(tmp_path):
    opts = V.FrameOptions(image_size=16)
    (tmp_path / "text.avi").write_text("hello")
    with pytest.raises(FramecastError, match=r"text\.avi: not a readable video"):
        V.read_frames(tmp_path / "text.avi", opts)
    data = write_video(tmp_path / "ok.avi", 60).read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    with pytest.raises(FramecastError, match=r"cut\.avi: .*truncated"):
        V.read_frames(tmp_path / "cut.avi", opts)
    with pytest.raises(FramecastError, match="no videos"):
        V.find_videos(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else None)
    write_video(tmp_path / "short" / "a.avi", 5)
    write_video(tmp_path / "short" / "b.avi", 5)
    write_video(tmp_path / "short" / "c.avi", 5)
    with pytest.raises(FramecastError, match="short: no usable video: none is readable and at least 20 frames long"):
        build_datasets(data_cfg(tmp_path, name="video_folder", root=str(tmp_path / "short")))


def write_avi_with_repeats(path: Path, n: int, repeat_after: dict[int, int], fps: int = 25) -> Path:
    """An MPEG-4 .avi of ``n`` flat frames (brightness ``20 + 10 t``) with ``repeat_after[t]``
    zero-size packets (dropped frames: the previous one repeats) muxed after frame ``t``."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        packets = [p for t in range(n) for p in s.encode(av.VideoFrame.from_ndarray(
            np.full((32, 48, 3), 20 + 10 * t, np.uint8), format="rgb24"))] + list(s.encode())  # fmt: skip
        at = 0  # the position in time: one tick per packet, empty ones included
        for t, p in enumerate(packets):
            p.pts = p.dts = at
            c.mux(p)
            at += 1
            for _ in range(repeat_after.get(t, 0)):
                empty = av.Packet(b"")
                empty.stream, empty.time_base, empty.pts, empty.dts = s, p.time_base, at, at
                c.mux(empty)
                at += 1
    return path


def test_zero_size_avi_packets_repeat_the_previous_frame_and_truncation_is_still_caught(tmp_path):
    src = write_avi_with_repeats(tmp_path / "screen.avi", 12, {2: 1, 5: 2, 9: 1})
    with av.open(str(src)) as c:  # the header counts the empty packets as frames; FFmpeg decodes 12
        assert c.streams.video[0].frames == 16 and sum(1 for _ in c.decode(video=0)) == 12
    opts = V.FrameOptions(image_size=16)
    frames = V.read_frames(src, opts)  # was: "truncated video: its header announces 16 frames, only 12 decode"
    shown = [0, 1, 2, 2, 3, 4, 5, 5, 5, 6, 7, 8, 9, 9, 10, 11]  # the source frame at each of the 16 places
    assert frames.shape == (16, 1, 16, 16)
    np.testing.assert_allclose(frames.reshape(16, -1).mean(1), [20 + 10 * t for t in shown], atol=3)
    assert all(np.array_equal(frames[i], frames[i - 1]) for i in (3, 7, 8, 13))  # repeats are the same frame
    assert not any(np.array_equal(frames[i], frames[i - 1]) for i in (1, 2, 4, 5, 6, 9, 10, 11, 12, 14, 15))
    np.testing.assert_array_equal(V.read_frames(src, opts, start=6, count=5), frames[6:11])  # indices count repeats
    data = src.read_bytes()  # the same file cut in the middle of its frame data is still rejected
    (tmp_path / "cut.avi").write_bytes(data[: (data.find(b"movi") + data.find(b"idx1")) // 2])
    with pytest.raises(FramecastError, match=r"cut\.avi: truncated video: its header announces 16 frames"):
        V.read_frames(tmp_path / "cut.avi", opts)


def test_frames_are_decoded_once_and_the_cache_follows_the_source(tmp_path, monkeypatch):
    src = write_video(tmp_path / "a.avi", 10)
    opts = V.FrameOptions(image_size=16)
    first = V.cached_frames(src, opts, tmp_path / "cache")
    monkeypatch.setattr(V, "read_frames", lambda *a, **k: pytest.fail("decoded twice"))
    assert V.cached_frames(src, opts, tmp_path / "cache") == first  # cached: no decoding
    assert np.load(first, mmap_mode="r").shape == (10, 1, 16, 16)
    monkeypatch.undo()
    assert V.cached_frames(src, V.FrameOptions(image_size=8), tmp_path / "cache") != first  # new options
    write_video(src, 12, value=50)  # the source changes: a new entry
    changed = V.cached_frames(src, opts, tmp_path / "cache")
    assert changed != first and np.load(changed).shape[0] == 12


@pytest.mark.parametrize("name", ["convlstm", "predrnn", "maxvit"])
def test_streaming_forecast_equals_the_batch_forecast(name):
    kw = dict(image_size=16, num_hidden=[8], patch_size=4)
    if name == "maxvit":
        kw = dict(image_size=16, n_context=4, n_out=3, dim=32, depths=(1,), patch_size=4)
    torch.manual_seed(0)
    model = create_model(name, **kw).eval()
    frames = np.random.default_rng(0).integers(0, 256, (6, 16, 16), dtype=np.uint8)
    f = Forecaster(model, n_future=3, n_context=4)
    outs = [f.push(fr) for fr in frames]
    assert outs[:3] == [None] * 3
    for t in (4, 6):  # after 4 frames and after 6 (the state carries on)
        window = frames[t - 4 : t] if name == "maxvit" else frames[:t]
        np.testing.assert_allclose(outs[t - 1], f.predict(window), atol=1e-5)
    assert outs[-1].shape == (3, 16, 16, 1)
    with pytest.raises(FramecastError, match="reads 1-channel frames, got 3 channels"):
        f.predict(np.zeros((4, 16, 16, 3), np.uint8))


def test_forecast_cli_writes_a_gif_and_an_mp4_with_scores(tmp_path):
    model = create_model("convlstm", image_size=32, num_hidden=[8], patch_size=4)
    ckpt = tmp_path / "m.ckpt"
    save_model_checkpoint(model, ckpt, extra={"n_context": 4, "n_future": 3})
    video = write_video(tmp_path / "walk.avi", 40, size=(96, 72), fps=12)
    cmd = [sys.executable, "-m", "framecast.cli", "forecast", str(video), "--checkpoint", str(ckpt)]
    res = subprocess.run(
        [*cmd, "--start-time", "1.0", "--out", str(tmp_path / "f.gif")], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "frames 12..15" in res.stdout and res.stdout.count("\n") >= 6  # 3 scored future frames
    with Image.open(tmp_path / "f.gif") as gif:
        assert gif.n_frames == 7  # 4 context + 3 predicted
    res = subprocess.run(
        [*cmd, "--start", "36", "--n-future", "6", "--out", str(tmp_path / "f.mp4")], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr  # 36..39 context, no truth left
    with av.open(str(tmp_path / "f.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 10
    res = subprocess.run([*cmd, "--start", "38"], capture_output=True, text=True)
    assert res.returncode == 2 and "only 2 frames from frame 38" in res.stderr


def test_a_cache_file_that_vanishes_is_named_also_through_a_worker(tmp_path):
    from framecast.cli import _one_line

    root = tmp_path / "videos"
    for i in range(3):
        write_video(root / f"clip{i}.avi", 25)
    ds = build_datasets(data_cfg(tmp_path, name="video_folder", root=str(root)))["train"]
    for f in ds.files:
        Path(f).unlink()
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1)
    with pytest.raises(FramecastError) as info:
        next(iter(loader))
    line = _one_line(info.value)
    assert line.startswith(str(ds.files[ds.index[0][0]])) and "vanished" in line and "\n" not in line


def test_fit_test_and_forecast_on_a_folder_of_rgb_videos(tmp_path):
    from framecast.checkpoint import read_checkpoint
    from framecast.cli import main

    root = tmp_path / "videos"
    for i in range(5):
        write_video(root / f"clip{i}.mp4", 30, value=40 * i, size=(64, 48))
    common = [
        "--data.name", "video_folder", "--data.root", str(root), "--data.channels", "3", "--data.image_size", "32",
        "--data.n_context", "4", "--data.n_future", "2", "--data.batch_size", "2", "--data.stride", "3",
        "--data.cache_dir", str(tmp_path / "cache"), "--data.split_fractions", "[0.6, 0.2, 0.2]",
    ]  # fmt: skip
    fit_args = ["--model.name", "predrnn", "--model.num_hidden", "[8]", "--model.patch_size", "4"]
    fit_args += [
        "--trainer.max_epochs",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--out_dir",
        str(tmp_path / "run"),
    ]
    assert main(["fit", *common, *fit_args]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    # 3 training videos x 9 clips (30 frames, 6 per clip, stride 3) in batches of 2, two epochs
    assert read_checkpoint(ckpt)["global_step"] == 2 * (27 // 2)
    assert main(["test", "--checkpoint", str(ckpt), *common, "--out", str(tmp_path / "test")]) == 0
    assert main(["test", "--checkpoint", str(ckpt), *common, "--data.channels", "1"]) == 2  # channel mismatch
    assert main(["forecast", str(root / "clip4.mp4"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "f.gif")]) == 0
