"""The untrained baselines' speed, and what uncertainty costs a comparison.

Measures, on this machine:

- predicted frames/s of ``flow`` (OpenCV DIS motion, pysteps semi-Lagrangian advection; and
  with OpenCV remap advection), ``linear`` and ``copy_last`` on built-in Moving MNIST test clips
  (10 -> 10, 64x64, one channel), and of ``flow`` (pysteps Lucas-Kanade and DARTS) and
  ``linear`` on a 2-channel float field in normalised physical units (moving anomalies on a
  64x64 grid): whether they can score a whole test split;
- what the 95% intervals and paired tests of ``compare`` cost next to its test passes, at the
  demo's size (configs/compare_quick.yaml: 500 test clips, 10 future frames, copy_last, blank,
  linear, flow and two trained models): keeping per-clip scores in the test pass (the appends
  and the gather ``FrameMetrics(keep_clips=True)`` adds), the bootstrap of every metric per model
  overall and per horizon step (``testing.clip_statistics``), and every pair's paired tests
  with the summary lines (``report.uncertainty_summary``); against a test pass of
  ``copy_last`` through ``test_model`` and the demo's 8 minutes of training; and the test
  passes of ``linear`` and ``flow`` themselves.

    python benchmarks/baselines.py                       # ~3 min on a 2-core CPU
    python benchmarks/baselines.py --clips 16 --test-clips 100   # a short run (~1 min)
"""

import argparse
import statistics
import time

import numpy as np
import torch

from framecast.config import DataConfig, RunConfig, TrainConfig, TrainerConfig
from framecast.data import build_datasets
from framecast.evaluation import metrics as M
from framecast.evaluation.report import uncertainty_summary
from framecast.evaluation.scores import FrameMetrics
from framecast.machine import describe, machine_profile
from framecast.registry import create_model
from framecast.training.testing import clip_statistics, test_model

DEMO_MODELS = 6  # copy_last, blank, linear, flow, convlstm, predrnn
DEMO_TRAIN_SECONDS = 2 * 4 * 60  # configs/compare_quick.yaml: two models, 4 minutes each


def frames_per_s(model, clips: torch.Tensor, n_context: int, batch: int = 16, repeats: int = 3) -> float:
    """Predicted frames per second over ``clips`` in batches: the best of ``repeats`` passes after
    a warm-up batch (the CPU may be shared: the best pass is the one least disturbed)."""
    n_future = clips.shape[1] - n_context
    with torch.no_grad():
        model(clips[:batch, :n_context], n_future)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for i in range(0, len(clips), batch):
                model(clips[i : i + batch, :n_context], n_future)
            times.append(time.perf_counter() - t)
    return len(clips) * n_future / min(times)


