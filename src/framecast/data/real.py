"""KTH, UCF101 and any folder of videos as train / val / test clip datasets.

- ``kth``: the standard distribution layout ``<root>/<action>/personNN_<action>_dK_uncomp.avi``
  with the PredRNN protocol (REFERENCE.md): persons 1-16 train, 17-25 test, grey, bilinear
  resize (128x128 in the official configs), clip stride 20 for boxing, handclapping, handwaving
  and walking and 3 for jogging and running, consecutive frames. The protocol has no
  validation split; validation clips are a fixed, evenly spaced sample of the training persons'
  clips (the test persons stay unseen until test).
- ``ucf101``: ``<root>/<Class>/v_<Class>_gXX_cYY.avi`` (``root`` = the ``UCF-101`` folder).
  ``protocol: official`` reads ``ucfTrainTestlist/trainlist0K.txt`` / ``testlist0K.txt``
  (beside or inside ``root``; K = ``data.split``) and validates on the training videos of
  the last groups of each class. ``protocol: study`` is the comparison seed's protocol: the
  5 classes BreastStroke, Kayaking, Rafting, Rowing, Surfing, the first 50 videos per class in
  natural order, split 40/5/5 per class (200/25/25) by video with a seeded shuffle.
- ``video_folder``: any folder of videos or frame folders; with ``train/``, ``val/`` and
  ``test/`` subfolders those are the split, otherwise videos are split by
  ``data.split_fractions`` with a seeded shuffle. Never by clip: no video feeds two splits.
"""

import re
from pathlib import Path

import numpy as np

from framecast.config import DataConfig
from framecast.data.video import FrameOptions, cache_videos, find_videos, make_clips, natural_key, subsample
from framecast.errors import FramecastError, warn

KTH_ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
KTH_STRIDE = {"boxing": 20, "handclapping": 20, "handwaving": 20, "walking": 20, "jogging": 3, "running": 3}
KTH_NAME = re.compile(r"person(\d+)_([a-z]+)_d(\d+)_uncomp\.avi$", re.IGNORECASE)
UCF_NAME = re.compile(r"v_([A-Za-z]+)_g(\d+)_c(\d+)\.avi$")
UCF_STUDY_CLASSES = ("BreastStroke", "Kayaking", "Rafting", "Rowing", "Surfing")


def _options(cfg: DataConfig) -> FrameOptions:
    return FrameOptions(image_size=cfg.image_size, channels=cfg.channels, crop=cfg.crop)


def _lengths(cfg: DataConfig) -> tuple[int, int]:
    return cfg.total_length, cfg.test_length


def _need(root, videos, split: str) -> None:
    if not videos:
        raise FramecastError(f"{root}: no usable videos for the {split} split")


def build_kth(cfg: DataConfig) -> dict:
    root = Path(cfg.root or "")
    files = find_videos(root)
    parsed = [(f, KTH_NAME.search(f.name)) for f in files]
    kth = [(f, int(m.group(1)), m.group(2).lower()) for f, m in parsed if m and m.group(2).lower() in KTH_ACTIONS]
    if not kth:
        raise FramecastError(
            f"{root}: no KTH videos (<action>/personNN_<action>_dK_uncomp.avi) found; point data.root at the KTH folder"
        )
    if cfg.classes:
        kth = [k for k in kth if k[2] in cfg.classes]
    train_len, test_len = _lengths(cfg)
    opts = _options(cfg)
    splits = {}
    for split, persons, length in (("train", range(1, 17), train_len), ("test", range(17, 26), test_len)):
        chosen = [k for k in kth if k[1] in persons]
        videos = cache_videos([k[0] for k in chosen], opts, cfg.cache_dir, length)
        _need(root, videos, split)
        action = {k[0]: k[2] for k in chosen}
        strides = [cfg.stride or KTH_STRIDE[action[src]] for src, _, _ in videos]
        splits[split] = make_clips(videos, length, strides)
    return {
        "train": splits["train"],
        "val": subsample(splits["train"], cfg.val_size or 256),
        "test": subsample(splits["test"], cfg.test_size or 0),
    }


def _ucf_split_lists(root: Path, split: int) -> tuple[set[str], set[str]]:
    for folder in (root / "ucfTrainTestlist", root.parent / "ucfTrainTestlist"):
        train, test = folder / f"trainlist0{split}.txt", folder / f"testlist0{split}.txt"
        if train.is_file() and test.is_file():

            def names(p: Path) -> set[str]:
                return {Path(line.split()[0]).name for line in p.read_text().splitlines() if line.strip()}

            return names(train), names(test)
    raise FramecastError(
        f"UCF101 split lists not found: expected ucfTrainTestlist/trainlist0{split}.txt and testlist0{split}.txt "
        f"in {root} or {root.parent} (from UCF101TrainTestSplits-RecognitionTask.zip), or use data.protocol: study"
    )


