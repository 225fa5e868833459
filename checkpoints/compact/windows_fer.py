"""One window's contract and its shared decisions: what every driver hands to `results_fer`.

The processor (`FERProcessor.prepare`, seek-decoding each window), the timeline engine (`FERAnalyzer`, one decode and
a frame cache), live mode (`FERLiveSession`, browser frames on the session clock) and batch annotation / the
training cache (through the processor) differ only in how frames and audio arrive. What a window *is* is decided
here, once:

- `WindowInfo`: the typed record of one window (times, frames, faces, person, modalities and the reasons), the one
  contract `results_fer.build_window_result` reads. A field is one attribute here plus one line in `window_info`;
  a driver that does not fill it fails `WindowInfo.missing()` (tests check every driver).
- `decide_audio`: the usable-audio check and the speech decision (the same for every driver).
- `video_reason`: why no face went to the model, in words.
- `FrameEntry` / `frame_entries`: the frame cache's value (one grid frame after the face front-end and
  `embed_frames`: every face in it, by track id), and `assemble_cached`: a window from cached frames (timeline
  engine and live mode), whose person `choose_window_person` picks from the window's own frames.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

NO_FRAMES_REASON = "no video frames inside the window"


@dataclass
class AudioDecision:
    """Whether a window's audio goes to the model, why not, and the fraction of it that is speech (None when
    speech detection is off or there is no usable audio)."""

    used: bool
    reason: str
    speech_fraction: float | None = None


def decide_audio(audio_processing, audio: np.ndarray | None, missing: str, speech, start_s: float) -> AudioDecision:
    """The one audio rule: `audio_processing.check` (present, long enough, not silent), then the speech decision on
    the clip's (or session's) speech scores `speech` (`ClipSpeech` or None). `audio` float32 `(n,)` from `start_s`."""
    used, reason = audio_processing.check(audio, missing)
    if not used:
        return AudioDecision(False, reason)
    used, reason, fraction = audio_processing.check_speech(audio, speech, float(start_s))
    return AudioDecision(bool(used), reason, fraction)


def video_reason(valid: np.ndarray, face: np.ndarray, missing: str | None = None,
                 no_frames: str = NO_FRAMES_REASON) -> str:
    """"ok" when a face reaches the model, else why not. `valid`, `face`: bool `(T,)`; `missing`: the driver's reason
    when the clip has no video at all (None when it has)."""
    if missing:
        return missing
    if not np.any(valid):
        return no_frames
    if np.any(face):
        return "ok"
    return f"no face found in any of {int(np.sum(valid))} frames"


@dataclass
class WindowInfo:
    """One window of a clip: what went into it and why. Shapes: `T` = the model's `num_frames`.

    Attributes:
        window_index: position of the window in its clip (or live session).
        window_start_s, window_end_s: the window's span on the clip (session) clock, seconds.
        frame_times_s: `T` grid times of the window's frames.
        frame_source_times_s: `T` times of the decoded frames used (None where none: past the clip end, no frame).
        audio_used, audio_reason, speech_fraction: the `AudioDecision`.
        video_used, video_reason: whether any face frame went to the model, else why not.
        face_found: `T` booleans, the chosen face is in frame k.
        face_boxes, crop_boxes: `T` entries `(x0, y0, x1, y1)` in source pixels, or None.
        person: `{"track_id": int | None, "reason": str}`: whose face the window holds and why that one.
        tracks: every face track of the clip so far (`track_id`, `first_s`, `last_s`, `frames_found`, `mean_box`).
        source, clip_index, duration_s, notes: the clip (path or "array" / "live"), its index in the batch, its
            duration and how it was read, in words.
        face_frames: uint8 `(T, S, S, 3)` face crops, only when asked for (`return_face_frames=True`).

    Reads like a dict too (`info["audio_used"]`, `info.get(...)`, `dict(info)`), so code written against the earlier
    window dicts keeps working.
    """

    window_index: int
    window_start_s: float
    window_end_s: float
    frame_times_s: list
    frame_source_times_s: list
    audio_used: bool
    audio_reason: str
    speech_fraction: float | None
    video_used: bool
    video_reason: str
    face_found: list
    face_boxes: list
    crop_boxes: list
    person: dict
    tracks: list
    source: str = "array"
    clip_index: int = 0
    duration_s: float | None = None
    notes: list = field(default_factory=list)
    face_frames: np.ndarray | None = None

    OPTIONAL = ("speech_fraction", "duration_s", "face_frames")

    # -- dict-style reading ------------------------------------------------------------------------------------
    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key) -> bool:
        return key in self.keys()

    def get(self, key: str, default=None):
        return getattr(self, key) if key in self.keys() else default

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def items(self) -> list[tuple]:
        return [(name, getattr(self, name)) for name in self.keys()]

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.keys()}

    def missing(self) -> list[str]:
        """Fields a driver left unfilled (None where a value is required, or per-frame lists of the wrong length)."""
        out = [name for name in self.keys() if name not in self.OPTIONAL and getattr(self, name) is None]
        t = len(self.frame_times_s or [])
        for name in ("frame_source_times_s", "face_found", "face_boxes", "crop_boxes"):
            value = getattr(self, name)
            if value is not None and len(value) != t:
                out.append(name)
        if not isinstance(self.person, dict) or not {"track_id", "reason"} <= set(self.person):
            out.append("person")
        return out


def window_info(index: int, start_s: float, end_s: float, frame_times_s, source_times_s, audio: AudioDecision,
                face: np.ndarray, face_boxes: list, crop_boxes: list, reason: str, person: dict,
                tracks: list) -> WindowInfo:
    """The one builder of `WindowInfo` (every driver calls it). `face`: bool `(T,)`, the chosen face per frame;
    `source_times_s`: `T` floats, NaN / None where no frame; `reason`: `video_reason(...)` or the front-end's."""
    face = np.asarray(face, bool)
    return WindowInfo(
        window_index=int(index),
        window_start_s=round(float(start_s), 6),
        window_end_s=round(float(end_s), 6),
        frame_times_s=[round(float(t), 6) for t in frame_times_s],
        frame_source_times_s=[None if t is None or t != t else round(float(t), 6) for t in source_times_s],
        audio_used=bool(audio.used),
        audio_reason=audio.reason,
        speech_fraction=audio.speech_fraction,
        video_used=bool(face.any()),
        video_reason="ok" if face.any() else reason,
        face_found=[bool(f) for f in face],
        face_boxes=[b if f else None for b, f in zip(face_boxes, face)],
        crop_boxes=[b if f else None for b, f in zip(crop_boxes, face)],
        person=dict(person),
        tracks=list(tracks),
    )


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class FrameFace:
    """One face track's face in one grid frame, after `embed_frames`.

    Attributes:
        observation: the tracker's `FaceObservation` (decoded-frame pixels: box, landmarks; the person choice reads
            its size and mouth opening).
        face_box, crop_box: `(x0, y0, x1, y1)` in source pixels.
        vector: `(Dv,)` the face crop's vector from `embed_frames`.
        roi_indices: `(roi_top_k,)` patch indices kept; roi_patch_scores: `(num_patches,)` patch scores.
    """

    observation: object
    face_box: tuple | None
    crop_box: tuple | None
    vector: object
    roi_indices: np.ndarray | None = None
    roi_patch_scores: np.ndarray | None = None

    def nbytes(self) -> int:
        arrays = (self.roi_indices, self.roi_patch_scores, getattr(self.observation, "mesh", None))
        return sum(0 if v is None else v.nbytes for v in arrays) + self.vector.numel() * self.vector.element_size()


