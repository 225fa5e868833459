"""The app's bridge to the analysis: one clip in, the result type (`docs/architecture.md`) out, window by window.

    analysis = ClipAnalysis(model, processor, device, batch_windows=4, hop_s=1.0)
    for step in analysis.run("clip.mp4"):       # AnalysisStep after each batch of windows
        step.result, step.done, step.total      # the result so far (a dict in the documented schema)

INTERIM: until the processor's analysis engine (`fer_hf/analysis_fer.py`, `FERClipResult`) lands, this module
builds the documented result dict from the processor's rows and the model outputs itself; it is replaced by the
engine's own streaming call then, so that no surface computes probabilities, labels or timings on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

RESULT_SCHEMA_VERSION = 1
CONFIDENCE_MARGIN = 0.10  # top1 - top2 below this: "no clear emotion"
AGGREGATION = "mean of the window probabilities"
OUTPUT_NAMES = ("logits", "segment_logits", "segment_attention", "audio_segment_attention", "audio_frame_mask",
                "roi_indices", "roi_patch_scores", "modalities_used")


@dataclass
class AnalysisStep:
    result: dict
    done: int  # windows finished (classified or left out)
    total: int
    stage: str  # what was just done, in words


def _numpy(tensor):
    if tensor is None:
        return None
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).numpy()


def _confidence(probs: dict, margin: float) -> tuple[str | None, bool]:
    ordered = sorted(probs.values(), reverse=True)
    confident = len(ordered) < 2 or ordered[0] - ordered[1] >= margin
    return (max(probs, key=probs.get) if confident else None), confident


class ClipAnalysis:
    """Runs one clip through the processor and the model and assembles the result dict."""

    def __init__(self, model, processor, device: str, batch_windows: int = 4, hop_s: float = 1.0,
                 model_summary: dict | None = None, run_model=None):
        self.model, self.processor, self.device = model, processor, device
        self.config = model.config
        self.batch_windows = max(1, int(batch_windows))
        self.hop_s = float(hop_s)
        self.labels = [self.config.id2label[i] for i in range(len(self.config.id2label))]
        self.model_summary = dict(model_summary or {})
        self.run_model = run_model or self._forward

    def _forward(self, inputs: dict) -> dict:
        with torch.inference_mode():
            out = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
        return {name: _numpy(getattr(out, name, None)) for name in OUTPUT_NAMES}

    def run(self, path: str) -> Iterator[AnalysisStep]:
        rows = self.processor.decode_windows(path, sliding_window=True, stride_seconds=self.hop_s)
        duration = float(rows[0]["info"]["duration_s"]) if rows else 0.0
        result = self._empty_result(path, duration)
        usable = [r for r in rows if r["audio"] is not None or r["video_used"]]
        for r in rows:
            if r["audio"] is None and not r["video_used"]:
                info = r["info"]
                result["skipped_windows"].append({
                    "index": info["window_index"], "start_s": info["window_start_s"], "end_s": info["window_end_s"],
                    "audio_reason": info["audio_reason"], "video_reason": info["video_reason"]})
        total = len(rows)
        done = len(rows) - len(usable)
        yield AnalysisStep(result, done, total, "decoded the clip and found the face")
        for start in range(0, len(usable), self.batch_windows):
            chunk = usable[start:start + self.batch_windows]
            batch = self.processor.batch_rows(chunk, return_tensors="pt")
            outputs = self.run_model({k: batch[k] for k in batch.keys()})
            for i, row in enumerate(chunk):
                result["windows"].append(self._window(row, outputs, i))
            result["windows"].sort(key=lambda w: w["start_s"])
            done += len(chunk)
            self._aggregate(result)
            yield AnalysisStep(result, done, total, f"{done} of {total} windows")

    # ------------------------------------------------------------------------------------------------------------
    def _empty_result(self, path: str, duration: float) -> dict:
        return {
            "schema_version": RESULT_SCHEMA_VERSION, "source": str(path), "duration_s": round(duration, 4),
            "labels": list(self.labels), "probabilities": {}, "aggregation": AGGREGATION, "top_label": None,
            "confident": False, "confidence_margin": CONFIDENCE_MARGIN, "windows": [], "skipped_windows": [],
            "tracks": [], "person": {"track_id": None, "reason": "the largest face found in each window"},
            "model": dict(self.model_summary),
        }

    def _aggregate(self, result: dict) -> None:
        windows = result["windows"]
        if not windows:
            return
        mean = np.mean([[w["probabilities"][label] for label in self.labels] for w in windows], axis=0)
        result["probabilities"] = {label: float(p) for label, p in zip(self.labels, mean)}
        result["top_label"], result["confident"] = _confidence(result["probabilities"], CONFIDENCE_MARGIN)

    def _window(self, row: dict, outputs: dict, i: int) -> dict:
        info, config = row["info"], self.config
        logits = outputs["logits"][i].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        probabilities = {label: float(p) for label, p in zip(self.labels, probs)}
        top, confident = _confidence(probabilities, CONFIDENCE_MARGIN)
        audio_used, video_used = (bool(v) for v in outputs["modalities_used"][i])
        start = float(info["window_start_s"])
        seg_logits = outputs["segment_logits"][i].astype(np.float64)
        seg_probs = np.exp(seg_logits - seg_logits.max(-1, keepdims=True))
        seg_probs /= seg_probs.sum(-1, keepdims=True)
        attention = outputs["segment_attention"][i]
        segments = [{"start_s": round(start + a, 4), "end_s": round(start + b, 4),
                     "probabilities": {label: float(p) for label, p in zip(self.labels, seg_probs[s])},
                     "attention": float(attention[s])}
                    for s, (a, b) in enumerate(config.segment_bounds_seconds())]
        audio_attention = None
        if audio_used and outputs.get("audio_segment_attention") is not None:
            per_frame = (attention[:, None] * outputs["audio_segment_attention"][i]).sum(0)
            valid = np.asarray(outputs["audio_frame_mask"][i], bool)
            audio_attention = [float(v) if ok else 0.0 for v, ok in zip(per_frame, valid)]
        roi = None
        frame_found = [b is not None for b in info["face_boxes"]]
        if video_used and outputs.get("roi_indices") is not None:
            indices, scores = outputs["roi_indices"][i], outputs["roi_patch_scores"][i]
            roi = {"patch_scores": [[round(float(v), 5) for v in scores[t]] for t in range(scores.shape[0])],
                   "top_patches": [[int(k) for k in indices[t] if k >= 0] for t in range(indices.shape[0])]}
        frames = [{"time_s": round(float(t), 4), "source_time_s": s, "face_found": bool(found and video_used),
                   "face_box": info["face_boxes"][k] if video_used else None,
                   "crop_box": info["crop_boxes"][k] if video_used else None}
                  for k, (t, s, found) in enumerate(zip(info["frame_times_s"], info["frame_source_times_s"],
                                                        frame_found))]
        return {
            "index": int(info["window_index"]), "start_s": round(start, 4), "end_s": round(info["window_end_s"], 4),
            "probabilities": probabilities, "top_label": top, "confident": confident,
            "modalities": {"audio": audio_used, "video": video_used,
                           "audio_reason": "ok" if audio_used else str(info["audio_reason"]),
                           "video_reason": "ok" if video_used else str(info["video_reason"]),
                           "speech_fraction": None, "face_frames": int(sum(frame_found)) if video_used else 0,
                           "frames": len(frames)},
            "segments": segments, "frames": frames, "audio_attention": audio_attention, "roi": roi,
        }


def _rounded(value, digits: int = 5):
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def compact(result: dict) -> dict:
    """The result without the per-patch ROI scores, numbers to 5 decimals (what the data API returns)."""
    out = dict(result)
    out["windows"] = [{k: v for k, v in w.items() if k != "roi"} for w in result["windows"]]
    return _rounded(out)


def windows_needed(max_seconds: float, window_s: float, hop_s: float) -> int:
    """Windows of a clip of `max_seconds` at a `hop_s` stride (the processor's `max_windows`)."""
    return max(1, math.ceil(max(0.0, max_seconds - window_s) / hop_s) + 1)


__all__ = ["AnalysisStep", "ClipAnalysis", "compact", "windows_needed", "CONFIDENCE_MARGIN"]
