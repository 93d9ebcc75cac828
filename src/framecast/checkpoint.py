"""Loading checkpoints safely, and exporting weights as safetensors.

Every load uses ``torch.load(..., weights_only=True)``: a checkpoint from a stranger can carry
tensors and plain containers, never code. A framecast checkpoint stores the model's registry
name and full config under the key ``"framecast"``, so the network can be rebuilt from the file
alone. An export (``export_safetensors``) carries the same metadata in its safetensors header
and loads through ``load_checkpoint`` like the checkpoint it came from.
"""

import codecs
import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import IO, Any, NamedTuple

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from framecast.config import to_dict
from framecast.errors import FramecastError
from framecast.io import atomic_write, atomic_write_text, previous_path
from framecast.registry import create_model

# The signatures of files people mistake for checkpoints: what a refusal says it found
_MAGIC = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
)
# a PyTorch file of the legacy (not zip) format starts with this magic number, pickled (LONG1)
_LEGACY_TORCH = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_NOT_OURS = "give a checkpoint written by `framecast fit`, or its `framecast export`"


def not_a_checkpoint(path: Path, found: str, fix: str = _NOT_OURS) -> FramecastError:
    """The one-line error for a file that is no framecast checkpoint, naming what it holds."""
    return FramecastError(f"{path}: not a framecast checkpoint (found: {found}); {fix}")


