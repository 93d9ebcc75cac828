"""The ``framecast`` command line.

    framecast models [PATTERN]
    framecast fit     [--config FILE]... [--section.key VALUE]... [--no-resume]
    framecast test    [--checkpoint CKPT] [--config FILE]... [--section.key VALUE]... [--out DIR]
                      (results: --out DIR, else beside CKPT in <name>.test/)
    framecast compare [--config FILE]... [--models a,b] [--section.key VALUE]...
    framecast forecast VIDEO --checkpoint CKPT [--out forecast.gif]
    framecast export  CKPT --out model.safetensors
    framecast convert SRC --from official|openstl --model predrnn_v2 [--set key=value]... --out CKPT

Configs follow Lightning's conventions: YAML files with sections ``model``, ``data``,
``train`` and ``trainer``, later files and dotted overrides winning (``--trainer.max_epochs 3``).
Wherever a command takes a checkpoint, an exported ``.safetensors`` file works too.
``python -m framecast`` is the same command. ``--debug`` (before or after the command, or
``FRAMECAST_DEBUG=1``) shows the traceback of any error instead of one line.
"""

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from framecast.cli.options import _config_help, _config_usage, _print_yaml, _trained_data, _values, results_folder
from framecast.errors import FramecastError, MissingPackage


def cmd_models(args: argparse.Namespace, rest: list[str]) -> None:
    from framecast import list_models
    from framecast.registry import get_entry, parameter_count

    names = list_models(args.pattern)
    if not names:
        raise FramecastError(f"no model matches '{args.pattern}'; `framecast models` lists them all")
    from framecast.evaluation.compare import registered_flops

    width = max(map(len, names))
    order = ("published", "cpu", "test")
    print(
        f"{'model':<{width}}  " + "  ".join(f"{s:>9}" for s in order) + f"  {'GFLOPs published':>16}  {'cpu':>6}  "
        "(parameters per registered size; forward GFLOPs of one 10 -> 10 clip)"
    )
    for name in names:
        entry = get_entry(name)
        counts = []
        try:
            for size in order:
                if size in entry.sizes:
                    counts.append(f"{parameter_count(name, size) / 1e6:7.2f} M")
                else:
                    counts.append(f"{'-' if entry.trainable else '0':>9}")
            flops = [registered_flops(name, s) if s in entry.sizes else None for s in ("published", "cpu")]
        except MissingPackage as e:  # an optional extra not installed: listed, with how to get it
            dashes = "  ".join(f"{'-':>9}" for _ in order)
            print(f"{name:<{width}}  {dashes}  {'-':>16}  {'-':>6}  {entry.description} ({e})")
            continue
        shown = [f"{f / 1e9:.1f}" if f else "-" for f in flops]
        print(f"{name:<{width}}  {'  '.join(counts)}  {shown[0]:>16}  {shown[1]:>6}  {entry.description}")
    print("FLOPs count a multiply-add as 2 (torch.utils.flop_counter); OpenSTL's tables (fvcore) count it as 1")


def _is_rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def cmd_fit(args: argparse.Namespace, rest: list[str]) -> None:
    from framecast.config import build_run_config
    from framecast.io import previous_path
    from framecast.resolve import resolve_run
    from framecast.training.runner import fit

    run = resolve_run(build_run_config(_values(rest)))  # once, here: everything below reads it
    cfg = run.config
    if args.print_config:
        _print_yaml(run.as_dict())
        return
    if args.resume and args.no_resume:
        raise FramecastError("--resume and --no-resume contradict each other; pick one")
    last = Path(cfg.out_dir) / "checkpoints" / "last.ckpt"
    if args.resume and not (last.is_file() or previous_path(last).is_file()):
        raise FramecastError(f"--resume: no checkpoint to resume from in {last.parent}")
    stats = fit(run, resume=not args.no_resume)
    if _is_rank_zero():
        print(json.dumps({k: v for k, v in stats.items() if k != "loss_curve"}, indent=2))


