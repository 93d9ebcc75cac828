"""Blocks shared by two or more models."""

from framecast.layers.convlstm_cell import ConvLSTMCell
from framecast.layers.patch import check_patch, patchify, unpatchify
from framecast.layers.rollout import feedback_rollout

__all__ = ["ConvLSTMCell", "check_patch", "feedback_rollout", "patchify", "unpatchify"]