def _foreign(path: Path) -> str | None:
    """What ``path`` holds, judged by its first bytes, when it cannot be a PyTorch checkpoint (a
    zip with a ``data.pkl``, or a legacy PyTorch pickle); None when it may be one. A damaged zip
    or PyTorch pickle gives None too: ``torch.load`` says what is wrong with it."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "an empty file"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return None  # a truncated checkpoint looks like this: torch.load names it
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return None
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return f"a zip archive that is no PyTorch checkpoint, holding {shown}" if names else "an empty zip archive"
    if head[:1] == b"\x80":  # a pickle (protocol 2 or later)
        if _LEGACY_TORCH in head[:32]:
            return None
        return "a Python pickle that is no PyTorch checkpoint, left unpickled"
    if is_safetensors(path):
        return "a safetensors file"  # only reached from read_checkpoint: load_checkpoint reads these
    if len(head) >= 9 and head[8:9] == b"{":
        return "a truncated or damaged safetensors file"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if b"\x00" not in head:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
            return "a text file"
        except UnicodeDecodeError:
            pass
    return "bytes of no known format, neither PyTorch nor safetensors"


def _refused(e: BaseException) -> str:
    """What torch's weights-only unpickler refused, without its advice to allow it."""
    text = str(e)
    name = re.search(r"GLOBAL ([\w.]+)", text)
    if name:
        return f"unsupported global {name.group(1)}"
    other = re.search(r"Unsupported [^\n.]+", text)
    if other:
        return other.group(0).strip()[:120]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else "unsupported object"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` and one-line errors for every bad file: a file
    that cannot be a PyTorch checkpoint is named by what it holds and never unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FramecastError(f"checkpoint not found: {path}")
    found = _foreign(path)
    if found is not None:
        raise not_a_checkpoint(path, found)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise FramecastError(
            f"{path}: refused to load: the file holds objects other than tensors and plain data "
            f"({_refused(e)}); framecast never runs code from a checkpoint"
        ) from None
    except Exception as e:  # torch raises many types for foreign or truncated files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FramecastError(
            f"{path}: not a readable PyTorch checkpoint (truncated or another format: {msg[:160]})"
        ) from None
    if not isinstance(obj, dict):
        raise not_a_checkpoint(path, f"a PyTorch file holding a {type(obj).__name__}, not a dict")
    return obj


class _Writes:
    """A file's ``write`` and ``flush`` for ``torch.save``, keeping the first ``OSError``: torch's
    zip writer turns a failed write into a RuntimeError that no longer says why."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def _save(obj: Any, f: IO[bytes]) -> None:
    """``torch.save(obj, f)``; a failed write raises its own OSError (a full disk: atomic_write's
    one-line error), not torch's wrapper."""
    out = _Writes(f)
    try:
        torch.save(obj, out)
    except RuntimeError:
        if out.error is not None:
            raise out.error from None
        raise


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made crash-proof: the checkpoint is serialised straight
    into a temporary file (not first into memory: that held a second copy of the weights and the
    optimiser state while writing), fsynced and renamed over the old one; the old ``last.ckpt`` (the
    file runs resume from) stays as ``last.prev.ckpt``. A kill at any moment leaves a complete
    checkpoint; a full disk raises a one-line error and leaves the last good one in place."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        keep = Path(path).name == "last.ckpt"
        atomic_write(path, lambda f: _save(checkpoint, f), keep_previous=keep)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path)


class Resume(NamedTuple):
    """The checkpoint a run resumes from, with what a resume needs of it (read once)."""

    path: Path
    step: int  # its global step
    meta: dict[str, Any]  # its "framecast" entry: the run config it was trained with, processes ({} if none)

    @property
    def trainer(self) -> dict[str, Any] | None:
        """The trainer section of the run config it stores, if any."""
        run = self.meta.get("run_config")
        trainer = run.get("trainer") if isinstance(run, dict) else None
        return trainer if isinstance(trainer, dict) else None


def resume_checkpoint(path: str | Path, warn=None) -> Resume | None:
    """The newest readable checkpoint among ``path`` and its previous copy, with its global step
    and framecast metadata (read here, so a resume loads the file once more only in Lightning's
    restore), or None if neither exists. A truncated or foreign file is named (through ``warn``)
    and passed over.

    When ``path`` is unreadable and its previous copy is used, ``path`` is moved aside to
    ``<stem>.corrupt<suffix>`` (``last.corrupt.ckpt``): otherwise the next
    ``atomic_write(path, ..., keep_previous=True)`` would make the bad file the previous copy and
    drop the good one. With no readable checkpoint at all nothing is moved.
    """
    path = Path(path)
    prev = previous_path(path)
    bad = False
    for candidate in (path, prev):
        if not candidate.is_file():
            continue
        try:
            ckpt = read_checkpoint(candidate)
            if "state_dict" not in ckpt or "loops" not in ckpt:
                raise FramecastError(f"{candidate}: not a training checkpoint (no optimiser and loop state)")
        except FramecastError as e:
            if warn is not None:
                warn(f"{e}; trying the previous checkpoint")
            bad = bad or candidate == path
            continue
        if candidate == prev and bad:
            corrupt = path.with_name(f"{path.stem}.corrupt{path.suffix}")
            try:
                path.replace(corrupt)  # atomic, replaces an older corrupt copy
            except FileNotFoundError:  # another DDP rank moved it first
                pass
            if warn is not None:
                warn(f"resuming from {prev.name}; the unreadable {path.name} was moved to {corrupt}")
        meta = ckpt.get("framecast")
        return Resume(candidate, int(ckpt.get("global_step", 0)), meta if isinstance(meta, dict) else {})
    if path.is_file() or previous_path(path).is_file():
        raise FramecastError(
            f"no readable checkpoint to resume from in {path.parent}; run with --no-resume to start over"
        )
    return None


def model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's own state dict from a Lightning or framecast checkpoint."""
    state = ckpt.get("state_dict", {})
    return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` holds a safetensors file, judged by its content (any name): 8 bytes of
    little-endian header length, then a JSON header of that length. A PyTorch checkpoint starts
    with a zip (``PK``) or pickle (``0x80``) signature instead."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= size - 8


