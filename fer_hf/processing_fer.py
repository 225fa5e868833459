"""Processor of the audio-visual emotion model: media in, model inputs out (SPEC §0-2, §5, §7).

    processor = FERProcessor.from_model_config(model.config)          # or AutoProcessor.from_pretrained(...)
    inputs = processor(videos="clip.mp4", return_tensors="pt")        # a path or a list of paths
    inputs = processor(audio=wave, sampling_rate=16000, video_frames=frames, fps=30.0)   # decoded arrays
    probs = processor.post_process(model(**inputs))                   # [{label: probability}, ...]
    inputs.clip_info                                                  # one dict per batch row (see `__call__`)

Pipeline per clip: probe (duration, streams) -> windows (`media_fer.plan_windows`) -> per window decode audio
(mono 16 kHz) and `num_frames` frames at the bin centres (`media_fer`) -> face track, square crops, ROI maps
(`faces_fer`) -> log-mel features (transformers' `ParakeetFeatureExtractor`) and SigLIP pixel normalisation.

Frame preprocessing is done here with numpy/OpenCV (crop, resize to `image_size`, rescale 1/255, normalise with
`image_mean` / `image_std`) rather than with transformers' SigLIP image processor, whose fast variant needs
torchvision; the settings are stored in the processor JSON all the same.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from transformers import BatchFeature, ParakeetFeatureExtractor
from transformers.processing_utils import ProcessorMixin

from .configuration_fer import RAVDESS_LABELS
from .errors_fer import FERInputError, MediaTooLongError, NoUsableModalityError, UnsupportedSampleRateError
from .faces_fer import FaceDetector, HaarFaceDetector, crop_box, crop_face, roi_weight_map, track_face
from .media_fer import decode_window, plan_windows, probe_media, window_from_arrays

logger = logging.getLogger(__name__)

_SKIPPED_KEYS = ("clip_index", "window_index", "window_start_s", "window_end_s", "audio_reason", "video_reason")
MIN_AUDIO_SAMPLES = 400  # one 25 ms analysis window at 16 kHz; shorter audio cannot be normalised


class FERProcessor(ProcessorMixin):
    r"""
    Turns video files (or decoded audio + frames) into the inputs of `FERForEmotionClassification`.

    Args:
        feature_extractor (`ParakeetFeatureExtractor`, *optional*):
            Log-mel extractor (80 mels, n_fft 512, window 400, hop 160, per-feature normalisation); built with
            `sampling_rate` when omitted.
        num_frames (`int`, *optional*, defaults to 90): frames per window, sampled at the bin centres.
        clip_seconds (`float`, *optional*, defaults to 3.0): model window length in seconds.
        image_size (`int`, *optional*, defaults to 224): side of the square face crops.
        patch_size (`int`, *optional*, defaults to 16): vision patch size; the ROI maps have
            `(image_size / patch_size)^2` entries.
        sampling_rate (`int`, *optional*, defaults to 16000): audio rate in Hz of the features.
        image_mean, image_std (`list[float]`, *optional*, default to `[0.5] * 3`): SigLIP normalisation.
        rescale_factor (`float`, *optional*, defaults to 1/255): pixel rescale before normalisation.
        face_margin (`float`, *optional*, defaults to 0.25): margin added on each side of the face box, as a
            fraction of its side, before cropping.
        face_detect_side (`int`, *optional*, defaults to 320): long side (px) of the grey frame the detector sees.
        face_detect_frames (`int`, *optional*, defaults to 16): the detector runs on at most this many frames per
            window (spread evenly); boxes of the other frames are interpolated.
        decode_max_side (`int`, *optional*, defaults to 640): frames are downscaled to this long side while decoding.
        silence_threshold (`float`, *optional*, defaults to 1e-4): audio whose peak |amplitude| (full scale 1.0) is
            below this is digital silence and not used (`audio_mask` False).
        max_windows (`int`, *optional*, defaults to 20): cap on sliding windows per clip; beyond it the stride is
            widened so exactly `max_windows` windows spread from the start to the end of the clip (warning logged).
        max_duration_s (`float`, *optional*, defaults to 600): longer clips raise `MediaTooLongError`.
        window_seconds (`float`, *optional*): default window length; `None` means `clip_seconds`.
        stride_seconds (`float`, *optional*): default sliding-window stride; `None` means half the window.
        id2label (`dict[int, str]`, *optional*): class names for `post_process`; RAVDESS order by default.
    """

    model_input_names = [
        "input_features", "audio_attention_mask", "pixel_values_videos", "video_frame_mask", "roi_weights",
        "audio_mask", "video_mask",
    ]

    def __init__(
        self,
        feature_extractor=None,
        num_frames: int = 90,
        clip_seconds: float = 3.0,
        image_size: int = 224,
        patch_size: int = 16,
        sampling_rate: int = 16000,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        rescale_factor: float = 1 / 255,
        face_margin: float = 0.25,
        face_detect_side: int = 320,
        face_detect_frames: int = 16,
        decode_max_side: int = 640,
        silence_threshold: float = 1e-4,
        max_windows: int = 20,
        max_duration_s: float = 600.0,
        window_seconds: float | None = None,
        stride_seconds: float | None = None,
        id2label: dict | None = None,
        **kwargs,
    ):
        if feature_extractor is None:
            feature_extractor = ParakeetFeatureExtractor(sampling_rate=sampling_rate)
        self.num_frames = int(num_frames)
        self.clip_seconds = float(clip_seconds)
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.sampling_rate = int(sampling_rate)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.rescale_factor = float(rescale_factor)
        self.face_margin = float(face_margin)
        self.face_detect_side = int(face_detect_side)
        self.face_detect_frames = int(face_detect_frames)
        self.decode_max_side = int(decode_max_side)
        self.silence_threshold = float(silence_threshold)
        self.max_windows = int(max_windows)
        self.max_duration_s = float(max_duration_s)
        self.window_seconds = None if window_seconds is None else float(window_seconds)
        self.stride_seconds = None if stride_seconds is None else float(stride_seconds)
        labels = id2label if id2label is not None else dict(enumerate(RAVDESS_LABELS))
        self.id2label = {int(k): str(v) for k, v in dict(labels).items()}  # JSON turns the keys into strings
        self._face_detector = None
        self._validate()
        if getattr(feature_extractor, "sampling_rate", self.sampling_rate) != self.sampling_rate:
            raise ValueError(
                f"the feature extractor works at {feature_extractor.sampling_rate} Hz but `sampling_rate` is "
                f"{self.sampling_rate}"
            )
        super().__init__(feature_extractor, **kwargs)

    def _validate(self) -> None:
        for name in ("num_frames", "image_size", "patch_size", "face_detect_side", "face_detect_frames",
                     "decode_max_side", "max_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"`image_size`={self.image_size} is not a multiple of `patch_size`={self.patch_size}")
        if not 0.0 <= self.face_margin <= 2.0:
            raise ValueError(f"`face_margin` must be between 0 and 2, got {self.face_margin!r}")
        for name in ("clip_seconds", "max_duration_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)!r}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError(
                f"`image_mean`/`image_std` need 3 values (std > 0), got {self.image_mean}, {self.image_std}"
            )

    @classmethod
    def from_model_config(cls, config, **kwargs) -> FERProcessor:
        """The processor matching a `FERConfig` (frames, window, image/patch size, sampling rate, mel bins, labels)."""
        settings = dict(
            num_frames=config.num_frames,
            clip_seconds=config.clip_seconds,
            image_size=config.vision_config.image_size,
            patch_size=config.vision_config.patch_size,
            sampling_rate=config.sampling_rate,
            id2label=dict(config.id2label) if config.id2label else None,
        )
        settings.update(kwargs)
        if "feature_extractor" not in settings:
            mel_bins = getattr(config.audio_config, "num_mel_bins", 80)
            settings["feature_extractor"] = ParakeetFeatureExtractor(
                feature_size=mel_bins, sampling_rate=settings["sampling_rate"]
            )
        return cls(**settings)

    # ----------------------------------------------------------------------------------
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

    def to_dict(self):
        detector = self.__dict__.pop("_face_detector", None)  # runtime object, not part of the saved settings
        try:
            return super().to_dict()
        finally:
            self._face_detector = detector

    # ----------------------------------------------------------------------------------
    def __call__(
        self,
        videos=None,
        audio=None,
        video_frames=None,
        sampling_rate: int | None = None,
        fps: float | None = None,
        sliding_window: bool = False,
        window_seconds: float | None = None,
        stride_seconds: float | None = None,
        return_tensors: str | None = "pt",
        return_face_frames: bool = False,
        **kwargs,
    ) -> BatchFeature:
        """Prepare one or more clips.

        Args:
            videos: a media file path (str / PathLike) or a list of them. Mutually exclusive with the arrays.
            audio: decoded mono audio `(samples,)` float (or int16), or a list (one per clip); stereo
                `(samples, channels)` is averaged. Must be at 16 kHz (`UnsupportedSampleRateError` otherwise;
                nothing is resampled for arrays).
            video_frames: uint8 RGB frames `(F, H, W, 3)` or a list of such arrays (one per clip).
            sampling_rate: rate of `audio` in Hz (assumed 16 kHz with a warning when omitted).
            fps: frame rate of `video_frames` (required with them): frame `i` is shown at `i / fps` seconds.
            sliding_window: `False` -> one window centred on the clip; `True` -> every window (one batch row each;
                mind the size: a seed-preset row holds 90 x 3 x 224 x 224 floats, 54 MB).
            window_seconds, stride_seconds: override the processor defaults (`clip_seconds`, half a window).
            return_tensors: "pt" (default), "np" or None (numpy).
            return_face_frames: also put the uint8 face crops `(T, S, S, 3)` in `clip_info[i]["face_frames"]`.

        Returns:
            `BatchFeature` with `input_features` `(B, n_mel, 80)`, `audio_attention_mask` `(B, n_mel)` int64,
            `pixel_values_videos` `(B, T, 3, S, S)`, `video_frame_mask` `(B, T)` bool, `roi_weights` `(B, T, N)`,
            `audio_mask` `(B,)` bool, `video_mask` `(B,)` bool; plus the attribute `clip_info`: a list of B dicts
            (source, clip_index, window_index, duration_s, window_start_s, window_end_s, frame_times_s (targets),
            frame_source_times_s (time of the decoded frame used, None past the clip end), audio_used,
            audio_reason, video_used, video_reason, face_boxes, crop_boxes, face_frames). Windows of a sliding
            run that hold neither usable audio nor a face are left out of the batch (the model cannot classify
            them) and listed in the attribute `skipped_windows` (clip_index, window_index, window_start_s,
            window_end_s, audio_reason, video_reason).

        Raises:
            MediaNotFoundError, EmptyMediaError, MediaDecodeError (corrupt, truncated, image or text file),
            MediaTooLongError (beyond `max_duration_s`), UnsupportedSampleRateError (arrays not at 16 kHz),
            NoUsableModalityError (a clip with neither usable audio nor a face in any window), FERInputError
            (malformed arguments). All are `FERInputError`s (and `ValueError`s).
        """
        unexpected = {k: v for k, v in kwargs.items() if v is not None}
        if unexpected:
            raise FERInputError(
                f"unexpected argument(s) {sorted(unexpected)}; see FERProcessor.__call__ for the inputs"
            )
        window_s = float(window_seconds or self.window_seconds or self.clip_seconds)
        stride_s = stride_seconds if stride_seconds is not None else self.stride_seconds
        clips = self._collect_clips(videos, audio, video_frames, sampling_rate, fps)
        rows = []
        skipped = []
        for clip_index, clip in enumerate(clips):
            clip_rows = self._process_clip(clip, clip_index, window_s, sliding_window, stride_s, return_face_frames)
            usable = [r for r in clip_rows if r["info"]["audio_used"] or r["info"]["video_used"]]
            if not usable:
                info = clip_rows[0]["info"]
                raise NoUsableModalityError(
                    f"nothing to classify in {info['source']!r}: audio: {info['audio_reason']}; "
                    f"video: {info['video_reason']}. Give a clip with speech or a visible face."
                )
            # The model refuses a row with neither modality, so such sliding windows leave the batch (listed).
            skipped += [
                {k: r["info"][k] for k in _SKIPPED_KEYS}
                for r in clip_rows
                if not (r["info"]["audio_used"] or r["info"]["video_used"])
            ]
            if len(usable) < len(clip_rows):
                logger.warning(
                    "%d of %d windows of %r hold neither usable audio nor a face and are left out",
                    len(clip_rows) - len(usable), len(clip_rows), clip_rows[0]["info"]["source"],
                )
            rows.extend(usable)
        batch = self._batch(rows, window_s, return_tensors)
        batch.skipped_windows = skipped
        return batch

    # ----------------------------------------------------------------------------------
    # The two steps of `__call__`, public for callers that store rows in between (the training cache).
    def decode_windows(
        self, path, sliding_window: bool = False, window_seconds: float | None = None, stride_seconds=None,
        return_face_frames: bool = False,
    ) -> list[dict]:
        """Decode one media file into per-window rows, the step before batching.

        Each row holds `audio` (float32 `(n,)` at 16 kHz, or None when unused), `crops` uint8 `(T, S, S, 3)`,
        `roi` float32 `(T, N)`, `frame_mask` bool `(T,)`, `video_used` bool and `info` (the `clip_info` dict).
        Rows with neither modality are kept here (unlike `__call__`). Raises the same errors as `__call__`.
        """
        window_s = float(window_seconds or self.window_seconds or self.clip_seconds)
        stride_s = stride_seconds if stride_seconds is not None else self.stride_seconds
        clip = {"kind": "file", "path": os.fspath(path)}
        return self._process_clip(clip, 0, window_s, sliding_window, stride_s, return_face_frames)

    def batch_rows(self, rows: list[dict], window_seconds: float | None = None, return_tensors="pt") -> BatchFeature:
        """Model inputs for rows from `decode_windows` (log-mel features, pixel normalisation, masks)."""
        window_s = float(window_seconds or self.window_seconds or self.clip_seconds)
        return self._batch(list(rows), window_s, return_tensors)

    # ----------------------------------------------------------------------------------
    def _collect_clips(self, videos, audio, video_frames, sampling_rate, fps) -> list[dict]:
        if videos is not None and (audio is not None or video_frames is not None):
            raise FERInputError("pass either `videos` (file paths) or decoded `audio` / `video_frames`, not both")
        if videos is not None:
            paths = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
            if not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
                raise FERInputError(
                    "`videos` takes a file path or a list of paths; pass decoded frames as "
                    "`video_frames=` (uint8 array (F, H, W, 3)) with `fps=`"
                )
            return [{"kind": "file", "path": os.fspath(p)} for p in paths]
        if audio is None and video_frames is None:
            raise FERInputError("nothing to process: pass `videos=` (paths) or `audio=` and/or `video_frames=`")
        audios = self._audio_list(audio)
        frame_sets = self._frames_list(video_frames)
        n = max(len(audios or []), len(frame_sets or []))
        if audios is not None and frame_sets is not None and len(audios) != len(frame_sets):
            raise FERInputError(
                f"got {len(audios)} audio clips but {len(frame_sets)} frame sequences; give one per clip"
            )
        if audios is not None:
            if sampling_rate is None:
                logger.warning("no `sampling_rate` given with `audio`; assuming %d Hz", self.sampling_rate)
            elif int(sampling_rate) != self.sampling_rate:
                raise UnsupportedSampleRateError(
                    f"audio arrays must be sampled at {self.sampling_rate} Hz, got sampling_rate={sampling_rate}; "
                    f"resample first, or pass the media file path instead (files are resampled while decoding)"
                )
        if frame_sets is not None and (fps is None or not float(fps) > 0):
            raise FERInputError(f"`fps` (frames per second, > 0) is required with `video_frames`, got {fps!r}")
        clips = []
        for i in range(n):
            a = self._clean_audio(audios[i]) if audios is not None else None
            f = self._clean_frames(frame_sets[i]) if frame_sets is not None else None
            clips.append({"kind": "array", "audio": a, "frames": f, "fps": float(fps) if fps else None})
        return clips

    @staticmethod
    def _audio_list(audio):
        """One array (or a list of numbers) is one clip; a list/tuple of arrays is a batch."""
        if audio is None:
            return None
        if isinstance(audio, (list, tuple)) and audio and not np.isscalar(audio[0]):
            return list(audio)
        return [audio]

    @staticmethod
    def _frames_list(frames):
        """A 4-D array is one clip; a list of 4-D arrays is a batch; a list of 3-D frames is one clip."""
        if frames is None:
            return None
        if isinstance(frames, (list, tuple)) and frames:
            if all(np.ndim(f) == 4 for f in frames):
                return list(frames)
            return [np.stack([np.asarray(f) for f in frames])]
        return [frames]

    def _clean_audio(self, audio) -> np.ndarray:
        """float32 `(n,)` mono in [-1, 1]."""
        a = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        if a.ndim == 2:  # (n, channels) or (channels, n): average the short axis
            a = a.mean(axis=int(np.argmin(a.shape)))
        if a.ndim != 1:
            raise FERInputError(f"audio must be a 1-D waveform (samples,) or (samples, channels), got shape {a.shape}")
        if np.issubdtype(a.dtype, np.integer):
            a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
        a = a.astype(np.float32, copy=False)
        if not np.all(np.isfinite(a)):
            raise FERInputError("audio contains NaN or infinite values")
        return a

    @staticmethod
    def _clean_frames(frames) -> np.ndarray:
        """uint8 `(F, H, W, 3)` RGB."""
        f = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
        if f.ndim != 4 or f.shape[-1] != 3:
            raise FERInputError(f"video_frames must be RGB frames of shape (F, H, W, 3), got shape {f.shape}")
        if f.dtype != np.uint8:
            scale = 255.0 if f.size and float(f.max()) <= 1.0 else 1.0  # floats in [0, 1] or [0, 255]
            f = np.clip(f.astype(np.float32) * scale, 0, 255).astype(np.uint8)
        return f

    # ----------------------------------------------------------------------------------
    def _process_clip(self, clip, clip_index, window_s, sliding, stride_s, return_face_frames) -> list[dict]:
        if clip["kind"] == "file":
            info = probe_media(clip["path"], self.max_duration_s)
            source, duration = clip["path"], info.duration_s
            no_audio, no_video = "no audio stream", "no video stream"
        else:
            a, f, fps = clip["audio"], clip["frames"], clip["fps"]
            duration = max(
                len(a) / self.sampling_rate if a is not None else 0.0, len(f) / fps if f is not None else 0.0
            )
            source, no_audio, no_video = "array", "no audio given", "no video frames given"
            if duration <= 0:
                raise FERInputError("the given audio / frames are empty")
            if duration > self.max_duration_s:
                raise MediaTooLongError(
                    f"the given clip lasts {duration:.1f} s, more than `max_duration_s`={self.max_duration_s:.0f} s"
                )
        rows = []
        windows = plan_windows(duration, window_s, sliding, stride_s, self.max_windows)
        for window_index, (start, end) in enumerate(windows):
            if clip["kind"] == "file":
                media = decode_window(clip["path"], start, end, self.num_frames, duration, self.sampling_rate,
                                      self.decode_max_side)
            else:
                media = window_from_arrays(clip["audio"], clip["frames"], clip["fps"], start, end, self.num_frames,
                                           duration, self.sampling_rate, self.decode_max_side)
            row = self._window_row(media, no_audio, no_video, return_face_frames)
            row["info"].update(source=source, clip_index=clip_index, window_index=window_index,
                               duration_s=round(float(duration), 6))
            rows.append(row)
        return rows

    def _window_row(self, media, no_audio: str, no_video: str, return_face_frames: bool) -> dict:
        T, S = self.num_frames, self.image_size  # noqa: N806
        crops = np.zeros((T, S, S, 3), np.uint8)
        roi = np.zeros((T, self.num_patches), np.float32)
        face_boxes, crop_boxes = [None] * T, [None] * T
        # --- video
        if media.frames is None:
            video_used, video_reason = False, no_video
        elif not media.frame_valid.any():
            video_used, video_reason = False, "no video frames inside the window"
        else:
            track = track_face(media.frames, self.face_detector, self.face_detect_frames)
            video_used = track.found
            video_reason = "ok" if track.found else f"no face found in any of {track.num_searched} frames"
            for k, box in enumerate(track.boxes):
                if box is None or media.frames[k] is None:
                    continue
                crops[k] = crop_face(media.frames[k], box, self.face_margin, S)
                roi[k] = roi_weight_map(S, self.patch_size, self.face_margin, track.landmarks[k])
                face_boxes[k] = [round(float(v) * media.scale, 1) for v in box]
                crop_boxes[k] = [round(float(v) * media.scale, 1) for v in crop_box(box, self.face_margin)]
        # --- audio
        audio = media.audio
        if audio is None:
            audio_used, audio_reason = False, no_audio
        elif audio.size < MIN_AUDIO_SAMPLES:
            audio_used, audio_reason = False, "no audio inside the window" if audio.size == 0 else "audio too short"
        elif float(np.abs(audio).max()) < self.silence_threshold:
            audio_used, audio_reason = False, "silent audio track"
        else:
            audio_used, audio_reason = True, "ok"
        source_times = media.source_times_s if media.source_times_s is not None else np.full(T, np.nan)
        info = dict(
            window_start_s=float(media.start_s), window_end_s=float(media.end_s),
            frame_times_s=[round(float(t), 6) for t in media.frame_times_s],
            frame_source_times_s=[None if np.isnan(t) else round(float(t), 6) for t in source_times],
            audio_used=audio_used, audio_reason=audio_reason, video_used=bool(video_used), video_reason=video_reason,
            face_boxes=face_boxes, crop_boxes=crop_boxes,
        )
        if return_face_frames:
            info["face_frames"] = crops.copy()
        return {"info": info, "audio": audio if audio_used else None, "crops": crops, "roi": roi,
                "frame_mask": media.frame_valid.copy(), "video_used": bool(video_used)}

    def _batch(self, rows: list[dict], window_s: float, return_tensors) -> BatchFeature:
        n_samples = round(window_s * self.sampling_rate)
        # Rows without usable audio get a placeholder so the batch call works; their features/mask are zeroed.
        waves = [r["audio"][:n_samples] if r["audio"] is not None else np.zeros(n_samples, np.float32) for r in rows]
        mel = self.feature_extractor(
            waves, sampling_rate=self.sampling_rate, padding="max_length", max_length=n_samples, truncation=True,
            return_attention_mask=True, return_tensors="pt",
        )
        audio_mask = np.array([r["audio"] is not None for r in rows])
        features = mel["input_features"].numpy().astype(np.float32)  # (B, n_mel, 80)
        attn = mel["attention_mask"].numpy().astype(np.int64)  # (B, n_mel): 1 = frame of real audio
        features[~audio_mask] = 0.0
        attn[~audio_mask] = 0
        crops = np.stack([r["crops"] for r in rows])  # (B, T, S, S, 3) uint8
        video_mask = np.array([r["video_used"] for r in rows])
        frame_mask = np.stack([r["frame_mask"] for r in rows])  # (B, T)
        pixels = self._normalise(crops)  # (B, T, 3, S, S)
        pixels[~(frame_mask & video_mask[:, None])] = 0.0  # padding frames and face-less clips carry no pixels
        data = {
            "input_features": features,
            "audio_attention_mask": attn,
            "pixel_values_videos": pixels,
            "video_frame_mask": frame_mask,
            "roi_weights": np.stack([r["roi"] for r in rows]),  # (B, T, N)
            "audio_mask": audio_mask,
            "video_mask": video_mask,
        }
        batch = BatchFeature(data=data, tensor_type=return_tensors)
        batch.clip_info = [r["info"] for r in rows]
        return batch

    def _normalise(self, crops: np.ndarray) -> np.ndarray:
        """uint8 `(B, T, S, S, 3)` -> float32 `(B, T, 3, S, S)`: `(x * rescale - mean) / std`."""
        scale = np.float32(self.rescale_factor) / np.asarray(self.image_std, np.float32)  # (3,)
        shift = np.asarray(self.image_mean, np.float32) / np.asarray(self.image_std, np.float32)
        out = np.empty(crops.shape[:2] + (3,) + crops.shape[2:4], np.float32)
        for c in range(3):  # channel by channel keeps the temporary small
            np.multiply(crops[..., c], scale[c], out=out[:, :, c], casting="unsafe")
            out[:, :, c] -= shift[c]
        return out

    # ----------------------------------------------------------------------------------
    def post_process(self, outputs, top_k: int | None = None) -> list[dict]:
        """Class probabilities per batch row: `[{label: probability}, ...]`, sorted high to low.

        Args:
            outputs: a model output with `.logits` `(B, C)`, or the logits tensor / array itself.
            top_k: keep only the `top_k` most probable labels (all when None).
        """
        logits = getattr(outputs, "logits", outputs)
        if isinstance(outputs, dict) and "logits" in outputs:
            logits = outputs["logits"]
        logits = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits)
        if logits.ndim == 1:
            logits = logits[None]
        probs = torch.softmax(logits.detach().float().cpu(), dim=-1).numpy()
        if probs.shape[-1] != len(self.id2label):
            raise FERInputError(
                f"the model gives {probs.shape[-1]} classes but the processor knows {len(self.id2label)} labels"
            )
        results = []
        for row in probs:
            order = np.argsort(-row)[: top_k or len(row)]
            results.append({self.id2label[int(i)]: float(row[i]) for i in order})
        return results


# `save_pretrained` then writes `"auto_map": {"AutoProcessor": "processing_fer.FERProcessor"}` and copies this file
# with its relative imports, so `AutoProcessor.from_pretrained(folder, trust_remote_code=True)` works anywhere.
FERProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["FERProcessor"]
