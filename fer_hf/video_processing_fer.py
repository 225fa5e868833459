"""Video sub-processor: sampled frames -> face crops, ROI maps and SigLIP pixel values (SPEC §2, §5).

    video = FERVideoProcessor(image_size=224, patch_size=16, face_margin=0.25)
    faces = video.face_session()                      # one per clip (or per window): THE face front-end call site
    found = faces.process(frames, times_s, scale)     # FERFaceFrames: crops (n, S, S, 3), roi (n, N), boxes ...
    pixels = video.pixel_values(found.crops)          # float32 (n, 3, S, S)

Every frame that reaches the model goes through `FERFaceSession.process` exactly once: the processor's window path
calls it with the frames of one window, the analysis engine with consecutive chunks of a clip's frame grid.
A new face front-end (landmarks, tracks with ids, alignment) replaces `FERFaceSession` and nothing else.

Frame preprocessing is numpy/OpenCV (crop, resize to `image_size`, rescale 1/255, normalise with `image_mean` /
`image_std`) rather than transformers' SigLIP image processor, whose fast variant needs torchvision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .face_landmarks_fer import BlazeFaceDetector
from .face_tracking_fer import FaceTrackRegistry
from .faces_fer import FaceDetector, HaarFaceDetector
from .frontend_fer import FaceFrontEnd


@dataclass
class FERFaceFrames:
    """Face front-end output for `n` frames (frames given as None are invalid and get no face).

    Attributes:
        crops: uint8 `(n, S, S, 3)` aligned face crops of the chosen person (zeros where their face is not found).
        roi: float32 `(n, N)` ROI weight per patch, painted from the landmarks (zeros where no face).
        found: bool `(n,)` the chosen person's face is in the frame (found, or interpolated inside a short gap).
        face_boxes, crop_boxes: `n` entries `[x0, y0, x1, y1]` in source pixels, or None.
        num_detected, num_searched: frames where the chosen face was found / frames analysed.
        track_ids: `n` entries, the clip-wide id of the face track used (None where no face).
        tracks: the window's face tracks: `{"track_id", "frames_found"}` each.
        person: `{"track_id": int | None, "reason": str}`, whose face went to the model and why.
        video_reason: "ok" or why no face went to the model.
        people: with `process(..., all_people=True)`, one `FERFaceFrames` per face track of the window (in
            `tracks` order), each holding that person's crops; the chosen person's is this one's data. Else empty.
        observations: in each of `people`, the track's `n` `FaceObservation`s (decoded-frame pixels) or None.
    """

    crops: np.ndarray
    roi: np.ndarray
    found: np.ndarray
    face_boxes: list
    crop_boxes: list
    num_detected: int
    num_searched: int
    track_ids: list
    tracks: list = field(default_factory=list)
    person: dict = field(default_factory=lambda: {"track_id": None, "reason": "no face found"})
    video_reason: str = ""
    people: list = field(default_factory=list)
    observations: list = field(default_factory=list)

    @property
    def any_found(self) -> bool:
        return bool(self.num_detected > 0 and self.found.any())

    def reason(self) -> str:
        """Why there is no face, in words ("ok" when there is one)."""
        if self.any_found:
            return "ok"
        return self.video_reason or f"no face found in any of {self.num_searched} frames"


def _face_frames(crops, roi, found, face_boxes, crop_boxes, scale: float, analysed: int, person: dict, tracks: list,
                 video_reason: str) -> FERFaceFrames:
    """`FERFaceFrames` of one person from the front-end's arrays (boxes scaled to source pixels)."""
    ids = [person["track_id"] if f else None for f in found]
    face_boxes = [None if b is None else [round(float(v) * scale, 1) for v in b] for b in face_boxes]
    crop_boxes = [None if b is None else [round(float(v) * scale, 1) for v in b] for b in crop_boxes]
    return FERFaceFrames(crops, roi, found, face_boxes, crop_boxes, int(found.sum()), analysed, ids, tracks,
                         dict(person), video_reason)


@dataclass
class _KeptFace:
    """One face of one frame as the session keeps it (decoded-frame pixels; `choose_window_person` reads
    `observation`)."""

    observation: object
    crop: np.ndarray
    roi: np.ndarray
    face_box: tuple | None
    crop_box: tuple | None


