"""A face teacher for the face stage: MediaPipe's 52 face blendshapes of every FER2013 training image.

    teacher = BlendshapeTeacher("face_landmarker_v2_with_blendshapes.task")   # or the unzipped folder
    scores = teacher(grey_48x48_uint8)                                        # (52,) float32 in [0, 1]
    scores, seconds = prepare_blendshapes(index["Training"], "runs/face/crops/blendshapes", "Training", path)

MediaPipe's Face Landmarker (Apache-2.0) holds a 478-point face landmark model and a blendshape model that reads 146
of those points and scores 52 facial movements (ARKit names: `browDownLeft`, `jawOpen`, `mouthSmileRight`, ...).
Both run here on LiteRT, on the whole FER2013 image (these are already face crops, so MediaPipe's own face detector
is not needed): the grey image gets a quarter of its side of replicated border, becomes RGB, and is resized to the
landmark model's 256 x 256 input in [0, 1]; the 146 points go to the blendshape model in that image's pixels.

Measured before use (docs/training.md): a linear classifier on the 52 scores alone reaches 48.5 % on PrivateTest,
and they carry what the vision tower misses. `fer-pretrain-face --teacher` uses them as an auxiliary target: a
second temporary head regresses the (standardised) scores from the frame vector, so the tower learns the facial
movements the scores measure. Nothing of the teacher ships: serving never runs it.

The scores are computed once per image and cached as `<out_dir>/<split>.npy` `(n, 52)` float32, in the order of the
face stage's prepared crops (both follow `index_fer2013`'s sorted file names).
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from fer_hf.errors_fer import FERInputError

logger = logging.getLogger(__name__)

# mediapipe/tasks/cc/vision/face_landmarker/face_blendshapes_graph.cc: kLandmarksSubsetIdxs (146 of the 478 points)
# and kBlendshapeNames (the model's output order).
LANDMARK_SUBSET = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78,
    80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149, 150, 152,
    153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246,
    249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312,
    314, 317, 318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381,
    382, 384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472,
    473, 474, 475, 476, 477,
)
BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)
_MODELS = ("face_landmarks_detector.tflite", "face_blendshapes.tflite")
_INPUT = 256  # the landmark model's input side
_BORDER = 0.25  # replicated border added on each side, as a fraction of the image side


def mirror_permutation() -> np.ndarray:
    """`(52,)` indices that turn the scores of a face into those of its mirror image (each Left <-> Right)."""
    names = list(BLENDSHAPE_NAMES)
    swap = {"Left": "Right", "Right": "Left"}
    out = []
    for name in names:
        for side, other in swap.items():
            if name.endswith(side):
                name = name[: -len(side)] + other
                break
        out.append(names.index(name))
    return np.array(out, np.int64)


def _model_files(path: str | os.PathLike) -> dict[str, bytes]:
    """The two models' bytes from a Face Landmarker `.task` file (a zip) or a folder that holds them."""
    path = Path(path)
    if path.is_dir():
        missing = [m for m in _MODELS if not (path / m).is_file()]
        if missing:
            raise FERInputError(f"{path} lacks {', '.join(missing)}: give MediaPipe's face_landmarker .task file "
                                "(with blendshapes) or the folder it unzips to")
        return {m: (path / m).read_bytes() for m in _MODELS}
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise FERInputError(f"{path} is not a Face Landmarker .task file or a folder of its models")
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        missing = [m for m in _MODELS if m not in names]
        if missing:
            raise FERInputError(f"{path} has no {', '.join(missing)}: it must be the Face Landmarker *with "
                                "blendshapes* (face_landmarker_v2_with_blendshapes.task)")
        return {m: z.read(m) for m in _MODELS}


