"""Live mode's entry point into the analysis engine: a rolling window of audio and timestamped frames.

    session = FERAnalyzer(model, processor).live_session()
    session.add_frame(time_s, rgb)                 # webcam frames as they arrive, on the session clock (seconds)
    result = session.classify(audio, end_s)        # audio: the latest samples (16 kHz mono), ending at end_s
    result.windows[0]                              # FERWindowResult of [end_s - clip_seconds, end_s]
    session.result()                               # FERClipResult of the whole session (source "live")

Each call classifies the window that ends at `end_s` (from 0 while less than `clip_seconds` have passed, or from
`start_s` when given). Its `num_frames` sample times are matched to the nearest received frame (within one frame
step). A frame goes through the face front-end (the processor's face session: detection, tracks with ids, the
speaker choice, aligned crops, ROI maps) and `model.embed_frames` once, the first time a window uses it, and its
vector is reused by every later window that picks it. The audio goes through the processor's usable-audio check
and its speech decision (Silero VAD, scored once per stretch of audio on the session clock and reused by
overlapping windows); the audio encoder runs on the current window only. Frames and speech scores older than the
current window are dropped, and at most `max_windows` window results are kept, so memory is bounded whatever the
session length. Uploads and live sessions give the same result type (`FERClipResult`).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass

import numpy as np

from .errors_fer import FERInputError, LiveSessionClosedError
from .results_fer import (
    FERClipResult,
    FERSkippedWindow,
    build_clip_result,
    build_window_result,
    model_summary,
    skipped_window,
)
from .windows_fer import FrameEntry, assemble_cached, decide_audio, frame_entries

FRAME_KEY_RESOLUTION_S = 1e-3  # frames are keyed by their timestamp rounded to 1 ms
MAX_WINDOWS = 4000  # window results kept for `result()` (oldest dropped first)


@dataclass
class PendingFrame:
    """A received frame awaiting the face front-end: uint8 RGB `(h, w, 3)` downscaled by `scale` (the processor's
    decode size), shown at `source_time_s` (session clock). Replaced by its `FrameEntry` once embedded."""

    source_time_s: float
    image: np.ndarray
    scale: float

    def nbytes(self) -> int:
        return self.image.nbytes


class FERLiveSession:
    """Per-session state of live mode (frames, their cached embeddings, the face front-end, the speech scores).
    Not thread-safe: one session per person; `close()` (or dropping the object) frees everything.

    Args:
        analyzer: the `FERAnalyzer` whose model and processor run the windows.
        max_windows: window results kept for `result()` (oldest first out); their per-patch ROI grids are kept
            only for the newest window.
    """

    def __init__(self, analyzer, max_windows: int = MAX_WINDOWS):
        self.analyzer = analyzer
        self.geometry = analyzer.processor.geometry
        self.frames: dict[int, PendingFrame | FrameEntry] = {}  # key (ms) -> the frame, then its FrameEntry
        self.faces = analyzer.processor.video_processing.face_session()  # THE face front-end of this session
        self.speech = analyzer.processor.audio_processing.speech_session()  # None when speech detection is off
        self.windows: deque = deque(maxlen=int(max_windows))  # FERWindowResult, compact after the newest
        self.skipped: deque = deque(maxlen=int(max_windows))  # FERSkippedWindow
        self._infos_kept: deque = deque(maxlen=int(max_windows))  # per classified window: its WindowInfo
        self.windows_done = 0
        self.frames_embedded = 0  # how many frames went through the face front-end + embed_frames (for tests)
        self.last_end_s = 0.0
        self.closed = False

    def add_frame(self, time_s: float, image: np.ndarray) -> None:
        """A uint8 RGB frame `(H, W, 3)` shown at `time_s` (session clock, seconds)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise FERInputError(f"a live frame must be an RGB image (H, W, 3), got shape {image.shape}")
        key = round(float(time_s) / FRAME_KEY_RESOLUTION_S)
        if key not in self.frames:
            from .media_fer import downscale_frame

            small, scale = downscale_frame(image.astype(np.uint8, copy=False),
                                      self.analyzer.processor.video_processing.decode_max_side)
            self.frames[key] = PendingFrame(float(time_s), small, scale)

    def close(self) -> None:
        """Free the frames and the speech scores (the window results stay for `result()`). Later `classify` or
        `prepare` calls raise `LiveSessionClosedError`; the caller must not close a session while one runs."""
        self.closed = True
        self.frames.clear()
        self.speech = None

    # ------------------------------------------------------------------------------------------
    def classify(self, audio: np.ndarray | None, end_s: float, sampling_rate: int | None = None,
                 start_s: float | None = None, audio_missing: str = "no microphone audio",
                 camera_reason: str | None = None, frame_mask=None) -> FERClipResult:
        """`FERClipResult` (source "live", one window or one skipped window) for the window ending at `end_s`.

        Args:
            audio: the most recent mono samples at the model rate, the last one at `end_s` (None: no microphone).
            end_s: session time of the end of the received content, seconds.
            start_s: window start (default `max(0, end_s - clip_seconds)`); the window spans `clip_seconds`.
            audio_missing: the reason shown when `audio` is None.
            camera_reason: why the camera gave nothing, when the caller knows better than "no camera frames".
            frame_mask: `num_frames` booleans; a frame position marked False is left out of the window (masked, never
                put through the front-end), e.g. every other frame when live mode falls behind. None: all are used.
        A window with neither usable modality comes back as a skipped window (no probabilities).
        """
        item = self.classify_window(audio, end_s, sampling_rate, start_s, audio_missing, camera_reason, frame_mask)
        summary = model_summary(self.analyzer.model.config)
        proc = self.analyzer.processor
        if isinstance(item, FERSkippedWindow):
            # Nothing was classified: no probabilities at all (never a made-up uniform answer).
            return FERClipResult(source="live", duration_s=round(float(end_s), 6), labels=proc.labels,
                                 probabilities={}, top_label=None, confident=False,
                                 confidence_margin=proc.confidence_margin, skipped_windows=[item], model=summary)
        return build_clip_result([item], [], "live", float(end_s), proc.labels, proc.confidence_margin, summary,
                                 self._infos(last=1))

    def classify_window(self, audio, end_s: float, sampling_rate: int | None = None, start_s: float | None = None,
                        audio_missing: str = "no microphone audio", camera_reason: str | None = None,
                        frame_mask=None):
        """Like `classify`, but returns the window's `FERWindowResult` (or `FERSkippedWindow`) alone."""
        if self.closed:
            raise LiveSessionClosedError("this live session was stopped; start a new one")
        g, proc = self.geometry, self.analyzer.processor
        if sampling_rate is not None and int(sampling_rate) != g.sampling_rate:
            raise FERInputError(f"live audio must be at {g.sampling_rate} Hz, got {sampling_rate}")
        end_s = float(end_s)
        start = max(0.0, end_s - g.clip_seconds) if start_s is None else float(start_s)
        end = start + g.clip_seconds
        targets = start + (np.arange(g.num_frames) + 0.5) * g.frame_step_s
        self._forget_before(start - g.frame_step_s)
        keys = self._pick(targets, end_s)
        if frame_mask is not None:
            if len(frame_mask) != len(keys):
                raise FERInputError(f"frame_mask needs {len(keys)} entries (one per frame), got {len(frame_mask)}")
            keys = [k if use else None for k, use in zip(keys, frame_mask)]
        window_audio = None
        if audio is not None:
            wave = proc.clean_media(_audio_media(audio, g.sampling_rate)).audio
            first_s = end_s - wave.size / g.sampling_rate  # time of wave[0]
            a0 = max(0, round((start - first_s) * g.sampling_rate))
            window_audio = wave[a0:]
        decision = decide_audio(proc.audio_processing, window_audio, audio_missing, self.speech, start)
        self._embed([k for k in keys if k is not None and isinstance(self.frames[k], PendingFrame)])
        entries = [self.frames.get(k) if k is not None else None for k in keys]
        valid = np.array([e is not None for e in entries])
        no_frames = camera_reason if camera_reason and camera_reason != "ok" else "no camera frames in the window"
        index = self.windows_done
        self.windows_done += 1
        self.last_end_s = max(self.last_end_s, end_s)
        video = proc.video_processing
        row, info = assemble_cached(index, start, end, targets, entries, valid, window_audio, decision,
                                    self.analyzer.model.config, proc.num_patches, self.faces.track_summaries(),
                                    no_frames=no_frames, sampling_rate=g.sampling_rate, person=video.person,
                                    min_correlation=video.min_speaker_correlation)
        info.source, info.duration_s = "live", round(end, 6)
        if self.speech is not None:
            self.speech.drop_before(start)
        if not (info.audio_used or info.video_used):
            skipped = skipped_window(info)
            self.skipped.append(skipped)
            return skipped
        out = self.analyzer.classify_rows([row])
        window = build_window_result(out, 0, info, proc.labels, g, proc.confidence_margin)
        if self.windows:
            self.windows[-1].roi = None  # only the newest window keeps its per-patch grid (memory)
        self.windows.append(window)
        info.tracks = []  # the session's tracks are read once, at `result()`
        self._infos_kept.append(info)
        return window

    def prepare(self, until_s: float) -> int:
        """Run the face front-end and `embed_frames` now on the frames received before `until_s` that no window has
        used yet (in time order), so that the next `classify` only runs the audio and the fusion. Returns how many
        frames were prepared. Live mode calls it while it waits for the next window (the app's `fer_app.streaming`)."""
        if self.closed:
            raise LiveSessionClosedError("this live session was stopped; start a new one")
        keys = sorted(k for k, f in self.frames.items() if isinstance(f, PendingFrame) and f.source_time_s < until_s)
        self._embed(keys)
        return len(keys)

    def result(self) -> FERClipResult | None:
        """The whole session so far as one `FERClipResult` (source "live"; None before any classified window)."""
        if not self.windows:
            return None
        proc = self.analyzer.processor
        return build_clip_result(list(self.windows), list(self.skipped), "live", self.last_end_s, proc.labels,
                                 proc.confidence_margin, model_summary(self.analyzer.model.config), self._infos())

    # ------------------------------------------------------------------------------------------
    def _infos(self, last: int | None = None) -> list:
        """The kept `WindowInfo`s (the `last` ones), with the session's current face tracks."""
        tracks = self.faces.track_summaries()
        kept = list(self._infos_kept)[-last:] if last else list(self._infos_kept)
        return [dataclasses.replace(info, tracks=tracks) for info in kept]

    def _forget_before(self, time_s: float) -> None:
        for key in [k for k, f in self.frames.items() if f.source_time_s < time_s]:
            del self.frames[key]

    def _pick(self, targets: np.ndarray, end_s: float) -> list:
        """For each target time, the key of the nearest received frame within one frame step (else None)."""
        keys = sorted(self.frames)
        if not keys:
            return [None] * len(targets)
        times = np.array([self.frames[k].source_time_s for k in keys])
        step = self.geometry.frame_step_s
        out = []
        for t in targets:
            i = int(np.argmin(np.abs(times - t)))
            out.append(keys[i] if abs(times[i] - t) <= step and t <= end_s + 1e-9 else None)
        return out

    def _embed(self, keys: list) -> None:
        """The face front-end on the new frames (in time order, every person), then one `embed_frames` call for
        every face in them (`windows_fer.frame_entries`); the window's person is chosen when it is assembled."""
        keys = sorted(set(keys))
        if not keys:
            return
        times = [self.frames[k].source_time_s for k in keys]
        found = self.faces.process([self.frames[k].image for k in keys], times, self.frames[keys[0]].scale,
                                   all_people=True)
        for key, entry in zip(keys, frame_entries(found, times, self.analyzer.embed)):
            self.frames[key] = entry  # embedded: the picture is no longer needed, the entry replaces it
        self.frames_embedded += len(keys)

    def stored_bytes(self) -> int:
        """Bytes of the frame buffers (pictures not yet embedded, vectors, ROI scores)."""
        return sum(f.nbytes() for f in self.frames.values())


def _audio_media(audio, rate):
    from .media_fer import FERMedia

    return FERMedia(audio=audio, sampling_rate=rate)


__all__ = ["MAX_WINDOWS", "FERLiveSession"]