class FERFaceSession:
    """The face front-end of one clip (`frontend_fer.FaceFrontEnd`): tracks with clip-wide IDs, the person whose
    face goes to the model (`person` setting, else the speaker, else the largest, most present face), aligned
    crops and landmark ROI maps. Frames where that face is not found stay empty (`found` False): the processor
    masks them. Call `process` on consecutive windows or chunks of the clip in time order.

    Each frame (by its time) goes through the front-end once, with every face kept; a call then picks its person
    from its own frames (`windows_fer.choose_window_person`, the front-end's rule). So overlapping windows (the
    processor's sliding windows, `fer-annotate`) reuse the faces of the frames they share, and every driver sees the
    same faces and picks the same person for the same frames, whatever frames it groups into a call.
    """

    def __init__(self, processor: FERVideoProcessor):
        self.processor = processor
        self.registry = None
        self._frames: dict[int, dict] = {}  # frame time (ms) -> {track_id: _KeptFace}

    def process(self, frames: list, times_s=None, scale: float = 1.0, audio: np.ndarray | None = None,
                audio_start_s: float = 0.0, speech: bool = True, all_people: bool = False) -> FERFaceFrames:
        """Faces in `frames` (uint8 `(h, w, 3)` RGB or None). `scale`: source pixels per decoded pixel.

        `times_s`: the frames' clip times (default: 0.1 s apart); `audio` (16 kHz mono from `audio_start_s`) lets
        the speaker be chosen by mouth movement; `speech=False` says the window has no speech; `all_people=True`
        also crops every other face track (`FERFaceFrames.people`).
        """
        from .windows_fer import choose_window_person

        p = self.processor
        n = len(frames)
        times = np.arange(n) * 0.1 if times_s is None else np.asarray(times_s, np.float64)
        if self.registry is None:
            self.registry = FaceTrackRegistry(scale)
        keys = [None if f is None else int(round(float(t) * 1000)) for f, t in zip(frames, times)]
        present = [k for k in keys if k is not None]
        if present:  # frames before this call's are not asked for again (sessions move forward in time)
            first = min(present)
            for k in [k for k in self._frames if k < first]:
                del self._frames[k]
        new = sorted({k: i for i, k in enumerate(keys) if k is not None and k not in self._frames}.items())
        if new:
            idx = [i for _, i in new]
            out = p.front_end.window([frames[i] for i in idx], times[idx], None, 0.0, 16000, self.registry, None,
                                     True, all_people=True)
            for j, (key, _) in enumerate(new):
                self._frames[key] = {face.track_id: _KeptFace(track.observations[j], face.crops[j], face.roi[j],
                                                              face.face_boxes[j], face.crop_boxes[j])
                                     for face, track in zip(out.people, out.tracks) if face.face_found[j]}
        per_frame = [None if k is None else self._frames[k] for k in keys]
        valid = np.array([k is not None for k in keys], bool)
        chosen, why = choose_window_person(per_frame, valid, times, audio, audio_start_s, 16000, speech, p.person,
                                           p.min_speaker_correlation)
        ids = sorted({tid for f in per_frame if f for tid in f})
        tracks = [{"track_id": tid, "frames_found": sum(1 for f in per_frame if f and tid in f)} for tid in ids]
        if not ids:
            reason = "no video frames inside the window" if not valid.any() else \
                f"no face found in any of {int(valid.sum())} frames"
        else:
            reason = "ok" if chosen is not None else why
        person = {"track_id": chosen, "reason": why if ids else "no face found"}
        result = self._person(per_frame, chosen, scale, int(valid.sum()), person, tracks, reason)
        if all_people:
            for tid in ids:
                if tid == chosen:
                    their = dict(person)
                else:
                    their = {"track_id": tid, "reason": f"person {tid}: every tracked person is classified "
                                                       f"(all people)"}
                result.people.append(self._person(per_frame, tid, scale, int(valid.sum()), their, tracks, "ok"))
        return result

    def _person(self, per_frame: list, track_id: int | None, scale: float, searched: int, person: dict,
                tracks: list, reason: str) -> FERFaceFrames:
        """`FERFaceFrames` of track `track_id` over the call's frames (empty where it is not found)."""
        p = self.processor
        n, size = len(per_frame), p.image_size
        crops = np.zeros((n, size, size, 3), np.uint8)
        roi = np.zeros((n, (size // p.patch_size) ** 2), np.float32)
        found = np.zeros(n, bool)
        face_boxes, crop_boxes, observations = [None] * n, [None] * n, [None] * n
        for k, faces in enumerate(per_frame):
            face = faces.get(track_id) if faces and track_id is not None else None
            if face is not None:
                observations[k], crops[k], roi[k] = face.observation, face.crop, face.roi
                face_boxes[k], crop_boxes[k], found[k] = face.face_box, face.crop_box, True
        out = _face_frames(crops, roi, found, face_boxes, crop_boxes, scale, searched, person, tracks, reason)
        out.observations = observations
        return out

    def track_summaries(self) -> list[dict]:
        """Every face track of the clip so far (track_id, first_s, last_s, frames_found, mean_box in source px)."""
        return [] if self.registry is None else self.registry.summaries()


class FERVideoProcessor:
    r"""Face crops and pixel values of the video branch. Settings are declarative and saved in the processor JSON
    (`video_settings`); `image_size` / `patch_size` come from the model geometry.

    Args:
        image_mean, image_std (`list[float]`, defaults to `[0.5] * 3`): SigLIP normalisation.
        rescale_factor (`float`, defaults to 1/255): pixel rescale before normalisation.
        face_margin (`float`, defaults to 0.25): margin added on each side of the face box (fraction of its side).
        face_detector_name (`str`, defaults to "blazeface"): the default detector, "blazeface" (BlazeFace short range
            with its tiled small-face pass, confirmed and tracked by the 468-point face mesh) or "haar" (OpenCV's
            cascade, boxes only: square box crops and canonical ROI maps). Assigning `face_detector` overrides it.
        face_detect_side (`int`, defaults to 320): long side (px) of the grey frame the Haar detector sees.
        face_track_step_s (`float`, defaults to 0.1): faces are analysed on a frame at least this often.
        face_max_gap_s (`float`, defaults to 0.25): a face missing for at most this long between two sightings is
            interpolated; longer gaps are frames without a face (masked).
        min_speaker_correlation (`float`, defaults to 0.3): mouth-voice correlation that makes a face the speaker.
        person (`int`, *optional*): the clip-wide face-track id whose face goes to the model (default: chosen).
        decode_max_side (`int`, defaults to 640): frames are downscaled to this long side while decoding.
        grayscale (`bool`, defaults to False): the crops become grey (ITU-R 601 luma copied to the 3 channels)
            before normalisation, for a vision tower trained on grey faces (the compact preset: FER2013).
    """

    defaults = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], rescale_factor=1 / 255,
                    face_margin=0.25, face_detector_name="blazeface", face_detect_side=320, face_track_step_s=0.1,
                    face_max_gap_s=0.25, min_speaker_correlation=0.3, person=None, decode_max_side=640, grayscale=False)
    legacy = ("face_detect_frames",)  # settings of older processor JSON files that no longer apply

    def __init__(self, image_size: int = 224, patch_size: int = 16, **settings):
        settings = {k: v for k, v in settings.items() if k not in self.legacy}
        unknown = sorted(set(settings) - set(self.defaults))
        if unknown:
            raise ValueError(f"unknown video setting(s) {unknown}; known: {sorted(self.defaults)}")
        values = {**self.defaults, **settings}
        self.image_size, self.patch_size = int(image_size), int(patch_size)
        self.image_mean = [float(v) for v in values["image_mean"]]
        self.image_std = [float(v) for v in values["image_std"]]
        self.rescale_factor = float(values["rescale_factor"])
        self.face_margin = float(values["face_margin"])
        self.face_detector_name = str(values["face_detector_name"])
        self.face_detect_side = int(values["face_detect_side"])
        self.face_track_step_s = float(values["face_track_step_s"])
        self.face_max_gap_s = float(values["face_max_gap_s"])
        self.min_speaker_correlation = float(values["min_speaker_correlation"])
        self.person = None if values["person"] is None else int(values["person"])
        self.decode_max_side = int(values["decode_max_side"])
        self.grayscale = bool(values["grayscale"])
        self._face_detector = None
        self._front_end = None
        self._validate()

    def _validate(self) -> None:
        if self.face_detector_name not in ("blazeface", "haar"):
            raise ValueError(f"`face_detector_name` must be 'blazeface' or 'haar', got {self.face_detector_name!r}")
        if not (0.0 < self.face_track_step_s <= 1.0 and 0.0 <= self.face_max_gap_s <= 2.0):
            raise ValueError(f"`face_track_step_s` must be in (0, 1] and `face_max_gap_s` in [0, 2], got "
                             f"{self.face_track_step_s!r}, {self.face_max_gap_s!r}")
        for name in ("image_size", "patch_size", "face_detect_side", "decode_max_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"`image_size`={self.image_size} is not a multiple of `patch_size`={self.patch_size}")
        if not 0.0 <= self.face_margin <= 2.0:
            raise ValueError(f"`face_margin` must be between 0 and 2, got {self.face_margin!r}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError(
                f"`image_mean`/`image_std` need 3 values (std > 0), got {self.image_mean}, {self.image_std}"
            )

    def to_dict(self) -> dict:
        """The declarative settings (what `video_settings` in the processor JSON holds)."""
        return {name: getattr(self, name) for name in self.defaults}

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def face_detector(self) -> FaceDetector:
        """The detector used for face crops; assign any `FaceDetector` to replace the default (BlazeFace)."""
        if self._face_detector is None:
            self._face_detector = (HaarFaceDetector(max_side=self.face_detect_side) if self.face_detector_name == "haar"
                                   else BlazeFaceDetector("short"))
        return self._face_detector

    @face_detector.setter
    def face_detector(self, detector: FaceDetector | None) -> None:
        if detector is not None and not callable(getattr(detector, "detect", None)):
            raise TypeError(f"a face detector needs a `detect(frame_rgb)` method, got {type(detector).__name__}")
        self._face_detector = detector
        self._front_end = None

    @property
    def front_end(self) -> FaceFrontEnd:
        """The `FaceFrontEnd` (detector, face mesh, tracking and crop settings), built on first use."""
        if self._front_end is None:
            # the face mesh confirms, follows and aligns the default BlazeFace detections; another detector (Haar,
            # or one assigned to `face_detector`) is used as it is: its boxes, and its key points when it has them
            default = self._face_detector is None or type(self._face_detector) is BlazeFaceDetector
            landmarker = "default" if self.face_detector_name == "blazeface" and default else None
            self._front_end = FaceFrontEnd(self.face_detector, landmarker, self.image_size, self.patch_size,
                                           self.face_margin, self.face_track_step_s, self.face_max_gap_s,
                                           self.min_speaker_correlation)
        return self._front_end

    def __getstate__(self):  # runtime models are rebuilt in another process
        state = dict(self.__dict__)
        state["_front_end"] = None
        return state

    def face_session(self) -> FERFaceSession:
        """The face front-end for one clip (or one window). The single place faces are found."""
        return FERFaceSession(self)

    def pixel_values(self, crops: np.ndarray) -> np.ndarray:
        """uint8 `(..., S, S, 3)` -> float32 `(..., 3, S, S)`: `(x * rescale - mean) / std`."""
        scale = np.float32(self.rescale_factor) / np.asarray(self.image_std, np.float32)  # (3,)
        shift = np.asarray(self.image_mean, np.float32) / np.asarray(self.image_std, np.float32)
        lead = crops.shape[:-3]
        out = np.empty(lead + (3,) + crops.shape[-3:-1], np.float32)
        grey = grey_crops(crops) if self.grayscale else None
        for c in range(3):  # channel by channel keeps the temporary small
            np.multiply(crops[..., c] if grey is None else grey, scale[c], out=out[..., c, :, :], casting="unsafe")
            out[..., c, :, :] -= shift[c]
        return out


def grey_crops(crops: np.ndarray) -> np.ndarray:
    """uint8 `(..., S, S, 3)` RGB -> uint8 `(..., S, S)` luma (ITU-R 601: 0.299 R + 0.587 G + 0.114 B), the grey
    of FER2013's images, so a grey-trained vision tower sees the same kind of pixels at serving time."""
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(crops.astype(np.float32) @ weights), 0, 255).astype(np.uint8)


__all__ = ["FERFaceFrames", "FERFaceSession", "FERVideoProcessor", "grey_crops"]
