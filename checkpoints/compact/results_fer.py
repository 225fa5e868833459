"""The result type that every surface reads: pipeline, app, export check, batch annotation, live mode.

    results = processor.post_process(outputs, info)      # one FERClipResult per clip
    result.top_label, result.confident, result.probabilities
    result.to_json(compact=True)                          # plain JSON; compact drops the per-patch ROI grids

Softmax, labels, confidence and timings are computed here and nowhere else: `build_window_result` turns one
batch row of model outputs plus the processor's window metadata into a `FERWindowResult`, `aggregate_windows`
turns the windows of a clip into its answer. Times are seconds from the start of the clip (for live mode, from the
start of the session). Segment bounds follow the model's own segment rule (`geometry.segment_bounds_seconds`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import numpy as np

from .errors_fer import FERError
from .windows_fer import WindowInfo

RESULT_SCHEMA_VERSION = 1
AGGREGATION = "mean of window probabilities, each window weighted by the number of modalities it used (1 or 2)"
DEFAULT_CONFIDENCE_MARGIN = 0.10  # top1 - top2 below this: "no clear emotion" (top_label None)


@dataclass
class FERSegmentResult:
    """One fused segment of a window. `attention`: the classifier's temporal attention weight (0 when empty)."""

    start_s: float
    end_s: float
    probabilities: dict
    attention: float


@dataclass
class FERFrameResult:
    """One sampled frame: target time, time of the decoded frame used (None past the clip end), face boxes in
    source pixels `[x0, y0, x1, y1]` (None where no face)."""

    time_s: float
    source_time_s: float | None
    face_found: bool
    face_box: list | None = None
    crop_box: list | None = None


@dataclass
class FERWindowResult:
    """One model window. `modalities`: audio, video (bool, used by the model), audio_reason, video_reason,
    speech_fraction (None until a voice detector runs), face_frames (frames with a face), frames (inside the clip)."""

    index: int
    start_s: float
    end_s: float
    probabilities: dict
    top_label: str | None
    confident: bool
    modalities: dict
    segments: list = field(default_factory=list)  # FERSegmentResult
    frames: list = field(default_factory=list)  # FERFrameResult
    audio_attention: list | None = None  # per encoder frame (geometry.encoder_frame_seconds each)
    roi: dict | None = None  # {"patch_scores": [[...] per frame], "top_patches": [[...] per frame]}


@dataclass
class FERSkippedWindow:
    """A window with neither usable audio nor a face: not given to the model."""

    index: int
    start_s: float
    end_s: float
    audio_reason: str
    video_reason: str


@dataclass
class FaceTrackSummary:
    """One face track of the clip: first/last frame time with a face, frames found, mean box (source pixels)."""

    track_id: int
    first_s: float
    last_s: float
    frames_found: int
    mean_box: list