def build_ucf101(cfg: DataConfig) -> dict:
    root = Path(cfg.root or "")
    ucf = []
    for f in find_videos(root):
        m = UCF_NAME.search(f.name)
        if m:
            ucf.append((f, m.group(1), int(m.group(2)), int(m.group(3))))
    if not ucf:
        raise FramecastError(
            f"{root}: no UCF101 videos (<Class>/v_<Class>_gXX_cYY.avi) found; point data.root at UCF-101"
        )
    classes = cfg.classes or (UCF_STUDY_CLASSES if cfg.protocol == "study" else None)
    if classes:
        missing = sorted(set(classes) - {u[1] for u in ucf})
        if missing:
            warn(f"{root}: no videos for classes {', '.join(missing)}")
        ucf = [u for u in ucf if u[1] in classes]
    split_of: dict[Path, str] = {}
    if cfg.protocol == "study":
        rng = np.random.default_rng(cfg.seed)
        for cls in sorted({u[1] for u in ucf}):
            vids = sorted((u[0] for u in ucf if u[1] == cls), key=lambda p: natural_key(p.name))[:50]
            order = rng.permutation(len(vids))
            n_test = n_val = max(1, len(vids) // 10)
            for rank, i in enumerate(order):
                split_of[vids[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    else:
        train_names, test_names = _ucf_split_lists(root, cfg.split)
        for f, *_ in ucf:
            if f.name in test_names:
                split_of[f] = "test"
            elif f.name in train_names:
                split_of[f] = "train"
        # validation: the training videos of each class's last training group (no group leaks)
        last_group: dict[str, int] = {}
        for f, cls, group, _ in ucf:
            if split_of.get(f) == "train":
                last_group[cls] = max(last_group.get(cls, 0), group)
        for f, cls, group, _ in ucf:
            if split_of.get(f) == "train" and group == last_group[cls]:
                split_of[f] = "val"
    return _split_datasets(cfg, root, split_of)


def _split_datasets(cfg: DataConfig, root: Path, split_of: dict[Path, str]) -> dict:
    train_len, test_len = _lengths(cfg)
    opts = _options(cfg)
    out = {}
    for split in ("train", "val", "test"):
        length = test_len if split == "test" else train_len
        paths = sorted((p for p, s in split_of.items() if s == split), key=lambda p: natural_key(str(p)))
        videos = cache_videos(paths, opts, cfg.cache_dir, length)
        _need(root, videos, split)
        out[split] = make_clips(videos, length, cfg.stride or length)
    out["val"] = subsample(out["val"], cfg.val_size)
    out["test"] = subsample(out["test"], cfg.test_size or 0)
    return out


def build_video_folder(cfg: DataConfig) -> dict:
    root = Path(cfg.root or "")
    subs = {s: root / s for s in ("train", "val", "test")}
    if all(p.is_dir() for p in subs.values()):
        split_of = {v: s for s, p in subs.items() for v in find_videos(p)}
    else:  # split the usable videos only: a bad file never empties a split
        train_len, test_len = _lengths(cfg)
        usable = cache_videos(find_videos(root), _options(cfg), cfg.cache_dir, min(train_len, test_len))
        videos = [src for src, _, _ in usable]
        if not videos:
            raise FramecastError(
                f"{root}: no usable video: none is readable and at least {min(train_len, test_len)} frames long "
                f"(n_context + n_future; see the warnings above)"
            )
        fr = np.asarray(cfg.split_fractions, dtype=float)
        order = np.random.default_rng(cfg.seed).permutation(len(videos))
        n_val = int(round(fr[1] / fr.sum() * len(videos)))
        n_test = int(round(fr[2] / fr.sum() * len(videos)))
        if len(videos) >= 3:
            n_val, n_test = max(1, n_val), max(1, n_test)
        if len(videos) - n_val - n_test < 1:
            raise FramecastError(
                f"{root}: {len(videos)} video(s) cannot be split into train/val/test by video; add videos or "
                f"make train/, val/ and test/ subfolders"
            )
        split_of = {}
        for rank, i in enumerate(order):
            split_of[videos[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return _split_datasets(cfg, root, split_of)


BUILDERS = {"kth": build_kth, "ucf101": build_ucf101, "video_folder": build_video_folder}
