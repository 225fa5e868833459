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

from dataclasses import dataclass

import numpy as np

from .faces_fer import FaceDetector, HaarFaceDetector, crop_box, crop_face, roi_weight_map, track_face


@dataclass
class FERFaceFrames:
    """Face front-end output for `n` frames (frames given as None are invalid and get no face).

    Attributes:
        crops: uint8 `(n, S, S, 3)` face crops (zeros where no face).
        roi: float32 `(n, N)` ROI weight per patch (zeros where no face).
        found: bool `(n,)` a face box exists for the frame.
        face_boxes, crop_boxes: `n` entries `[x0, y0, x1, y1]` in source pixels, or None.
        num_detected, num_searched: frames the detector found a face on / ran on.
        track_ids: `n` entries, the id of the face track used (None where no face).
    """

    crops: np.ndarray
    roi: np.ndarray
    found: np.ndarray
    face_boxes: list
    crop_boxes: list
    num_detected: int
    num_searched: int
    track_ids: list

    @property
    def any_found(self) -> bool:
        return bool(self.num_detected > 0 and self.found.any())

    def reason(self) -> str:
        """Why there is no face, in words ("ok" when there is one)."""
        return "ok" if self.any_found else f"no face found in any of {self.num_searched} frames"


class FERFaceSession:
    """The face front-end of one clip: detection on a subset of frames, the largest face, a smoothed box per frame.

    This version tracks within each `process` call (the frames of one window, or one chunk of a clip's grid):
    `faces_fer.track_face` detects on at most `face_detect_frames` distinct frames of the call and interpolates
    the others. Track id 0 is the largest face.
    """

    def __init__(self, processor: FERVideoProcessor):
        self.processor = processor

    def process(self, frames: list, times_s=None, scale: float = 1.0) -> FERFaceFrames:
        """Faces in `frames` (uint8 `(h, w, 3)` RGB or None). `scale`: source pixels per decoded pixel."""
        p = self.processor
        n, size = len(frames), p.image_size
        crops = np.zeros((n, size, size, 3), np.uint8)
        roi = np.zeros((n, p.num_patches), np.float32)
        face_boxes, crop_boxes, ids = [None] * n, [None] * n, [None] * n
        found = np.zeros(n, bool)
        if not any(f is not None for f in frames):
            return FERFaceFrames(crops, roi, found, face_boxes, crop_boxes, 0, 0, ids)
        track = track_face(frames, p.face_detector, p.face_detect_frames)
        for k, box in enumerate(track.boxes):
            if box is None or frames[k] is None or not track.found:
                continue
            crops[k] = crop_face(frames[k], box, p.face_margin, size)
            roi[k] = roi_weight_map(size, p.patch_size, p.face_margin, track.landmarks[k])
            face_boxes[k] = [round(float(v) * scale, 1) for v in box]
            crop_boxes[k] = [round(float(v) * scale, 1) for v in crop_box(box, p.face_margin)]
            found[k], ids[k] = True, 0
        return FERFaceFrames(crops, roi, found, face_boxes, crop_boxes, track.num_detected, track.num_searched, ids)


class FERVideoProcessor:
    r"""Face crops and pixel values of the video branch. Settings are declarative and saved in the processor JSON
    (`video_settings`); `image_size` / `patch_size` come from the model geometry.

    Args:
        image_mean, image_std (`list[float]`, defaults to `[0.5] * 3`): SigLIP normalisation.
        rescale_factor (`float`, defaults to 1/255): pixel rescale before normalisation.
        face_margin (`float`, defaults to 0.25): margin added on each side of the face box (fraction of its side).
        face_detect_side (`int`, defaults to 320): long side (px) of the grey frame the detector sees.
        face_detect_frames (`int`, defaults to 16): the detector runs on at most this many frames per `process`
            call (spread evenly); the other frames get interpolated boxes.
        decode_max_side (`int`, defaults to 640): frames are downscaled to this long side while decoding.
    """

    defaults = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], rescale_factor=1 / 255,
                    face_margin=0.25, face_detect_side=320, face_detect_frames=16, decode_max_side=640)

    def __init__(self, image_size: int = 224, patch_size: int = 16, **settings):
        unknown = sorted(set(settings) - set(self.defaults))
        if unknown:
            raise ValueError(f"unknown video setting(s) {unknown}; known: {sorted(self.defaults)}")
        values = {**self.defaults, **settings}
        self.image_size, self.patch_size = int(image_size), int(patch_size)
        self.image_mean = [float(v) for v in values["image_mean"]]
        self.image_std = [float(v) for v in values["image_std"]]
        self.rescale_factor = float(values["rescale_factor"])
        self.face_margin = float(values["face_margin"])
        self.face_detect_side = int(values["face_detect_side"])
        self.face_detect_frames = int(values["face_detect_frames"])
        self.decode_max_side = int(values["decode_max_side"])
        self._face_detector = None
        self._validate()

    def _validate(self) -> None:
        for name in ("image_size", "patch_size", "face_detect_side", "face_detect_frames", "decode_max_side"):
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
        """The detector used for face crops; assign any `FaceDetector` to replace the default Haar cascade."""
        if self._face_detector is None:
            self._face_detector = HaarFaceDetector(max_side=self.face_detect_side)
        return self._face_detector

    @face_detector.setter
    def face_detector(self, detector: FaceDetector | None) -> None:
        if detector is not None and not callable(getattr(detector, "detect", None)):
            raise TypeError(f"a face detector needs a `detect(frame_rgb)` method, got {type(detector).__name__}")
        self._face_detector = detector

    def face_session(self) -> FERFaceSession:
        """The face front-end for one clip (or one window). The single place faces are found."""
        return FERFaceSession(self)

    def pixel_values(self, crops: np.ndarray) -> np.ndarray:
        """uint8 `(..., S, S, 3)` -> float32 `(..., 3, S, S)`: `(x * rescale - mean) / std`."""
        scale = np.float32(self.rescale_factor) / np.asarray(self.image_std, np.float32)  # (3,)
        shift = np.asarray(self.image_mean, np.float32) / np.asarray(self.image_std, np.float32)
        lead = crops.shape[:-3]
        out = np.empty(lead + (3,) + crops.shape[-3:-1], np.float32)
        for c in range(3):  # channel by channel keeps the temporary small
            np.multiply(crops[..., c], scale[c], out=out[..., c, :, :], casting="unsafe")
            out[..., c, :, :] -= shift[c]
        return out


__all__ = ["FERFaceFrames", "FERFaceSession", "FERVideoProcessor"]
