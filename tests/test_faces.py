"""Face detection, tracking, crops and ROI maps (fer_hf/faces_fer.py)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from media_factory import ASTRONAUT_FACE_BOX, iou  # noqa: E402

from fer_hf.faces_fer import (  # noqa: E402
    FaceBox,
    FaceDetector,
    HaarFaceDetector,
    crop_face,
    roi_weight_map,
    track_face,
)


class ScriptedDetector(FaceDetector):
    """Returns prepared boxes per frame (keyed by the frame's value at [0, 0, 0])."""

    def __init__(self, script):
        self.script = script
        self.calls = 0

    def detect(self, frame_rgb):
        self.calls += 1
        return self.script.get(int(frame_rgb[0, 0, 0]), [])


def _frames(n, h=120, w=160):
    frames = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[0, 0, 0] = i
        frames.append(f)
    return frames


def test_haar_finds_the_astronaut():
    from skimage import data

    faces = HaarFaceDetector(max_side=320).detect(data.astronaut())
    assert len(faces) >= 1
    best = max(faces, key=lambda f: f.score)
    assert iou((best.x0, best.y0, best.x1, best.y1), ASTRONAUT_FACE_BOX) > 0.6


def test_haar_finds_nothing_in_noise():
    rng = np.random.default_rng(0)
    assert HaarFaceDetector().detect(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) == []


def test_track_keeps_the_largest_face_fills_gaps_and_drops_outliers():
    face = FaceBox(40, 30, 80, 70)  # side 40, centre (60, 50)
    small = FaceBox(0, 0, 10, 10)
    script = {i: [small, face] for i in (0, 1, 2, 4, 5, 7)}
    script[5] = [FaceBox(100, 60, 140, 100)]  # one-frame jumps: outliers, also at the first detection
    script[0] = [FaceBox(0, 60, 30, 90)]
    track = track_face(_frames(8), ScriptedDetector(script))
    assert track.found and track.num_detected == 6 and track.num_searched == 8
    for box in track.boxes:  # frames 3 and 6 (no detection) interpolated; the jumps removed by the median
        assert box == pytest.approx((40, 30, 80, 70), abs=1e-6)


def test_track_detects_on_a_subset_and_skips_invalid_and_repeated_frames():
    frames = _frames(30)
    frames[3] = frames[2]  # a repeated source frame (same object)
    frames[-1] = None  # past the clip end
    detector = ScriptedDetector({i: [FaceBox(10 + i, 10, 50 + i, 50)] for i in range(30)})
    track = track_face(frames, detector, max_detections=10)
    assert detector.calls == 10
    assert track.boxes[-1] is None
    xs = [b[0] for b in track.boxes[:-1]]
    assert np.all(np.diff(xs) >= -1e-6)  # a smooth, monotonic track along the motion
    assert xs[0] == pytest.approx(10, abs=1.5) and xs[-1] == pytest.approx(38, abs=1.5)


def test_no_face_anywhere():
    track = track_face(_frames(5), ScriptedDetector({}))
    assert not track.found and track.boxes == [None] * 5


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


def test_custom_detector_with_landmarks_in_a_track():
    box = FaceBox(40, 30, 80, 70, landmarks={"left_eye": (50, 45), "right_eye": (70, 45)})
    track = track_face(_frames(3), ScriptedDetector({0: [box]}))
    assert track.landmarks[2]["left_eye"] == pytest.approx((0.25, 0.375))  # in box coordinates