def cmd_test(args: argparse.Namespace, rest: list[str]) -> None:
    import dataclasses

    from framecast import create_model, load_checkpoint
    from framecast.changes import TEST_SAFE_DATA_KEYS
    from framecast.config import DataConfig, build_dataclass, build_run_config, merge, show_value, to_dict
    from framecast.io import atomic_write_text
    from framecast.resolve import ResolvedRun, resolve_data, resolve_run
    from framecast.training.checks import check_model_fits
    from framecast.training.testing import describe_data, test_model

    values = _values(rest)
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint)
        trained, guessed = _trained_data(args.checkpoint, model)
        if guessed and _is_rank_zero():
            print(f"framecast: note: {guessed}", file=sys.stderr)
        values.setdefault("model", {})["name"] = model.model_name
        cfg = build_run_config(merge({"data": trained or {}}, values))  # the checkpoint's data by default
        cfg = dataclasses.replace(cfg, data=resolve_data(cfg.data))
        run = ResolvedRun(cfg, to_dict(model.config))  # the model is scored as it was trained
        check_model_fits(model, cfg.data)  # data the model cannot take: one error line, no note first
        if trained is not None and _is_rank_zero():
            was, now = to_dict(resolve_data(build_dataclass(DataConfig, trained, prefix="data."))), to_dict(cfg.data)
            changed = [k for k in now if k not in TEST_SAFE_DATA_KEYS and now[k] != was.get(k)]
            if changed:
                print(
                    "framecast: note: scoring on other data than the checkpoint was trained on ("
                    + "; ".join(f"data.{k}: {show_value(was.get(k))} -> {show_value(now[k])}" for k in changed)
                    + ")",
                    file=sys.stderr,
                )
    else:
        if "name" not in values.get("model", {}):
            raise FramecastError(
                "framecast test needs --checkpoint CKPT, or --model.name for a baseline such as copy_last"
            )
        run = resolve_run(build_run_config(values))
        cfg = run.config
        model = create_model(run.model_name, **run.model)
    from framecast.evaluation.compare import make_lpips
    from framecast.evaluation.fvd import make_fvd

    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    lpips = None if cfg.data.is_array else make_lpips(args.lpips, say)  # images only
    fvd = make_fvd(args.fvd, cfg.data.test_length - cfg.data.n_context, say, arrays=cfg.data.is_array)
    from framecast.evaluation.robustness import against_clean, describe_change, parse_corruptions

    corruptions = parse_corruptions(args.robustness)  # a bad item fails before any scoring
    res = test_model(model, run, lpips=lpips, fvd=fvd)
    robust = {
        f"{kind} {rate:g}": test_model(model, run, lpips=lpips, corruption=(kind, rate, args.robustness_seed))
        for kind, rate in corruptions
    }
    if not _is_rank_zero():
        return  # under DDP every rank holds the gathered results; rank 0 writes them
    out = Path(args.out) if args.out else results_folder(args.checkpoint)
    record = {"model": model.model_name, "checkpoint": args.checkpoint, **res, "data_config": to_dict(cfg.data)}
    if robust:  # each with its paired test against the clean scores of the same clips
        robust = {name: {**r, "against_clean": against_clean(r, res)} for name, r in robust.items()}
        record["robustness"] = {"seed": args.robustness_seed, **robust}
    atomic_write_text(out / "metrics.json", json.dumps(record, indent=2))
    buf = io.StringIO()
    names = list(res["per_horizon"])
    bands = res.get("per_horizon_ci95", {})  # 95% bootstrap interval over the test clips per step
    w = csv.writer(buf)
    w.writerow(["horizon", *(c for n in names for c in (n, *((f"{n}_lo", f"{n}_hi") if n in bands else ())))])
    for h in range(len(res["per_horizon"][names[0]])):
        w.writerow(
            [h + 1, *(c for n in names for c in (res["per_horizon"][n][h], *(bands[n][h] if n in bands else ())))]
        )
    atomic_write_text(out / "per_horizon.csv", buf.getvalue())
    print(f"{model.model_name} on {describe_data(res['data'])}:")
    print(json.dumps(res["mean"], indent=2))
    if res.get("ci95"):
        b = res["bootstrap"]
        blocks = f", blocks of {b['block']} clips" if b.get("block", 1) > 1 else ""
        print(
            f"95% intervals (bootstrap over the {res['n_clips']} test clips, {b['n_boot']} resamples{blocks}, "
            f"seed {b['seed']}): "
            + ", ".join(
                f"{k} [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in res["ci95"].items() if "/" not in k and k != "fvd"
            )
        )
        if "fvd" in res["ci95"]:
            lo, hi = res["ci95"]["fvd"]
            print(f"fvd {res['mean']['fvd']:.4g} [{lo:.4g}, {hi:.4g}] ({res['fvd']['interval']})")
    for name, r in robust.items():
        lo, hi = r.get("ci95", {}).get("mse", (float("nan"), float("nan")))
        print(
            f"context {name} (seed {args.robustness_seed}): mse {r['mean']['mse']:.4g} [{lo:.4g}, {hi:.4g}], "
            f"{describe_change(record['robustness'][name]['against_clean'])} against clean on the same clips"
        )
    print(f"wrote {out / 'metrics.json'} and {out / 'per_horizon.csv'}")


