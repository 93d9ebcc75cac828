"""What this CPU's arithmetic gives: convolution and matrix-product rates in fp32 and bf16, in
contiguous (NCHW) and channels-last layout, forward and forward + backward, at the shapes of the
recurrent models' gate convolutions (official 4 x 128 and the quick CPU sizes).

framecast's ``precision: auto`` (the default) measures the model's own training step instead
(``framecast.speed.precision``); this table shows why no constant is right: on one 2-core machine
bf16 ran at 0.56-0.96x fp32 (AVX512-BF16, no AMX), on another (AMX) at several times fp32.
Every output records the machine profile (``framecast.machine``).

    python benchmarks/precision_layout.py
    python benchmarks/precision_layout.py --json   # benchmarks/results/precision-layout-conv-<machine>.json
"""

import argparse
import json
import time
from functools import partial

import torch
import torch.nn.functional as F
from results_tables import add_json_argument, json_path, provenance

from framecast.io import atomic_write_text
from framecast.machine import describe, machine_profile

# (name, in channels, out channels, kernel, size, batch)
CONVS = [
    ("predrnn 4x128 conv_h", 128, 512, 5, 16, 16),
    ("convlstm 4x128 fused [x,h]", 256, 512, 5, 16, 16),
    ("quick convlstm 2x64 fused", 128, 256, 3, 8, 8),
]


def rate(fn, flops: float, seconds: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return flops * n / (time.perf_counter() - t0) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    add_json_argument(p, "the rows")
    args = p.parse_args()
    rows = []
    profile = machine_profile()
    print(f"machine: {describe(profile)}; oneDNN ISA: {_isa()}")
    print(f"{'shape':<28}{'pass':<10}{'dtype':<10}{'layout':<8}{'GFLOP/s':>9}")
    for name, cin, cout, k, hw, b in CONVS:
        fwd = 2 * b * hw * hw * cin * cout * k * k
        for pas in ("forward", "fwd+bwd"):
            for dtype in (torch.float32, torch.bfloat16):
                for layout in (torch.contiguous_format, torch.channels_last):
                    x = torch.randn(b, cin, hw, hw, dtype=dtype).contiguous(memory_format=layout)
                    w = torch.randn(cout, cin, k, k, dtype=dtype).contiguous(memory_format=layout)
                    if pas == "forward":
                        with torch.no_grad():
                            g = rate(partial(F.conv2d, x, w, padding=k // 2), fwd, args.seconds)
                    else:
                        g = rate(partial(_fwd_bwd, x.requires_grad_(), w.requires_grad_(), k), 3 * fwd, args.seconds)
                    lay = "NCHW" if layout == torch.contiguous_format else "CL"
                    dt = str(dtype).removeprefix("torch.")
                    rows.append({"shape": name, "pass": pas, "dtype": dt, "layout": lay, "gflops": g})
                    print(f"{name:<28}{pas:<10}{dt:<10}{lay:<8}{g:>9.0f}")
    for dtype in (torch.float32, torch.bfloat16):
        a, b2 = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        g = rate(partial(torch.matmul, a, b2), 2 * 2048**3, args.seconds)
        dt = str(dtype).removeprefix("torch.")
        rows.append({"shape": "matmul 2048", "pass": "forward", "dtype": dt, "layout": "-", "gflops": g})
        print(f"{'matmul 2048':<28}{'forward':<10}{dt:<10}{'-':<8}{g:>9.0f}")
    fp32 = {(r["shape"], r["pass"], r["layout"]): r["gflops"] for r in rows if r["dtype"] == "float32"}
    ratios = [r["gflops"] / fp32[r["shape"], r["pass"], r["layout"]] for r in rows if r["dtype"] == "bfloat16"]
    print(f"bf16 / fp32, same shape, pass and layout: {min(ratios):.2f}x to {max(ratios):.2f}x")
    path = json_path(args.json, "precision-layout-conv", profile)
    if path:
        info = {**provenance(profile), "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
        atomic_write_text(path, json.dumps(info, indent=2))
        print(f"wrote {path}")


def _fwd_bwd(x: torch.Tensor, w: torch.Tensor, k: int) -> None:
    F.conv2d(x, w, padding=k // 2).sum().backward()


def _isa() -> str:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        return "unknown"


if __name__ == "__main__":
    main()
