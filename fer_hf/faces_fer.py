"""Face detection, tracking, cropping and ROI weight maps (SPEC §2.2).

- `FaceDetector` is the pluggable interface: `detect(frame_rgb) -> list[FaceBox]`. A backend that also finds
  landmarks (e.g. a 5-point detector) fills `FaceBox.landmarks`; the ROI maps then follow them. The default
  detector is BlazeFace with the 468-point face mesh (`face_landmarks_fer`, tracked by `face_tracking_fer`).
- `HaarFaceDetector` is the documented fallback: OpenCV's frontal-face Haar cascade on a downscaled grey frame
  with local (CLAHE) contrast equalisation.
- `align_face` cuts a similarity-aligned square crop from the eye and mouth landmarks and
  `roi_weight_map_from_mesh` paints the ROI weights from the 468 landmarks themselves.
- Tracking (several faces, ids, shot cuts) lives in `face_tracking_fer` and `shots_fer`.
- `crop_face` cuts a square around the tracked box with a margin, pads with black where it leaves the frame,
  and resizes to `S x S`.
- `roi_weight_map` gives one weight per patch `[N]`, N = (S / patch)^2, higher on eyes, brows and mouth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

try:
    import cv2
except ImportError:  # pragma: no cover - faces need OpenCV; the error is raised when they are used
    cv2 = None

logger = logging.getLogger(__name__)

# Pixel weights of the face regions (the map is max over regions, then averaged per patch, then divided by its max).
ROI_REGION_WEIGHTS = {
    "eyes": 1.0,
    "brows": 1.0,
    "mouth": 1.0,
    "nose": 0.6,
    "cheeks": 0.6,
    "face": 0.3,  # the rest of the face ellipse
    "outside": 0.1,  # hair, neck, background
}
# Canonical region ellipses in face-box coordinates (u, v in [0, 1] across the detected box), measured on the
# Haar frontal-face box: eyes at v ~ 0.38, mouth at v ~ 0.78. (centre_u, centre_v, radius_u, radius_v)
CANONICAL_REGIONS = {
    "eyes": [(0.29, 0.39, 0.14, 0.08), (0.71, 0.39, 0.14, 0.08)],
    "brows": [(0.29, 0.25, 0.16, 0.06), (0.71, 0.25, 0.16, 0.06)],
    "mouth": [(0.50, 0.79, 0.20, 0.09)],
    "nose": [(0.50, 0.58, 0.10, 0.13)],
    "cheeks": [(0.24, 0.63, 0.12, 0.11), (0.76, 0.63, 0.12, 0.11)],
    "face": [(0.50, 0.52, 0.56, 0.66)],
}
ROI_SAMPLES_PER_PATCH = 4  # sub-samples per patch side when averaging the pixel weights
CONFIDENT_FRACTION = 0.5  # a face competes for "largest" only if its score is at least this share of the best


def require_cv2():
    if cv2 is None:
        raise ImportError("face detection and cropping need OpenCV: `pip install opencv-python-headless`")
    return cv2


@dataclass
class FaceBox:
    """A face in the pixel coordinates of the frame given to the detector.

    `landmarks` (optional) maps names to `(x, y)` pixels; understood names: left_eye, right_eye, nose, mouth,
    mouth_left, mouth_right, left_brow, right_brow.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    landmarks: dict | None = field(default=None)

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


class FaceDetector:
    """Interface of a face detector backend. Subclass it and implement `detect`."""

    def detect(self, frame_rgb: np.ndarray) -> list[FaceBox]:
        """Faces in one uint8 RGB frame `(H, W, 3)`; boxes in that frame's pixels (any order)."""
        raise NotImplementedError


@lru_cache(maxsize=4)
def _cascade(name: str):
    require_cv2()
    classifier = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if classifier.empty():
        raise RuntimeError(f"could not load the OpenCV cascade {name!r} from {cv2.data.haarcascades}")
    return classifier


@lru_cache(maxsize=1)
def _clahe():
    return require_cv2().createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))


