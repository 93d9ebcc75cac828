"""Forecasting one clip at batch 1: where the official PredRNN's time goes, and how far it is
from this machine's limit.

Issue 14's target: PredRNN 4 x 128 (patch 4), one 64x64 clip, 10 -> 10, at batch 1, within 1.3x
of the clip's FLOPs divided by the bf16 conv peak (``speed.py``'s 5x5 convolution at batch 16).
This script measures, in one process:

- each gate convolution of one ST-LSTM cell at batch 1 (16x16 maps), at every thread count from
  1 to torch's: plain ``nn.Conv2d`` under bf16 autocast, and the bare oneDNN op on the weight
  packed without the input's shape (how ``framecast.speed.packed`` first packed) and packed for
  it (now);
- the clip through the ``Forecaster`` (bf16-mixed, packed), eager and compiled
  (``Forecaster(compile=True)``: torch.compile of the recurrent step), alternating, medians,
  with the compile time;
- reading the packed weights once per frame (19 times), the memory traffic batch 1 cannot share;
- the clip's convolutions alone: every convolution call of one forecast replayed on its
  recorded input as the bare oneDNN op, without the gate arithmetic between them or any Python
  around them. Fusing the arithmetic into the convolutions (inductor does some) can go a little
  below it; otherwise only faster convolutions at batch 1 would.

    python benchmarks/batch1.py                  # ~1-2 min on a 2-core CPU
    python benchmarks/batch1.py --json           # benchmarks/results/batch1-forecast-official-predrnn-<machine>.json
"""

import argparse
import json
import statistics
import time

import torch
from results_tables import add_json_argument, json_path, provenance
from speed import CLIP_LIMIT_FACTOR, conv_peak
from torch import nn

import framecast
from framecast.evaluation.compare import flop_counter
from framecast.forecasting import Forecaster
from framecast.io import atomic_write_text
from framecast.machine import describe, machine_profile
from framecast.speed.packed import PackedConv2d, available

# one cell's gate convolutions at the official size: (name, in, out, kernel)
CELL_CONVS = [
    ("conv_x (bottom cell)", 16, 896, 5),
    ("conv_x", 128, 896, 5),
    ("conv_h", 128, 512, 5),
    ("conv_m", 128, 384, 5),
    ("conv_o", 256, 128, 5),
    ("conv_last (1x1)", 256, 128, 1),
]


def timed(fn, reps: int, rounds: int = 3) -> float:
    """Best of ``rounds`` means over ``reps`` calls, in seconds (after two warm-up calls)."""
    fn()
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def time_conv(cin: int, cout: int, k: int) -> tuple[float, float, float]:
    """Seconds per call at batch 1 on 16x16 maps: plain, packed without and with the shape."""
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(1, cin, 16, 16).contiguous(memory_format=torch.channels_last)
    packed = PackedConv2d(conv)
    unshaped = packed._reorder(None)  # the layout oneDNN picks without the input's shape
    shaped = packed.packed_for(x)  # the layout picked for this input's shape
    xb = x.to(torch.bfloat16)
    args = (None, packed.padding, packed.stride, packed.dilation, packed.groups, "none", [], "")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = timed(lambda: conv(x), 20)
        old = timed(lambda: torch.ops.mkldnn._convolution_pointwise(xb, unshaped, *args), 3, 2)
        new = timed(lambda: torch.ops.mkldnn._convolution_pointwise(xb, shaped, *args), 20)
    return plain, old, new