@dataclass
class FERClipResult:
    """The answer for one clip (see docs/architecture.md "The result type")."""

    source: str
    duration_s: float
    labels: list
    probabilities: dict
    top_label: str | None
    confident: bool
    confidence_margin: float
    windows: list = field(default_factory=list)  # FERWindowResult
    skipped_windows: list = field(default_factory=list)  # FERSkippedWindow
    tracks: list = field(default_factory=list)  # FaceTrackSummary
    person: dict = field(default_factory=lambda: {"track_id": None, "reason": "no face found"})
    notes: list = field(default_factory=list)  # how the media was read, in words (e.g. unusable video timestamps)
    model: dict = field(default_factory=dict)
    aggregation: str = AGGREGATION
    schema_version: int = RESULT_SCHEMA_VERSION

    def ranked(self, top_k: int | None = None) -> list[tuple[str, float]]:
        """`[(label, probability), ...]` sorted high to low (ties keep the model's label order)."""
        order = sorted(range(len(self.labels)), key=lambda i: -self.probabilities[self.labels[i]])
        return [(self.labels[i], self.probabilities[self.labels[i]]) for i in order[: top_k or len(order)]]

    def to_dict(self, compact: bool = False) -> dict:
        """Plain JSON-able dict. `compact=True` leaves out the per-patch ROI grids of every window."""
        out = dataclasses.asdict(self)
        if compact:
            for window in out["windows"]:
                window.pop("roi", None)
        return out

    def to_json(self, compact: bool = False, indent: int | None = None) -> str:
        """Strict JSON (RFC 8259): a value that is not a finite number (NaN, infinity) is written as `null`."""
        return json.dumps(json_safe(self.to_dict(compact=compact)), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict) -> FERClipResult:
        """Inverse of `to_dict` (a compact dict gives windows with `roi=None`). Refuses other schema versions."""
        version = data.get("schema_version")
        if version != RESULT_SCHEMA_VERSION:
            raise ValueError(f"result schema version {version!r} is not {RESULT_SCHEMA_VERSION}; re-run the analysis")
        data = dict(data)
        windows = []
        for w in data.pop("windows", []):
            w = dict(w)
            w["segments"] = [FERSegmentResult(**s) for s in w.get("segments", [])]
            w["frames"] = [FERFrameResult(**f) for f in w.get("frames", [])]
            windows.append(FERWindowResult(**w))
        skipped = [FERSkippedWindow(**s) for s in data.pop("skipped_windows", [])]
        tracks = [FaceTrackSummary(**t) for t in data.pop("tracks", [])]
        return cls(windows=windows, skipped_windows=skipped, tracks=tracks, **data)