class HaarFaceDetector(FaceDetector):
    """OpenCV Haar cascade (frontal faces), run on a grey copy whose long side is at most `max_side` pixels.

    The grey frame gets local contrast equalisation (CLAHE, 8 x 8 tiles, clip 2): a global histogram equalisation
    stretches a flat background over the whole range and washes out a face in front of a plain wall.

    Args:
        max_side: detection resolution (px, long side); the cascade's smallest face is 24 px at this scale.
        scale_factor, min_neighbors: `cv2.CascadeClassifier.detectMultiScale` settings.
        min_face_fraction: smallest face side as a fraction of the frame's short side.
        cascade: file name inside `cv2.data.haarcascades`.
    """

    def __init__(self, max_side: int = 320, scale_factor: float = 1.1, min_neighbors: int = 5,
                 min_face_fraction: float = 0.08, cascade: str = "haarcascade_frontalface_default.xml"):
        self.max_side = max_side
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face_fraction = min_face_fraction
        self.cascade = cascade

    def detect(self, frame_rgb: np.ndarray) -> list[FaceBox]:
        require_cv2()
        h, w = frame_rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        grey = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        grey = _clahe().apply(grey)
        min_side = max(24, int(self.min_face_fraction * min(grey.shape)))
        rects, _, weights = _cascade(self.cascade).detectMultiScale3(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side),
            outputRejectLevels=True,
        )
        boxes = []
        for (x, y, bw, bh), weight in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            boxes.append(FaceBox(x / scale, y / scale, (x + bw) / scale, (y + bh) / scale, float(weight)))
        return boxes


