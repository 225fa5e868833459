"""FER2013 as face crops made by the project's own face front-end, for the face pretraining stage.

    index = index_fer2013("/data/fer2013")              # {split: [(path, fer_label), ...]}
    prepare_face_crops(index, out_dir, config)          # out_dir/<split>.npz: crops, roi, labels, aligned

The index reads FER2013 as image folders: one folder per class name (`angry`, `disgust`, `fear`, `happy`, `neutral`,
`sad`, `surprise`), anywhere under the root; the split is the original name prefix of each file (`Training_…`,
`PublicTest_…`, `PrivateTest_…`), whatever folder it sits in. Augmented copies some redistributions add
(`x.jpg0.jpg`, `x.jpg12.jpg`) and duplicate names are skipped and counted.

The crops are made the way serving makes them (`FaceFrontEnd`: BlazeFace + face mesh, eyes and mouth aligned to the
canonical positions, the model's crop size and margin, the ROI map from the mesh). A 48x48 FER image is too small
for the detector, so it is first enlarged 4x (bicubic) and its borders are extended by replication, so the aligned
crop does not run into black. Images where no face is found (about 1 in 10, mostly profiles and occlusions) keep
their own framing, resized to the crop size, with the canonical ROI map; `aligned` says which.

Grey vs colour: FER2013 is grey; the compact preset's processor turns every serving crop grey the same way
(`video_processing_fer.grey_crops`, `config.face_crop_grayscale`), so training and serving see the same pixels.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
from functools import partial
from pathlib import Path

import numpy as np

from fer_hf.errors_fer import FERInputError

logger = logging.getLogger(__name__)

# FER2013's 7 classes in its own order; FER_TO_RAVDESS maps each onto the model's RAVDESS class index.
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_TO_RAVDESS = {"angry": 4, "disgust": 6, "fear": 5, "happy": 2, "sad": 3, "surprise": 7, "neutral": 0}
FER_SPLITS = ("Training", "PublicTest", "PrivateTest")
_AUGMENTED = re.compile(r"\.(jpe?g|png)\d+\.(jpe?g|png)$", re.IGNORECASE)
_UPSCALE, _PAD = 4, 16  # 48 px -> 192 px, then 16 source pixels (64 px) of replicated border on each side


def index_fer2013(root: str | os.PathLike) -> dict[str, list[tuple[str, int]]]:
    """`{split: [(path, fer_label_index), ...]}` for the three original splits, sorted by file name.

    Raises `FERInputError` when the root holds no FER2013 image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FERInputError(f"{root} is not a folder: give the folder that holds the FER2013 class folders")
    index: dict[str, dict[str, tuple[str, int]]] = {s: {} for s in FER_SPLITS}
    skipped = {"augmented copy": 0, "duplicate": 0, "no split prefix": 0}
    for path in root.rglob("*"):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png") or path.parent.name.lower() not in FER_LABELS:
            continue
        if _AUGMENTED.search(path.name):
            skipped["augmented copy"] += 1
            continue
        split = path.name.split("_", 1)[0]
        if split not in index:
            skipped["no split prefix"] += 1
            continue
        if path.name in index[split]:
            skipped["duplicate"] += 1
            continue
        index[split][path.name] = (str(path), FER_LABELS.index(path.parent.name.lower()))
    found = {s: len(v) for s, v in index.items()}
    if not sum(found.values()):
        raise FERInputError(f"no FER2013 image (<class>/<Training|PublicTest|PrivateTest>_*.jpg) under {root}")
    logger.info("FER2013 index: %s; skipped %s", found, skipped)
    return {s: [v[k] for k in sorted(v)] for s, v in index.items()}


_FRONT = None


