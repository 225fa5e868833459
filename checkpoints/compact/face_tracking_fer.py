"""Face tracks with IDs over a window's frames, and clip-wide IDs across windows (SPEC §5).

`track_faces(frames, frame_times, detector, landmarker)` follows every face of a window:

- Frames are analysed at least every `analyse_step_s` of clip time (all of them when they are sparser, e.g. the
  realtime preset's 8 frames per 3 s; every 3rd at 30 fps for the seed preset) and always the last one.
- On an analysed frame, each face seen on the previous analysed frame is followed by its landmarks (the face mesh
  on the region its previous landmarks give); the model's face-presence score says whether the face is still
  there. The detector's whole-frame pass runs on every analysed frame to catch new faces; detections that no track
  explains are confirmed by the face mesh (no mesh, no face: this rejects e.g. a cat's face, scored 0.55; a
  region rotated by the detector's eye points is retried upright once). A detection scored at least
  `TRUSTED_DETECTION` is kept with its own 6 key points even when the mesh rejects it (a strongly tinted face).
  Confirmed faces start a new track, or continue a lost track whose last box they overlap. The finer tiled pass
  runs only while no face is tracked, at most every `fine_every_s`.
- Where a face appears or disappears between two analysed frames, the frames in between are followed one by one
  by landmarks from the side where it is seen, so the edge of a cut is known to the frame.
- A frame between two analysed frames where the face was found is interpolated (box and landmarks). A face missing
  for a stretch no longer than `max_gap_s` between two sightings is interpolated too; a longer gap stays a gap:
  those frames have no face and the processor masks them (`video_frame_mask`), no crop is carried over.

Shot cuts (`shots_fer.ShotCuts`, given as each frame's shot number) end every track: the first frame of each shot
is analysed, no face is followed by its landmarks, re-found, refined or interpolated across a cut, so a face after
a cut starts a new track even where it stands where another face stood.

`FaceTrackRegistry` gives tracks clip-wide IDs: a window's track continues the clip track whose last box it
overlaps (IoU >= `REID_IOU`) if that track was seen at most `reid_gap_s` earlier and in the same shot; otherwise it
gets a new ID. The registry holds the clip's `ShotCuts` (`registry.cuts`) and its `TrackCarry` (`registry.carry`),
so every caller that keeps the registry (the face session) keeps the cut state across its calls, and a call that
continues the previous one follows the faces that call ended with: where the frame grid is sparser than
`analyse_step_s` (the compact, realtime and tiny presets: every frame analysed) a frame's faces are the same however
the frames are grouped into calls. (Denser grids, e.g. the seed preset at 30 fps, still interpolate inside a call
only.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .face_landmarks_fer import (
    TRUSTED_DETECTION,  # a detection this sure is kept even when the mesh rejects it (strong tints, occlusions)
    FaceMesh,
    FaceMeshLandmarker,
    MeshRegion,
    region_from_face,
    region_from_mesh,
)
from .faces_fer import FaceBox, FaceDetector
from .shots_fer import ShotCuts

logger = logging.getLogger(__name__)

ANALYSE_STEP_S = 0.1  # analyse a frame at least this often (s of clip time)
MAX_GAP_S = 0.25  # a face missing for at most this long between two sightings is interpolated
FINE_EVERY_S = 0.5  # the tiled small-face pass runs at most this often while no face is tracked
MATCH_IOU = 0.3  # a detection overlapping a tracked face this much is that face
REID_IOU = 0.2  # a new face overlapping a lost track's last box this much continues it
REID_GAP_S = 10.0  # ... if the track was seen at most this long ago
DUPLICATE_IOU = 0.6  # two tracks on the same face: the younger one's observation is dropped


@dataclass
class FaceObservation:
    """One face in one frame (decoded-frame pixels).

    Attributes:
        box: `(x0, y0, x1, y1)`.
        score: detector or face-presence score.
        mesh: float32 `(468, 2)` landmarks, or None for a box-only detector.
        key_points: named points (left_eye, right_eye, mouth, nose) or None.
        interpolated: True when the frame was not analysed or the face was missing there (a short gap).
    """

    box: tuple
    score: float
    mesh: np.ndarray | None = None
    key_points: dict | None = None
    interpolated: bool = False

    def mouth_opening(self) -> float | None:
        if self.mesh is None:
            return None
        return FaceMesh(self.mesh, self.score, None).mouth_opening()


@dataclass
class TrackCarry:
    """What tracking knows at the last analysed frame of one call that the next call of the same clip needs, so that
    a frame's faces do not depend on how the frames were grouped into calls (the timeline engine's chunks, live
    mode's new frames of each window). A call whose first frame is not later than `time_s` (overlapping windows)
    starts afresh.

    Attributes:
        time_s: clip time of that frame (-inf: nothing yet).
        shot: its shot number (a cut ends what is carried).
        faces: `(observation where last found in that shot, found on that very frame, the FaceTrack)` per track, in
            track order; the track's `clip_id` (set by the registry) carries its clip-wide id on.
        last_fine_s: when the tiled small-face pass last ran.
    """

    time_s: float = -np.inf
    shot: int = -1
    faces: list = field(default_factory=list)
    last_fine_s: float = -np.inf


@dataclass
class FaceTrack:
    """One face through a window: `observations[k]` is its observation at frame k, or None where it is not seen.

    `track_id` is window-local until a `FaceTrackRegistry` assigns the clip-wide one.
    """

    track_id: int
    observations: list
    detected_frames: int = 0  # frames where it was found by analysis (not interpolated)
    clip_id: int | None = None  # the clip-wide id a `FaceTrackRegistry` gave it (kept when tracking carries it on)

    @property
    def found(self) -> np.ndarray:
        """bool `(T,)`: the face is there (found or interpolated inside a short gap)."""
        return np.array([o is not None for o in self.observations], bool)

    def mean_area(self) -> float:
        areas = [(o.box[2] - o.box[0]) * (o.box[3] - o.box[1]) for o in self.observations if o is not None]
        return float(np.mean(areas)) if areas else 0.0

    def mean_box(self) -> tuple | None:
        boxes = [o.box for o in self.observations if o is not None]
        return tuple(float(v) for v in np.mean(boxes, axis=0)) if boxes else None


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _observation(mesh: FaceMesh | None, face: FaceBox | None) -> FaceObservation:
    if mesh is not None:
        return FaceObservation(mesh.box(), mesh.score, mesh.points, mesh.key_points())
    kp = dict(face.landmarks) if face.landmarks else None
    return FaceObservation((face.x0, face.y0, face.x1, face.y1), face.score, None, kp)


def _blend(a: FaceObservation, b: FaceObservation, w: float) -> FaceObservation:
    """Linear interpolation between two observations, `w` in [0, 1] from a to b."""
    box = tuple(float((1 - w) * x + w * y) for x, y in zip(a.box, b.box))
    mesh = None if a.mesh is None or b.mesh is None else ((1 - w) * a.mesh + w * b.mesh).astype(np.float32)
    kp = None
    if a.key_points and b.key_points:
        kp = {k: tuple((1 - w) * np.asarray(a.key_points[k]) + w * np.asarray(b.key_points[k]))
              for k in a.key_points if k in b.key_points}
    return FaceObservation(box, min(a.score, b.score), mesh, kp, interpolated=True)


def analysed_frames(distinct: list[int], times: np.ndarray, step_s: float, shots=None) -> list[int]:
    """The frames to analyse among `distinct` (increasing indices): one at least every `step_s`, the first of every
    shot (`shots`: int `(T,)` shot numbers, or None for one shot) and the last."""
    chosen = []
    for i in distinct:
        new_shot = shots is not None and chosen and shots[i] != shots[chosen[-1]]
        if not chosen or new_shot or times[i] - times[chosen[-1]] >= step_s - 1e-9:
            chosen.append(i)
    if distinct and chosen[-1] != distinct[-1]:
        chosen.append(distinct[-1])
    return chosen


def track_faces(frames: list, frame_times, detector: FaceDetector, landmarker: FaceMeshLandmarker | None,
                analyse_step_s: float = ANALYSE_STEP_S, max_gap_s: float = MAX_GAP_S,
                fine_every_s: float = FINE_EVERY_S, shots=None,
                carry: TrackCarry | None = None) -> tuple[list[FaceTrack], int]:
    """Tracks of every face in a window.

    Args:
        frames: `T` uint8 RGB frames `(h, w, 3)` or None (no frame there); a repeated object is analysed once.
        frame_times: `T` times in s (clip timeline).
        detector: any `FaceDetector`; `detect_coarse` / `detect_fine` are used when it has them (BlazeFace).
        landmarker: the face mesh, or None for box-only tracking (no landmark following, no confirmation).
        shots: int `(T,)` shot number of each frame (`ShotCuts.shots`); None: the window is one shot. A track never
            continues across a change of shot.
        carry: the clip's `TrackCarry` (kept by its `FaceTrackRegistry`): when these frames come after the previous
            call's, the faces it ended with are followed on as if both calls were one, and it is updated. None: the
            window stands alone.

    Returns:
        (tracks with window-local IDs 0, 1, ... in order of appearance, number of frames analysed).
    """
    times = np.asarray(frame_times, np.float64)
    n = len(frames)
    shots = np.zeros(n, np.int64) if shots is None else np.asarray(shots, np.int64).reshape(-1)
    if len(shots) != n:
        raise ValueError(f"{n} frames but {len(shots)} shot numbers")
    first_of: dict[int, int] = {}
    source = [first_of.setdefault(id(f), i) if f is not None else None for i, f in enumerate(frames)]
    distinct = [i for i in range(n) if source[i] == i]
    analysed = analysed_frames(distinct, times, analyse_step_s, shots)
    coarse = getattr(detector, "detect_coarse", detector.detect)
    fine = getattr(detector, "detect_fine", None)
    tracks: list[FaceTrack] = []
    last_obs: dict[int, FaceObservation] = {}  # track id -> its observation where last found (in this shot)
    at_previous: set[int] = set()  # track ids found on the previous analysed frame
    previous_shot = None  # shot of the previous analysed frame (None: none yet)
    last_fine = -np.inf
    continues = carry is not None and bool(analysed) and times[analysed[0]] > carry.time_s
    if continues:  # the faces of the previous call, followed exactly as one call over both would
        previous_shot, last_fine = carry.shot, carry.last_fine_s
        for obs, was_at_previous, before in carry.faces:
            tr = FaceTrack(len(tracks), [None] * n, clip_id=before.clip_id)
            tracks.append(tr)
            last_obs[tr.track_id] = obs
            if was_at_previous:
                at_previous.add(tr.track_id)
    for i in analysed:
        frame = frames[i]
        seen: dict[int, FaceObservation] = {}
        if previous_shot is not None and shots[i] != previous_shot:  # a cut ends every track
            last_obs, at_previous = {}, set()
        if landmarker is not None:  # follow the faces of the previous analysed frame by their landmarks
            for tid in sorted(at_previous):
                if last_obs[tid].mesh is not None:
                    mesh = landmarker.landmarks(frame, region_from_mesh(last_obs[tid].mesh))
                    if mesh is not None:
                        seen[tid] = _observation(mesh, None)
        detections = coarse(frame)
        if not detections and not seen and fine is not None and times[i] - last_fine >= fine_every_s - 1e-9:
            detections = fine(frame)
            last_fine = times[i]
        for face in sorted(detections, key=lambda f: -f.score):
            box = (face.x0, face.y0, face.x1, face.y1)
            if any(_iou(box, o.box) > MATCH_IOU for o in seen.values()):
                continue  # a face already followed
            if landmarker is not None:
                region = region_from_face(face)
                mesh = landmarker.landmarks(frame, region)
                if mesh is None and region.angle != 0.0:  # the detector's eye points can be off in dim light
                    mesh = landmarker.landmarks(frame, MeshRegion(region.cx, region.cy, region.side, 0.0))
                if mesh is None and face.score < TRUSTED_DETECTION:
                    continue  # not confirmed as a face
                obs = _observation(mesh, face)  # a sure detection the mesh cannot fit keeps its own key points
            else:
                obs = _observation(None, face)
            if any(_iou(obs.box, o.box) > MATCH_IOU for o in seen.values()):
                continue
            lost = [tid for tid in sorted(last_obs) if tid not in seen]
            best = max(lost, key=lambda tid: _iou(obs.box, last_obs[tid].box), default=None)
            if best is not None and _iou(obs.box, last_obs[best].box) >= REID_IOU:
                seen[best] = obs
            else:
                tr = FaceTrack(len(tracks), [None] * n)
                tracks.append(tr)
                seen[tr.track_id] = obs
        for tid in sorted(seen, reverse=True):  # two tracks drifted onto one face: keep the older track
            if any(_iou(seen[tid].box, seen[o].box) > DUPLICATE_IOU for o in seen if o < tid):
                del seen[tid]
        for tid, obs in seen.items():
            tracks[tid].observations[i] = obs
            tracks[tid].detected_frames += 1
            last_obs[tid] = obs
        at_previous = set(seen)
        previous_shot = int(shots[i])
    if carry is not None and analysed and (continues or times[analysed[-1]] > carry.time_s):
        carry.time_s, carry.shot, carry.last_fine_s = float(times[analysed[-1]]), previous_shot, float(last_fine)
        carry.faces = [(last_obs[tid], tid in at_previous, tracks[tid]) for tid in sorted(last_obs)]
    bin_s = float(np.median(np.diff(times))) if n > 1 else 0.0
    for tr in tracks:
        if landmarker is not None:
            _refine_edges(tr, frames, analysed, landmarker, shots)
        _fill(tr, analysed, source, bin_s, max_gap_s, shots)
    tracks = [tr for tr in tracks if tr.detected_frames > 0]
    for k, tr in enumerate(tracks):
        tr.track_id = k
    return tracks, len(analysed)


def _refine_edges(track: FaceTrack, frames: list, analysed: list[int], landmarker: FaceMeshLandmarker,
                  shots: np.ndarray) -> None:
    """Where the face appears or disappears between two analysed frames, follow it frame by frame from the side
    where it is seen, so the frames in between are known (found or not) instead of guessed; never into another
    shot."""
    obs = track.observations
    for a, b in zip(analysed[:-1], analysed[1:]):
        if (obs[a] is None) == (obs[b] is None) or b - a < 2:
            continue
        step, k, last = (1, a + 1, obs[a]) if obs[a] is not None else (-1, b - 1, obs[b])
        shot = shots[a] if obs[a] is not None else shots[b]
        while a < k < b and last.mesh is not None and frames[k] is not None and shots[k] == shot:
            mesh = landmarker.landmarks(frames[k], region_from_mesh(last.mesh))
            if mesh is None:
                break
            obs[k] = last = _observation(mesh, None)
            track.detected_frames += 1
            k += step


def _fill(track: FaceTrack, analysed: list[int], source: list, bin_s: float, max_gap_s: float,
          shots: np.ndarray) -> None:
    """Interpolate a track between its sightings (unanalysed frames, and gaps up to `max_gap_s`) inside one shot;
    copy repeats."""
    obs = track.observations
    hits = [i for i in range(len(obs)) if obs[i] is not None and source[i] == i]
    for a, b in zip(hits[:-1], hits[1:]):
        missed = [i for i in analysed if a < i < b]  # analysed frames without the face in between
        if b - a < 2 or shots[a] != shots[b]:
            continue
        gap_s = (b - a - 1) * bin_s
        if missed and gap_s > max_gap_s + 1e-9:
            continue
        for k in range(a + 1, b):
            if source[k] == k and shots[k] == shots[a]:
                obs[k] = _blend(obs[a], obs[b], (k - a) / (b - a))
    for k, s in enumerate(source):  # repeated source frames show the same face as their first showing
        if s is not None and s != k:
            obs[k] = obs[s]


@dataclass
class _ClipTrack:
    track_id: int
    last_box: tuple
    last_time: float
    first_time: float
    shot: int = 0
    found_times: set = field(default_factory=set)
    box_sum: np.ndarray = field(default_factory=lambda: np.zeros(4))


class FaceTrackRegistry:
    """Clip-wide face-track IDs (one registry per clip, fed its windows in time order).

    Args:
        scale: decoded-frame pixels -> source-video pixels, for the summaries.
        reid_gap_s: a lost track can be continued by a new face up to this long after it was last seen.
        cuts: the clip's `ShotCuts` (default: a new one); `cuts.shots(frames, times)` numbers the shots whose
            tracks `assign` keeps apart.
    """

    def __init__(self, scale: float = 1.0, reid_gap_s: float = REID_GAP_S, cuts: ShotCuts | None = None):
        self.scale = float(scale)
        self.reid_gap_s = float(reid_gap_s)
        self.cuts = cuts if cuts is not None else ShotCuts()
        self.carry = TrackCarry()  # tracking's state between the clip's calls (`track_faces(carry=...)`)
        self._tracks: list[_ClipTrack] = []

    def assign(self, tracks: list[FaceTrack], frame_times, shots=None) -> None:
        """Replace the window-local IDs of `tracks` by clip-wide ones (one window's tracks never share an ID).

        `shots`: int `(T,)` shot number of each frame (from `self.cuts`); a track continues only a clip track of its
        own shot. None: every frame in shot 0."""
        times = np.asarray(frame_times, np.float64)
        shots = np.zeros(len(times), np.int64) if shots is None else np.asarray(shots, np.int64).reshape(-1)
        taken: set[int] = set()
        for tr in sorted(tracks, key=lambda t: int(np.argmax(t.found))):
            k0 = int(np.argmax(tr.found))
            box, t0, shot = tr.observations[k0].box, float(times[k0]), int(shots[k0])
            # tracking followed this face on from an earlier call: the same person, whatever its box does
            best = next((c for c in self._tracks if c.track_id == tr.clip_id and c.track_id not in taken), None)
            if best is None:
                candidates = [c for c in self._tracks if c.track_id not in taken and c.shot == shot
                              and t0 - c.last_time <= self.reid_gap_s]
                best = max(candidates, key=lambda c: _iou(box, c.last_box), default=None)
            if best is None or (best.track_id != tr.clip_id and _iou(box, best.last_box) < REID_IOU):
                best = _ClipTrack(len(self._tracks), box, t0, t0, shot)
                self._tracks.append(best)
            taken.add(best.track_id)
            tr.track_id = tr.clip_id = best.track_id
            for k, o in enumerate(tr.observations):
                if o is None:
                    continue
                key = round(float(times[k]), 3)
                if key not in best.found_times:
                    best.found_times.add(key)
                    best.box_sum += np.asarray(o.box, np.float64)
                if times[k] >= best.last_time:
                    best.last_box, best.last_time = o.box, float(times[k])
                best.first_time = min(best.first_time, float(times[k]))

    def summaries(self) -> list[dict]:
        """One dict per clip track: track_id, first_s, last_s, frames_found, mean_box (source-video pixels)."""
        out = []
        for c in self._tracks:
            count = len(c.found_times)
            mean = c.box_sum / max(count, 1) * self.scale
            out.append({"track_id": c.track_id, "first_s": round(c.first_time, 3), "last_s": round(c.last_time, 3),
                        "frames_found": count, "mean_box": [round(float(v), 1) for v in mean]})
        return out


__all__ = [
    "ANALYSE_STEP_S",
    "MAX_GAP_S",
    "FaceObservation",
    "FaceTrack",
    "FaceTrackRegistry",
    "TrackCarry",
    "analysed_frames",
    "track_faces",
]