def cmd_compare(args: argparse.Namespace, rest: list[str]) -> None:
    from framecast.config import merge
    from framecast.evaluation.compare import build_compare_config, compare

    values = _values(rest)
    if args.models:
        values["models"] = args.models
    if args.out:
        values = merge(values, {"out_dir": args.out})
    cfg = build_compare_config(values)
    if args.print_config:
        _print_yaml(_resolved_compare(cfg))
        return
    compare(cfg)
    print(f"report: {Path(cfg.out_dir) / 'report.md'}")


def _resolved_compare(cfg: Any) -> dict[str, Any]:
    """A comparison's config as plain values, each model's keys resolved from the registry (its
    own train overrides kept as given): loaded again, it runs the same comparison."""
    from framecast.config import to_dict
    from framecast.evaluation.compare import run_config
    from framecast.resolve import resolve_model_config

    out = to_dict(cfg)
    for label, spec in cfg.models.items():
        run = run_config(cfg, label)
        train = {"train": to_dict(spec["train"])} if spec.get("train") else {}
        out["models"][label] = {"name": run.model_name, **resolve_model_config(run), **train}
    return out


def cmd_forecast(args: argparse.Namespace, rest: list[str]) -> None:
    from framecast import load_checkpoint
    from framecast.forecasting import forecast_video

    if rest:
        raise FramecastError(f"unexpected arguments: {' '.join(rest)}")
    if not args.checkpoint:
        raise FramecastError(
            "framecast forecast needs --checkpoint CKPT (a model trained with framecast fit, or its export)"
        )
    model = load_checkpoint(args.checkpoint)
    from framecast.data.array import is_array_path

    if is_array_path(args.video):  # gridded arrays: arrays out, plus pictures of chosen channels
        from framecast.forecasting import forecast_array

        if args.start_time is not None:
            raise FramecastError("--start-time is for videos; give an array's first context step with --start")
        stem = Path(args.video.rstrip("/")).with_suffix("").name
        xarray_in = Path(args.video).suffix.lower() in (".nc", ".zarr")
        out = Path(args.out or f"{stem}_forecast" + (".nc" if xarray_in else ".npy"))
        channels = [c.strip() for c in args.channels.split(",") if c.strip()] if args.channels else None
        res = forecast_array(
            model,
            args.video,
            out,
            args.start,
            args.n_future,
            channels,
            cmap=args.cmap,
            fps=args.fps,
            precision=args.precision,
        )
        first, last = res["start"], res["start"] + res["n_context"] - 1
        where = f"steps {first}..{last}" if res["layout"] == "series" else f"clip {first}"
        print(
            f"{model.model_name}: {where} of {args.video} as context, {res['n_future']} steps predicted "
            f"({', '.join(res['channels'])}), {res['truth_steps']} with truth"
        )
        if res["scores"]:
            print("step  " + "  ".join(f"RMSE {c}" for c in res["channels"]))
            for s in res["scores"]:
                print(f"{s['step']:4d}  " + "  ".join(f"{s[c]:{len(c) + 5}.4g}" for c in res["channels"]))
        print(f"wrote {', '.join(res['files'])}")
        return
    out = Path(args.out or Path(args.video).with_suffix("").name + "_forecast.gif")
    res = forecast_video(
        model,
        args.video,
        out,
        start=args.start or 0,
        start_time=args.start_time,
        n_future=args.n_future,
        fps=args.fps,
        precision=args.precision,
    )
    print(
        f"{model.model_name}: frames {res['start']}..{res['start'] + res['n_context'] - 1} of {args.video} as "
        f"context, {res['n_future']} predicted, {res['truth_frames']} with truth"
    )
    if res["scores"]:
        print("frame  MSE (sum/frame)  SSIM")
        for s in res["scores"]:
            print(f"{s['frame']:5d}  {s['mse']:15.2f}  {s['ssim']:.4f}")
    print(f"wrote {out}")