def _build_model(path: Path, meta: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """The model ``meta`` names, with ``state`` loaded, in eval mode; ``model.checkpoint_meta`` is ``meta``."""
    model = create_model(meta["model"], **meta.get("config", {}))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise FramecastError(f"{path}: weights do not fit model '{meta['model']}' ({_first_line(e)})") from None
    if missing or unexpected:
        raise FramecastError(
            f"{path}: weights do not fit model '{meta['model']}' (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.eval()
    model.checkpoint_meta = meta
    return model


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip() and "Error(s) in loading" not in line]
    return (lines[0] if lines else type(e).__name__)[:200]


def load_checkpoint(path: str | Path) -> nn.Module:
    """Rebuild the model stored in a framecast checkpoint and load its weights (eval mode).

    Accepts checkpoints written by ``framecast fit`` / ``compare`` and by ``framecast convert``,
    and safetensors files written by ``framecast export`` (recognised by their content). Either
    way ``model.checkpoint_meta`` is the checkpoint's framecast metadata (model name, config,
    horizons and whatever the run stored there).
    """
    path = Path(path)
    if path.is_file() and is_safetensors(path):  # by content: a .safetensors name on other bytes is named below
        return load_safetensors(path)
    ckpt = read_checkpoint(path)
    meta = ckpt.get("framecast")
    if not isinstance(meta, dict) or "model" not in meta:
        keys = ", ".join(map(str, list(ckpt)[:4])) + (", ..." if len(ckpt) > 4 else "")
        raise not_a_checkpoint(
            path,
            f"a PyTorch file without framecast metadata, keys: {keys or 'none'}",
            "weights from the official PredRNN code or OpenSTL go through `framecast convert` first",
        )
    return _build_model(path, meta, model_state(ckpt))


def _model_meta(model: nn.Module) -> dict[str, Any]:
    """The framecast metadata of ``model``: what it was loaded with (``checkpoint_meta``), with
    its name and full config."""
    meta = dict(getattr(model, "checkpoint_meta", None) or {})
    return {**meta, "format": meta.get("format", 1), "model": model.model_name, "config": to_dict(model.config)}


def save_model_checkpoint(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write a minimal framecast checkpoint (name, config, weights) atomically. A model from
    ``load_checkpoint`` keeps the rest of its metadata (horizons, the run's data config)."""
    ckpt = {
        "framecast": {**_model_meta(model), **(extra or {})},
        "state_dict": {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()},
    }
    atomic_write(path, lambda f: torch.save(ckpt, f))


def export_safetensors(checkpoint: str | Path, out: str | Path) -> Path:
    """Export a checkpoint's weights to ``out`` (safetensors) and return ``out``.

    The checkpoint's whole framecast metadata (model name, config, horizons, the run's data
    config if it has one) goes into the safetensors header under ``"framecast"`` (JSON), so the
    file loads wherever a checkpoint does (``load_checkpoint``, ``--checkpoint``); a copy goes
    to ``out`` with the suffix ``.json``, for people and tools that do not read the header.
    """
    from safetensors.torch import save

    model = load_checkpoint(checkpoint)
    meta = _model_meta(model)
    text = json.dumps(meta)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    out = Path(out)
    atomic_write(out, lambda f: f.write(save(tensors, metadata={"format": "pt", "framecast": text})))
    atomic_write_text(out.with_suffix(".json"), json.dumps(meta, indent=2))
    return out


def load_safetensors(path: str | Path) -> nn.Module:
    """Rebuild a model from a safetensors file written by ``export_safetensors`` (eval mode);
    ``load_checkpoint`` calls this for such files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FramecastError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise FramecastError(f"{path}: not a readable safetensors file ({_first_line(e)[:160]})") from None
    try:
        meta = json.loads(header.get("framecast", "null"))
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or "model" not in meta:
        raise not_a_checkpoint(
            path,
            f"a safetensors file without framecast metadata, {len(tensors)} tensor{'s' if len(tensors) != 1 else ''}",
            "framecast loads the safetensors files `framecast export` writes",
        )
    return _build_model(path, meta, tensors)
