"""Faces across shot cuts: a cut ends every track, IDs stay within a shot, whatever the call pattern.

The cut rule's thresholds (`fer_hf/shots_fer.py`) were measured on these kinds of generated pictures, 640 x 360,
frames 1/30, 0.1 and 0.375 s apart over 3 s (the largest figure of any pair of consecutive frames):

    motion (no cut)              changed share         colour distance
    pan 500 px/s (of 1280)       0.00 / 0.02 / 0.08    0.03 / 0.05 / 0.11
    zoom 1.3x/s                  0.00 / 0.02 / 0.26    <= 0.07
    shake +-20 px                <= 0.04               <= 0.05
    person crossing the room     0.32 / 0.32 / 0.35    <= 0.07
    close-up talking, moving     0.01 / 0.09 / 0.23    <= 0.05
    light dimming to 40 %        0.00                  0.28 / 0.60 / 0.76
    a face (17 % of the frame) leaving       0.17    0.13
    a real clip (gradio's world.mp4)         <= 0.04  <= 0.01

    cut                                         changed share   colour distance
    A on a wall -> B in a room                  0.71            0.75
    A on a wall -> B on the same wall, elsewhere 0.55           0.22
    wide shot -> close-up of the same set       0.75            0.28
    two people -> one elsewhere                 0.83            0.62
    close-up A -> close-up B on the same wall   0.47            0.06   (not a cut: only the face differs)
    A on a wall -> darker A on a dark wall      0.22            0.94   (not a cut: the same layout, darker)

A cut: changed >= 0.45 and colour >= 0.15, or changed >= 0.6. A close-up head (36 % of the frame) vanishing
between two frames reads as a cut (0.54, 0.33); a head of 17-30 % does not (0.17-0.35).
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import frontend_media as fm  # noqa: E402
from media_factory import astronaut_face  # noqa: E402

from fer_hf.shots_fer import ShotCuts, distances, is_cut, signature  # noqa: E402
from fer_hf.video_processing_fer import FERVideoProcessor  # noqa: E402

FACE = astronaut_face()
PERSON_B = np.ascontiguousarray(FACE[:, ::-1] * np.array([0.8, 0.9, 1.1])).clip(0, 255).astype(np.uint8)
SIZE = (640, 360)
FPS = 10


def _three_shots():
    """3 s at 10 fps: A drifting on a plain wall, a cut to B in a busy room standing where A stood, a cut back to A.
    Returns (frames, times, shot of each frame)."""
    frames, shots = [], []
    for k in range(3 * FPS):
        shot = k // FPS
        if shot == 1:
            frames.append(fm.scene(SIZE, [(PERSON_B, (285 + 2 * (k % FPS), 50, 240))], "busy"))
        else:
            frames.append(fm.scene(SIZE, [(FACE, (300 + 3 * (k % FPS), 60, 220))], "plain"))
        shots.append(shot)
    return frames, (np.arange(len(frames)) + 0.5) / FPS, np.array(shots)


def _pan(seconds: float = 2.0):
    """A camera panning 150 px/s (300 px/s in 720p) across a busy room with a person in it (no cut)."""
    import cv2
    from skimage import data

    room = cv2.resize(data.coffee(), (1600, 360), interpolation=cv2.INTER_CUBIC)
    room[60:280, 400:620] = cv2.resize(FACE, (220, 220), interpolation=cv2.INTER_AREA)
    times = (np.arange(int(seconds * FPS)) + 0.5) / FPS
    frames = [np.ascontiguousarray(room[:, int(150 * t): int(150 * t) + SIZE[0]]) for t in times]
    return frames, times


def _session():
    return FERVideoProcessor(image_size=64, patch_size=16).face_session()


def _ids(frames, times, chunk: int) -> list:
    """The clip-wide track id of the one face in each frame (None: no face, or several), feeding one face session
    `chunk` frames at a time."""
    faces = _session()
    ids = []
    for start in range(0, len(frames), chunk):
        out = faces.process(frames[start:start + chunk], times[start:start + chunk], all_people=True)
        for k in range(len(out.found)):
            here = [p.person["track_id"] for p in out.people if p.found[k]]
            ids.append(here[0] if len(here) == 1 else None)
    return ids


@pytest.fixture(scope="module")
def three_shots():
    return _three_shots()


def test_the_cut_rule_separates_cuts_from_motion(three_shots):
    frames, _, shots = three_shots
    pairs = [distances(signature(a), signature(b)) for a, b in zip(frames[:-1], frames[1:])]
    verdicts = [is_cut(*p) for p in pairs]
    assert verdicts == [bool(a != b) for a, b in zip(shots[:-1], shots[1:])], pairs
    pan, _ = _pan()
    assert not any(is_cut(*distances(signature(a), signature(b))) for a, b in zip(pan[:-1], pan[1:]))


@pytest.mark.parametrize("chunk", [30, 4, 1], ids=["all-at-once", "chunks-of-4", "one-at-a-time"])
def test_a_cut_ends_every_track_and_ids_stay_within_a_shot(three_shots, chunk):
    frames, times, shots = three_shots
    ids = _ids(frames, times, chunk)
    assert None not in ids, ids  # the face is found in every frame
    per_shot = [sorted(set(ids[k] for k in np.flatnonzero(shots == s))) for s in range(3)]
    assert all(len(p) == 1 for p in per_shot), f"one id per shot: {per_shot}"
    assert len({p[0] for p in per_shot}) == 3, f"a new id after every cut (no re-identification by place): {ids}"


def test_the_verdicts_are_the_same_however_the_frames_arrive(three_shots):
    frames, times, _ = three_shots
    cut_times = []
    for chunk in (30, 4, 2, 1):
        cuts = ShotCuts()
        numbers = np.concatenate([cuts.shots(frames[s:s + chunk], times[s:s + chunk])
                                  for s in range(0, len(frames), chunk)])
        assert numbers.tolist() == np.repeat([0, 1, 2], FPS).tolist()
        cut_times.append(cuts.cut_times)
    assert cut_times == [[1.05, 2.05]] * 4
    assert [_ids(frames, times, c) for c in (30, 4, 1)] == [[0] * FPS + [1] * FPS + [2] * FPS] * 3


def test_overlapping_windows_place_old_frames_in_their_shot(three_shots):
    frames, times, _ = three_shots
    cuts = ShotCuts()
    cuts.shots(frames[0:20:2], times[0:20:2])  # a window of every other frame up to 2 s
    again = cuts.shots(frames[5:25], times[5:25])  # the next window overlaps it and fills in the frames between
    assert again.tolist() == [0] * 5 + [1] * 10 + [2] * 5
    assert len(cuts.cut_times) == 2


@pytest.mark.parametrize("chunk", [20, 4, 1])
def test_a_pan_without_a_cut_keeps_one_id(chunk):
    frames, times = _pan()
    ids = _ids(frames, times, chunk)
    assert set(ids) == {0}, ids


def test_a_black_frame_neither_starts_a_shot_nor_hides_a_cut(three_shots):
    frames, times, _ = three_shots
    black = np.zeros_like(frames[0])
    cuts = ShotCuts()
    assert cuts.shots([frames[0], black, frames[1], black, frames[15]], [0.0, 0.1, 0.2, 0.3, 0.4]).tolist() == \
        [0, 0, 0, 0, 1]


def test_a_30_px_face_in_720p_is_found_as_decoded():
    """Every driver decodes to 640 px, where a 30 px face of 720p is 15 px: the tiled pass's second level (tiles of
    0.17 of the long side) finds it, on a busy and a plain background."""
    import cv2

    side = int(30 * 185 / 93)  # the pasted head whose face oval is 30 px wide
    for background, (x0, y0) in (("busy", (700, 400)), ("plain", (200, 150))):
        frame = fm.scene((1280, 720), [(FACE, (x0, y0, side))], background)
        decoded = cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA)  # what every driver hands the session
        kept = _session().process([decoded], [0.0], 2.0)
        assert kept.found[0], background
        expected = np.array(fm.face_box_in_scene(x0, y0, side))  # source (720p) pixels, as face_boxes are
        assert np.abs(np.asarray(kept.face_boxes[0]) - expected).max() < 12, (background, kept.face_boxes[0])

    empty = cv2.resize(fm.scene((1280, 720), [], "busy"), (640, 360), interpolation=cv2.INTER_AREA)
    assert not _session().process([empty], [0.0], 2.0).found[0]  # the finer tiles find no face in the coffee photo
