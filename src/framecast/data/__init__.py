"""Datasets and the one data module."""

from framecast.data.datamodule import FrameDataModule, build_datasets
from framecast.data.moving_mnist import generate, mnist_digits, trajectories

__all__ = ["FrameDataModule", "build_datasets", "generate", "mnist_digits", "trajectories"]