def map_images(items: list[tuple[str, int]], init, init_args: tuple, fn, workers: int = 1) -> list:
    """`fn(grey image (h, w) uint8)` over the images of an index list `[(path, label), ...]`, in order, in `workers`
    spawned processes (each first runs `init(*init_args)`, with one torch/OpenMP thread); `init`, `fn` must be
    module-level functions. An unreadable image raises `FERInputError`."""
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, _init_pool_worker, (init, init_args)) as pool:
            return pool.map(partial(_apply_to_image, fn), items, chunksize=64)
    init(*init_args)
    return [_apply_to_image(fn, item) for item in items]


def _init_pool_worker(init, init_args: tuple) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    init(*init_args)


def _apply_to_image(fn, item: tuple[str, int]):
    import cv2

    grey = cv2.imread(item[0], cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise FERInputError(f"cannot read the image {item[0]}")
    return fn(grey)


def _init_worker(image_size: int, patch_size: int, margin: float) -> None:
    global _FRONT
    from fer_hf.frontend_fer import FaceFrontEnd

    _FRONT = FaceFrontEnd(image_size=image_size, patch_size=patch_size, margin=margin)


def crop_face_image(grey: np.ndarray, front) -> tuple[np.ndarray, np.ndarray, bool]:
    """One grey face image `(h, w)` uint8 -> (grey crop `(S, S)` uint8, ROI map `(N,)` float32, aligned?)."""
    import cv2

    from fer_hf.faces_fer import roi_weight_map

    h, w = grey.shape
    big = cv2.resize(grey, (w * _UPSCALE, h * _UPSCALE), interpolation=cv2.INTER_CUBIC)
    pad = _PAD * _UPSCALE
    big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    faces = front.window([np.repeat(big[..., None], 3, -1)], [0.0])
    size = front.image_size
    if faces.face_found[0]:
        return faces.crops[0][..., 0].copy(), faces.roi[0].astype(np.float32), True
    crop = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA if size < w else cv2.INTER_CUBIC)
    return crop, roi_weight_map(size, front.patch_size, front.margin), False


def _crop_one(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    return crop_face_image(grey, _FRONT)


def prepare_face_crops(index: dict[str, list[tuple[str, int]]], out_dir: str | os.PathLike, image_size: int,
                       patch_size: int, margin: float, workers: int = 1, limit: int | None = None) -> dict:
    """Write `<out_dir>/<split>.npz` (crops `(n, S, S)` uint8, roi `(n, N)` float16, labels `(n,)` int64 in FER
    order, aligned `(n,)` bool) for every split not already written (so an interrupted run resumes per split).

    Returns `{split: {"images", "aligned"}}`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for split, items in index.items():
        items = items[:limit] if limit else items
        target = out / f"{split}.npz"
        if target.exists():
            with np.load(target) as data:
                summary[split] = {"images": int(len(data["labels"])), "aligned": int(data["aligned"].sum())}
            continue
        if not items:
            continue
        rows = map_images(items, _init_worker, (image_size, patch_size, margin), _crop_one, workers)
        crops = np.stack([r[0] for r in rows])
        roi = np.stack([r[1] for r in rows]).astype(np.float16)
        aligned = np.array([r[2] for r in rows], bool)
        labels = np.array([label for _, label in items], np.int64)
        tmp = out / f".{split}.tmp.npz"
        np.savez(tmp, crops=crops, roi=roi, labels=labels, aligned=aligned)
        os.replace(tmp, target)
        summary[split] = {"images": int(len(labels)), "aligned": int(aligned.sum())}
        logger.info("%s: %d crops, %d aligned by the face front-end", split, len(labels), aligned.sum())
    return summary


def load_face_split(folder: str | os.PathLike, split: str) -> dict[str, np.ndarray]:
    """The arrays of one prepared split (see `prepare_face_crops`)."""
    path = Path(folder) / f"{split}.npz"
    if not path.exists():
        raise FERInputError(f"{path} does not exist: run the face stage's data preparation first")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


__all__ = ["FER_LABELS", "FER_SPLITS", "FER_TO_RAVDESS", "crop_face_image", "index_fer2013", "load_face_split",
           "map_images", "prepare_face_crops"]
