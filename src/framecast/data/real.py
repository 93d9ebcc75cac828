"""KTH, UCF101 and any folder of videos as train / val / test clip datasets.

- ``kth``: the standard distribution layout ``<root>/<action>/personNN_<action>_dK_uncomp.avi``
  with the PredRNN protocol (Wang et al., NeurIPS 2017 / TPAMI 2022; the official code
  https://github.com/thuml/predrnn-pytorch, its KTH loader ``core/data_provider/kth_action.py``):
  persons 1-16 train, 17-25 test, grey, bilinear resize (128x128 in the official configs), clip
  stride 20 for boxing, handclapping, handwaving and walking and 3 for jogging and running,
  consecutive frames. The protocol has no validation split (its "valid" data is the test
  persons), and validation clips cut from the training videos would pick ``best.ckpt`` on
  training data: persons 15-16 are held out whole for validation and 1-14 train, so no person
  feeds two splits and the test persons stay unseen until test.
- ``ucf101``: ``<root>/<Class>/v_<Class>_gXX_cYY.avi`` (``root`` = the ``UCF-101`` folder).
  ``protocol: official`` reads ``ucfTrainTestlist/trainlist0K.txt`` / ``testlist0K.txt``
  (beside or inside ``root``; K = ``data.split``) and validates on the training videos of
  the last groups of each class. ``protocol: study`` is the comparison seed's protocol: the
  5 classes BreastStroke, Kayaking, Rafting, Rowing, Surfing, the first 50 videos per class in
  natural order, split about 40/5/5 per class by group (``gXX``: one actor, one scene, as the
  official lists split) with a seeded shuffle: test, then validation, take whole groups until
  they hold the nearest to a tenth of the class's videos, the rest train.
- ``video_folder``: any folder of videos or frame folders; with ``train/``, ``val/`` and
  ``test/`` subfolders those are the split, otherwise videos are split by
  ``data.split_fractions`` with a seeded shuffle. Never by clip: no video feeds two splits.
  A folder with too few videos for that (one long traffic or security camera recording) is
  split by time instead: each video's first frames train, the next validate, the last test,
  by ``data.split_fractions``, with a gap of one clip between parts; no frame feeds two splits.
"""

import re
from pathlib import Path

import numpy as np

from framecast.config import DataConfig
from framecast.data.video import FrameOptions, cache_videos, find_videos, make_clips, natural_key, subsample
from framecast.errors import FramecastError, warn

KTH_ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
KTH_STRIDE = {"boxing": 20, "handclapping": 20, "handwaving": 20, "walking": 20, "jogging": 3, "running": 3}
# the PredRNN split (train 1-16, test 17-25), its last two training persons held out for validation
KTH_PERSONS = {"train": range(1, 15), "val": range(15, 17), "test": range(17, 26)}
KTH_NAME = re.compile(r"person(\d+)_([a-z]+)_d(\d+)_uncomp\.avi$", re.IGNORECASE)
UCF_NAME = re.compile(r"v_([A-Za-z]+)_g(\d+)_c(\d+)\.avi$")
UCF_STUDY_CLASSES = ("BreastStroke", "Kayaking", "Rafting", "Rowing", "Surfing")


def _options(cfg: DataConfig) -> FrameOptions:
    return FrameOptions(image_size=cfg.image_size, channels=cfg.channels, crop=cfg.crop)


def _lengths(cfg: DataConfig) -> tuple[int, int]:
    return cfg.total_length, cfg.test_length