# --------------------------------------------------------------------------------------
# Tracking
def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 `(h, w, 3)` to `size = (width, height)`: area filter when shrinking, bilinear otherwise."""
    require_cv2()
    shrinking = size[0] < image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def crop_box(box: tuple, margin: float) -> tuple[float, float, float, float]:
    """Square crop region around a (square) face box, `margin` of the box side added on every side."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def crop_face(frame: np.ndarray, box: tuple, margin: float, size: int) -> np.ndarray:
    """uint8 `(size, size, 3)` crop of `frame` around `box` (frame pixels), black where it leaves the frame."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (round(v) for v in crop_box(box, margin))
    side = max(1, x1 - x0)
    canvas = np.zeros((side, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    return resize_image(canvas, (size, size))


def center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """Fallback for frames without a face: the centred square, resized to `(size, size, 3)`."""
    h, w = frame.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return resize_image(frame[y0:y0 + side, x0:x0 + side], (size, size))


# --------------------------------------------------------------------------------------
# Aligned crops
# Where the eye centres and the mouth centre sit in a face box (u, v in [0, 1]); the same places as the canonical
# ROI regions, so an aligned crop frames the face as a box crop with the same margin does.
CANONICAL_KEY_POINTS = {"left_eye": (0.29, 0.39), "right_eye": (0.71, 0.39), "mouth": (0.50, 0.80)}


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + shift mapping points `src` `(n, 2)` onto `dst` `(n, 2)`: `(2, 3)`."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    # z = x + iy: the best complex factor k = sum(conj(a) b) / sum(|a|^2) is scale * e^(i angle)
    za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
    k = np.sum(np.conj(za) * zb) / max(float(np.sum(np.abs(za) ** 2)), 1e-12)
    m = np.array([[k.real, -k.imag, 0.0], [k.imag, k.real, 0.0]])
    m[:, 2] = md - m[:, :2] @ ms
    return m


def alignment_matrix(key_points: dict, margin: float, size: int) -> np.ndarray:
    """`(2, 3)` frame pixels -> crop pixels that puts the eyes and mouth at their canonical crop positions."""
    names = [n for n in CANONICAL_KEY_POINTS if n in key_points]
    if len(names) < 2:
        raise ValueError(f"alignment needs at least two of {list(CANONICAL_KEY_POINTS)}, got {sorted(key_points)}")
    dst = [((np.asarray(CANONICAL_KEY_POINTS[n]) + margin) / (1.0 + 2.0 * margin)) * size for n in names]
    return similarity_transform([key_points[n] for n in names], dst)


def align_face(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """uint8 `(size, size, 3)` crop of `frame` through the frame -> crop `matrix` (black outside the frame).

    A face shrunk by more than ~1.4x is first reduced with an area filter around the crop, so the crop does not
    alias (4K frames, large faces).
    """
    cv2 = require_cv2()
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    if scale < 0.7:
        inv = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inv[:, :2].T + inv[:, 2]
        h, w = frame.shape[:2]
        x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, [w - 1, h - 1])
        x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int), [x0 + 1, y0 + 1], [w, h])
        k = min(1.0, scale * 1.4)
        part = cv2.resize(frame[y0:y1, x0:x1], (max(1, round((x1 - x0) * k)), max(1, round((y1 - y0) * k))),
                          interpolation=cv2.INTER_AREA)
        # crop = M (x_part / k + offset): fold the reduction into the matrix
        matrix = np.concatenate([matrix[:, :2] / k, (matrix[:, :2] @ np.array([x0, y0]) + matrix[:, 2])[:, None]], 1)
        frame = part
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def crop_region(matrix: np.ndarray, size: int) -> tuple[float, float, float, float]:
    """Axis-aligned bounding box (frame pixels) of the area an aligned crop shows."""
    inv = require_cv2().invertAffineTransform(matrix)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inv[:, :2].T + inv[:, 2]
    lo, hi = corners.min(0), corners.max(0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


# --------------------------------------------------------------------------------------
# ROI maps
def _regions_from_landmarks(lms: dict) -> dict:
    """Region ellipses (box coordinates) placed on landmarks; regions without landmarks keep canonical places."""
    regions = {k: list(v) for k, v in CANONICAL_REGIONS.items()}
    eyes = [lms[k] for k in ("left_eye", "right_eye") if k in lms]
    if eyes:
        regions["eyes"] = [(u, v, 0.14, 0.08) for u, v in eyes]
        brows = [lms[k] for k in ("left_brow", "right_brow") if k in lms]
        regions["brows"] = [(u, v, 0.16, 0.06) for u, v in brows] or [(u, v - 0.14, 0.16, 0.06) for u, v in eyes]
    corners = [lms[k] for k in ("mouth_left", "mouth_right") if k in lms]
    if "mouth" in lms or corners:
        pts = [lms["mouth"]] if "mouth" in lms else corners
        mu, mv = np.mean(pts, axis=0)
        ru = max(0.12, 0.6 * abs(corners[0][0] - corners[1][0])) if len(corners) == 2 else 0.20
        regions["mouth"] = [(float(mu), float(mv), ru, 0.09)]
    if "nose" in lms:
        regions["nose"] = [(lms["nose"][0], lms["nose"][1] - 0.04, 0.10, 0.13)]
    return regions


def roi_weight_map(image_size: int, patch_size: int, margin: float, landmarks: dict | None = None) -> np.ndarray:
    """Patch weights `(N,)`, N = (image_size / patch_size)^2, for a face crop made by `crop_face` with `margin`.

    Pixel weight = the largest `ROI_REGION_WEIGHTS` entry of the regions covering it (ellipses in face-box
    coordinates: canonical, or centred on `landmarks` given in box coordinates); a patch gets the mean over
    `ROI_SAMPLES_PER_PATCH^2` points inside it; the map is divided by its maximum, so values lie in (0, 1]
    with 1 on the eyes / brows / mouth.
    """
    if landmarks is None:
        return _canonical_roi(image_size, patch_size, round(margin, 6)).copy()
    return _paint_roi(image_size, patch_size, margin, _regions_from_landmarks(landmarks))


# Face-mesh indices (MediaPipe topology), image-left first.
MESH_INDEX = {
    "eye_left": (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    "eye_right": (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
    "brow_left": (70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
    "brow_right": (300, 293, 334, 296, 336, 285, 295, 282, 283, 276),
    "lips": (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185),
    "nose": (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 327, 129, 358, 49, 279),
    "cheek_left": (50, 101, 118, 117, 123, 147, 187, 205, 36),
    "cheek_right": (280, 330, 347, 346, 352, 376, 411, 425, 266),
    "oval": (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109),
}
# Face-mesh regions (index names of `MESH_INDEX`) painted with their weight, and how much each
# region's convex hull is enlarged about its centre (eye contours -> lids, lips -> the skin that moves with them).
MESH_REGIONS = (
    ("face", ("oval",), 1.0),
    ("cheeks", ("cheek_left", "cheek_right"), 1.3),
    ("nose", ("nose",), 1.2),
    ("eyes", ("eye_left", "eye_right"), 1.8),
    ("brows", ("brow_left", "brow_right"), 1.5),
    ("mouth", ("lips",), 1.3),
)


def roi_weight_map_from_mesh(points: np.ndarray, image_size: int, patch_size: int,
                             mesh_index: dict | None = None) -> np.ndarray:
    """Patch weights `(N,)` painted from face-mesh landmarks `points` `(468, 2)` in crop pixels.

    Each region of `MESH_REGIONS` is the convex hull of its landmarks (enlarged), painted with its
    `ROI_REGION_WEIGHTS` entry on a grid of `ROI_SAMPLES_PER_PATCH` samples per patch side, keeping the largest
    weight per sample (outside the face oval: `outside`); a patch gets the mean of its samples and the map is
    divided by its maximum (values in (0, 1], 1 on eyes / brows / mouth).
    """
    cv2 = require_cv2()
    if mesh_index is None:
        mesh_index = MESH_INDEX
    grid = image_size // patch_size
    n = grid * ROI_SAMPLES_PER_PATCH
    k = n / image_size  # crop pixels -> samples
    weight = np.full((n, n), ROI_REGION_WEIGHTS["outside"], np.float32)
    for region, parts, grow in MESH_REGIONS:
        value = ROI_REGION_WEIGHTS[region]
        for part in parts:
            pts = np.asarray(points, np.float64)[list(mesh_index[part])] * k
            centre = pts.mean(0)
            hull = cv2.convexHull(((pts - centre) * grow + centre - 0.5).astype(np.float32))
            layer = np.zeros((n, n), np.uint8)
            cv2.fillConvexPoly(layer, np.round(hull.reshape(-1, 2) * 16).astype(np.int32), 1, lineType=cv2.LINE_8,
                               shift=4)
            weight[layer > 0] = np.maximum(weight[layer > 0], value)
    s = ROI_SAMPLES_PER_PATCH
    patches = weight.reshape(grid, s, grid, s).mean(axis=(1, 3))  # (grid, grid), row-major like ViT patches
    return (patches / patches.max()).reshape(-1).astype(np.float32)


@lru_cache(maxsize=16)
def _canonical_roi(image_size: int, patch_size: int, margin: float) -> np.ndarray:
    return _paint_roi(image_size, patch_size, margin, CANONICAL_REGIONS)


def _paint_roi(image_size: int, patch_size: int, margin: float, regions: dict) -> np.ndarray:
    grid = image_size // patch_size  # patches per side
    n = grid * ROI_SAMPLES_PER_PATCH  # sample points per side
    crop_pos = (np.arange(n) + 0.5) / n  # sample centres in crop coordinates [0, 1]
    box_pos = crop_pos * (1.0 + 2.0 * margin) - margin  # the same points in face-box coordinates
    u, v = np.meshgrid(box_pos, box_pos)  # (n, n), v down the rows
    weight = np.full((n, n), ROI_REGION_WEIGHTS["outside"], np.float32)
    for name, ellipses in regions.items():
        for cu, cv, ru, rv in ellipses:
            inside = ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0
            weight[inside] = np.maximum(weight[inside], ROI_REGION_WEIGHTS[name])
    s = ROI_SAMPLES_PER_PATCH
    patches = weight.reshape(grid, s, grid, s).mean(axis=(1, 3))  # (grid, grid), row-major like ViT patches
    return (patches / patches.max()).reshape(-1).astype(np.float32)


__all__ = [
    "CANONICAL_KEY_POINTS",
    "CANONICAL_REGIONS",
    "MESH_INDEX",
    "MESH_REGIONS",
    "ROI_REGION_WEIGHTS",
    "FaceBox",
    "FaceDetector",
    "HaarFaceDetector",
    "align_face",
    "alignment_matrix",
    "center_crop",
    "crop_region",
    "crop_box",
    "crop_face",
    "resize_image",
    "require_cv2",
    "roi_weight_map",
    "roi_weight_map_from_mesh",
    "similarity_transform",
]
