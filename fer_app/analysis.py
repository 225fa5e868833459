"""The app's adapter over the analysis engine: one clip in, the result dict (`docs/architecture.md`) out, in steps.

    analysis = ClipAnalysis(model, processor, device, batch_windows=4, hop_s=1.0)
    for step in analysis.run("clip.mp4"):       # AnalysisStep: at the start, after every `batch_windows` windows
        step.result, step.done, step.total      # the result so far (`FERClipResult.to_dict()`), windows done / all

Everything the app shows comes from `fer_hf.analysis_fer.FERAnalyzer.stream` (the frame-feature cache engine):
window probabilities, labels, confidence, timings, segments, audio attention and ROI scores are the engine's
`FERWindowResult`s, and the partial clip answer shown while the analysis runs is built by the result module's own
`build_clip_result` from the windows finished so far. Nothing here computes a probability or a label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fer_hf.analysis_fer import FERAnalyzer
from fer_hf.media_fer import probe_media
from fer_hf.media_stream_fer import MediaBudget, WorkToken, check_budget
from fer_hf.results_fer import FERClipResult, build_clip_result, model_summary


@dataclass
class AnalysisStep:
    result: dict  # the result dict so far (the documented schema; `probabilities` empty before the first window)
    done: int  # windows finished (classified or left out)
    total: int
    stage: str  # what was just done, in words


class ClipAnalysis:
    """Runs one clip through `FERAnalyzer.stream` and hands the result dict over in steps.

    Args:
        model, processor: the model and its processor (its speech and duration settings apply).
        device: where the model runs.
        batch_windows: windows per model call, and how often a partial result is handed over.
        hop_s: wanted hop between windows (the engine rounds it to whole frame steps).
        model_summary: what the app knows about the model (provenance, source), merged into `result["model"]`.
        budget: decoding limits per clip (`MediaBudget`), refused before decoding when the headers exceed them.
    """

    def __init__(self, model, processor, device: str, batch_windows: int = 4, hop_s: float = 1.0,
                 model_summary: dict | None = None, budget: MediaBudget | None = None):
        self.batch_windows = max(1, int(batch_windows))
        self.analyzer = FERAnalyzer(model, processor, batch_size=self.batch_windows, hop_seconds=hop_s,
                                    device=device, budget=budget)
        self.processor = processor
        self.model_summary = dict(model_summary or {})

    def _summary(self) -> dict:
        return {**model_summary(self.analyzer.model.config), **self.model_summary}

    def _partial(self, source: str, info, windows: list, skipped: list) -> dict:
        proc = self.processor
        if windows:
            result = build_clip_result(windows, skipped, source, info.duration_s, proc.labels,
                                       proc.confidence_margin, self._summary(), notes=info.notes)
        else:  # nothing classified yet: no answer, said as such
            result = FERClipResult(source=str(source), duration_s=info.duration_s, labels=list(proc.labels),
                                   probabilities={}, top_label=None, confident=False,
                                   confidence_margin=float(proc.confidence_margin), skipped_windows=list(skipped),
                                   notes=list(info.notes), model=self._summary())
        return result.to_dict()

    def run(self, path: str, name: str | None = None, cancel: WorkToken | None = None) -> Iterator[AnalysisStep]:
        """Yield an `AnalysisStep` at the start, after every `batch_windows` windows, and with the final result.

        `name`: the result's `source` (default: the file's name; never the server's temporary path). `cancel`:
        stops the work between packets and windows (`AnalysisCancelledError`, `WorkTimeExceededError`).
        """
        source = name or Path(path).name
        info = probe_media(str(path), self.processor.max_duration_s)
        check_budget(info, self.analyzer.budget)
        total = len(self.analyzer.plan(info.duration_s))
        windows, skipped, done = [], [], 0
        yield AnalysisStep(self._partial(source, info, [], []), 0, total, "reading the clip")
        for event in self.analyzer.stream(str(path), cancel=cancel):
            if event.result is not None:
                event.result.model, event.result.source = self._summary(), source
                yield AnalysisStep(event.result.to_dict(), event.done, event.total,
                                   f"{event.done} of {event.total} windows")
                return
            done = event.done
            (windows if event.window is not None else skipped).append(event.window or event.skipped)
            if done % self.batch_windows == 0 and done < event.total:
                yield AnalysisStep(self._partial(source, info, windows, skipped), done, event.total,
                                   f"{done} of {event.total} windows")


def compact(result: dict) -> dict:
    """The result without the per-patch ROI grids (what the data API and the JSON download give)."""
    out = dict(result)
    out["windows"] = [{k: v for k, v in w.items() if k != "roi"} for w in result["windows"]]
    return out


def windows_needed(max_seconds: float, window_s: float, hop_s: float) -> int:
    """Windows of a clip of `max_seconds` at a `hop_s` stride (the processor's `max_windows`)."""
    return max(1, math.ceil(max(0.0, max_seconds - window_s) / hop_s) + 1)


__all__ = ["AnalysisStep", "ClipAnalysis", "compact", "windows_needed"]