def gate_convs(threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    rows = []
    for name, cin, cout, k in CELL_CONVS:
        plain, old, new = time_conv(cin, cout, k)
        flops = 2 * 256 * cin * cout * k * k
        rows.append(
            {
                "conv": name,
                "threads": threads,
                "plain_us": plain * 1e6,
                "packed_without_shape_us": old * 1e6,
                "packed_us": new * 1e6,
                "packed_gflop_per_s": flops / new / 1e9,
            }
        )
        r = rows[-1]
        print(
            f"  {threads} thread(s) {name:21s} plain {r['plain_us']:8.0f} us   packed without shape "
            f"{r['packed_without_shape_us']:8.0f} us   packed {r['packed_us']:6.0f} us "
            f"({r['packed_gflop_per_s']:.0f} GFLOP/s)",
            flush=True,
        )
    return rows


def clip(threads: int, rounds: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = framecast.create_model("predrnn").eval()  # published size: 4 x 128, patch 4
    ctx = torch.rand(1, 10, 1, 64, 64)
    with torch.no_grad(), flop_counter() as fc:
        model(ctx, 10)
    flops = fc.get_total_flops()

    eager = Forecaster(model, 10, 10, precision="bf16-mixed", channels_last=True, log=None, pack_weights=True)
    compiled = Forecaster(
        model, 10, 10, precision="bf16-mixed", channels_last=True, log=print, pack_weights=True, compile=True
    )
    if not compiled.compiled:
        raise SystemExit("torch.compile failed here (above): nothing compiled to time")

    def run(m: nn.Module) -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            m(ctx, 10)

    # the clip's convolutions alone, replayed on their recorded inputs
    calls: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: calls.append((mod, inp[0])))
        for m in eager.model.modules()
        if isinstance(m, (PackedConv2d, nn.Conv2d))
    ]
    run(eager.model)
    for h in hooks:
        h.remove()

    # the bare oneDNN op on each packed weight: no module call, cast or layout change around it
    bare = [
        (x.to(torch.bfloat16), m.packed_for(x), m.bias, m.padding, m.stride, m.dilation, m.groups, "none", [], "")
        for m, x in calls
        if isinstance(m, PackedConv2d)
    ]
    plain = [(m, x) for m, x in calls if not isinstance(m, PackedConv2d)]

    def convs_only() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for a in bare:
                torch.ops.mkldnn._convolution_pointwise(*a)
            for m, x in plain:
                m(x)

    run(eager.model)
    run(compiled.model)
    times: dict[str, list[float]] = {"eager": [], "compiled": [], "convolutions_only": []}
    for _ in range(rounds):  # alternating: this machine's speed drifts within minutes
        for key, fn in (
            ("eager", lambda: run(eager.model)),
            ("compiled", lambda: run(compiled.model)),
            ("convolutions_only", convs_only),
        ):
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {
        "threads": threads,
        "clip_flops": flops,
        "conv_calls": len(calls),
        "packed": eager.packed,
        "compiled": compiled.compiled,
        "compile_s": compiled.compile_seconds,  # compiling and the first compiled warm-up
        **weight_reads(eager.model, steps=19),
        "compiled_throughout": compiled.compiled,  # no fallback to eager while timed
        **{f"{k}_s": statistics.median(v) for k, v in times.items()},
        **{f"{k}_all_s": v for k, v in times.items()},
    }


def weight_reads(model: nn.Module, steps: int) -> dict:
    """Seconds to read every packed convolution's bf16 weight once per step (a max over a flat
    copy of each, ``steps`` times): what streaming the weights through the cache costs at batch 1."""
    weights = [m.weight.reshape(-1).contiguous() for m in model.modules() if isinstance(m, PackedConv2d)]
    total = sum(w.numel() * w.element_size() for w in weights)

    def read() -> None:
        for _ in range(steps):
            for w in weights:
                w.max()

    s = timed(read, 1, 3)
    return {"weight_bytes": total, "weight_reads_s": s, "weight_read_gb_per_s": steps * total / s / 1e9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8, help="alternating timed clips per variant")
    add_json_argument(p)
    args = p.parse_args()
    if not available():
        raise SystemExit("this torch or CPU has no oneDNN bf16 convolutions: nothing to pack, nothing to measure")
    threads = torch.get_num_threads()
    profile = machine_profile()
    print(f"machine: {describe(profile)}")
    peak = conv_peak(torch.bfloat16)
    print(f"bf16 conv peak (5x5, 128->512, 16x16, batch 16, channels-last): {peak / 1e9:.0f} GFLOP/s")
    print("gate convolutions of one ST-LSTM cell at batch 1 (16x16 maps, bf16, channels-last):")
    convs = [row for n in range(1, threads + 1) for row in gate_convs(n)]
    torch.set_num_threads(threads)
    res = clip(threads, args.rounds)
    limit = res["clip_flops"] / peak
    res["limit_s"] = limit
    print(
        f"official PredRNN, one clip 10 -> 10 at batch 1, {threads} threads ({res['clip_flops'] / 1e9:.0f} GFLOP, "
        f"{res['conv_calls']} convolution calls):\n"
        f"  limit (FLOPs / bf16 peak)            {limit:.3f} s; target {CLIP_LIMIT_FACTOR} x = "
        f"{CLIP_LIMIT_FACTOR * limit:.3f} s\n"
        f"  Forecaster, eager (packed)           {res['eager_s']:.3f} s = {res['eager_s'] / limit:.2f} x limit\n"
        f"  Forecaster(compile=True)             {res['compiled_s']:.3f} s = {res['compiled_s'] / limit:.2f} x limit "
        f"(compiled in {res['compile_s']:.1f} s)\n"
        f"  its convolutions alone (the floor)   {res['convolutions_only_s']:.3f} s = "
        f"{res['convolutions_only_s'] / limit:.2f} x limit\n"
        f"  reading its {res['weight_bytes'] / 1e6:.0f} MB of bf16 weights 19 times {res['weight_reads_s']:.3f} s "
        f"({res['weight_read_gb_per_s']:.1f} GB/s)"
    )
    path = json_path(args.json, "batch1-forecast", profile, "official", "predrnn")
    if path:
        out = {**provenance(profile), "bf16_conv_peak_flop_per_s": peak, "gate_convolutions": convs, "clip": res}
        atomic_write_text(path, json.dumps(out, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
