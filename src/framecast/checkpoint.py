"""Loading checkpoints safely, and exporting weights as safetensors.

Every load uses ``torch.load(..., weights_only=True)``: a checkpoint from a stranger can carry
tensors and plain containers, never code. A framecast checkpoint stores the model's registry
name and full config under the key ``"framecast"``, so the network can be rebuilt from the file
alone.
"""

import io
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from framecast.config import to_dict
from framecast.errors import FramecastError
from framecast.io import atomic_write, atomic_write_text, previous_path
from framecast.registry import create_model


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` and one-line errors for every bad file."""
    path = Path(path)
    if not path.is_file():
        raise FramecastError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported object"
        raise FramecastError(
            f"{path}: refused to load: the file holds objects other than tensors and plain data "
            f"({first[:160]}); framecast never runs code from a checkpoint"
        ) from None
    except Exception as e:  # torch raises many types for foreign or truncated files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FramecastError(
            f"{path}: not a readable PyTorch checkpoint (truncated or another format: {msg[:160]})"
        ) from None
    if not isinstance(obj, dict):
        raise FramecastError(f"{path}: not a framecast checkpoint (holds a {type(obj).__name__}, not a dict)")
    return obj


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made crash-proof: the checkpoint is serialised in memory,
    written to a temporary file, fsynced and renamed over the old one; the old ``last.ckpt`` (the
    file runs resume from) stays as ``last.prev.ckpt``. A kill at any moment leaves a complete
    checkpoint; a full disk raises a one-line error and leaves the last good one in place."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        keep = Path(path).name == "last.ckpt"
        atomic_write(path, lambda f: f.write(buffer.getbuffer()), keep_previous=keep)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path)


def resume_checkpoint(path: str | Path, warn=None) -> Path | None:
    """The newest readable checkpoint among ``path`` and its previous copy, or None if neither
    exists. A truncated or foreign file is named (through ``warn``) and passed over."""
    path = Path(path)
    for candidate in (path, previous_path(path)):
        if not candidate.is_file():
            continue
        try:
            ckpt = read_checkpoint(candidate)
            if "state_dict" not in ckpt or "loops" not in ckpt:
                raise FramecastError(f"{candidate}: not a training checkpoint (no optimiser and loop state)")
        except FramecastError as e:
            if warn is not None:
                warn(f"{e}; trying the previous checkpoint")
            continue
        return candidate
    if path.is_file() or previous_path(path).is_file():
        raise FramecastError(
            f"no readable checkpoint to resume from in {path.parent}; run with --no-resume to start over"
        )
    return None


def model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's own state dict from a Lightning or framecast checkpoint."""
    state = ckpt.get("state_dict", {})
    return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}


def load_checkpoint(path: str | Path) -> nn.Module:
    """Rebuild the model stored in a framecast checkpoint and load its weights (eval mode).

    Accepts checkpoints written by ``framecast fit`` / ``compare`` and by ``framecast convert``.
    """
    ckpt = read_checkpoint(path)
    meta = ckpt.get("framecast")
    if not isinstance(meta, dict) or "model" not in meta:
        raise FramecastError(
            f"{path}: not a framecast checkpoint (no model name and config inside); weights from "
            f"the official PredRNN code or OpenSTL go through `framecast convert` first"
        )
    model = create_model(meta["model"], **meta.get("config", {}))
    state = model_state(ckpt)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FramecastError(
            f"{path}: weights do not fit model '{meta['model']}' (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.eval()
    model.checkpoint_meta = meta
    return model


def save_model_checkpoint(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write a minimal framecast checkpoint (name, config, weights) atomically."""
    ckpt = {
        "framecast": {"format": 1, "model": model.model_name, "config": to_dict(model.config), **(extra or {})},
        "state_dict": {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()},
    }
    atomic_write(path, lambda f: torch.save(ckpt, f))


def export_safetensors(checkpoint: str | Path, out: str | Path) -> Path:
    """Export a checkpoint's weights to ``out`` (safetensors) and its config to ``out`` + .json."""
    from safetensors.torch import save

    model = load_checkpoint(checkpoint)
    meta = {"model": model.model_name, "config": to_dict(model.config)}
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    out = Path(out)
    atomic_write(out, lambda f: f.write(save(tensors, metadata={"framecast": json.dumps(meta)})))
    atomic_write_text(out.with_suffix(".json"), json.dumps(meta, indent=2))
    return out


def load_safetensors(path: str | Path) -> nn.Module:
    """Rebuild a model from a safetensors file written by ``export_safetensors``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FramecastError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("framecast", "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise FramecastError(f"{path}: not a readable safetensors file ({str(e)[:160]})") from None
    if not meta:
        raise FramecastError(f"{path}: safetensors file without framecast metadata (model name and config)")
    model = create_model(meta["model"], **meta["config"])
    model.load_state_dict(tensors)
    return model.eval()
