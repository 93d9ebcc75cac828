"""The one data module: train / val / test clips of shape (B, T, C, H, W) in [0, 1]."""

from collections.abc import Iterator

import lightning as L
from torch.utils.data import DataLoader, Dataset, Sampler

from framecast.config import DataConfig
from framecast.data.moving_mnist import FixedClips, MovingMNIST, fixed_test_set, load_test_file, mnist_digits
from framecast.errors import ConfigError, unknown_choice

DATASETS = ("moving_mnist",)


class FreshSampler(Sampler[int]):
    """Indices ``epoch * n .. epoch * n + n - 1``: a seeded, never-repeating training stream.

    Lightning calls ``set_epoch`` at the start of every epoch, so a resumed run draws exactly
    the clips the uninterrupted run would have drawn.
    """

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.epoch * self.n, (self.epoch + 1) * self.n))

    def __len__(self) -> int:
        return self.n


def build_datasets(cfg: DataConfig) -> dict[str, Dataset]:
    """The train, val and test datasets that ``cfg`` describes."""
    if cfg.name not in DATASETS:
        raise ConfigError(unknown_choice("dataset", cfg.name, DATASETS))
    if cfg.channels != 1:
        raise ConfigError("data.channels must be 1 for moving_mnist (grey digits)")
    gen = dict(
        length=cfg.total_length, image_size=cfg.image_size, num_digits=cfg.num_digits, step_length=cfg.step_length
    )
    train_digits = mnist_digits(cfg.mnist_path, "train")
    test_digits = mnist_digits(cfg.mnist_path, "test")
    if cfg.test_file:
        test = load_test_file(cfg.test_file, cfg.total_length, cfg.image_size)
        test = test[: cfg.test_size] if cfg.test_size else test
    else:
        test = fixed_test_set(test_digits, cfg.seed, cfg.test_size, **gen)
    return {
        "train": MovingMNIST(train_digits, seed=cfg.seed, size=cfg.train_size, **gen),
        # Validation: held-out seeds of training digits; the test digits stay unseen until test.
        "val": FixedClips(fixed_test_set(train_digits, cfg.seed + 1, cfg.val_size, **gen)),
        "test": FixedClips(test),
    }


class FrameDataModule(L.LightningDataModule):
    """Serves the datasets of ``build_datasets`` in batches of ``cfg.batch_size``."""

    def __init__(self, cfg: DataConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.datasets: dict[str, Dataset] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is None:
            self.datasets = build_datasets(self.cfg)

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        self.setup()
        ds = self.datasets[split]
        return DataLoader(
            ds,
            batch_size=self.cfg.batch_size,
            sampler=FreshSampler(len(ds)) if train else None,
            drop_last=train,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
