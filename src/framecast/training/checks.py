"""Data a model cannot take, refused in one line before any work: other channels, a frame size
its weights fix, gridded arrays' normalisation against the checkpoint's."""

import torch

from framecast.config import DataConfig
from framecast.errors import FramecastError
from framecast.layers import as_hw, show_size


def check_model_fits(model: torch.nn.Module, data: DataConfig) -> None:
    """Refuse, in one line, data that ``model`` cannot predict: other channels, a frame size its
    weights do not take (fixed size, or not divisible by its patch), fewer context frames than
    it reads. Any horizon works: every model rolls out (or chunks) as far as asked."""
    c = model.config
    if data.is_array or (getattr(model, "checkpoint_meta", None) or {}).get("array"):
        check_array_checkpoint(model, data)
    channels = getattr(c, "channels", None)
    if channels is not None and channels != data.channels:
        raise FramecastError(
            f"the model reads {channels}-channel frames but data.channels is {data.channels}; "
            f"set --data.channels {channels}"
        )
    size = getattr(c, "image_size", None)
    if size is not None and getattr(model, "fixed_size", False) and as_hw(size) != data.frame_size:
        if isinstance(size, int) and isinstance(data.image_size, int):
            raise FramecastError(
                f"the model takes {size}x{size} frames only (its weights fix the frame size) but data.image_size "
                f"is {data.image_size}; set --data.image_size {size}"
            )
        raise FramecastError(
            f"the model takes {show_size(size)} frames only (its weights fix the frame size) but the data is "
            f"{show_size(data.frame_size)}" + ("; set --data.resize to resample" if data.is_array else "")
        )
    patch = getattr(c, "patch_size", 1)
    if data.frame_size[0] % patch or data.frame_size[1] % patch:
        shown = data.image_size if isinstance(data.image_size, int) else show_size(data.image_size)
        raise FramecastError(
            f"data.image_size {shown} is not divisible by the model's patch_size {patch}; "
            f"pick a multiple of {patch}" + (" (data.resize resamples arrays)" if data.is_array else "")
        )
    n_context = getattr(c, "n_context", None)
    if n_context is not None and data.n_context < n_context:
        raise FramecastError(
            f"the model reads {n_context} context frames but data.n_context is {data.n_context}; "
            f"set --data.n_context {n_context}"
        )


def check_array_checkpoint(model: torch.nn.Module, data: DataConfig) -> None:
    """Refuse a checkpoint trained on other array channels or another normalisation than
    ``data`` (or trained on arrays, scored on images, and the other way round)."""
    meta = (getattr(model, "checkpoint_meta", None) or {}).get("array")
    if meta is None:
        return  # a baseline, a converted checkpoint or an older one: nothing stored to compare
    if not data.is_array:
        raise FramecastError(
            f"the checkpoint was trained on gridded arrays ({meta.get('dataset')}: {', '.join(meta['channels'])}), "
            f"not on {data.name} images; set --data.name {meta.get('dataset')} and its data.path / data.root"
        )
    from framecast.data.array import open_data

    channels = list(open_data(data).channels)
    if channels != list(meta["channels"]):
        raise FramecastError(
            f"the checkpoint was trained on channels {', '.join(meta['channels'])}, but the data has "
            f"{', '.join(channels)}; pick the same variables (data.variables) or another checkpoint"
        )
    if meta["normalize"] != data.normalize:
        raise FramecastError(
            f"the checkpoint was trained on data.normalize {meta['normalize']}, not {data.normalize}: its "
            f"predictions are on that scale; drop the override (the checkpoint's statistics are used)"
        )


def check_array_model(model: torch.nn.Module, data: DataConfig) -> None:
    """A model whose output ends in a sigmoid predicts [0, 1] only: refuse it on arrays not
    min-max normalised."""
    c = model.config
    sigmoid = getattr(model, "bounded_output", False)
    if sigmoid and data.normalize != "minmax":
        fix = "set model.output: linear or " if getattr(c, "output", None) == "sigmoid" else ""
        raise FramecastError(
            f"{model.model_name} ends in a sigmoid (predictions in [0, 1]) but data.normalize {data.normalize} "
            f"gives values outside [0, 1]; {fix}set data.normalize: minmax"
        )
