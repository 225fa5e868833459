"""Processor of the audio-visual emotion model: media in, model inputs out, results back (SPEC §0-2, §5, §7).

    processor = FERProcessor.from_model_config(model.config)            # or AutoProcessor.from_pretrained(...)
    inputs = processor(videos="clip.mp4")                               # BatchFeature: model(**inputs)
    inputs, info = processor.prepare(videos=["a.mp4", media])           # ... plus per-window / per-clip metadata
    results = processor.post_process(model(**inputs), info)             # one FERClipResult per clip

`videos` takes a media file path, a `FERMedia` (decoded arrays) or a dict with its keys
(`{"audio": wave, "sampling_rate": 16000, "frames": frames, "fps": 30.0}`), or a list of those.

Orchestration lives here; the per-modality work in the sub-processors: `FERVideoProcessor`
(video_processing_fer.py: face crops, ROI maps, pixel values) and `FERAudioProcessor` (audio_processing_fer.py:
usability checks, log-mel features with transformers' `ParakeetFeatureExtractor`). Per clip: probe -> windows
(`media_fer.plan_windows`) -> per window decode audio (mono 16 kHz) and `num_frames` frames at the bin centres
-> faces (`FERVideoProcessor.face_session`) -> features.

The geometry (frames per window, window length, sampling rate, segments, image/patch size, mel hop, encoder
stride) is the model config's: `from_model_config` copies it into `geometry`, which is saved with the processor
so it also works on its own, and `check_model` refuses a model whose config disagrees.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from transformers import BatchFeature, ParakeetFeatureExtractor
from transformers.processing_utils import ProcessorMixin

from .audio_processing_fer import MIN_AUDIO_SAMPLES, FERAudioProcessor
from .configuration_fer import RAVDESS_LABELS
from .errors_fer import FERInputError, NoUsableModalityError, UnsupportedSampleRateError
from .geometry_fer import MAX_WINDOW_SECONDS, FERGeometry
from .media_fer import FERMedia, check_duration, decode_window, plan_windows, probe_media, window_from_arrays
from .results_fer import (
    DEFAULT_CONFIDENCE_MARGIN,
    build_clip_result,
    build_window_result,
    outputs_to_numpy,
    skipped_window,
)
from .video_processing_fer import FERVideoProcessor
from .windows_fer import AudioDecision, decide_audio, window_info

logger = logging.getLogger(__name__)

# Upper bounds of the settings that decide memory (the model config's own are `geometry_fer.SIZE_LIMITS`).
MAX_WINDOWS = 10_000  # sliding windows per clip
MAX_DURATION_S = 86_400.0  # a day of media per clip
_MEDIA_KEYS = {"audio", "sampling_rate", "frames", "fps", "frame_times_s", "start_s"}


@dataclass
class FERClipInfo:
    """Per-clip metadata of a prepared batch: which batch rows are its windows, and the windows left out."""

    source: str
    duration_s: float
    rows: list = field(default_factory=list)  # indices into the batch
    skipped: list = field(default_factory=list)  # FERSkippedWindow
    notes: list = field(default_factory=list)  # how the media was read, in words (`media_fer.MediaInfo.notes`)


@dataclass
class FERBatchInfo:
    """What `prepare` returns next to the model inputs: one dict per batch row (`windows`) and per clip (`clips`).

    `windows` holds one `windows_fer.WindowInfo` per batch row (times, frames, faces, person, modalities and the
    reasons; `face_frames` uint8 `(T, S, S, 3)` with `return_face_frames=True`).
    """

    windows: list
    clips: list


class FERBatchFeature(BatchFeature):
    """The model inputs. Metadata is returned by `FERProcessor.prepare`, not carried here."""

    def __getattr__(self, item):
        if item in ("clip_info", "skipped_windows"):
            raise AttributeError(
                f"`{item}` is no longer attached to the model inputs: use `inputs, info = processor.prepare(...)` "
                "(info.windows / info.clips) or the results of `processor.post_process(outputs, info)`"
            )
        return super().__getattr__(item)


# Flat settings of the processor before sub-processors (still accepted by from_model_config / old JSON files).
_GEOMETRY_KEYS = {"num_frames", "clip_seconds", "sampling_rate", "image_size", "patch_size", "num_segments",
                  "mel_hop_length", "audio_encoder_stride"}


def _route_settings(kwargs: dict) -> dict:
    """Sort flat keyword settings into geometry / video_settings / audio_settings (the rest stays flat)."""
    kwargs = dict(kwargs)
    routed = {"geometry": dict(kwargs.pop("geometry", None) or {}),
              "video_settings": dict(kwargs.pop("video_settings", None) or {}),
              "audio_settings": dict(kwargs.pop("audio_settings", None) or {})}
    for key in list(kwargs):
        if key in _GEOMETRY_KEYS:
            routed["geometry"][key] = kwargs.pop(key)
        elif key in FERVideoProcessor.defaults:
            routed["video_settings"][key] = kwargs.pop(key)
        elif key in FERAudioProcessor.defaults:
            routed["audio_settings"][key] = kwargs.pop(key)
    return {**routed, **kwargs}


class FERProcessor(ProcessorMixin):
    r"""
    Turns media into the inputs of `FERForEmotionClassification` and its outputs into `FERClipResult`s.

    Args:
        feature_extractor (`ParakeetFeatureExtractor`, *optional*): the log-mel extractor (built when omitted).
        geometry (`dict`, *optional*): `FERGeometry` fields, normally copied from the model config by
            `from_model_config` (defaults: the seed preset).
        video_settings (`dict`, *optional*): `FERVideoProcessor` settings (face margin, detector, normalisation).
        audio_settings (`dict`, *optional*): `FERAudioProcessor` settings (silence threshold).
        max_windows (`int`, defaults to 20): cap on sliding windows per clip; beyond it the stride is widened so
            exactly `max_windows` windows spread from the start to the end of the clip (warning logged).
        max_duration_s (`float`, defaults to 600): longer clips raise `MediaTooLongError` (one frame of tolerance).
        window_seconds (`float`, *optional*): the window length; only the model's `clip_seconds` (or `None`, the
            same) is accepted: another length raises `FERInputError` (see `window_length`).
        hop_seconds (`float`, *optional*): seconds between sliding-window starts (the hop; the same name as
            `FERAnalyzer`, the app and `fer-annotate --hop-seconds`); `None` means half the window.
        confidence_margin (`float`, defaults to 0.10): a result is `confident` when its top probability exceeds the
            second by at least this; otherwise `top_label` is None ("no clear emotion").
        id2label (`dict[int, str]`, *optional*): class names; RAVDESS order by default.
    """

    model_input_names = [
        "input_features", "audio_attention_mask", "pixel_values_videos", "video_frame_mask", "roi_weights",
        "audio_mask", "video_mask",
    ]

    def __init__(
        self,
        feature_extractor=None,
        geometry: dict | None = None,
        video_settings: dict | None = None,
        audio_settings: dict | None = None,
        max_windows: int = 20,
        max_duration_s: float = 600.0,
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
        confidence_margin: float = DEFAULT_CONFIDENCE_MARGIN,
        id2label: dict | None = None,
        **kwargs,
    ):
        routed = _route_settings(dict(kwargs, geometry=geometry, video_settings=video_settings,
                                      audio_settings=audio_settings))
        geometry, video_settings, audio_settings = (routed.pop(k) for k in ("geometry", "video_settings",
                                                                            "audio_settings"))
        self.geometry = FERGeometry(**geometry)
        if feature_extractor is None:
            feature_extractor = ParakeetFeatureExtractor(sampling_rate=self.geometry.sampling_rate)
        if getattr(feature_extractor, "sampling_rate", self.geometry.sampling_rate) != self.geometry.sampling_rate:
            raise ValueError(
                f"the feature extractor works at {feature_extractor.sampling_rate} Hz but the geometry says "
                f"{self.geometry.sampling_rate}"
            )
        self.video_processing = FERVideoProcessor(self.geometry.image_size, self.geometry.patch_size,
                                                  **video_settings)
        self.audio_processing = FERAudioProcessor(feature_extractor, self.geometry.num_samples, **audio_settings)
        self.max_windows = int(max_windows)
        self.max_duration_s = float(max_duration_s)
        self.window_seconds = None if window_seconds is None else float(window_seconds)
        self.hop_seconds = None if hop_seconds is None else float(hop_seconds)
        self.confidence_margin = float(confidence_margin)
        labels = id2label if id2label is not None else dict(enumerate(RAVDESS_LABELS))
        self.id2label = {int(k): str(v) for k, v in dict(labels).items()}  # JSON turns the keys into strings
        self.validate()
        super().__init__(feature_extractor, **routed)  # unknown keys: ProcessorMixin raises a TypeError naming them

    def validate(self) -> None:
        """Refuse bad window settings (call it after assigning `max_windows`, `hop_seconds`, ... directly)."""
        if (not 1 <= self.max_windows <= MAX_WINDOWS or not 0 < self.max_duration_s <= MAX_DURATION_S
                or not 0.0 <= self.confidence_margin < 1.0):
            raise ValueError(
                f"need 1 <= max_windows <= {MAX_WINDOWS}, 0 < max_duration_s <= {MAX_DURATION_S} and "
                f"0 <= confidence_margin < 1; got {self.max_windows}, {self.max_duration_s}, {self.confidence_margin}"
            )
        for name in ("window_seconds", "hop_seconds"):
            value = getattr(self, name)
            if value is not None and not 0 < float(value) <= MAX_WINDOW_SECONDS:
                raise ValueError(f"`{name}` must be positive seconds up to {MAX_WINDOW_SECONDS}, or None, "
                                 f"got {value!r}")
        self.window_length(self.window_seconds)

    def window_length(self, window_seconds: float | None = None) -> float:
        """The window length in seconds: always the model's `clip_seconds`. The model was built (frame step, segment
        bounds, audio length) and trained for that length, so another one is refused with `FERInputError` on every
        surface (processor, pipeline, `fer-annotate`, app) rather than giving windows whose timeline is wrong;
        `hop_seconds` (the hop) is free."""
        if window_seconds is not None and abs(float(window_seconds) - self.clip_seconds) > 1e-6:
            raise FERInputError(
                f"this model classifies windows of {self.clip_seconds:g} s (its frame step, segments and audio "
                f"length are built for that); window_seconds={float(window_seconds):g} is not supported. Leave it "
                "unset, and use hop_seconds to change how far apart the windows start")
        return float(self.clip_seconds)

    @classmethod
    def from_model_config(cls, config, **kwargs) -> FERProcessor:
        """The processor for a `FERConfig`: its geometry and labels; `kwargs` override any setting (flat names
        such as `face_margin=` or `silence_threshold=` reach the sub-processor they belong to)."""
        settings = _route_settings(kwargs)
        settings["geometry"] = {**asdict(FERGeometry.from_config(config)), **settings["geometry"]}
        # the crop the vision tower was trained on (margin, grey or colour) unless the caller overrides it
        settings["video_settings"] = {"face_margin": float(getattr(config, "face_crop_margin", 0.25)),
                                      "grayscale": bool(getattr(config, "face_crop_grayscale", False)),
                                      **settings["video_settings"]}
        settings.setdefault("id2label", dict(config.id2label) if config.id2label else None)
        if "feature_extractor" not in settings:
            settings["feature_extractor"] = ParakeetFeatureExtractor(
                feature_size=getattr(config.audio_config, "num_mel_bins", 80),
                sampling_rate=settings["geometry"]["sampling_rate"],
            )
        return cls(**settings)

    @classmethod
    def from_args_and_dict(cls, args, processor_dict: dict, **kwargs):
        # processor_config.json files written before the sub-processors hold flat keys: route them.
        return super().from_args_and_dict(args, _route_settings(processor_dict), **kwargs)

    def check_model(self, config) -> None:
        """Raise `FERInputError` when `config`'s geometry differs from this processor's (they would disagree)."""
        theirs = FERGeometry.from_config(config)
        if theirs != self.geometry:
            diff = {k: (v, getattr(theirs, k)) for k, v in asdict(self.geometry).items() if getattr(theirs, k) != v}
            raise FERInputError(
                f"this processor was made for another model geometry ({diff}, as processor vs model); "
                "build it with FERProcessor.from_model_config(model.config)"
            )

    def to_dict(self):
        runtime = {k: self.__dict__.pop(k) for k in ("geometry", "video_processing", "audio_processing")}
        try:
            output = super().to_dict()
        finally:
            self.__dict__.update(runtime)
        output.update(geometry=asdict(self.geometry), video_settings=self.video_processing.to_dict(),
                      audio_settings=self.audio_processing.to_dict())
        return output

    # ----------------------------------------------------------------------------------
    # Convenience views (read-only geometry; the sub-processors own their settings)
    num_frames = property(lambda self: self.geometry.num_frames)
    clip_seconds = property(lambda self: self.geometry.clip_seconds)
    sampling_rate = property(lambda self: self.geometry.sampling_rate)
    image_size = property(lambda self: self.geometry.image_size)
    patch_size = property(lambda self: self.geometry.patch_size)
    num_patches = property(lambda self: self.video_processing.num_patches)
    labels = property(lambda self: [self.id2label[i] for i in range(len(self.id2label))])
    face_margin = property(lambda self: self.video_processing.face_margin)
    decode_max_side = property(lambda self: self.video_processing.decode_max_side)

    @property
    def face_detector(self):
        return self.video_processing.face_detector

    @face_detector.setter
    def face_detector(self, detector) -> None:
        self.video_processing.face_detector = detector

    # ----------------------------------------------------------------------------------
    def __call__(self, videos=None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Model inputs for one or more clips (see `prepare` for the arguments); metadata: use `prepare`."""
        return self.prepare(videos, return_tensors=return_tensors, **kwargs)[0]

    def prepare(
        self,
        videos=None,
        sliding_window: bool = False,
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
        return_tensors: str | None = "pt",
        return_face_frames: bool = False,
        **kwargs,
    ) -> tuple[BatchFeature, FERBatchInfo]:
        """Prepare one or more clips: `(inputs, info)`.

        Args:
            videos: a media file path, a `FERMedia`, a dict with `FERMedia`'s keys (audio, sampling_rate, frames,
                fps, frame_times_s, start_s), or a list of those. Arrays are not resampled: audio must be at the
                model's rate (`UnsupportedSampleRateError` otherwise).
            sliding_window: `False` -> one window centred on the clip; `True` -> every window (one batch row each;
                a seed-preset row holds 90 x 3 x 224 x 224 floats, 54 MB). Overlapping windows of long clips are
                cheaper with `FERAnalyzer` (frames shared by windows are encoded once).
            window_seconds, hop_seconds: override the processor defaults (`clip_seconds`, half a window); a
                window length other than `clip_seconds` is refused (`FERInputError`).
            return_tensors: "pt" (default), "np" or None (numpy).
            return_face_frames: also put the uint8 face crops `(T, S, S, 3)` in `info.windows[i]["face_frames"]`.

        Returns:
            inputs (`BatchFeature`): `input_features` `(B, n_mel, 80)`, `audio_attention_mask` `(B, n_mel)` int64,
            `pixel_values_videos` `(B, T, 3, S, S)`, `video_frame_mask` `(B, T)` bool, `roi_weights` `(B, T, N)`,
            `audio_mask` `(B,)` bool, `video_mask` `(B,)` bool. info (`FERBatchInfo`): per-row window dicts and per
            clip `FERClipInfo` (batch rows, skipped windows: sliding windows with neither usable audio nor a face
            leave the batch).

        Raises:
            MediaNotFoundError, EmptyMediaError, MediaDecodeError, MediaTooLongError, UnsupportedSampleRateError,
            NoUsableModalityError (a clip with neither usable audio nor a face in any window), FERInputError
            (malformed arguments). All are `FERInputError`s (and `ValueError`s).
        """
        self._refuse_old_arguments(kwargs)
        window_s = self.window_length(window_seconds or self.window_seconds)
        hop_s = hop_seconds if hop_seconds is not None else self.hop_seconds
        rows, windows, clips = [], [], []
        for clip_index, clip in enumerate(self._collect_clips(videos)):
            clip_rows = self._process_clip(clip, clip_index, window_s, sliding_window, hop_s, return_face_frames)
            usable = [r for r in clip_rows if r["info"].audio_used or r["info"].video_used]
            if not usable:
                info = clip_rows[0]["info"]
                raise NoUsableModalityError.in_clip(info.source, info.audio_reason, info.video_reason)
            skipped = [skipped_window(r["info"]) for r in clip_rows
                       if not (r["info"].audio_used or r["info"].video_used)]
            if skipped:  # the model refuses a row with neither modality
                logger.warning("%d of %d windows of %r hold neither usable audio nor a face and are left out",
                               len(skipped), len(clip_rows), clip_rows[0]["info"].source)
            first = clip_rows[0]["info"]
            clips.append(FERClipInfo(first.source, first.duration_s,
                                     list(range(len(rows), len(rows) + len(usable))), skipped, first.notes))
            rows.extend(usable)
            windows.extend(r["info"] for r in usable)
        return self._batch(rows, return_tensors, window_s), FERBatchInfo(windows, clips)

    @staticmethod
    def _refuse_old_arguments(kwargs: dict) -> None:
        old = {k for k, v in kwargs.items() if v is not None}
        if old & {"audio", "video_frames", "fps", "sampling_rate"}:
            raise FERInputError(
                "decoded arrays now go through `videos=` as well: videos={'audio': wave, 'sampling_rate': 16000, "
                "'frames': frames, 'fps': 30.0} (or a FERMedia, or a list of them); either modality may be left out"
            )
        if old:
            raise FERInputError(f"unexpected argument(s) {sorted(old)}; see FERProcessor.prepare for the inputs")

    # ----------------------------------------------------------------------------------
    # The two steps of `prepare`, public for callers that store rows in between (the training cache).
    def decode_windows(self, path, sliding_window: bool = False, window_seconds: float | None = None,
                       hop_seconds=None, return_face_frames: bool = False) -> list[dict]:
        """Decode one clip (a path or decoded media) into per-window rows, the step before batching.

        Each row holds `audio` (float32 `(n,)` at 16 kHz, or None when unused), `crops` uint8 `(T, S, S, 3)`,
        `roi` float32 `(T, N)`, `frame_mask` bool `(T,)`, `video_used` bool and `info` (the window dict).
        Rows with neither modality are kept here (unlike `prepare`). Raises the same errors as `prepare`.
        """
        window_s = self.window_length(window_seconds or self.window_seconds)
        hop_s = hop_seconds if hop_seconds is not None else self.hop_seconds
        clip = self._collect_clips(path)[0]
        return self._process_clip(clip, 0, window_s, sliding_window, hop_s, return_face_frames)

    def batch_rows(self, rows: list[dict], window_seconds: float | None = None, return_tensors="pt") -> BatchFeature:
        """Model inputs for rows from `decode_windows` (log-mel features, pixel normalisation, masks)."""
        return self._batch(list(rows), return_tensors, self.window_length(window_seconds or self.window_seconds))

    # ----------------------------------------------------------------------------------
    def _collect_clips(self, videos) -> list[dict]:
        if videos is None:
            raise FERInputError("nothing to process: pass `videos=` (a file path, decoded media, or a list of them)")
        items = list(videos) if isinstance(videos, (list, tuple)) else [videos]
        if not items:
            raise FERInputError("`videos` is an empty list")
        return [self._one_clip(item) for item in items]

    def _one_clip(self, item) -> dict:
        if isinstance(item, (str, os.PathLike)):
            return {"kind": "file", "path": os.fspath(item)}
        if isinstance(item, dict):
            unknown = set(item) - _MEDIA_KEYS - {"video_frames"}
            if unknown:
                raise FERInputError(f"unknown media key(s) {sorted(unknown)}; use {sorted(_MEDIA_KEYS)}")
            item = dict(item)
            if "video_frames" in item:  # the pipeline's old key
                item["frames"] = item.pop("video_frames")
            item = FERMedia(**item)
        if not isinstance(item, FERMedia):
            raise FERInputError(
                f"`videos` items must be file paths, FERMedia or dicts of decoded arrays, got {type(item).__name__}"
            )
        return {"kind": "array", "media": self.clean_media(item)}

    def clean_media(self, media: FERMedia) -> FERMedia:
        """Check and normalise decoded arrays: float32 mono audio at the model rate, uint8 RGB frames with times."""
        audio = frames = None
        if media.audio is None and media.frames is None:
            raise FERInputError("the decoded media holds neither `audio` nor `frames`")
        if not _finite_number(media.start_s):
            raise FERInputError(f"`start_s` must be a finite number of seconds, got {media.start_s!r}")
        if media.audio is not None:
            if media.sampling_rate is not None and not _finite_number(media.sampling_rate):
                raise UnsupportedSampleRateError(
                    f"`sampling_rate` must be a number of samples per second ({self.sampling_rate} for this model), "
                    f"got {media.sampling_rate!r}"
                )
            if media.sampling_rate is None:
                logger.warning("no `sampling_rate` given with `audio`; assuming %d Hz", self.sampling_rate)
            elif int(media.sampling_rate) != self.sampling_rate:
                raise UnsupportedSampleRateError(
                    f"audio arrays must be sampled at {self.sampling_rate} Hz, got sampling_rate="
                    f"{media.sampling_rate}; resample first, or pass the media file path instead (files are "
                    "resampled while decoding)"
                )
            audio = _clean_audio(media.audio)
        times = None
        if media.frames is not None:
            frames = _clean_frames(media.frames)
            if media.frame_times_s is not None:
                times = np.asarray(media.frame_times_s, np.float64).reshape(-1)
                if (len(times) != len(frames) or not np.all(np.isfinite(times))
                        or (len(times) > 1 and np.any(np.diff(times) <= 0))):
                    raise FERInputError("`frame_times_s` needs one increasing time per frame")
            elif media.fps is None or not float(media.fps) > 0:
                raise FERInputError(f"`fps` (frames per second, > 0) or `frame_times_s` is required with `frames`, "
                                    f"got fps={media.fps!r}")
        return FERMedia(audio, self.sampling_rate, frames, None if media.fps is None else float(media.fps), times,
                        float(media.start_s))

    def _process_clip(self, clip, clip_index, window_s, sliding, hop_s, return_face_frames) -> list[dict]:
        if clip["kind"] == "file":
            info = probe_media(clip["path"], self.max_duration_s)
            source, duration, origin, notes = clip["path"], info.duration_s, 0.0, info.notes
            no_audio, no_video = "no audio stream", "no video stream"
        else:
            media = clip["media"]
            source, duration, origin, notes = "array", media.duration_s, media.start_s, []
            no_audio, no_video = "no audio given", "no video frames given"
            if duration <= 0:
                raise FERInputError("the given audio / frames are empty")
            check_duration(duration, self.max_duration_s, media.fps, "the given clip")
        rows = []
        faces = self.video_processing.face_session()  # one per clip: clip-wide face-track ids
        speech = self.audio_processing.speech_session()  # one per clip: overlapping windows share VAD scores
        windows = plan_windows(duration, window_s, sliding, hop_s, self.max_windows)
        for window_index, (start, end) in enumerate(windows):
            if clip["kind"] == "file":
                window = decode_window(clip["path"], start, end, self.num_frames, duration, self.sampling_rate,
                                       self.video_processing.decode_max_side, info.timing)
            else:
                m = clip["media"]
                window = window_from_arrays(m.audio, m.frames, m.fps, origin + start, origin + end, self.num_frames,
                                            duration, self.sampling_rate, self.video_processing.decode_max_side,
                                            frame_times_s=m.frame_times_s, origin_s=origin)
            row = self.window_row(window, no_audio, no_video, return_face_frames, faces=faces, speech=speech)
            window_meta = row["info"]
            window_meta.source, window_meta.clip_index, window_meta.window_index = source, clip_index, window_index
            window_meta.duration_s, window_meta.notes = round(float(duration), 6), list(notes)
            rows.append(row)
        return rows

    def window_row(self, media, no_audio: str = "no audio stream", no_video: str = "no video stream",
                   return_face_frames: bool = False, faces=None, speech=None, all_people: bool = False) -> dict:
        """One window's row from its decoded media (`media_fer.WindowMedia`); `faces` reuses a face session and
        `speech` a clip's speech session (`audio_processing.speech_session()`; None: a fresh one).

        `all_people=True` adds `row["people"]`: one row per face track of the window (the shared audio, that
        person's crops and mask; `info["person"]` names them), the chosen person's equal to this row.
        """
        session = speech if speech is not None else self.audio_processing.speech_session()
        audio = decide_audio(self.audio_processing, media.audio, no_audio, session, float(media.start_s))
        if media.frames is None:
            found, video_reason = None, no_video
        elif not media.frame_valid.any():
            found, video_reason = None, "no video frames inside the window"
        else:
            faces = faces or self.video_processing.face_session()
            found = faces.process(
                media.frames, media.frame_times_s, media.scale, audio=media.audio, audio_start_s=float(media.start_s),
                speech=audio.used, all_people=all_people)
            video_reason = found.reason()
        row = self._person_row(media, audio, found, video_reason, faces, return_face_frames)
        if all_people:
            row["people"] = [self._person_row(media, audio, p, p.reason(), faces, return_face_frames)
                             for p in (found.people if found is not None else [])]
        return row

    def _person_row(self, media, audio: AudioDecision, found, video_reason: str, faces,
                    return_face_frames: bool) -> dict:
        """The row of one window with `found`'s face (a `FERFaceFrames`, or None without video)."""
        T, S, N = self.num_frames, self.image_size, self.num_patches  # noqa: N806
        video_used = found is not None and found.any_found
        crops = found.crops if video_used else np.zeros((T, S, S, 3), np.uint8)
        roi = found.roi if video_used else np.zeros((T, N), np.float32)
        source_times = media.source_times_s if media.source_times_s is not None else np.full(T, np.nan)
        face = found.found if video_used else np.zeros(T, bool)
        info = window_info(
            0, media.start_s, media.end_s, media.frame_times_s, source_times, audio, face,
            found.face_boxes if video_used else [None] * T, found.crop_boxes if video_used else [None] * T,
            video_reason, dict(found.person) if found is not None else {"track_id": None, "reason": video_reason},
            faces.track_summaries() if found is not None else [])
        if return_face_frames:
            info.face_frames = crops.copy()
        return {"info": info, "audio": media.audio if audio.used else None, "crops": crops, "roi": roi,
                # frames without the chosen face are masked, like padding: no stale crop reaches the model
                "frame_mask": media.frame_valid & found.found if video_used else media.frame_valid.copy(),
                "video_used": bool(video_used)}

    def _batch(self, rows: list[dict], return_tensors, window_s: float) -> BatchFeature:
        n_samples = round(float(window_s) * self.sampling_rate)
        features, attn = self.audio_processing.features([r["audio"] for r in rows], n_samples)
        video_mask = np.array([r["video_used"] for r in rows])
        frame_mask = np.stack([r["frame_mask"] for r in rows])  # (B, T)
        pixels = self.video_processing.pixel_values(np.stack([r["crops"] for r in rows]))  # (B, T, 3, S, S)
        pixels[~(frame_mask & video_mask[:, None])] = 0.0  # padding frames and face-less clips carry no pixels
        data = {
            "input_features": features,
            "audio_attention_mask": attn,
            "pixel_values_videos": pixels,
            "video_frame_mask": frame_mask,
            "roi_weights": np.stack([r["roi"] for r in rows]),  # (B, T, N)
            "audio_mask": np.array([r["audio"] is not None for r in rows]),
            "video_mask": video_mask,
        }
        return FERBatchFeature(data=data, tensor_type=return_tensors)

    # ----------------------------------------------------------------------------------
    def post_process(self, outputs, info: FERBatchInfo | None = None, model_config=None) -> list:
        """One `FERClipResult` per clip from the model outputs of a prepared batch.

        Args:
            outputs: the model output (`FEREmotionClassifierOutput`), a dict of arrays, or just the logits `(B, C)`.
            info: the `FERBatchInfo` from `prepare`. Without it every batch row is one clip of one window at
                0..clip_seconds (source "unknown"), with the modalities the model reports.
            model_config: the model's config, for the provenance summary in `result.model`.
        """
        out = outputs_to_numpy(outputs)
        if out["logits"].shape[-1] != len(self.id2label):
            raise FERInputError(
                f"the model gives {out['logits'].shape[-1]} classes but the processor knows {len(self.id2label)}"
            )
        if info is None:
            info = self._bare_info(out)
        if len(info.windows) != out["logits"].shape[0]:
            raise FERInputError(f"{out['logits'].shape[0]} output rows for {len(info.windows)} prepared windows")
        from .results_fer import model_summary

        summary, labels, margin = model_summary(model_config), self.labels, self.confidence_margin
        results = []
        for clip in info.clips:
            windows = [build_window_result(out, r, info.windows[r], labels, self.geometry, margin)
                       for r in clip.rows]
            results.append(build_clip_result(windows, clip.skipped, clip.source, clip.duration_s, labels, margin,
                                             summary, [info.windows[r] for r in clip.rows], clip.notes))
        return results

    def _bare_info(self, out: dict) -> FERBatchInfo:
        rows = out["logits"].shape[0]
        used = out["modalities_used"] if out["modalities_used"] is not None else np.ones((rows, 2), bool)
        no_info = "no window information (model outputs without the processor's info)"
        windows = [window_info(0, 0.0, self.clip_seconds, [], [], AudioDecision(bool(u[0]), no_info), np.zeros(0, bool),
                               [], [], no_info, {"track_id": None, "reason": no_info}, []) for u in used]
        clips = [FERClipInfo("unknown", self.clip_seconds, [r]) for r in range(rows)]
        return FERBatchInfo(windows, clips)


