"""Training samples/s per batch size and precision, at a model's registered size.

Why the recurrent CPU configs train at batch 16: at their cpu sizes bf16-mixed's per-call costs
outweigh its arithmetic at small batches, so its gain over fp32 shows only at larger ones. This
times a full training step (forward, backward, optimiser; ``precision.probe_steps``, the probe
``precision: auto`` uses, here at a fixed batch and a longer budget) for each batch and for fp32
and bf16-mixed, channels-last, and prints samples/s with the machine profile.

    python benchmarks/batch_size.py --models convlstm,predrnn,predrnn_v2 --batches 8,16 --json out.json
    python benchmarks/batch_size.py --models predrnn --batches 16 --set checkpoint_cells=true   # a model key changed
"""

import argparse
import json

from results_tables import add_json_argument, json_path, provenance, size_word

import framecast
from framecast.config import parse_set
from framecast.errors import ConfigError
from framecast.io import atomic_write_text
from framecast.machine import describe, machine_profile
from framecast.registry import get_entry, list_models
from framecast.speed.probe import probe_steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="convlstm,predrnn,predrnn_v2")
    p.add_argument("--batches", default="8,16")
    p.add_argument("--size", default="cpu", help="the registered size every model runs at")
    p.add_argument("--n-context", type=int, default=10)
    p.add_argument("--n-future", type=int, default=10)
    p.add_argument("--seconds", type=float, default=40.0, help="time budget per model and batch")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a model config key for every model")
    add_json_argument(p)
    args = p.parse_args()
    try:
        overrides = parse_set(args.set)
    except ConfigError as e:
        p.error(str(e))
    names = args.models.split(",")
    unknown = [n for n in names if n not in list_models() or not get_entry(n).trainable]
    if unknown:
        p.error(f"--models: not a trainable model: {', '.join(unknown)}; choose from: {', '.join(list_models())}")
    profile = machine_profile()
    print(f"machine: {describe(profile)}")
    rows = []
    candidates = [("32", True), ("bf16-mixed", True)]
    for name in names:
        model = framecast.create_model(name, size=args.size, **overrides)
        for batch in (int(b) for b in args.batches.split(",")):
            times, info = probe_steps(
                model,
                candidates,
                batch=batch,
                n_context=args.n_context,
                n_future=args.n_future,
                seconds=args.seconds,
            )
            sps = {k: info["batch"] / t for k, t in times.items()}
            row = {"model": name, "batch": info["batch"], "rounds": info["rounds"], "samples_per_s": sps}
            rows.append({**row, "overrides": overrides} if overrides else row)
            print(
                f"{name:<14} batch {info['batch']:>3}{' ' + str(overrides) if overrides else ''}: "
                + ", ".join(f"{k} {v:.1f} samples/s" for k, v in sps.items())
                + f" ({info['rounds']} timed rounds)",
                flush=True,
            )
    path = json_path(args.json, "batch-size-train", profile, size_word(args.size), f"{args.seconds:g}s")
    if path:
        doc = {**provenance(profile), "frames": [args.n_context, args.n_future], "results": rows}
        atomic_write_text(path, json.dumps(doc, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
