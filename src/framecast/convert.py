"""Turn checkpoints of the official PredRNN code or of OpenSTL into framecast checkpoints.

The wrapping prefixes (``module.``, ``model.``, ``method.model.``) are removed here; each model
converts its own weights in its ``from_openstl`` (models/base.py): it reads the config off the
weight shapes, renames the weights and drops those OpenSTL builds but never uses, with a note.
The official PredRNN code and OpenSTL name PredRNN's weights alike. ``--set key=value``
overrides any value read.
"""

from pathlib import Path
from typing import Any

import torch

from framecast.checkpoint import read_checkpoint, save_model_checkpoint
from framecast.errors import FramecastError
from framecast.models.base import Predictor
from framecast.registry import create_model, get_entry, list_models

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


def convert(
    src: str | Path, source: str, model: str, out: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[Path, list[str]]:
    """Convert ``src`` (official PredRNN or OpenSTL) into a framecast checkpoint of ``model`` at ``out``.

    The model's ``from_openstl`` (models/base.py) reads the config off the weight shapes and
    renames the weights; ``overrides`` (``--set key=value``) win over what it read. Returns the
    checkpoint's path and the conversion's notes (weights dropped, values assumed), one line each.
    """
    src = Path(src)
    entry = get_entry(model)
    if source not in SOURCES:
        raise FramecastError(f"--from must be one of {', '.join(SOURCES)}, got '{source}'")
    if source == "official" and model not in ("predrnn", "predrnn_v2"):
        raise FramecastError(
            f"--from official is the official PredRNN code: use --model predrnn or predrnn_v2, not '{model}'"
        )
    if not _converts(entry.cls):
        able = [n for n in list_models() if _converts(get_entry(n).cls)]
        raise FramecastError(f"conversion is available for {', '.join(able)}, not '{model}'")
    state = source_state(read_checkpoint(src), source, src)
    overrides = dict(overrides or {})
    try:
        inferred, renamed, notes = entry.cls.from_openstl(state, int(overrides.get("channels", 1)))
    except FramecastError as e:
        raise FramecastError(f"{src}: {e}") from None
    cfg = {**inferred, **overrides}
    net = create_model(model, **cfg)
    own = net.state_dict()
    missing = sorted(set(own) - set(renamed))
    unexpected = sorted(set(renamed) - set(own))
    if missing or unexpected:
        raise FramecastError(
            f"{src}: weights do not fit {model} {cfg} (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            f"is it a {model} checkpoint? (--set key=value fixes values the weights do not show)"
        )
    bad = [k for k in own if own[k].shape != renamed[k].shape]
    if bad:
        raise FramecastError(
            f"{src}: {bad[0]} is {tuple(renamed[bad[0]].shape)} but {model} {cfg} expects {tuple(own[bad[0]].shape)}"
        )
    net.load_state_dict(renamed)
    meta = {"converted_from": {"source": source, "file": src.name, "notes": list(notes)}}
    save_model_checkpoint(net, out, meta)
    return Path(out), list(notes)


def _converts(cls: type) -> bool:
    """Whether the model class implements ``from_openstl`` (the base class only raises)."""
    return cls.from_openstl.__func__ is not Predictor.from_openstl.__func__