@dataclass
class FrameEntry:
    """One grid frame after the face front-end and `embed_frames`: every face in it, by clip-wide track id (the
    frame cache's value; which face a window uses is decided per window, by `choose_window_person`).

    Attributes:
        source_time_s: time of the decoded frame (clip or session clock).
        faces: `{track_id: FrameFace}`, empty when no face is in the frame.
    """

    source_time_s: float
    faces: dict = field(default_factory=dict)

    def nbytes(self) -> int:
        return sum(f.nbytes() for f in self.faces.values())


def frame_entries(found, source_times_s, embed) -> list[FrameEntry]:
    """One `FrameEntry` per frame from a face session's output with every person (`process(..., all_people=True)`):
    every person's faces embedded by one `embed(crops (n, S, S, 3), roi (n, N)) -> n dicts` call (vector,
    roi_indices, roi_patch_scores). The timeline engine and live mode fill their caches with it."""
    where, crops, rois = [], [], []
    for person in found.people:
        for k in np.nonzero(person.found)[0]:
            where.append((person, int(k)))
            crops.append(person.crops[k])
            rois.append(person.roi[k])
    vectors = embed(np.stack(crops), np.stack(rois)) if crops else []
    entries = [FrameEntry(float(t)) for t in source_times_s]
    for (person, k), vector in zip(where, vectors):
        entries[k].faces[person.person["track_id"]] = FrameFace(
            person.observations[k], person.face_boxes[k], person.crop_boxes[k], **vector)
    return entries


