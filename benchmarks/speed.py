"""Speed benchmark: training and inference throughput, peak memory and FLOP efficiency.

For every model: training samples/s (forward + backward + Adam step) and inference samples/s
at a batch size, peak resident memory of a training step, FLOPs per sample (counted by
torch.utils.flop_counter), and effective FLOP/s as a share of this machine's convolution
throughput, measured in the same run with a large 5x5 convolution in fp32 and bf16.

Each model runs in its own process so that peak memory is its own.

    python benchmarks/speed.py                       # quick CPU sizes, batch 16
    python benchmarks/speed.py --preset official     # 4 x 128 channels, patch 4 (slow on a CPU)
    python benchmarks/speed.py --models convlstm --precision bf16 --json out.json
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

PRESETS = {
    # the CPU sizes of configs/compare_quick.yaml (convlstm_seq2seq: smallest that fits a CPU)
    "quick": {
        "convlstm_seq2seq": {"hidden": 32, "patch_size": 4},
        "convlstm": {"num_hidden": [64, 64], "filter_size": 3, "patch_size": 8},
        "predrnn": {"num_hidden": [48, 48], "filter_size": 3, "patch_size": 8},
        "predrnn_v2": {"num_hidden": [48, 48], "filter_size": 3, "patch_size": 8},
        "maxvit": {},
    },
    # the papers' / official code's Moving MNIST configurations
    "official": {
        "convlstm_seq2seq": {},
        "convlstm": {},
        "predrnn": {},
        "predrnn_v2": {},
        "maxvit": {},
    },
}


def conv_peak(dtype: torch.dtype, seconds: float = 2.0) -> float:
    """FLOP/s of a large 5x5 convolution (128 -> 512 channels, 16x16, batch 16), channels-last."""
    x = torch.randn(16, 128, 16, 16, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(512, 128, 5, 5, dtype=dtype).contiguous(memory_format=torch.channels_last)
    flops = 2 * 16 * 512 * 128 * 25 * 16 * 16
    with torch.no_grad():
        F.conv2d(x, w, padding=2)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            F.conv2d(x, w, padding=2)
            n += 1
    return flops * n / (time.perf_counter() - t0)


def measure(name: str, overrides: dict, batch: int, steps: int, precision: str, n_context: int, n_future: int) -> dict:
    import framecast

    torch.manual_seed(0)
    model = framecast.create_model(name, **overrides)
    model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    clip = torch.rand(batch, n_context + n_future, 1, 64, 64)
    ctx, fut = clip[:, :n_context], clip[:, n_context:]
    mask = torch.ones(batch, n_context + n_future - 2) if model.uses_mask else None
    use_bf16 = precision == "bf16"
    opt = torch.optim.Adam(model.parameters(), 1e-4) if params else None

    def train_step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            out = model(ctx, n_future, future=fut, mask=mask)
            loss = F.mse_loss(out.frames.float(), clip[:, -out.frames.shape[1] :])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            model(ctx, n_future)

    res = {"model": name, "overrides": overrides, "params": params, "batch": batch, "precision": precision}

    def rate(fn, kind: str) -> None:
        """Count FLOPs of one call (which also warms up), then time ``steps`` calls."""
        with FlopCounterMode(display=False) as fc:
            fn()
        res[f"{kind}_flops_per_sample"] = fc.get_total_flops() / batch
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        dt = (time.perf_counter() - t0) / steps
        res[f"{kind}_samples_per_s"] = batch / dt
        res[f"{kind}_flop_per_s"] = res[f"{kind}_flops_per_sample"] * batch / dt

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if opt is not None:
        rate(train_step, "train")
    res["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    res["train_step_extra_gib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 2**20
    rate(infer, "infer")
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--models", help="comma-separated subset of the preset's models")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--n-context", type=int, default=10)
    p.add_argument("--n-future", type=int, default=10)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--one", help=argparse.SUPPRESS)  # child process: one model, JSON on stdout
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.one:
        res = measure(
            args.one, json.loads(args.overrides), args.batch, args.steps, args.precision, args.n_context, args.n_future
        )
        print(json.dumps(res))
        return

    models = PRESETS[args.preset]
    if args.models:
        models = {m: models.get(m, {}) for m in args.models.split(",")}
    peaks = {"fp32": conv_peak(torch.float32), "bf16": conv_peak(torch.bfloat16)}
    print(
        f"conv peak (5x5, 128->512, 16x16, batch 16, channels-last): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s; torch threads {torch.get_num_threads()}"
    )
    rows = []
    for name, over in models.items():
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--overrides",
            json.dumps(over),
            "--batch",
            str(args.batch),
            "--steps",
            str(args.steps),
            "--precision",
            args.precision,
            "--n-context",
            str(args.n_context),
            "--n-future",
            str(args.n_future),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(f"{name}: failed\n{out.stderr[-2000:]}")
            continue
        res = json.loads(out.stdout.strip().splitlines()[-1])
        peak = peaks[args.precision]
        res["train_share_of_conv_peak"] = res.get("train_flop_per_s", 0) / peak
        res["infer_share_of_conv_peak"] = res["infer_flop_per_s"] / peak
        rows.append(res)

    head = f"{'model':<18}{'params':>10}{'GFLOP/smp':>12}{'train s/s':>11}{'infer s/s':>11}{'train %pk':>11}{'infer %pk':>11}{'peak GiB':>10}"
    print(
        f"\nbatch {args.batch}, {args.n_context} -> {args.n_future}, precision {args.precision}, preset {args.preset}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['model']:<18}{r['params'] / 1e6:>9.2f}M{r.get('train_flops_per_sample', 0) / 1e9:>12.1f}"
            f"{r.get('train_samples_per_s', 0):>11.2f}{r['infer_samples_per_s']:>11.2f}"
            f"{100 * r['train_share_of_conv_peak']:>10.0f}%{100 * r['infer_share_of_conv_peak']:>10.0f}%{r['peak_rss_gib']:>10.2f}"
        )
    print(
        "GFLOP/smp = training FLOPs per sample (forward + backward); s/s = samples per second; "
        "%pk = effective FLOP/s as a share of the conv peak; peak GiB = peak resident memory of the process"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"conv_peak_flop_per_s": peaks, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
