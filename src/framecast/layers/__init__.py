"""Blocks shared by two or more models."""

from framecast.layers.convlstm_cell import ConvLSTMCell
from framecast.layers.patch import as_hw, check_patch, patchify, show_size, unpatchify
from framecast.layers.rollout import feedback_rollout

__all__ = ["ConvLSTMCell", "as_hw", "check_patch", "feedback_rollout", "patchify", "show_size", "unpatchify"]
