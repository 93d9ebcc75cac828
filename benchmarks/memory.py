"""Peak memory of training, step after step: with glibc's malloc as it is (``default``), with the
activation arena ``framecast fit`` uses by default (``arena``: ``framecast.speed.arena.ActivationArena``,
``trainer.activation_arena``), and with the mmap threshold fixed as ``FRAMECAST_MALLOC=fixed``
sets it (``fixed``: ``framecast.speed.malloc.fix_mmap_threshold``): the resident-set peak after each of
a few training steps, the step times, and the last loss (equal bit for bit: neither changes what
is computed). Each run is a process of its own, so every peak is its own. As in ``fit``, a
step's outputs are gone before the next step begins.

    python benchmarks/memory.py                                           # PredRNN, PredRNN-V2, published sizes
    python benchmarks/memory.py --models predrnn,mim --size cpu --batch 8 --steps 10
    python benchmarks/memory.py --models predrnn --modes fixed --thp   # PyTorch's huge-page allocations
    python benchmarks/memory.py --models predrnn --modes default --set checkpoint_cells=1   # a model key changed

``--thp`` sets ``THP_MEM_ALLOC_ENABLE=1`` for the children: PyTorch then aligns its CPU
allocations of 2 MiB and more to 2 MiB and asks for transparent huge pages (``madvise``), so a
freshly mapped activation takes one page fault instead of 512 (where the kernel's THP mode is
``madvise`` or ``always``).
"""

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time

import torch
from results_tables import add_json_argument, json_path, provenance, size_word

from framecast.config import parse_set
from framecast.errors import ConfigError
from framecast.io import atomic_write_text
from framecast.machine import describe, machine_profile

MODES = ("default", "arena", "fixed")


def measure(name: str, mode: str, size: str, batch: int, steps: int, overrides: dict) -> dict:
    from framecast.speed.arena import ActivationArena
    from framecast.speed.malloc import fix_mmap_threshold

    done = fix_mmap_threshold(force=True) if mode == "fixed" else None  # before any tensor exists
    import framecast
    from framecast.registry import model_size

    torch.manual_seed(0)
    model = framecast.create_model(name, **{**model_size(name, size), **overrides}).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    channels = getattr(model.config, "channels", 1)
    clip = torch.rand(batch, 20, channels, 64, 64)
    mask = torch.ones(batch, 18) if model.uses_mask else None
    arena = ActivationArena() if mode == "arena" else None

    def step() -> float:  # fp32, contiguous: the arithmetic of the official code
        opt.zero_grad(set_to_none=True)  # as fit: the last gradients go before the forward pass
        with arena.saving() if arena is not None else contextlib.nullcontext():
            out = model(clip[:, :10], 10, future=clip[:, 10:], mask=mask)
        loss = (out.frames - clip[:, -out.frames.shape[1] :]).pow(2).mean() + sum(out.losses.values())
        loss.backward()
        opt.step()
        return loss.item()

    peaks, times = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
        peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {
        "model": name,
        "allocator": done or "C library default",
        "mode": mode,
        # what a forward pass copied into the arena, and what it holds after the last step
        **(
            {"arena_pass_gib": arena.pass_bytes / 2**30, "arena_gib": arena.reserved_bytes / 2**30}
            if arena is not None
            else {}
        ),
        "size": size,
        **({"overrides": overrides} if overrides else {}),
        "batch": batch,
        "peak_gib_after_step": peaks,
        "step_s": times,
        "last_loss": loss,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="predrnn,predrnn_v2")
    p.add_argument("--size", default="published", help="registered size: published, cpu or test")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument(
        "--modes", default=",".join(MODES), help="modes: default, arena (what fit uses), fixed (FRAMECAST_MALLOC=fixed)"
    )
    p.add_argument("--thp", action="store_true", help="THP_MEM_ALLOC_ENABLE=1: PyTorch's huge-page allocations")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a model config key for every model")
    add_json_argument(p)
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # child: model mode
    args = p.parse_args()
    try:
        overrides = parse_set(args.set)
    except ConfigError as e:
        p.error(str(e))
    if args.one:
        print(json.dumps(measure(*args.one, args.size, args.batch, args.steps, overrides)))
        return
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        p.error(f"--modes: unknown {', '.join(sorted(unknown))}; choose from: {', '.join(MODES)}")
    profile = machine_profile("32", "contiguous")
    print(f"machine: {describe(profile)}")
    rows = []
    env = {**os.environ, **({"THP_MEM_ALLOC_ENABLE": "1"} if args.thp else {})}
    for name in args.models.split(","):
        for mode in args.modes.split(","):
            cmd = [sys.executable, __file__, "--one", name, mode, "--size", args.size]
            cmd += ["--batch", str(args.batch), "--steps", str(args.steps)]
            cmd += [f"--set={item}" for item in args.set or []]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode:
                print(f"{name} {mode}: failed\n{out.stderr[-2000:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r["thp_alloc"] = args.thp
            rows.append(r)
            peaks = " ".join(f"{g:.2f}" for g in r["peak_gib_after_step"])
            times = " ".join(f"{t:.2f}" for t in r["step_s"])
            print(f"{name:<12}{mode:<9}peak GiB after each step: {peaks}   step s: {times}   loss {r['last_loss']:.8f}")
            print(f"{'':<21}allocator: {r['allocator']}", flush=True)
    for name in args.models.split(","):
        losses = {r["last_loss"] for r in rows if r["model"] == name}
        if sum(r["model"] == name for r in rows) > 1:
            print(f"{name}: the same loss bit for bit in every mode: {len(losses) == 1}")
    path = json_path(args.json, "memory-train", profile, size_word(args.size), "fp32")
    if path:
        atomic_write_text(path, json.dumps({**provenance(profile), "results": rows}, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