class BlendshapeTeacher:
    """MediaPipe's landmark + blendshape models on LiteRT: a grey face image `(h, w)` uint8 -> `(52,)` scores."""

    def __init__(self, path: str | os.PathLike, num_threads: int = 1):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as err:  # pragma: no cover - the front-end needs LiteRT too
            raise ImportError("the blendshape teacher needs LiteRT: `pip install ai-edge-litert`") from err
        files = _model_files(path)
        self._landmarks = Interpreter(model_content=files[_MODELS[0]], num_threads=num_threads)
        self._blendshapes = Interpreter(model_content=files[_MODELS[1]], num_threads=num_threads)
        for interpreter in (self._landmarks, self._blendshapes):
            interpreter.allocate_tensors()
        self._lm_in = self._landmarks.get_input_details()[0]["index"]
        points = [d for d in self._landmarks.get_output_details() if int(np.prod(d["shape"])) == 478 * 3]
        if not points:
            raise FERInputError(f"{path}: the landmark model has no 478-point output")
        self._lm_out = points[0]["index"]
        self._bs_in = self._blendshapes.get_input_details()[0]["index"]
        self._bs_out = self._blendshapes.get_output_details()[0]["index"]

    def landmarks(self, grey: np.ndarray) -> np.ndarray:
        """`(478, 3)` points of a grey face image, in the pixels of the model's 256 x 256 input."""
        import cv2

        if grey.ndim != 2 or min(grey.shape) < 8:
            raise FERInputError(f"the blendshape teacher takes a grey image (h, w); got the shape {grey.shape}")
        pad = int(round(_BORDER * max(grey.shape)))
        big = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        big = cv2.resize(big, (_INPUT, _INPUT), interpolation=cv2.INTER_CUBIC)
        rgb = np.repeat(big[..., None], 3, -1).astype(np.float32)[None] / 255.0
        self._landmarks.set_tensor(self._lm_in, rgb)
        self._landmarks.invoke()
        return self._landmarks.get_tensor(self._lm_out).reshape(478, 3)

    def __call__(self, grey: np.ndarray) -> np.ndarray:
        points = self.landmarks(grey)[list(LANDMARK_SUBSET), :2].astype(np.float32)[None]
        self._blendshapes.set_tensor(self._bs_in, points)
        self._blendshapes.invoke()
        return self._blendshapes.get_tensor(self._bs_out).reshape(-1)[: len(BLENDSHAPE_NAMES)].astype(np.float32)


_TEACHER: BlendshapeTeacher | None = None


def _init_worker(path: str) -> None:
    global _TEACHER
    _TEACHER = BlendshapeTeacher(path)


def _score_one(grey: np.ndarray) -> np.ndarray:
    return _TEACHER(grey)


def prepare_blendshapes(items: list[tuple[str, int]], out_dir: str | os.PathLike, split: str,
                        teacher_path: str | os.PathLike, workers: int = 1) -> tuple[np.ndarray, float]:
    """Score every image of one split once: `<out_dir>/<split>.npy` `(n, 52)` float32 (reused when it exists with
    the same number of rows). `items` is the split's `index_fer2013` list (path, label), in the crops' order.

    Returns the scores and the seconds the scoring took (when it was done by an earlier run: that run's seconds,
    kept in `<split>.json`), so the recipe's time stays honest."""
    import json
    import time

    from .face_data import map_images

    out = Path(out_dir)
    target, record = out / f"{split}.npy", out / f"{split}.json"
    if target.exists():
        scores = np.load(target)
        if len(scores) == len(items):
            seconds = json.loads(record.read_text()).get("seconds", 0.0) if record.is_file() else 0.0
            return scores, seconds
        logger.warning("%s holds %d rows for %d images: scoring again", target, len(scores), len(items))
    _model_files(teacher_path)  # a wrong path fails here, not in a worker
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    rows = map_images(items, _init_worker, (str(teacher_path),), _score_one, workers)
    scores = np.stack(rows).astype(np.float32) if rows else np.zeros((0, len(BLENDSHAPE_NAMES)), np.float32)
    tmp = out / f".{split}.tmp.npy"
    np.save(tmp, scores)
    os.replace(tmp, target)
    seconds = round(time.time() - start, 1)
    record.write_text(json.dumps({"images": len(scores), "seconds": seconds, "workers": workers}))
    logger.info("%s: blendshapes of %d images in %.0f s -> %s", split, len(scores), seconds, target)
    return scores, seconds


__all__ = ["BLENDSHAPE_NAMES", "LANDMARK_SUBSET", "BlendshapeTeacher", "mirror_permutation", "prepare_blendshapes"]
