"""Does ``torch.compile`` pay on this CPU? Compile time and steady-state training-step time of
ConvLSTM and PredRNN at their registered ``cpu`` sizes, eager and compiled (inductor, which needs
a C++ compiler), compiled two ways: the recurrent step (``model.step``: every cell of one time
step and the head) and the whole training step (forward, loss and backward through AOTAutograd).

A variant pays if, in a 30-minute run, it trains at least ``--payback`` (1.2) times the steps of
eager training after its compile time is spent:
``(1800 s - compile s) / compiled step s >= 1.2 x 1800 s / eager step s``.

Each variant runs in a process of its own with a time limit (``--timeout``): a compilation that
does not finish in time is recorded as such. Prints a table and writes JSON with the machine
profile and the precision and layout used.

    python benchmarks/compile.py                                  # ~10-20 min on a 2-core CPU
    python benchmarks/compile.py --models convlstm --steps 5 --json   # benchmarks/results/compile-train-quick-fp32-<machine>.json
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from results_tables import add_json_argument, json_path, precision_word, provenance, size_word

from framecast.io import atomic_write_text
from framecast.machine import describe, machine_profile

VARIANTS = ("eager", "step", "train_step")
RUN_SECONDS = 30 * 60


def measure(name: str, variant: str, batch: int, steps: int, precision: str, nc: int, nf: int) -> dict:
    import framecast
    from framecast.speed.precision import resolve

    torch.manual_seed(0)
    model = framecast.create_model(name, size="cpu")
    if precision == "auto":
        choice = resolve(model, "auto", "auto", batch=batch, n_context=nc, n_future=nf, image_size=64)
        precision, channels_last = choice.precision, choice.channels_last
    else:
        channels_last = True
    if channels_last:
        model.to(memory_format=torch.channels_last)
    bf16 = precision == "bf16-mixed"
    clip = torch.rand(batch, nc + nf, 1, 64, 64)
    ctx, fut = clip[:, :nc], clip[:, nc:]
    mask = torch.ones(batch, nc + nf - 2) if model.uses_mask else None
    opt = torch.optim.Adam(model.parameters(), 1e-4)

    def loss_fn():
        out = model(ctx, nf, future=fut, mask=mask)
        return F.mse_loss(out.frames.float(), clip[:, -out.frames.shape[1] :]) + sum(out.losses.values())

    if variant == "step":
        model.step = torch.compile(model.step)
    elif variant == "train_step":
        loss_fn = torch.compile(loss_fn)

    def train_step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    train_step()  # eager: kernels warm up; compiled: traced, compiled and run
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_step()  # a recompilation (e.g. the first step's empty state) shows here
    second = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        train_step()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    return {
        "model": name,
        "variant": variant,
        "batch": batch,
        "frames": [nc, nf],
        "precision": precision,
        "layout": "channels-last" if channels_last else "contiguous",
        "first_steps_s": [first, second],
        "compile_s": max(0.0, first + second - 2 * step_s),  # what the first two steps cost beyond two steps
        "step_s": step_s,
        "steps_timed": steps,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="convlstm,predrnn")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steady-state steps per variant")
    p.add_argument("--precision", default="32", help="32, bf16-mixed or auto (framecast's probe)")
    p.add_argument("--n-context", type=int, default=10)
    p.add_argument("--n-future", type=int, default=10)
    p.add_argument("--timeout", type=float, default=900, help="seconds per variant (compile included)")
    p.add_argument("--payback", type=float, default=1.2)
    add_json_argument(p)
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # child: model variant
    args = p.parse_args()
    if args.one:
        res = measure(*args.one, args.batch, args.steps, args.precision, args.n_context, args.n_future)
        print(json.dumps(res))
        return

    profile = machine_profile()
    print(f"machine: {describe(profile)}")
    rows = []
    for name in args.models.split(","):
        for variant in args.variants.split(","):
            cmd = [sys.executable, __file__, "--one", name, variant, "--batch", str(args.batch)]
            cmd += ["--steps", str(args.steps), "--precision", args.precision]
            cmd += ["--n-context", str(args.n_context), "--n-future", str(args.n_future)]
            t0 = time.perf_counter()
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                rows.append({"model": name, "variant": variant, "error": f"did not finish in {args.timeout:.0f} s"})
                print(f"{name} {variant}: did not finish in {args.timeout:.0f} s")
                continue
            if out.returncode:
                rows.append({"model": name, "variant": variant, "error": out.stderr.strip().splitlines()[-1][:300]})
                print(f"{name} {variant}: failed: {rows[-1]['error']}")
                continue
            res = json.loads(out.stdout.strip().splitlines()[-1])
            res["wall_s"] = time.perf_counter() - t0
            rows.append(res)
            print(
                f"{name} {variant}: compile {res['compile_s']:.1f} s, step {res['step_s']:.3f} s "
                f"({res['precision']}, {res['layout']})",
                flush=True,
            )
    eager = {r["model"]: r for r in rows if r.get("variant") == "eager" and "step_s" in r}
    for r in rows:
        base = eager.get(r["model"])
        if "step_s" not in r or base is None:
            continue
        r["speedup_steady"] = base["step_s"] / r["step_s"]
        steps_eager = RUN_SECONDS / base["step_s"]
        steps_compiled = max(0.0, RUN_SECONDS - r["compile_s"]) / r["step_s"]
        r["steps_in_30_min_vs_eager"] = steps_compiled / steps_eager
        r["pays_back"] = r["variant"] != "eager" and r["steps_in_30_min_vs_eager"] >= args.payback
    print(f"\nbatch {args.batch}, {args.n_context} -> {args.n_future}, precision {args.precision}, cpu sizes")
    print(f"{'model':<10}{'variant':<12}{'compile s':>10}{'step s':>9}{'x eager':>9}{'30-min x':>10}  pays")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<10}{r['variant']:<12}  {r['error']}")
            continue
        print(
            f"{r['model']:<10}{r['variant']:<12}{r['compile_s']:>10.1f}{r['step_s']:>9.3f}"
            f"{r.get('speedup_steady', float('nan')):>9.2f}{r.get('steps_in_30_min_vs_eager', float('nan')):>10.2f}"
            f"  {'yes' if r.get('pays_back') else 'no'}"
        )
    print(
        f"30-min x: training steps in a 30-minute run over eager's, compile time included; a variant pays "
        f"at {args.payback}x"
    )
    path = json_path(args.json, "compile-train", profile, size_word("cpu"), precision_word(args.precision))
    if path:
        info = {**provenance(profile), "payback_threshold": args.payback, "run_seconds": RUN_SECONDS, "results": rows}
        atomic_write_text(path, json.dumps(info, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