def json_safe(value):
    """`value` (dicts, lists, numbers, strings) with every non-finite float (NaN, +-infinity) replaced by None, so
    that `json.dumps(..., allow_nan=False)` writes valid JSON (bare `NaN` is not JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


# --------------------------------------------------------------------------------------
# Building results from model outputs (the only place softmax, labels and timings are computed)
def softmax(logits) -> np.ndarray:
    """float64 softmax over the last axis of a numpy array (any leading shape)."""
    x = np.asarray(logits, np.float64)
    x = np.exp(x - x.max(-1, keepdims=True))
    return x / x.sum(-1, keepdims=True)


def top_margin(probs) -> float:
    """How far the top probability leads the second (1.0 with one class): what `decide` holds against the margin."""
    ranked = np.sort(np.asarray(probs, np.float64))[::-1]
    return float(ranked[0] - ranked[1]) if len(ranked) > 1 else 1.0


def decide(probs: np.ndarray, labels: list, margin: float) -> tuple[str | None, bool]:
    """(top_label or None, confident): confident when top1 - top2 >= margin ("no clear emotion" otherwise).

    The one rule for the top label: results, the pipeline's ranking, the app and `fer-annotate`'s tables use it.
    """
    probs = np.asarray(probs, np.float64)
    confident = top_margin(probs) >= margin - 1e-12
    return (labels[int(np.argmax(probs))] if confident else None), bool(confident)


def outputs_to_numpy(outputs) -> dict:
    """Model outputs (a `ModelOutput`, a dict or a logits tensor) as numpy arrays by name (absent ones are None)."""
    names = ("logits", "segment_logits", "segment_attention", "segment_mask", "audio_segment_attention",
             "audio_frame_mask", "roi_indices", "roi_patch_scores", "modalities_used")
    if not hasattr(outputs, "keys") and not hasattr(outputs, "logits"):
        outputs = {"logits": outputs}
    result = {}
    for name in names:
        value = outputs.get(name) if hasattr(outputs, "get") else getattr(outputs, name, None)
        if value is not None and hasattr(value, "detach"):
            value = value.detach().cpu()
            value = (value.float() if value.is_floating_point() else value).numpy()
        result[name] = None if value is None else np.asarray(value)
    if result["logits"] is None:
        raise ValueError("the model outputs hold no `logits`")
    if result["logits"].ndim == 1:
        result = {k: (v[None] if v is not None else None) for k, v in result.items()}
    if not np.all(np.isfinite(result["logits"])):
        raise FERError(
            "the model returned NaN or infinite scores: its weights hold such values (a training run that diverged) "
            "or its precision overflowed; run it in fp32, or use another checkpoint"
        )
    return result


def _r(value: float, digits: int = 6) -> float:
    return round(float(value), digits)


def build_window_result(out: dict, row: int, info: WindowInfo, labels: list, geometry, margin: float,
                        index: int | None = None) -> FERWindowResult:
    """One `FERWindowResult` from batch row `row` of `outputs_to_numpy(...)` and the window's `WindowInfo` (the one
    contract every driver fills, `windows_fer`)."""
    if not isinstance(info, WindowInfo):
        raise TypeError(f"build_window_result needs a windows_fer.WindowInfo, got {type(info).__name__}")
    probs = softmax(out["logits"][row])
    top, confident = decide(probs, labels, margin)
    start, end = float(info.window_start_s), float(info.window_end_s)
    used = out["modalities_used"][row] if out["modalities_used"] is not None else (info.audio_used, info.video_used)
    audio_used, video_used = bool(used[0]), bool(used[1])
    segments = []
    if out["segment_logits"] is not None:
        seg_probs = softmax(out["segment_logits"][row])  # (S, C)
        attention = out["segment_attention"][row] if out["segment_attention"] is not None else np.zeros(len(seg_probs))
        for s, (a, b) in enumerate(geometry.segment_bounds_seconds("fused")):
            segments.append(FERSegmentResult(_r(start + a), _r(start + b),
                                             {lab: _r(p) for lab, p in zip(labels, seg_probs[s])}, _r(attention[s])))
    times, sources, face_boxes, crop_boxes = (info.frame_times_s, info.frame_source_times_s, info.face_boxes,
                                              info.crop_boxes)
    frames = [
        FERFrameResult(_r(t), None if s is None else _r(s), bool(video_used and fb is not None),
                       fb if video_used else None, cb if video_used else None)
        for t, s, fb, cb in zip(times, sources, face_boxes, crop_boxes)
    ]
    audio_attention = None
    if audio_used and out["audio_segment_attention"] is not None and out["segment_attention"] is not None:
        per_frame = (out["segment_attention"][row][:, None] * out["audio_segment_attention"][row]).sum(0)  # (L,)
        if out["audio_frame_mask"] is not None:
            per_frame = per_frame * np.asarray(out["audio_frame_mask"][row], bool)
        audio_attention = [_r(v) for v in per_frame]
    roi = None
    if video_used and out["roi_patch_scores"] is not None and out["roi_indices"] is not None:
        roi = {"patch_scores": [[_r(v, 5) for v in frame] for frame in out["roi_patch_scores"][row]],
               "top_patches": [[int(i) for i in frame if i >= 0] for frame in out["roi_indices"][row]]}
    valid = [s is not None for s in sources]
    modalities = {
        "audio": audio_used, "video": video_used,
        # usable input that the model still did not use: its branch was never trained (config.trained_modalities)
        "audio_reason": "ok" if audio_used else _reason(info.audio_reason,
                                                        "the model was not trained on voices"),
        "video_reason": "ok" if video_used else _reason(info.video_reason,
                                                        "the model was not trained on faces"),
        "speech_fraction": info.speech_fraction,
        "face_frames": int(sum(1 for f in frames if f.face_found)),
        "frames": int(sum(valid)),
    }
    return FERWindowResult(
        index=int(info.window_index if index is None else index), start_s=_r(start), end_s=_r(end),
        probabilities={lab: _r(p) for lab, p in zip(labels, probs)}, top_label=top, confident=confident,
        modalities=modalities, segments=segments, frames=frames, audio_attention=audio_attention, roi=roi,
    )


def skipped_window(info: WindowInfo) -> FERSkippedWindow:
    """The window of `info` as a `FERSkippedWindow` (neither modality usable)."""
    return FERSkippedWindow(info.window_index, info.window_start_s, info.window_end_s, info.audio_reason,
                            info.video_reason)


def _reason(text, fallback: str) -> str:
    return fallback if not text or text == "ok" else str(text)


def aggregate_windows(windows: list, labels: list, margin: float) -> tuple[dict, str | None, bool]:
    """The clip answer from its windows (`AGGREGATION`): (probabilities, top_label or None, confident)."""
    if not windows:
        raise ValueError("a clip result needs at least one classified window")
    probs = np.array([[w.probabilities[lab] for lab in labels] for w in windows])  # (W, C)
    weights = np.array([int(w.modalities["audio"]) + int(w.modalities["video"]) for w in windows], np.float64)
    weights = np.where(weights > 0, weights, 1.0)
    mean = (probs * weights[:, None]).sum(0) / weights.sum()
    top, confident = decide(mean, labels, margin)
    return {lab: _r(p) for lab, p in zip(labels, mean)}, top, confident


def clip_faces(window_infos: list) -> tuple[list, dict]:
    """Tracks and person of a clip from its windows' `WindowInfo`s (`tracks`: the clip's face tracks so far,
    `person`: that window's choice)."""
    if not window_infos:
        return [], {"track_id": None, "reason": "no face found in any window"}
    last = max(window_infos, key=lambda i: (len(i.tracks), i.window_index))
    tracks = [FaceTrackSummary(**t) for t in last.tracks]
    chosen = [i.person for i in window_infos if i.video_used and i.person.get("track_id") is not None]
    if not chosen:
        reasons = [i.person.get("reason") for i in window_infos]
        return tracks, {"track_id": None, "reason": next((r for r in reasons if r), "no face found in any window")}
    ids = [p["track_id"] for p in chosen]
    best = max(set(ids), key=lambda t: (ids.count(t), -ids.index(t)))
    reason = next(p["reason"] for p in chosen if p["track_id"] == best)
    if len(window_infos) > 1:
        reason = f"{reason} (chosen in {ids.count(best)} of {len(window_infos)} windows)"
    return tracks, {"track_id": best, "reason": reason}


