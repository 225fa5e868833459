"""The analysis engine: a clip (path or arrays) -> `FERClipResult`, over its whole length, streamed window by window.

    analyzer = FERAnalyzer(model, processor, batch_size=8)
    result = analyzer.analyze("talk.mp4")                               # timeline: overlapping windows, ~1 s hop
    for event in analyzer.stream("talk.mp4"):                           # the same, as windows finish
        event.window or event.skipped; event.done, event.total; event.result (last event only)
    single = analyzer.analyze("clip.mp4", timeline=False)              # one centred window (the processor's path)
    live = analyzer.live_session(); live.classify(audio, frames)        # live mode: a rolling window, cached frames

Timeline: windows of `clip_seconds` start every `hop_s`, a whole number of frame steps
(`clip_seconds / num_frames`: realtime 8 frames / 3 s -> 0.375 s steps, hop 3 steps = 1.125 s), so the frames of
overlapping windows fall on one global grid `t_j = (j + 0.5) * step`. The clip is decoded once, front to back;
each grid frame goes through the face front-end and `model.embed_frames` once (a frame-feature cache keyed by grid
index), the audio encoder runs per window, windows are batched (`batch_size`), and the decoded frames, cached
embeddings and audio are dropped once no pending window needs them, so memory does not grow with the clip length.
The clip answer is the result's aggregate over its windows (`FERClipResult.aggregation`).

Bounded work (a server's requests): `FERAnalyzer(..., budget=MediaBudget(...))` refuses files whose headers or
decoded content exceed it (`MediaTooLargeError`), and `stream(video, cancel=WorkToken(max_seconds))` stops within a
packet or a batch of windows once the token is cancelled or its time budget is spent.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors_fer import FERInputError, NoUsableModalityError
from .media_fer import probe_media
from .media_stream_fer import MediaBudget, WorkToken, check_budget, stream_arrays, stream_file
from .results_fer import FERSkippedWindow, build_clip_result, build_window_result, model_summary, skipped_window
from .windows_fer import FrameEntry, WindowInfo, assemble_cached, decide_audio, frame_entries

logger = logging.getLogger(__name__)

FACE_CHUNK_FRAMES = 16  # grid frames given to the face front-end at a time (detection, tracking, crops)


@dataclass
class FERAnalysisEvent:
    """One step of `FERAnalyzer.stream`: a classified or skipped window, and finally the clip result."""

    done: int
    total: int
    window: object | None = None  # FERWindowResult
    skipped: FERSkippedWindow | None = None
    result: object | None = None  # FERClipResult, on the last event


class _FrameStore:
    """The frame-feature cache: per grid index, the face front-end's output and `embed_frames`' vector."""

    def __init__(self):
        self.entries: dict[int, FrameEntry] = {}

    def add(self, index: int, entry: FrameEntry) -> None:
        self.entries[index] = entry

    def drop_before(self, index: int) -> None:
        for j in [j for j in self.entries if j < index]:
            del self.entries[j]


class FERAnalyzer:
    """Runs a model over clips with its processor. See the module docstring.

    Args:
        model: a `FERForEmotionClassification` (put in eval mode; its device and dtype are used unless given).
        processor: its `FERProcessor` (default: built from the model config).
        batch_size: windows per model call.
        hop_seconds: wanted hop between timeline windows; rounded to a whole number of frame steps (at least 1).
        device, dtype: where and in which float type to run (default: the model's).
        budget: decoding limits per clip (`MediaBudget`; None: none).
    """

    def __init__(self, model, processor=None, batch_size: int = 8, hop_seconds: float = 1.0, device=None,
                 dtype=None, budget: MediaBudget | None = None):
        self.budget = budget
        if processor is None:
            from .processing_fer import FERProcessor

            processor = FERProcessor.from_model_config(model.config)
        processor.check_model(model.config)
        if batch_size < 1 or not hop_seconds > 0:
            raise FERInputError(f"need batch_size >= 1 and hop_seconds > 0, got {batch_size}, {hop_seconds}")
        self.model, self.processor, self.batch_size = model.eval(), processor, int(batch_size)
        param = next(model.parameters())
        self.device = torch.device(device) if device is not None else param.device
        self.dtype = dtype or param.dtype
        if self.device != param.device or self.dtype != param.dtype:
            self.model.to(device=self.device, dtype=self.dtype)
        self.hop_frames, self.hop_s = processor.geometry.timeline_hop(hop_seconds)

    # ------------------------------------------------------------------------------------------
    def analyze(self, video, timeline: bool = True, progress=None):
        """`FERClipResult` of a path, `FERMedia` or media dict. `progress(done, total)` is called per window."""
        if not timeline:
            return self._single_window(video)
        result = None
        for event in self.stream(video):
            if progress is not None:
                progress(event.done, event.total)
            result = event.result or result
        return result

    def plan(self, duration_s: float) -> list[tuple[float, float]]:
        """Timeline windows `[(start_s, end_s), ...]`: every `hop_s` from 0 until the clip end is covered."""
        g = self.processor.geometry
        count = 1 if duration_s <= g.clip_seconds else math.ceil((duration_s - g.clip_seconds) / self.hop_s - 1e-9) + 1
        return [(round(w * self.hop_s, 6), round(w * self.hop_s + g.clip_seconds, 6)) for w in range(count)]

    def stream(self, video, cancel: WorkToken | None = None):
        """Yield a `FERAnalysisEvent` per window as windows finish (in time order), then one with the result.

        `cancel`: checked between packets and windows; raises `AnalysisCancelledError` / `WorkTimeExceededError`."""
        proc, g = self.processor, self.processor.geometry
        clip = proc._collect_clips(video)
        if len(clip) != 1:
            raise FERInputError("the analyzer takes one clip at a time")
        clip = clip[0]
        if clip["kind"] == "file":
            info = probe_media(clip["path"], proc.max_duration_s)
            check_budget(info, self.budget)
            source, duration, notes = clip["path"], info.duration_s, info.notes
            no_audio, no_video = ("no audio stream" if not info.has_audio else None,
                                  "no video stream" if not info.has_video else None)
        else:
            media = clip["media"]
            source, duration, notes = "array", media.duration_s, []
            no_audio = "no audio given" if media.audio is None else None
            no_video = "no video frames given" if media.frames is None else None
            from .media_fer import check_duration

            check_duration(duration, proc.max_duration_s, media.fps, "the given clip")
        windows = self.plan(duration)
        T, k = g.num_frames, self.hop_frames  # noqa: N806
        n_grid = (len(windows) - 1) * k + T
        targets = (np.arange(n_grid) + 0.5) * g.frame_step_s
        if clip["kind"] == "file":
            events = stream_file(clip["path"], targets, g.sampling_rate, proc.video_processing.decode_max_side,
                                 duration, info.timing, budget=self.budget, cancel=cancel)
        else:
            events = stream_arrays(clip["media"], targets, proc.video_processing.decode_max_side)
        state = _TimelineState(self, windows, targets, duration, no_audio, no_video)
        done, results, skipped, infos = 0, [], [], []
        for ready in state.run(events):
            if cancel is not None:
                cancel.check()
            for item, window_info in self._classify(ready, state):
                done += 1
                if isinstance(item, FERSkippedWindow):
                    skipped.append(item)
                    yield FERAnalysisEvent(done, len(windows), skipped=item)
                else:
                    results.append(item)
                    infos.append(window_info)
                    yield FERAnalysisEvent(done, len(windows), window=item)
        if not results:
            raise NoUsableModalityError.in_clip(source, skipped[0].audio_reason, skipped[0].video_reason)
        for window_info in infos:
            window_info.source, window_info.duration_s, window_info.notes = str(source), round(duration, 6), notes
        result = build_clip_result(results, skipped, source, duration, proc.labels, proc.confidence_margin,
                                   model_summary(self.model.config), infos, notes=notes)
        yield FERAnalysisEvent(done, len(windows), result=result)

    # ------------------------------------------------------------------------------------------
    def _single_window(self, video):
        inputs, info = self.processor.prepare(videos=video, return_tensors="pt")
        with torch.inference_mode():
            outputs = self.model(**self._to_device(dict(inputs)))
        return self.processor.post_process(outputs, info, self.model.config)[0]

    def _to_device(self, inputs: dict) -> dict:
        out = {}
        for name, value in inputs.items():
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            if value.is_floating_point():
                value = value.to(self.dtype)
            out[name] = value.to(self.device)
        return out

    def embed(self, crops: np.ndarray, roi: np.ndarray) -> list[dict]:
        """Frame vectors for face crops uint8 `(n, S, S, 3)` and ROI maps `(n, N)`: one `model.embed_frames` call."""
        if len(crops) == 0:
            return []
        pixels = torch.from_numpy(self.processor.video_processing.pixel_values(crops))
        with torch.inference_mode():
            emb = self.model.embed_frames(pixels.to(self.device, self.dtype),
                                          torch.from_numpy(roi).to(self.device, self.dtype))
        vectors = emb.frame_embeddings.float().cpu()
        indices, scores = emb.roi_indices.cpu().numpy(), emb.roi_patch_scores.float().cpu().numpy()
        return [{"vector": vectors[i], "roi_indices": indices[i], "roi_patch_scores": scores[i]}
                for i in range(len(crops))]

    def classify_rows(self, rows: list[dict]) -> dict:
        """Model outputs (numpy, by name) for window rows holding `audio` (or None), `vectors` `(T, Dv)`,
        `frame_mask` `(T,)` (frames with a face), `roi_indices` `(T, K)`, `roi_patch_scores` `(T, N)`; the frames'
        own ROI outputs are put back in place of the model's placeholders."""
        proc = self.processor
        features, attn = proc.audio_processing.features([r["audio"] for r in rows])
        frame_mask = np.stack([r["frame_mask"] for r in rows])
        inputs = {
            "input_features": features, "audio_attention_mask": attn,
            "frame_embeddings": torch.stack([r["vectors"] for r in rows]),
            "video_frame_mask": frame_mask, "audio_mask": np.array([r["audio"] is not None for r in rows]),
            "video_mask": frame_mask.any(-1),
        }
        with torch.inference_mode():
            outputs = self.model(**self._to_device(inputs))
        from .results_fer import outputs_to_numpy

        out = outputs_to_numpy(outputs)
        out["roi_indices"] = np.stack([r["roi_indices"] for r in rows])
        out["roi_patch_scores"] = np.stack([r["roi_patch_scores"] for r in rows])
        return out

    def _classify(self, ready: list, state: _TimelineState):
        """Classify the ready windows in batches; yield (FERWindowResult or FERSkippedWindow, its WindowInfo) in
        window order."""
        proc = self.processor
        rows, infos = [], []
        for w in ready:
            row, info = state.window_row(w)
            infos.append(info)
            if info.audio_used or info.video_used:
                rows.append(row)
        out = self.classify_rows(rows) if rows else None
        r = 0
        for info in infos:
            if not (info.audio_used or info.video_used):
                yield skipped_window(info), info
                continue
            yield build_window_result(out, r, info, proc.labels, proc.geometry, proc.confidence_margin), info
            r += 1

    def live_session(self):
        """An incremental session for live mode (see `FERLiveSession`)."""
        from .live_analysis_fer import FERLiveSession

        return FERLiveSession(self)


class _TimelineState:
    """Buffers of a timeline run: audio samples, frames awaiting the face front-end, and the frame cache."""

    def __init__(self, analyzer: FERAnalyzer, windows, targets, duration_s, no_audio, no_video):
        self.a, self.windows, self.targets, self.duration_s = analyzer, windows, targets, duration_s
        self.no_audio, self.no_video = no_audio, no_video
        g = analyzer.processor.geometry
        self.sr, self.T, self.k, self.n_samples = g.sampling_rate, g.num_frames, analyzer.hop_frames, g.num_samples
        self.chunks: list[np.ndarray] = []  # audio samples from `audio_offset` on
        self.audio_offset = 0  # clip sample index of self.audio[0]
        self.audio_total = 0  # samples received
        self.any_audio = False
        self.pending: list[tuple[int, object]] = []  # (grid index, StreamEvent) awaiting faces
        self.frames_seen = -1  # highest grid index received
        self.last_valid_frame = int(np.sum(targets < duration_s)) - 1  # grid frames past the clip end never come
        self.store = _FrameStore()
        self.faces = analyzer.processor.video_processing.face_session()  # THE face front-end, one per clip
        self.speech = analyzer.processor.audio_processing.speech_session()  # one VAD session: windows share scores
        self.next_window = 0

    def run(self, events):
        """Consume the stream; yield lists of window indices ready to classify (at most `batch_size` each)."""
        batch = self.a.batch_size
        for event in events:
            if event.kind == "audio":
                self.any_audio = True
                self.chunks.append(event.samples)
                self.audio_total += event.samples.size
            else:
                self.pending.append((event.index, event))
                self.frames_seen = max(self.frames_seen, event.index)
                if len(self.pending) >= FACE_CHUNK_FRAMES:
                    self._faces()
            ready = self._ready(final=False)
            while len(ready) >= batch:
                yield ready[:batch]
                self._advance(ready[:batch])
                ready = ready[batch:]
        self._faces()
        ready = self._ready(final=True)
        for start in range(0, len(ready), batch):
            yield ready[start:start + batch]
            self._advance(ready[start:start + batch])

    def _faces(self) -> None:
        if not self.pending:
            return
        images = [e.image for _, e in self.pending]
        times = [e.source_time_s for _, e in self.pending]
        found = self.faces.process(images, times, self.pending[0][1].scale, all_people=True)
        for (j, _), entry in zip(self.pending, frame_entries(found, times, self.a.embed)):
            self.store.add(j, entry)
        self.pending = []

    def _ready(self, final: bool) -> list[int]:
        """Windows from `next_window` whose frames have been through the faces and whose audio is complete."""
        ready = []
        for w in range(self.next_window, len(self.windows)):
            last_frame = min(w * self.k + self.T - 1, self.last_valid_frame)
            start, end = self.windows[w]
            frames_ok = final or self.no_video is not None or (
                self.frames_seen >= last_frame and not any(j <= last_frame for j, _ in self.pending))
            audio_needed = round(min(end, self.duration_s) * self.sr)
            audio_ok = final or self.no_audio is not None or self.audio_total >= audio_needed
            if not (frames_ok and audio_ok):
                break
            ready.append(w)
        return ready

    def _advance(self, done: list[int]) -> None:
        self.next_window = done[-1] + 1
        if self.next_window < len(self.windows):
            self.store.drop_before(self.next_window * self.k)
            keep_from = round(self.windows[self.next_window][0] * self.sr)
            audio = self.audio()
            cut = min(audio.size, max(0, keep_from - self.audio_offset))
            self.chunks, self.audio_offset = [audio[cut:]], self.audio_offset + cut

    def audio(self) -> np.ndarray:
        """The buffered samples (from `audio_offset`) as one array."""
        if len(self.chunks) != 1:
            self.chunks = [np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)]
        return self.chunks[0]

    def window_row(self, w: int) -> tuple[dict, WindowInfo]:
        """The model row and the `WindowInfo` of timeline window `w` (`windows_fer.assemble_cached`)."""
        proc, start, end = self.a.processor, *self.windows[w]
        frame_ids = range(w * self.k, w * self.k + self.T)
        entries = [self.store.entries.get(j) for j in frame_ids]
        valid = np.array([e is not None and self.targets[j] < self.duration_s for j, e in zip(frame_ids, entries)])
        entries = [e if v else None for e, v in zip(entries, valid)]
        a0 = round(start * self.sr) - self.audio_offset
        a1 = round(min(end, self.duration_s) * self.sr) - self.audio_offset
        audio = self.audio()[max(0, a0):max(0, a1)] if self.any_audio else None
        decision = decide_audio(proc.audio_processing, audio, self.no_audio or "no audio stream", self.speech, start)
        video = proc.video_processing
        return assemble_cached(w, start, end, [self.targets[j] for j in frame_ids], entries, valid, audio, decision,
                               self.a.model.config, proc.num_patches, self.faces.track_summaries(),
                               missing_video=self.no_video, sampling_rate=self.sr, person=video.person,
                               min_correlation=video.min_speaker_correlation)


__all__ = ["FACE_CHUNK_FRAMES", "FERAnalysisEvent", "FERAnalyzer"]