def choose_window_person(faces: list, valid: np.ndarray, times_s, audio: np.ndarray | None, start_s: float,
                         sampling_rate: int, speech: bool, person: int | None = None,
                         min_correlation: float | None = None) -> tuple:
    """`(track id or None, reason)`: whose face a window holds, chosen from the window's own frames with the
    front-end's rule (`frontend_fer.choose_person`: the asked-for person, else the face whose mouth follows the
    voice, else the largest, most present one). `faces`: `T` dicts `{track_id: object with .observation}` (a
    `FrameEntry.faces`) or None; `times_s`: the frames' times; `audio` from `start_s`. Per window, so every driver
    picks the same person for the same frames, however its frames went through the front-end."""
    from .face_tracking_fer import FaceTrack
    from .frontend_fer import MIN_SPEAKER_CORRELATION, choose_person, voice_energy

    ids = sorted({tid for f in faces if f for tid in f})
    tracks = [FaceTrack(tid, [f[tid].observation if f and tid in f else None for f in faces]) for tid in ids]
    energy = voice_energy(audio, times_s, start_s, sampling_rate)
    chosen, reason = choose_person(tracks, np.asarray(valid, bool), energy, person,
                                   MIN_SPEAKER_CORRELATION if min_correlation is None else min_correlation, speech)
    return (None if chosen is None else chosen.track_id), reason


def cached_row(faces: list, audio: np.ndarray | None, decision: AudioDecision, dim: int, roi_top_k: int,
               num_patches: int) -> tuple[dict, np.ndarray]:
    """The model row of a window whose `T` frames hold `faces` (the chosen person's `FrameFace`, or None where it
    is not), and its face mask `(T,)`.

    Row: `audio` (the window's samples when used, else None), `vectors` `(T, dim)`, `frame_mask` bool `(T,)`,
    `roi_indices` `(T, roi_top_k)` (-1 without a face), `roi_patch_scores` `(T, num_patches)` (0 without a face).
    """
    import torch

    face = np.array([f is not None for f in faces], bool)
    row = {
        "audio": audio if decision.used else None,
        "vectors": torch.stack([f.vector if f is not None else torch.zeros(dim) for f in faces]),
        "frame_mask": face,
        "roi_indices": np.stack([f.roi_indices if f is not None else np.full(roi_top_k, -1) for f in faces]),
        "roi_patch_scores": np.stack([f.roi_patch_scores if f is not None else np.zeros(num_patches, np.float32)
                                      for f in faces]),
    }
    return row, face


def assemble_cached(index: int, start_s: float, end_s: float, frame_times_s, entries: list, valid: np.ndarray,
                    audio: np.ndarray | None, decision: AudioDecision, model_config, num_patches: int,
                    tracks: list, missing_video: str | None = None, no_frames: str = NO_FRAMES_REASON,
                    sampling_rate: int = 16000, person: int | None = None,
                    min_correlation: float | None = None) -> tuple[dict, WindowInfo]:
    """A window from cached frames (timeline engine, live mode): the person it holds, its model row and its
    `WindowInfo`.

    `entries`: `T` `FrameEntry` or None; `valid`: bool `(T,)`, a frame exists for position k (inside the clip, or
    received); `audio`: the window's samples from `start_s`; `decision`: `decide_audio(...)` on them; `person`,
    `min_correlation`: the video processor's `person` and `min_speaker_correlation`.
    """
    valid = np.asarray(valid, bool)
    track_id, why = choose_window_person([e.faces if e is not None else None for e in entries], valid, frame_times_s,
                                         audio, start_s, sampling_rate, decision.used, person, min_correlation)
    faces = [e.faces.get(track_id) if e is not None and track_id is not None else None for e in entries]
    row, face = cached_row(faces, audio, decision, model_config.vision_config.hidden_size, model_config.roi_top_k,
                           num_patches)
    any_face = any(e is not None and e.faces for e in entries)
    reason = video_reason(valid, face, missing_video, no_frames) if (track_id is not None or not any_face) else why
    info = window_info(
        index, start_s, end_s, frame_times_s,
        [e.source_time_s if (e is not None and v) else None for e, v in zip(entries, valid)],
        decision, face, [f.face_box if f is not None else None for f in faces],
        [f.crop_box if f is not None else None for f in faces], reason,
        {"track_id": track_id, "reason": why}, tracks)
    return row, info


__all__ = ["AudioDecision", "FrameEntry", "FrameFace", "WindowInfo", "assemble_cached", "cached_row",
           "choose_window_person", "decide_audio", "frame_entries", "video_reason", "window_info"]
