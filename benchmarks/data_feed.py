"""Does the data loader keep the training step fed? Time per batch of clips from decoded-video
caches (memory-mapped), of built-in Moving MNIST (generated on the fly), and of a training step
of the quick CPU configuration, in the same run.

    python benchmarks/data_feed.py                 # writes a few synthetic videos to a temp dir
    python benchmarks/data_feed.py --root /data/kth --name kth
"""

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from framecast.config import DataConfig, build_run_config
from framecast.data import FrameDataModule
from framecast.machine import describe, machine_profile
from framecast.speed.precision import autocast
from framecast.training.runner import make_task, resolve_trainer

USED: dict = {}  # the precision and layout the training step ran in (printed with the machine)


def synthetic_videos(root: Path, n: int = 12, frames: int = 120) -> None:
    import av

    rng = np.random.default_rng(0)
    for i in range(n):
        with av.open(str(root / f"clip{i}.mp4"), "w") as c:
            s = c.add_stream("mpeg4", rate=Fraction(25))
            s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
            for _ in range(frames):
                img = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)


def per_batch(cfg: DataConfig, batches: int = 50) -> float:
    dm = FrameDataModule(cfg)
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            next(it)
        n += 1
    return (time.perf_counter() - t0) / n


def step_time(batch: int, steps: int = 10) -> float:
    cfg = build_run_config(
        {
            "model": {"name": "convlstm", "num_hidden": [64, 64], "filter_size": 3, "patch_size": 8},
            "data": {"batch_size": batch},
        }
    )
    task = make_task(cfg)
    cfg, choice = resolve_trainer(cfg, task.model, "train", log=print)  # precision / layout auto
    USED.update(precision=choice.precision, layout=choice.layout)
    model = task.model.train()
    opt = torch.optim.Adam(model.parameters())
    x = torch.rand(batch, 20, 1, 64, 64)
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        with autocast(choice.precision):
            loss = torch.nn.functional.mse_loss(model(x[:, :10], 10).frames.float(), x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root")
    ap.add_argument("--name", default="video_folder")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp) / "videos"
        if not args.root:
            root.mkdir()
            synthetic_videos(root)
        video = DataConfig(name=args.name, root=str(root), batch_size=args.batch, cache_dir=str(Path(tmp) / "cache"))
        t0 = time.perf_counter()
        FrameDataModule(video).setup()
        decode = time.perf_counter() - t0
        t0 = time.perf_counter()
        FrameDataModule(video).setup()
        cached = time.perf_counter() - t0
        rows = {
            f"{args.name}: first setup (decode + cache)": decode,
            f"{args.name}: second setup (cache hit)": cached,
            f"{args.name}: one batch of {args.batch} clips": per_batch(video),
            f"moving_mnist: one batch of {args.batch} clips": per_batch(DataConfig(batch_size=args.batch)),
            f"training step, quick convlstm, batch {args.batch}": step_time(args.batch),
        }
    print(f"machine: {describe(machine_profile(USED.get('precision'), USED.get('layout')))}")
    for name, sec in rows.items():
        print(f"{name:<55} {sec * 1000:9.1f} ms")


if __name__ == "__main__":
    main()
