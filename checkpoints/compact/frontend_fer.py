"""The face front-end of one window: tracks, the person whose face goes to the model, aligned crops, ROI maps.

    front = FaceFrontEnd(image_size=224, patch_size=16, margin=0.25)
    faces = front.window(frames, frame_times, audio=wave, audio_start_s=t0, registry=registry)
    faces.crops (T, S, S, 3) uint8, faces.roi (T, N), faces.face_found (T,), faces.person, faces.tracks
    every = front.window(frames, frame_times, registry=registry, all_people=True)
    every.people[i].track_id, .crops (T, S, S, 3), .roi (T, N), .face_found (T,)   one entry per face track

Whose face: `person=<id>` when given (a clip-wide track ID from `FaceTrackRegistry`); otherwise the person who
is speaking: the face whose mouth opening (face-mesh inner-lip gap / eye distance) correlates best with the
voice's energy (RMS in +-40 ms around each frame) over the window's frames, when that correlation is at least
`min_speaker_correlation` and beats the next face by `SPEAKER_MARGIN`; otherwise the largest, most present face
(presence fraction x mean area). `faces.person["reason"]` says which rule chose and with what figures.

Crops are similarity-aligned on the eye and mouth centres (rotation, scale, centre; `faces_fer.align_face`), ROI
maps are painted from the mesh (`faces_fer.roi_weight_map_from_mesh`). A box-only detector (e.g. the Haar
fallback, with `landmarker=None`) gives square box crops and canonical ROI maps.

`FRONTEND_VERSION` names this front-end's behaviour (detector, tracking, selection, alignment, ROI painting);
it changes whenever the crops, masks or ROI maps it makes for the same media and settings would change, so a
training cache keyed on it is rebuilt rather than reused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .face_landmarks_fer import BlazeFaceDetector, FaceMeshLandmarker
from .face_tracking_fer import ANALYSE_STEP_S, MAX_GAP_S, FaceTrack, FaceTrackRegistry, track_faces
from .faces_fer import (
    FaceDetector,
    align_face,
    alignment_matrix,
    crop_box,
    crop_face,
    crop_region,
    roi_weight_map,
    roi_weight_map_from_mesh,
)
from .shots_fer import ShotCuts

logger = logging.getLogger(__name__)

FRONTEND_VERSION = ("faces-4: blazeface (two tile levels, faces from 2.5 % of the long side)+mesh468 tracks "
                    "carried across calls, every face once per frame, audio seeks pre-rolled on the sample grid, "
                    "person per window (speaker by mouth-energy correlation), similarity-aligned crops")
ENERGY_HALF_WINDOW_S = 0.04  # the voice energy at a frame: RMS over +-40 ms
MIN_SPEAKER_CORRELATION = 0.3
SPEAKER_MARGIN = 0.15  # the speaking face's correlation must beat the next face's by this much
MIN_MOUTH_FRAMES = 4  # frames with landmarks needed to correlate a mouth with the voice
MIN_PRESENCE = 0.25  # a face present in fewer of the window's frames is not a candidate (unless it is the only one)


@dataclass
class PersonFaces:
    """One face track's crops in a window (pixels of the decoded frames).

    Attributes:
        track_id: the track's id (clip-wide when a registry was given).
        crops: uint8 `(T, S, S, 3)`, black where this face is not found.
        roi: float32 `(T, N)` ROI weights, 0 where this face is not found.
        face_found: bool `(T,)`, the face is in frame k (found, or interpolated inside a short gap).
        face_boxes, crop_boxes: `T` entries `(x0, y0, x1, y1)` or None.
    """

    track_id: int
    crops: np.ndarray
    roi: np.ndarray
    face_found: np.ndarray
    face_boxes: list
    crop_boxes: list


@dataclass
class WindowFaces:
    """What the front-end made of one window (pixels of the decoded frames).

    Attributes:
        crops: uint8 `(T, S, S, 3)`, black where the chosen face is not found.
        roi: float32 `(T, N)` ROI weights, 0 where the chosen face is not found.
        face_found: bool `(T,)`, the chosen face is in frame k (found, or interpolated inside a short gap).
        face_boxes, crop_boxes: `T` entries `(x0, y0, x1, y1)` or None.
        tracks: every face track of the window (clip-wide IDs when a registry was given).
        person: `{"track_id": int | None, "reason": str}`.
        num_analysed: frames the detector / landmarks ran on.
        video_reason: "ok" or why no face went to the model.
        people: with `all_people=True`, one `PersonFaces` per track in `tracks` (same order); the chosen person's
            entry holds the same arrays as `crops`, `roi`, `face_found`. Empty otherwise.
        shots: int `(T,)` shot number of each frame (`shots_fer.ShotCuts`), -1 where there is no frame.
    """

    crops: np.ndarray
    roi: np.ndarray
    face_found: np.ndarray
    face_boxes: list
    crop_boxes: list
    tracks: list
    person: dict
    num_analysed: int
    video_reason: str
    people: list = field(default_factory=list)
    shots: np.ndarray | None = None


def voice_energy(audio: np.ndarray | None, times_s, audio_start_s: float, sampling_rate: int) -> np.ndarray | None:
    """RMS of `audio` `(n,)` in +-`ENERGY_HALF_WINDOW_S` around each time (clip seconds); None without audio."""
    if audio is None or len(audio) == 0:
        return None
    h = max(1, int(ENERGY_HALF_WINDOW_S * sampling_rate))
    out = []
    for t in np.asarray(times_s, np.float64):
        c = int(round((t - audio_start_s) * sampling_rate))
        part = audio[max(0, c - h): max(0, c + h)]
        out.append(float(np.sqrt(np.mean(np.square(part, dtype=np.float64)))) if len(part) else 0.0)
    return np.asarray(out)


def _correlation(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < MIN_MOUTH_FRAMES or np.std(x) < 1e-3 or np.std(y) < 1e-9:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def choose_person(tracks: list[FaceTrack], valid: np.ndarray, energy: np.ndarray | None, person: int | None = None,
                  min_correlation: float = MIN_SPEAKER_CORRELATION, speech: bool = True) -> tuple:
    """(chosen track or None, reason). See the module docstring for the rules."""
    if person is not None:
        for tr in tracks:
            if tr.track_id == person:
                return tr, f"person {person} was asked for"
        here = ", ".join(str(t.track_id) for t in tracks) or "none"
        return None, f"person {person} is not in this window (faces here: {here})"
    if not tracks:
        return None, "no face found"
    n_valid = max(1, int(valid.sum()))
    presence = {tr.track_id: float((tr.found & valid).sum()) / n_valid for tr in tracks}
    candidates = [tr for tr in tracks if presence[tr.track_id] >= MIN_PRESENCE] or tracks
    if len(candidates) == 1:
        only = candidates[0]
        return only, ("the only face in the window" if len(tracks) == 1 else
                      f"the only face present in at least {100 * MIN_PRESENCE:.0f} % of the frames")
    r = {}
    if energy is not None and speech:
        for tr in candidates:
            ks = [k for k in range(len(valid)) if valid[k] and tr.observations[k] is not None
                  and tr.observations[k].mesh is not None]
            mouth = np.array([tr.observations[k].mouth_opening() for k in ks])
            c = _correlation(mouth, energy[ks]) if ks else None
            if c is not None:
                r[tr.track_id] = c
    ranked = sorted(r.items(), key=lambda kv: -kv[1])
    if ranked and ranked[0][1] >= min_correlation:
        runner_up = ranked[1][1] if len(ranked) > 1 else None
        if runner_up is None or ranked[0][1] - runner_up >= SPEAKER_MARGIN:
            tid = ranked[0][0]
            others = "" if runner_up is None else f", next face r = {runner_up:.2f}"
            return (next(t for t in candidates if t.track_id == tid),
                    f"person {tid} is speaking: their mouth follows the voice (r = {ranked[0][1]:.2f}{others})")
    best = max(candidates, key=lambda t: presence[t.track_id] * t.mean_area())
    if energy is None or not speech:
        why = "no speech to match the mouths with"
    elif not ranked:
        why = "no mouth movement to match with the voice"
    else:
        why = f"no mouth clearly follows the voice (best r = {ranked[0][1]:.2f})"
    return best, f"person {best.track_id}: the largest, most present of {len(candidates)} faces ({why})"


class FaceFrontEnd:
    """Detection, tracking, person choice, aligned crops and ROI maps of a window.

    Args:
        detector: any `FaceDetector`; default `BlazeFaceDetector("short")` with its tiled small-face pass.
        landmarker: the face mesh (default `FaceMeshLandmarker()`); None tracks boxes only (no alignment, canonical
            ROI maps), the documented fallback for box-only detectors such as `HaarFaceDetector`.
        image_size, patch_size: crop side and the model's patch grid (ROI maps have `(S / patch)^2` entries).
        margin: face margin of the crop on each side, as a fraction of the face size.
        analyse_step_s, max_gap_s: see `face_tracking_fer`.
        min_speaker_correlation: mouth-energy correlation needed to call a face the speaker.
    """

    def __init__(self, detector: FaceDetector | None = None, landmarker="default", image_size: int = 224,
                 patch_size: int = 16, margin: float = 0.25, analyse_step_s: float = ANALYSE_STEP_S,
                 max_gap_s: float = MAX_GAP_S, min_speaker_correlation: float = MIN_SPEAKER_CORRELATION):
        self.detector = detector if detector is not None else BlazeFaceDetector("short")
        self.landmarker = FaceMeshLandmarker() if isinstance(landmarker, str) and landmarker == "default" \
            else landmarker
        self.image_size, self.patch_size, self.margin = int(image_size), int(patch_size), float(margin)
        self.analyse_step_s, self.max_gap_s = float(analyse_step_s), float(max_gap_s)
        self.min_speaker_correlation = float(min_speaker_correlation)

    def window(self, frames: list, frame_times, audio: np.ndarray | None = None, audio_start_s: float = 0.0,
               sampling_rate: int = 16000, registry: FaceTrackRegistry | None = None, person: int | None = None,
               speech: bool = True, all_people: bool = False) -> WindowFaces:
        """The front-end's result for a window.

        Args:
            frames: `T` uint8 RGB frames or None (no frame there, e.g. past the clip end).
            frame_times: `T` times (clip seconds) of the frames.
            audio: the window's 16 kHz mono audio (for the speaker choice), starting at `audio_start_s`.
            registry: the clip's `FaceTrackRegistry` (clip-wide IDs, and the clip's shot cuts: a cut ends every
                track, also between calls); None keeps window-local IDs and finds cuts inside this window only.
            person: the track ID to use instead of the automatic choice.
            speech: False when the window has no speech (the speaker choice then falls back).
            all_people: also crop every other track (`WindowFaces.people`), e.g. to classify each person.
        """
        n, size = len(frames), self.image_size
        valid = np.array([f is not None for f in frames], bool)
        crops = np.zeros((n, size, size, 3), np.uint8)
        roi = np.zeros((n, (size // self.patch_size) ** 2), np.float32)
        face_boxes, crop_boxes = [None] * n, [None] * n
        if not valid.any():
            return WindowFaces(crops, roi, np.zeros(n, bool), face_boxes, crop_boxes, [],
                               {"track_id": None, "reason": "no video frames inside the window"}, 0,
                               "no video frames inside the window")
        cuts = registry.cuts if registry is not None else ShotCuts()  # the clip's cut state lives in its registry
        shots = cuts.shots(frames, frame_times)
        tracks, analysed = track_faces(frames, frame_times, self.detector, self.landmarker, self.analyse_step_s,
                                       self.max_gap_s, shots=shots,
                                       carry=registry.carry if registry is not None else None)
        if registry is not None:
            registry.assign(tracks, frame_times, shots)
        energy = voice_energy(audio, frame_times, audio_start_s, sampling_rate)
        chosen, reason = choose_person(tracks, valid, energy, person, self.min_speaker_correlation, speech)
        found = np.zeros(n, bool)
        mine = self.track_crops(chosen, frames) if chosen is not None else None
        if mine is not None:
            crops, roi, found, face_boxes, crop_boxes = (mine.crops, mine.roi, mine.face_found, mine.face_boxes,
                                                         mine.crop_boxes)
        people = [mine if tr is chosen else self.track_crops(tr, frames) for tr in tracks] if all_people else []
        if not tracks:
            video_reason = f"no face found in any of {analysed} frames"
        elif chosen is None:
            video_reason = reason
        else:
            video_reason = "ok"
        return WindowFaces(crops, roi, found, face_boxes, crop_boxes, tracks,
                           {"track_id": None if chosen is None else chosen.track_id, "reason": reason},
                           analysed, video_reason, people, shots)

    def track_crops(self, track: FaceTrack, frames: list) -> PersonFaces:
        """Aligned crops, ROI maps and boxes of one track over the window's `frames` (black where it is not found)."""
        n, size = len(frames), self.image_size
        crops = np.zeros((n, size, size, 3), np.uint8)
        roi = np.zeros((n, (size // self.patch_size) ** 2), np.float32)
        face_boxes, crop_boxes = [None] * n, [None] * n
        found = np.zeros(n, bool)
        done: dict = {}
        for k, obs in enumerate(track.observations):
            if obs is None or frames[k] is None:
                continue
            key = (id(frames[k]), id(obs))
            if key not in done:
                done[key] = self._crop(frames[k], obs)
            crops[k], roi[k], crop_boxes[k] = done[key]
            face_boxes[k] = tuple(float(v) for v in obs.box)
            found[k] = True
        return PersonFaces(track.track_id, crops, roi, found, face_boxes, crop_boxes)

    def _crop(self, frame: np.ndarray, obs) -> tuple:
        size = self.image_size
        kp = obs.key_points or {}
        if all(k in kp for k in ("left_eye", "right_eye", "mouth")):
            m = alignment_matrix(kp, self.margin, size)
            crop = align_face(frame, m, size)
            if obs.mesh is not None:
                pts = obs.mesh @ m[:, :2].T + m[:, 2]
                weights = roi_weight_map_from_mesh(pts, size, self.patch_size)
            else:  # the detector's key points, in the crop's face-box coordinates
                span = 1.0 + 2.0 * self.margin
                box_kp = {k: tuple((np.asarray(v) @ m[:, :2].T + m[:, 2]) / size * span - self.margin)
                          for k, v in kp.items()}
                weights = roi_weight_map(size, self.patch_size, self.margin, box_kp)
            return crop, weights, crop_region(m, size)
        x0, y0, x1, y1 = obs.box
        side = max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        square = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        return (crop_face(frame, square, self.margin, size), roi_weight_map(size, self.patch_size, self.margin),
                crop_box(square, self.margin))


__all__ = ["FRONTEND_VERSION", "FaceFrontEnd", "PersonFaces", "WindowFaces", "choose_person", "voice_energy"]
