"""Turn checkpoints of the official PredRNN code or of OpenSTL into framecast checkpoints.

framecast's PredRNN modules carry the official names (``cell_list.{i}.conv_x.0.weight``, ...),
so conversion is a renaming of prefixes plus reading the config off the weight shapes:
layers and widths from ``cell_list``, filter size from the kernels, patch size from the head,
layer norm (and the frame width) from the norm weights. ``--set key=value`` overrides any of it.
"""

import math
import re
from pathlib import Path
from typing import Any

import torch

from framecast.checkpoint import read_checkpoint, save_model_checkpoint
from framecast.errors import FramecastError
from framecast.registry import create_model, get_entry

SOURCES = ("official", "openstl")


def _strip(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def source_state(ckpt: dict[str, Any], source: str, path: Path) -> dict[str, torch.Tensor]:
    """The network's weights, with the source's wrapping prefixes removed."""
    if source == "official":
        if "net_param" not in ckpt:
            raise FramecastError(f"{path}: no 'net_param' inside; the official PredRNN code saves its weights there")
        state = ckpt["net_param"]
    elif source == "openstl":
        state = ckpt.get("state_dict", ckpt)
    else:
        raise FramecastError(f"--from must be one of {', '.join(SOURCES)}, got '{source}'")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FramecastError(f"{path}: the weights are not a mapping of names to tensors")
    return _strip(state, ("module.", "model.", "method.model."))


def infer_config(state: dict[str, torch.Tensor], channels: int = 1) -> dict[str, Any]:
    """PredRNN config values read off the weight shapes."""
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"cell_list\.(\d+)\.", k))})
    if not layers or "conv_last.weight" not in state:
        raise FramecastError("these weights are not a PredRNN network (no cell_list.* or conv_last.weight)")
    widths = [state[f"cell_list.{i}.conv_h.0.weight"].shape[1] for i in layers]
    k = state["cell_list.0.conv_x.0.weight"].shape[-1]
    out_c = state["conv_last.weight"].shape[0]
    patch = math.isqrt(out_c // channels)
    if patch * patch * channels != out_c:
        raise FramecastError(
            f"head has {out_c} output channels, not patch^2 x {channels} channels; pass --set channels=N"
        )
    cfg: dict[str, Any] = {"channels": channels, "num_hidden": tuple(widths), "filter_size": k, "patch_size": patch}
    ln = state.get("cell_list.0.conv_x.1.weight")
    cfg["layer_norm"] = ln is not None
    if ln is not None:
        cfg["image_size"] = ln.shape[-1] * patch
    return cfg


def convert(src: str | Path, source: str, model: str, out: str | Path, overrides: dict[str, Any] | None = None) -> Path:
    """Convert ``src`` (official or OpenSTL) into a framecast checkpoint of ``model`` at ``out``."""
    src = Path(src)
    get_entry(model)
    if model not in ("predrnn", "predrnn_v2"):
        raise FramecastError(f"conversion is available for predrnn and predrnn_v2, not '{model}'")
    state = source_state(read_checkpoint(src), source, src)
    overrides = dict(overrides or {})
    cfg = {**infer_config(state, int(overrides.get("channels", 1))), **overrides}
    net = create_model(model, **cfg)
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if model == "predrnn" and unexpected == ["adapter.weight"]:
        raise FramecastError(f"{src}: has a decoupling adapter, so it is PredRNN-V2: use --model predrnn_v2")
    if missing or unexpected:
        raise FramecastError(
            f"{src}: weights do not fit {model} {cfg} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise FramecastError(
            f"{src}: {bad[0]} is {tuple(state[bad[0]].shape)} but {model} {cfg} expects {tuple(own[bad[0]].shape)}"
        )
    net.load_state_dict(state)
    save_model_checkpoint(net, out, {"converted_from": {"source": source, "file": src.name}})
    return Path(out)