def _finite_number(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _clean_audio(audio) -> np.ndarray:
    """float32 `(n,)` mono in [-1, 1]."""
    a = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        kind = "complex" if np.issubdtype(a.dtype, np.complexfloating) else a.dtype.name
        raise FERInputError(f"audio must be real-valued samples (float or integer), got {kind} values")
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


def _clean_frames(frames) -> np.ndarray:
    """uint8 `(F, H, W, 3)` RGB (a list of `(H, W, 3)` frames is stacked)."""
    if isinstance(frames, (list, tuple)):
        frames = [np.asarray(f) for f in frames]
        sizes = sorted({f.shape for f in frames})
        if len(sizes) > 1:
            raise FERInputError(f"all frames of a clip must have the same size, got {len(sizes)} different shapes "
                                f"({sizes[0]}, {sizes[1]}, ...); resize them first")
        frames = np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)
    f = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3:
        raise FERInputError(f"frames must be RGB frames of shape (F, H, W, 3), got shape {f.shape}")
    if f.shape[1] == 0 or f.shape[2] == 0:
        raise FERInputError(f"frames must have at least one pixel, got {f.shape[2]}x{f.shape[1]} frames")
    if not (np.issubdtype(f.dtype, np.floating) or np.issubdtype(f.dtype, np.integer) or f.dtype == np.bool_):
        raise FERInputError(f"frames must hold real pixel values (uint8 or float), got {f.dtype.name} values")
    if f.dtype != np.uint8:
        scale = 255.0 if f.size and float(f.max()) <= 1.0 else 1.0  # floats in [0, 1] or [0, 255]
        f = np.clip(f.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    return f


# `save_pretrained` then writes `"auto_map": {"AutoProcessor": "processing_fer.FERProcessor"}` and copies this file
# with its relative imports, so `AutoProcessor.from_pretrained(folder, trust_remote_code=True)` works anywhere.
FERProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["MIN_AUDIO_SAMPLES", "FERBatchFeature", "FERBatchInfo", "FERClipInfo", "FERGeometry", "FERProcessor"]