def _need(root, videos, split: str, which: str = "") -> None:
    if not videos:
        raise FramecastError(f"{root}: no usable videos for the {split} split{which}")


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
    for split, persons in KTH_PERSONS.items():
        length = test_len if split == "test" else train_len
        chosen = [k for k in kth if k[1] in persons]
        videos = cache_videos([k[0] for k in chosen], opts, cfg.cache_dir, length)
        _need(root, videos, split, f" (KTH {split}: persons {persons[0]}-{persons[-1]})")
        action = {k[0]: k[2] for k in chosen}
        strides = [cfg.stride or KTH_STRIDE[action[src]] for src, _, _ in videos]
        splits[split] = make_clips(videos, length, strides)
    splits["val"] = subsample(splits["val"], cfg.val_size)
    splits["test"] = subsample(splits["test"], cfg.test_size or 0)
    return splits


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
            vids = sorted((u for u in ucf if u[1] == cls), key=lambda u: natural_key(u[0].name))[:50]
            groups = sorted({u[2] for u in vids})
            size = {g: sum(u[2] == g for u in vids) for g in groups}
            target, held = max(1, len(vids) // 10), {"test": 0, "val": 0}
            group_split = {}
            for i in rng.permutation(len(groups)):  # a group joins test, then val, while that nears a tenth
                g = groups[i]
                split = next((s for s, n in held.items() if n == 0 or 2 * n + size[g] <= 2 * target), "train")
                group_split[g] = split
                if split in held:
                    held[split] += size[g]
            for f, _, g, _ in vids:
                split_of[f] = group_split[g]
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
        if len(videos) - n_val - n_test < 1 or (fr[1] > 0 and n_val == 0) or (fr[2] > 0 and n_test == 0):
            return _time_split(cfg, root, usable, fr)
        split_of = {}
        for rank, i in enumerate(order):
            split_of[videos[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return _split_datasets(cfg, root, split_of)


def _time_parts(n: int, weights: dict[str, float], gap: int) -> dict[str, tuple[int, int]]:
    """Frames ``[first, end)`` of each split in an ``n``-frame video: the splits in order, sized
    by ``weights`` (fractions summing to 1), ``gap`` frames between parts."""
    usable = n - gap * (len(weights) - 1)
    edges = [0, *np.round(np.cumsum(list(weights.values())) * usable).astype(int).tolist()]
    return {s: (edges[k] + k * gap, edges[k + 1] + k * gap) for k, s in enumerate(weights)}


def _time_split(cfg: DataConfig, root: Path, videos: list[tuple[Path, Path, int]], fr: np.ndarray) -> dict:
    """Split each video by time, for a folder with too few videos to split by video (one long
    camera recording): train, then validation, then test by ``fr``, a gap of the longer clip
    length between parts so no frame and no clip's neighbourhood feeds two splits. The splits
    are clip start ranges over the same cached arrays (no copy)."""
    train_len, test_len = _lengths(cfg)
    need = {"train": train_len, "val": train_len, "test": test_len}
    gap = max(train_len, test_len)
    weights = {s: float(f / fr.sum()) for s, f in zip(need, fr) if f > 0}

    def fits(n: int) -> bool:
        return all(b - a >= need[s] for s, (a, b) in _time_parts(n, weights, gap).items())

    # the shortest length from which every length fits: from this start on, each part holds at
    # least w * usable - 1 >= its clip frames; shorter ones are tried down to the first misfit
    least = gap * (len(weights) - 1) + int(max((need[s] + 1) / w for s, w in weights.items())) + 2
    while least > 1 and fits(least - 1):
        least -= 1
    how = f"{', '.join(f'{s} {100 * w:.0f}%' for s, w in weights.items())}, {gap}-frame gaps"
    many = f"{len(videos)} video{'s' if len(videos) > 1 else ''}"
    warn(f"{root}: {many} for {len(weights)} splits: splitting each video by time ({how})")
    for src, _, n in videos:
        if not fits(n):
            raise FramecastError(
                f"{src}: {n} frames is too short to split by time ({how}): one clip per split needs at "
                f"least {least} frames; use a longer video, more videos, or train/, val/ and test/ subfolders"
            )
    out = {}
    for split, length in need.items():
        spans = [_time_parts(n, weights, gap).get(split, (0, 0)) for _, _, n in videos]
        out[split] = make_clips(videos, length, cfg.stride or length, spans)
        if not len(out[split]):
            raise FramecastError(f"{root}: no clips for the {split} split: data.split_fractions gives it 0")
    out["val"] = subsample(out["val"], cfg.val_size)
    out["test"] = subsample(out["test"], cfg.test_size or 0)
    return out


BUILDERS = {"kth": build_kth, "ucf101": build_ucf101, "video_folder": build_video_folder}
