"""Face detection, tracking, crops and ROI maps (fer_hf/faces_fer.py)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from media_factory import ASTRONAUT_FACE_BOX, iou  # noqa: E402

from fer_hf.faces_fer import (  # noqa: E402
    HaarFaceDetector,
    crop_face,
    roi_weight_map,
)


def test_haar_finds_the_astronaut():
    from skimage import data

    faces = HaarFaceDetector(max_side=320).detect(data.astronaut())
    assert len(faces) >= 1
    best = max(faces, key=lambda f: f.score)
    assert iou((best.x0, best.y0, best.x1, best.y1), ASTRONAUT_FACE_BOX) > 0.6


def test_haar_finds_nothing_in_noise():
    rng = np.random.default_rng(0)
    assert HaarFaceDetector().detect(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) == []


def test_crop_pads_outside_the_frame():
    frame = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_face(frame, (-20, -20, 20, 20), margin=0.25, size=32)  # top-left corner, half outside
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
    assert crop[:10, :10].max() == 0  # black padding where the square leaves the frame
    assert crop[-5:, -5:].min() == 200


@pytest.mark.parametrize("size,patch", [(224, 16), (32, 8)])
def test_roi_map_peaks_on_eyes_brows_and_mouth(size, patch):
    roi = roi_weight_map(size, patch, margin=0.25)
    grid = size // patch
    assert roi.shape == (grid * grid,) and roi.dtype == np.float32
    assert roi.min() > 0 and roi.max() == pytest.approx(1.0)
    r = roi.reshape(grid, grid)
    # crop coordinates of box point (u, v): (u + m) / (1 + 2 m)
    def at(u, v):
        return r[int((v + 0.25) / 1.5 * grid), int((u + 0.25) / 1.5 * grid)]
    assert at(0.29, 0.39) > at(0.5, 0.0) and at(0.5, 0.79) > at(0.5, 0.0)  # eye, mouth > forehead
    assert at(0.29, 0.39) > r[0, 0] and r[0, 0] < 0.3  # corner = outside the face
    if size == 224:
        assert np.unravel_index(r.argmax(), r.shape)[0] in range(4, 12)  # peak row between brows and mouth


def test_roi_map_follows_landmarks():
    canonical = roi_weight_map(224, 16, 0.25)
    moved = roi_weight_map(224, 16, 0.25, landmarks={"left_eye": (0.2, 0.5), "right_eye": (0.6, 0.5),
                                                     "mouth_left": (0.3, 0.9), "mouth_right": (0.6, 0.9)})
    assert not np.allclose(canonical, moved)
    r = moved.reshape(14, 14)
    eye_row = int((0.5 + 0.25) / 1.5 * 14)
    assert r[eye_row].max() > 0.8