def cmd_export(args: argparse.Namespace, rest: list[str]) -> None:
    from framecast.checkpoint import export_safetensors

    if rest:
        raise FramecastError(f"unexpected arguments: {' '.join(rest)}")
    out = export_safetensors(args.checkpoint, args.out)
    print(f"wrote {out} and {out.with_suffix('.json')}")


def cmd_convert(args: argparse.Namespace, rest: list[str]) -> None:
    from framecast.config import parse_set
    from framecast.convert import convert

    if rest:
        raise FramecastError(f"unexpected arguments: {' '.join(rest)}")
    out, notes = convert(args.src, args.source, args.model, args.out, parse_set(args.set))
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {out}")


DEBUG_HELP = "show the full traceback of any error (also: FRAMECAST_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="framecast", description="Video frame prediction: train, test, compare, forecast.")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("models", help="list the registered models")
    s.add_argument("pattern", nargs="?", default="*")
    s.set_defaults(func=cmd_models)
    s = sub.add_parser("fit", help="train a model (--config FILE, --section.key VALUE)", **_config_usage("fit"))
    s.add_argument("--resume", action="store_true", help="continue from last.ckpt (the default); fail if there is none")
    s.add_argument("--no-resume", action="store_true", help="start over even if the run folder has last.ckpt")
    s.set_defaults(func=cmd_fit)
    s = sub.add_parser("test", help="score a checkpoint or a baseline on the test set", **_config_usage("test"))
    s.add_argument("--checkpoint")
    s.add_argument(
        "--out",
        metavar="DIR",
        help="folder for metrics.json and per_horizon.csv (default: beside the checkpoint, <name>.test/: "
        "model.safetensors -> model.test/; a baseline: runs/test/)",
    )
    s.add_argument(
        "--lpips", choices=["auto", "on", "off"], default="auto", help="LPIPS metric (needs AlexNet weights)"
    )
    s.add_argument(
        "--fvd",
        choices=["auto", "on", "off"],
        default="auto",
        help="FVD over the test clips (needs I3D's Kinetics-400 weights and 9+ future frames)",
    )
    s.add_argument(
        "--robustness",
        metavar="KIND:RATE",
        action="append",
        default=[],
        help="also score with the context corrupted (PredBench): drop:0.2, duplicate:0.2 or noise:0.05; repeatable "
        "(long-term: --data.test_n_future; generalization: --data.* of the other data)",
    )
    s.add_argument("--robustness-seed", type=int, default=0, help="seed of the corruptions (default: 0)")
    s.set_defaults(func=cmd_test)
    s = sub.add_parser(
        "compare", help="train and compare models under one budget; writes a report", **_config_usage("compare")
    )
    s.add_argument("--models", help="comma-separated model names (default: the config's)")
    s.add_argument("--out", help="report folder (same as --out_dir)")
    s.set_defaults(func=cmd_compare)
    s = sub.add_parser("forecast", help="forecast the future of a video from a checkpoint; writes a GIF or MP4")
    s.add_argument("video", help="a video file or a folder of frame images")
    s.add_argument("--checkpoint", metavar="CKPT", help="a framecast checkpoint, or its .safetensors export")
    s.add_argument(
        "--start",
        type=int,
        metavar="int",
        help="first context frame, an index (default: 0; arrays: the last n_context steps, clips: the last clip)",
    )
    s.add_argument(
        "--start-time", type=float, metavar="float", help="first context frame, in seconds (instead of --start)"
    )
    s.add_argument("--n-future", type=int, metavar="int", help="frames to predict (default: the model's)")
    s.add_argument("--fps", type=float, metavar="float", help="frame rate of the output (default: the video's)")
    s.add_argument(
        "--out",
        metavar="FILE",
        help="output .gif or .mp4 (default: <video>_forecast.gif); arrays: .npy, .nc or .zarr, plus a PNG and a GIF",
    )
    s.add_argument("--channels", metavar="A,B", help="arrays: the channels to draw, names or indices (default: 4)")
    s.add_argument("--cmap", default="viridis", metavar="NAME", help="arrays: the colour map of the pictures")
    s.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "32", "bf16-mixed"],
        help="auto (default): the faster of fp32 and bf16-mixed on this machine, measured once at batch 1 "
        "and cached; 32 or bf16-mixed: as given",
    )
    s.set_defaults(func=cmd_forecast)
    s = sub.add_parser("export", help="export a checkpoint's weights as safetensors (loads wherever a checkpoint does)")
    s.add_argument("checkpoint")
    s.add_argument("--out", required=True, help="the .safetensors file (its metadata also goes to a .json beside it)")
    s.set_defaults(func=cmd_export)
    s = sub.add_parser("convert", help="turn official PredRNN or OpenSTL weights into a framecast checkpoint")
    s.add_argument("src")
    s.add_argument("--from", dest="source", required=True, choices=["official", "openstl"])
    s.add_argument("--model", required=True, help="the framecast model the weights are (e.g. predrnn_v2, simvp, tau)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="config values the weights do not show")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_convert)
    for name in ("fit", "test", "compare"):  # config commands: their help lists every config key
        s = sub.choices[name]
        s.add_argument("-h", "--help", action="store_true", help="show this help with every config key and exit")
        if name != "test":
            s.add_argument(
                "--print-config",
                "--print_config",
                action="store_true",
                help="print the resolved config as YAML (model keys resolved from the registry) and exit",
            )
    for s in sub.choices.values():  # --debug also after the command; SUPPRESS keeps a --debug given before it
        s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        s.set_defaults(parser=s)
    return p


def _one_line(e: BaseException) -> str:
    """The message of ``e`` on one line; an error re-raised from a DataLoader worker keeps only
    the original error's last line."""
    text = str(e)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and "Error" in last.split(": ", 1)[0] else last
    return " ".join(text.split()) or type(e).__name__


def _worker_died(e: RuntimeError) -> bool:
    """A DataLoader worker killed or crashed (out of memory, a signal): not an error in framecast.
    An exception raised *inside* a worker arrives as "Caught X in DataLoader worker process N"
    with its traceback, and is not this."""
    text = str(e)
    return "DataLoader worker (pid" in text and "Original Traceback" not in text


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2: a user error, shown as one line).

    Only framecast's own errors (``FramecastError``: bad config, data or checkpoint) become one
    line; anything else is a bug or an environment problem and keeps its traceback. ``--debug``
    (or ``FRAMECAST_DEBUG=1``) shows the traceback of every error.
    """
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    debug = args.debug or os.environ.get("FRAMECAST_DEBUG", "") not in ("", "0")
    try:
        if getattr(args, "help", False):
            print(_config_help(args.parser, args.command, rest), end="")
            return 0
        args.func(args, rest)
    except FramecastError as e:
        if debug:
            raise
        print(f"framecast: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if debug or not _worker_died(e):
            raise
        print(
            f"framecast: error: {_one_line(e)}; run the same command again to resume from the last checkpoint "
            f"(data.num_workers: 0 loads data in the main process)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("framecast: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except SystemExit as e:
        # Ctrl+C inside trainer.fit / test: Lightning shuts down and calls sys.exit(1) itself
        if debug or not isinstance(e.__context__, KeyboardInterrupt):
            raise
        print("framecast: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