def build_clip_result(windows: list, skipped: list, source: str, duration_s: float, labels: list, margin: float,
                      model_summary: dict | None = None, window_infos: list | None = None,
                      notes: list | None = None) -> FERClipResult:
    """A `FERClipResult` from its classified windows and the skipped ones (`window_infos`: the classified windows'
    `WindowInfo`s, for the face tracks and the chosen person; `notes`: `media_fer.MediaInfo.notes`)."""
    probabilities, top, confident = aggregate_windows(windows, labels, margin)
    tracks, person = clip_faces(list(window_infos or []))
    return FERClipResult(
        source=str(source), duration_s=_r(duration_s), labels=list(labels), probabilities=probabilities,
        top_label=top, confident=confident, confidence_margin=float(margin), windows=list(windows),
        skipped_windows=list(skipped), tracks=tracks, person=person, notes=list(notes or []),
        model=dict(model_summary or {}),
    )


def model_summary(config) -> dict:
    """What the result says about the model: its provenance summary (when the config has one) and preset."""
    if config is None:
        return {}
    summary = {"preset": getattr(config, "preset", None)}
    describe = getattr(config, "provenance_summary", None)
    provenance = getattr(config, "provenance", None)
    if callable(describe):
        summary["summary"] = describe()
    if isinstance(provenance, dict):
        summary["status"] = provenance.get("status")
    return summary


__all__ = [
    "AGGREGATION",
    "DEFAULT_CONFIDENCE_MARGIN",
    "RESULT_SCHEMA_VERSION",
    "FERClipResult",
    "FERFrameResult",
    "FERSegmentResult",
    "FERSkippedWindow",
    "FERWindowResult",
    "json_safe",
    "FaceTrackSummary",
    "aggregate_windows",
    "build_clip_result",
    "build_window_result",
    "clip_faces",
    "decide",
    "model_summary",
    "skipped_window",
    "outputs_to_numpy",
    "softmax",
    "top_margin",
]
