"""The one data module: train / val / test clips of shape (B, T, C, H, W): images in [0, 1], or
normalised gridded arrays (``framecast.data.array``)."""

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from framecast.config import DataConfig
from framecast.data.moving_mnist import FixedClips, MovingMNIST, fixed_test_set, load_test_file, mnist_digits
from framecast.errors import ConfigError, unknown_choice
from framecast.lightning_compat import batches_done_in_epoch

DATASETS = ("moving_mnist", "kth", "ucf101", "video_folder", *DataConfig.ARRAYS)


class FreshSampler(Sampler[int]):
    """The training stream: epoch ``e`` reads clips ``e * n .. e * n + n - 1`` of a generated
    dataset (``fresh``: seeded, never repeating) or a seeded permutation of a finite one
    (video clips), this process's share of them.

    With ``world`` processes, rank ``r`` reads every ``world``-th clip from offset ``r``, so the
    ranks' batches ``g`` together hold exactly the clips of batch ``g`` of a one-process run
    with a ``world`` times larger batch. ``resume_at(epoch, batches)`` starts the next pass
    after the batches an interrupted run already trained on: a resumed run reads the same
    clips in the same order as an uninterrupted one.
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1, fresh: bool = True, seed: int = 0):
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        self.fresh, self.seed = fresh, seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.skip = epoch, 0

    def resume_at(self, epoch: int, batches_done: int) -> None:
        self.epoch, self.skip = epoch, batches_done * self.batch_size

    def __iter__(self) -> Iterator[int]:
        start, self.skip = self.skip, 0  # the skip applies to the one pass after a resume
        positions = range(self.rank + start * self.world, len(self) * self.world, self.world)
        if self.fresh:
            return iter(self.epoch * self.n + j for j in positions)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=gen).tolist()
        return iter(order[j] for j in positions)

    def __len__(self) -> int:
        return self.n // self.world


class ShardSampler(Sampler[int]):
    """Validation / test clips split across processes without padding (rank ``r`` scores clips
    ``r, r + world, ...``), so metric sums gathered from all ranks cover every clip once."""

    def __init__(self, n: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def build_datasets(cfg: DataConfig, normalization: dict | None = None) -> dict[str, Dataset]:
    """The train, val and test datasets that ``cfg`` describes. Arrays: ``normalization`` is a
    checkpoint's (``ArrayWindows.meta``), used instead of fitting one on the training split."""
    if cfg.name not in DATASETS:
        raise ConfigError(unknown_choice("dataset", cfg.name, DATASETS))
    if cfg.is_array:
        from framecast.data.array import build_arrays

        return build_arrays(cfg, normalization)
    if cfg.name != "moving_mnist":
        from framecast.data.real import BUILDERS

        return BUILDERS[cfg.name](cfg)
    if cfg.channels != 1:
        raise ConfigError("data.channels must be 1 for moving_mnist (grey digits)")
    gen = dict(
        length=cfg.total_length, image_size=cfg.image_size, num_digits=cfg.num_digits, step_length=cfg.step_length
    )
    train_digits = mnist_digits(cfg.mnist_path, "train")
    test_digits = mnist_digits(cfg.mnist_path, "test")
    if cfg.test_file:
        test = load_test_file(cfg.test_file, cfg.test_length, cfg.image_size)
        test = test[: cfg.test_size] if cfg.test_size else test
    else:
        test = fixed_test_set(test_digits, cfg.seed, cfg.test_size or 1_000, **{**gen, "length": cfg.test_length})
    return {
        "train": MovingMNIST(train_digits, seed=cfg.seed, size=cfg.train_size, **gen),
        # Validation: held-out seeds of training digits; the test digits stay unseen until test.
        "val": FixedClips(fixed_test_set(train_digits, cfg.seed + 1, cfg.val_size, **gen)),
        "test": FixedClips(test),
    }


class FrameDataModule(L.LightningDataModule):
    """Serves the datasets of ``build_datasets`` in batches of ``cfg.batch_size`` per process.

    Its state in a checkpoint is the training stream's position (epoch and batches done), so a
    run resumed from any checkpoint continues the stream where it stopped.
    """

    def __init__(self, cfg: DataConfig, normalization: dict | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.normalization = normalization  # arrays: a checkpoint's statistics, else fitted on train
        self.datasets: dict[str, Dataset] | None = None
        self._resume: tuple[int, int] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is None:
            self.datasets = build_datasets(self.cfg, self.normalization)

    @property
    def array_meta(self) -> dict | None:
        """Arrays: channels, normalisation, NaN policy and latitude weights (None for images)."""
        self.setup()
        return getattr(self.datasets["train"], "meta", None)

    @property
    def value_range(self) -> tuple[float, float] | None:
        """The range every clip lies in ([0, 1] for images; None for arrays)."""
        self.setup()
        return getattr(self.datasets["train"], "value_range", (0.0, 1.0))

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        self.setup()
        ds = self.datasets[split]
        rank, world = self._ranks()
        if train:
            fresh = getattr(ds, "fresh_stream", False)
            sampler = FreshSampler(len(ds), self.cfg.batch_size, rank, world, fresh=fresh, seed=self.cfg.seed)
            if self._resume is not None:
                sampler.resume_at(*self._resume)
                self._resume = None
        else:
            sampler = ShardSampler(len(ds), rank, world)
        return DataLoader(
            ds,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
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

    def state_dict(self) -> dict[str, int]:
        trainer = self.trainer
        if trainer is None:
            return {}
        # Batches of this epoch whose step is done, counting the one a checkpoint saved in
        # on_train_batch_end comes after (Lightning has no public count; lightning_compat has it).
        done, epoch = batches_done_in_epoch(trainer), trainer.current_epoch
        if done >= trainer.num_training_batches:  # the epoch is over: resume at the next one
            epoch, done = epoch + 1, 0
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state:
            self._resume = (int(state["epoch"]), int(state["batches_done"]))