def field_clips(n: int, size: int = 64, length: int = 20, seed: int = 0) -> torch.Tensor:
    """(n, length, 2, size, size): two variables (e.g. temperature and humidity anomalies) of
    Gaussian blobs drifting at random steady velocities over a smooth background, standardised."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.empty((n, length, 2, size, size))
    for i in range(n):
        centres, speeds = rng.uniform(10, size - 10, (3, 2)), rng.uniform(-1.5, 1.5, (3, 2))
        for t in range(length):
            for c in range(2):
                field = 0.3 * np.sin(xx / 9 + c)  # still background
                for (x0, y0), (vx, vy) in zip(centres, speeds):
                    field += (1 + c) * np.exp(-((xx - x0 - vx * t) ** 2 + (yy - y0 - vy * t) ** 2) / (2 * 5.0**2))
                out[i, t, c] = field
    return torch.from_numpy((out - out.mean()) / out.std()).float()


def timed(fn, repeats: int = 3) -> float:
    """Median seconds of ``fn()``."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64, help="clips per speed measurement")
    parser.add_argument("--test-clips", type=int, default=500, help="test clips of the cost measurement (demo: 500)")
    args = parser.parse_args()
    print(f"Machine: {describe(machine_profile())}")

    # ------------------------------------------------------------------ speed
    data = DataConfig(test_size=args.clips)
    test = build_datasets(data)["test"]
    mnist = torch.stack([test[i] for i in range(len(test))])
    print(f"\nMoving MNIST: {len(mnist)} clips, 10 -> 10, 64x64x1 (predicted frames/s, batch 16)")
    for label, name, cfg in [
        ("copy_last", "copy_last", {}),
        ("linear", "linear", {}),
        ("flow (DIS, pysteps advection)", "flow", {"method": "dis", "advection": "pysteps"}),
        ("flow (DIS, OpenCV remap)", "flow", {"method": "dis", "advection": "remap"}),
    ]:
        print(f"  {label:34s} {frames_per_s(create_model(name, **cfg), mnist, 10):10.0f}")

    field = field_clips(args.clips)
    print(f"\n2-channel float field: {len(field)} clips, 10 -> 10, 64x64x2, normalised units")
    for label, name, cfg in [
        ("copy_last", "copy_last", {"channels": 2}),
        ("linear", "linear", {"channels": 2}),
        ("flow (pysteps Lucas-Kanade)", "flow", {"channels": 2, "method": "lucaskanade"}),
        ("flow (pysteps DARTS)", "flow", {"channels": 2, "method": "darts"}),
        ("flow (DIS, OpenCV remap)", "flow", {"channels": 2, "method": "dis", "advection": "remap"}),
    ]:
        print(f"  {label:34s} {frames_per_s(create_model(name, **cfg), field, 10):10.0f}")

    # ------------------------------------------------------------------ cost of the intervals
    n, horizon = args.test_clips, 10
    print(f"\nCost of the intervals at {n} test clips x {horizon} future frames, {DEMO_MODELS} models:")
    demo = DataConfig(test_size=n)
    run = RunConfig(model={"name": "copy_last"}, data=demo, train=TrainConfig(), trainer=TrainerConfig())
    t = time.perf_counter()
    tested = test_model(create_model("copy_last"), run)
    test_pass = time.perf_counter() - t

    clips = torch.stack([build_datasets(demo)["test"][i] for i in range(min(n, 64))])
    pred, target = clips[:, :10].flip(1), clips[:, 10:]

    per = M.per_frame(pred, target)  # the scores a test batch computes anyway

    def keep_clips() -> None:  # the work keep_clips adds: one append per metric and batch, one gather
        m = FrameMetrics(horizon, keep_clips=True)
        for _ in range(max(1, n // len(clips))):
            for i, name in enumerate(m.names):
                m._keep(i, per[name])
        m.per_clip()

    keep_cost = timed(keep_clips)
    rng = np.random.default_rng(0)
    per_clip = {k: torch.from_numpy(rng.gamma(2.0, 50.0, (n, horizon))) for k in tested["mean"]}
    stats_cost = timed(lambda: clip_statistics(per_clip), repeats=2)
    results = {
        f"m{i}": {"test": {"per_clip": {k: list(rng.gamma(2.0, 50.0 + i, n)) for k in tested["mean"]}}}
        for i in range(DEMO_MODELS)
    }
    pairs_cost = timed(lambda: uncertainty_summary(results, list(tested["mean"])), repeats=2)
    added = DEMO_MODELS * (keep_cost + stats_cost) + pairs_cost
    print(f"  test pass of copy_last (test_model)  {test_pass:8.2f} s")
    print(f"  per-clip scores kept in a test pass   {keep_cost:8.3f} s per model")
    print(f"  bootstrap intervals (overall, per step, {len(per_clip)} metrics) {stats_cost:8.3f} s per model")
    print(f"  paired tests of every pair + summaries {pairs_cost:8.3f} s")
    print(f"  added to {DEMO_MODELS} test passes: {added:.2f} s = {100 * added / (DEMO_MODELS * test_pass):.1f}%")
    total = DEMO_TRAIN_SECONDS + DEMO_MODELS * test_pass
    print(f"  added to the demo compare (8 min training + {DEMO_MODELS} test passes): {100 * added / total:.2f}%")
    extra = {}
    for name in ("linear", "flow"):  # the two baselines' own test passes, new in every report
        t = time.perf_counter()
        test_model(
            create_model(name), RunConfig(model={"name": name}, data=demo, train=TrainConfig(), trainer=TrainerConfig())
        )
        extra[name] = time.perf_counter() - t
    print(
        "  test passes of linear and flow: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in extra.items())
        + f" = {100 * sum(extra.values()) / total:.1f}% of the demo compare"
    )


if __name__ == "__main__":
    main()
