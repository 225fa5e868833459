"""Live mode's streaming layer: microphone chunks and webcam frames -> rolling, time-aligned model windows.

A browser sends two independent streams (Gradio's streaming `gr.Audio` and `gr.Image`):

- audio: contiguous PCM chunks cut by a WAV recorder every `stream_every` seconds. They reach the server with
  jitter, sometimes late, sometimes several at once, and sometimes not at all (the recorder drops a chunk
  while the page waits for the server);
- frames: single camera snapshots, each sent once the previous one was received (so a slow server gets fewer).

Both streams are placed on one **session clock** by `fer_app.live_alignment` (`AudioChunkAligner`, `FrameTimeline`;
re-exported here): the audio's own sample count inside the stream, each frame at its arrival time in the frame bin
it falls in (the model's own frame spacing).

`LiveSession` holds one browser session's state (bounded: the last `keep_seconds` of audio, one frame per bin,
at most `max_updates` results) and plans the next window: windows end on the frame-bin grid, so a frame sampled
for one window is at the same place in the next ones. `LiveAnalyzer` hands each window to the analysis engine's
live session (`live_analysis_fer.FERLiveSession`, one per `LiveSession`): each new frame goes through the face
front-end (the same one as uploads: tracks with ids, the speaker choice, aligned crops, landmark ROI maps) and
`model.embed_frames` once, cached by capture time and reused by every window that contains it; the window's audio
gets the processor's usable-audio check and speech decision (Silero VAD); the audio encoder runs on the current
window only. Every update is a `FERWindowResult`, and the session's download is a `FERClipResult` (source "live").
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from fer_hf.errors_fer import FERInputError, LiveSessionClosedError
from fer_hf.processing_fer import MIN_AUDIO_SAMPLES
from fer_hf.results_fer import FERSkippedWindow

from .live_alignment import AudioChunkAligner, AudioPlacement, FrameTimeline, LiveFrame

logger = logging.getLogger(__name__)

MIN_WINDOW_CONTENT_S = 1.0  # the first update waits for this much of both streams
STALE_STREAM_S = 2.0  # a stream silent for this long no longer holds the window back
START_GRACE_S = 3.0  # after the first stream starts, the first update waits this long for the other one
MIN_AUDIO_COVERAGE = 0.25  # a window whose received audio covers less than this share of its content has no audio
CLOSE_WAIT_S = 30.0  # `LiveSession.close` waits this long for an analysis in progress before leaving the rest to it
# What one pushed chunk may be (anything else is refused before it costs memory): a chunk declaring 4 Hz would be
# resampled to 16 kHz 4000-fold
AUDIO_RATES = (8000, 192000)  # Hz
MAX_CHUNK_S = 5.0  # seconds of sound in one microphone chunk (the browser sends 0.25 s)
MAX_CHANNELS = 8
AUDIO_DTYPES = ("int16", "int32", "float32", "float64")
MAX_FRAME_SIDE = 4096  # pixels, either side of a camera frame
MAX_SESSION_BYTES = 256 * 2**20  # buffers of one session (audio, kept frames, the engine's cache)


# ----------------------------------------------------------------------------------------------------------------
# One browser session
@dataclass
class LiveWindow:
    """A planned window: `[start_s, start_s + window_s)` with content up to `end_s` (session clock)."""

    start_s: float
    end_s: float
    window_s: float
    frame_times_s: np.ndarray  # (T,) bin centres
    frames: list  # T LiveFrame | None (repeated objects when a bin is reused)
    audio: np.ndarray | None  # float32 (n,) from start_s to end_s, zeros where nothing arrived
    audio_covered_s: float
    audio_reason: str
    camera_reason: str


@dataclass
class LiveUpdate:
    """One result shown to the person: the window's `FERWindowResult` (the upload result type) and its timing.

    Attributes:
        window: the `FERWindowResult` (bounds on the session clock, probabilities, modalities and why, frames).
        end_s: session time of the window's newest content (before the first 3 s: less than `window.end_s`).
        latency_s: from the capture of the window's newest content to the result.
        compute_s: time spent classifying it (face front-end on the new frames, embeddings, audio, fusion).
        new_frames / reused_frames: frames embedded for this window / taken from the cache.
        produced_s: session time when the result was ready.
        frame_stride: 1 when every frame bin of the window was used, 2 when every other one (falling behind).
        precision: the weights that ran it: "int8" (the analyzer's int8 copy) or the model's dtype ("float32").
    """

    index: int
    window: object  # FERWindowResult
    end_s: float  # session time of the window's newest content (the window spans start_s .. start_s + 3 s)
    latency_s: float
    compute_s: float
    new_frames: int
    reused_frames: int
    produced_s: float
    frame_stride: int = 1
    precision: str = "float32"

    @property
    def start_s(self) -> float:
        return self.window.start_s

    @property
    def probabilities(self) -> dict:
        return self.window.probabilities

    @property
    def top_label(self) -> str | None:
        return self.window.top_label

    @property
    def modalities(self) -> dict:
        return self.window.modalities

    def timing(self) -> dict:
        return {"index": self.index, "start_s": self.start_s, "end_s": self.end_s, "latency_s": self.latency_s,
                "compute_s": self.compute_s, "new_frames": self.new_frames, "reused_frames": self.reused_frames,
                "produced_s": self.produced_s, "frame_stride": self.frame_stride, "precision": self.precision}


@dataclass
class LiveSession:
    """The state of one live session (thread-safe pushes; one analysis at a time).

    Args:
        clip_seconds, num_frames: the model's window (from its config).
        sampling_rate: the model's audio rate.
        session_seconds: the session stops accepting data after this long.
        max_updates: results kept for the download (oldest dropped first).
        clock: monotonic clock in seconds (a test or a benchmark may pass its own).
        frame_stride: use the frames of every `frame_stride`-th frame bin only (1: all); the others are masked and
            never put through the face front-end or SigLIP. Live mode raises it when the machine falls behind.
        int8: run the updates on the analyzer's int8 copy of the model once it is built (`LiveAnalyzer`).
    """

    clip_seconds: float
    num_frames: int
    sampling_rate: int = 16000
    session_seconds: float = 300.0
    max_updates: int = 2000
    decode_max_side: int = 640
    clock: object = time.monotonic
    started_at: float = field(init=False)
    audio: AudioChunkAligner = field(init=False)
    frames: FrameTimeline = field(init=False)
    updates: deque = field(init=False)
    stopped: bool = False
    frame_stride: int = 1
    int8: bool = False

    def __post_init__(self):
        self.started_at = self.clock()
        keep = self.clip_seconds + 2.0
        self.audio = AudioChunkAligner(self.sampling_rate, keep_seconds=keep)
        self.frames = FrameTimeline(self.bin_s, keep_seconds=keep, max_side=self.decode_max_side)
        self.updates = deque(maxlen=self.max_updates)
        self._lock = threading.Lock()
        self._analysis_lock = threading.Lock()  # held by the one analysis at a time; `close` waits for it
        self._last_end_s: float | None = None
        self.engine = None  # the analysis engine's FERLiveSession (set by LiveAnalyzer.new_session)
        self.audio_errors = 0

    @property
    def bin_s(self) -> float:
        return self.clip_seconds / self.num_frames

    def now_s(self) -> float:
        return self.clock() - self.started_at

    def uses_bin_of(self, time_s: float) -> bool:
        """Whether the frame bin holding `time_s` is used at the current `frame_stride` (bins keep their parity as
        windows slide, so the frames kept stay cached across windows)."""
        return math.floor(time_s / self.bin_s + 1e-6) % max(1, int(self.frame_stride)) == 0

    @contextmanager
    def analysing(self):
        """Hold the session for one analysis (`LiveAnalyzer.analyze` / `prefetch`): `close()` waits for it to end.
        Raises `LiveSessionClosedError` when the session is already stopped."""
        with self._analysis_lock:
            if self.stopped:
                raise LiveSessionClosedError("this live session was stopped; start a new one")
            try:
                yield
            finally:
                if self.stopped and self.engine is not None:  # closed meanwhile and `close` gave up waiting
                    self.engine.close()

    @property
    def expired(self) -> bool:
        return self.now_s() >= self.session_seconds

    # ------------------------------------------------------------------------------------------------
    def push_audio(self, samples, sampling_rate: int, arrival_s: float | None = None) -> AudioPlacement | None:
        """A microphone chunk: int16/int32 or float `(n,)` / `(n, channels)` at `sampling_rate` Hz. Refused
        (`FERInputError`) unless the rate lies in `AUDIO_RATES`, the chunk lasts at most `MAX_CHUNK_S` with at most
        `MAX_CHANNELS` channels of finite samples, and the session's buffers stay under `MAX_SESSION_BYTES`."""
        if self.stopped or self.expired:
            return None
        a = check_audio_chunk(samples, sampling_rate)
        if a.ndim == 2:
            a = a.mean(axis=1) if a.shape[1] <= MAX_CHANNELS else a.mean(axis=0)
        if np.issubdtype(a.dtype, np.integer):
            a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
        a = a.astype(np.float32, copy=False)
        if a.size == 0:
            return None
        self.check_memory()
        with self._lock:
            return self.audio.push(a, sampling_rate, self.now_s() if arrival_s is None else arrival_s)

    def check_memory(self) -> None:
        """Refuse more data once the session's buffers hold `MAX_SESSION_BYTES` (`FERInputError`)."""
        held = self.stored_bytes()
        if held > MAX_SESSION_BYTES:
            raise FERInputError(f"this live session holds {held / 2**20:.0f} MB, more than the "
                                f"{MAX_SESSION_BYTES / 2**20:.0f} MB one session may; press Stop and start again")

    def push_frame(self, image, arrival_s: float | None = None) -> bool:
        """A camera frame (uint8 RGB `(h, w, 3)`, each side at most `MAX_FRAME_SIDE`), placed at its arrival time."""
        if self.stopped or self.expired:
            return False
        image = np.asarray(image)
        if image.ndim != 3 or image.dtype != np.uint8 or not 0 < max(image.shape[:2]) <= MAX_FRAME_SIDE:
            raise FERInputError(f"a camera frame must be uint8 RGB with sides of 1 to {MAX_FRAME_SIDE} pixels, got "
                                f"{image.dtype} {image.shape}")
        self.check_memory()
        with self._lock:
            return self.frames.push(image, self.now_s() if arrival_s is None else arrival_s)

    # ------------------------------------------------------------------------------------------------
    def next_window(self, min_step_s: float) -> LiveWindow | None:
        """The newest window whose content has arrived, if it ends at least `min_step_s` after the last one.

        The content end is the earlier of the two streams' newest data (a stream silent for `STALE_STREAM_S`
        does not hold it back), rounded down to the frame-bin grid. Until both streams have started, the first
        window waits up to `START_GRACE_S` for the late one. Windows start no earlier than the first data.
        """
        with self._lock:
            now = self.now_s()
            audio_end, frame_end = self.audio.latest_s, self.frames.latest_s
            if audio_end is None and frame_end is None:
                return None
            firsts = [t for t in (self.audio.first_s, self.frames.first_s) if t is not None]
            if len(firsts) == 1 and self._last_end_s is None and now - firsts[0] < START_GRACE_S:
                return None
            audio_live = audio_end is not None and now - self.audio.last_arrival_s < STALE_STREAM_S
            camera_live = frame_end is not None and now - frame_end < STALE_STREAM_S
            ends = []
            if audio_live:
                ends.append(audio_end)
            if camera_live:
                ends.append(frame_end + self.bin_s / 2)  # the last bin's frame is final once past its centre
            if not ends:
                return None
            end = math.floor(min(ends) / self.bin_s + 1e-6) * self.bin_s
            origin = math.floor(min(firsts) / self.bin_s) * self.bin_s  # on the grid, so frames keep their bins
            if end - origin < MIN_WINDOW_CONTENT_S:
                return None
            if self._last_end_s is not None and end < self._last_end_s + min_step_s:
                return None
            start = max(origin, end - self.clip_seconds)
            times = start + (np.arange(self.num_frames) + 0.5) * self.bin_s
            frames = [self.frames.frame_for(t) if t < end else None for t in times]
            audio, covered = self.audio.read(start, end) if audio_end is not None else (None, None)
            self._last_end_s = end
        covered_s = 0.0 if covered is None else float(covered.sum()) / self.sampling_rate
        if audio is None:
            audio_reason = "the microphone is not streaming"
        elif covered_s < MIN_AUDIO_COVERAGE * (end - start) or audio.size < MIN_AUDIO_SAMPLES:
            audio_reason = f"only {covered_s:.1f} s of sound arrived for this window"
        else:
            audio_reason = "ok"
        if frame_end is None:
            camera_reason = "the camera is not streaming"
        elif not any(f is not None for f in frames):
            camera_reason = "no camera frame arrived for this window"
        else:
            camera_reason = "ok"
        return LiveWindow(start, end, self.clip_seconds, times, frames, audio if audio_reason == "ok" else None,
                          covered_s, audio_reason, camera_reason)

    def final_frames(self) -> list[LiveFrame]:
        """Kept frames not yet handed to the engine whose bin can no longer change, oldest first. Frames arrive in
        time order, so once a frame at or past a bin's centre has arrived, every later frame of that bin is farther
        from the centre than the one kept: the bin is final."""
        with self._lock:
            if self.frames.latest_s is None:
                return []
            latest = self.frames.latest_s
            return [f for m, f in sorted(self.frames._bins.items())
                    if (m + 0.5) * self.bin_s <= latest + 1e-9 and not f.sent]

    def record(self, update: LiveUpdate) -> None:
        with self._lock:
            self.updates.append(update)

    def recent_updates(self, seconds: float) -> list[LiveUpdate]:
        with self._lock:
            if not self.updates:
                return []
            last = self.updates[-1].end_s
            return [u for u in self.updates if u.end_s >= last - seconds]

    def stats(self, seconds: float = 10.0) -> dict:
        """Update rate and latency over the last `seconds` of results, and the streams' counters."""
        recent = self.recent_updates(seconds)
        now = self.now_s()
        recent_time = [u for u in recent if u.produced_s >= now - seconds]
        span = min(seconds, max(now, 1e-6))
        latencies = sorted(u.latency_s for u in recent)
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None
        return {
            "updates": self.updates_total,
            "updates_per_s": len(recent_time) / span if now > 0 else 0.0,
            "latency_p50_s": pick(0.5), "latency_p95_s": pick(0.95),
            "frames_received": self.frames.frames_received, "frames_kept": self.frames.frames_kept,
            "audio_chunks": self.audio.chunks_received, "audio_gaps": self.audio.gaps_inserted,
            "audio_gap_s": round(self.audio.gap_seconds, 3), "elapsed_s": now,
            "time_left_s": max(0.0, self.session_seconds - now),
        }

    @property
    def updates_total(self) -> int:
        return self.updates[-1].index + 1 if self.updates else 0

    def stored_bytes(self) -> int:
        """Bytes held by the buffers (audio samples, kept frames, the engine's cached frames and vectors)."""
        with self._lock:
            total = self.audio.stored_samples * 4
            total += sum(0 if f.image is None else f.image.nbytes for f in self.frames._bins.values())
        return total + (0 if self.engine is None else self.engine.stored_bytes())

    def result(self):
        """The session so far as one `FERClipResult` (source "live"); None before the first classified window."""
        return None if self.engine is None else self.engine.result()

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Stop accepting data and free the buffers (the results stay for the download). An analysis in progress
        ends first (the engine's frames are never freed under it), so its result is part of the download; after
        `wait_s` the analysis frees them itself when it ends."""
        with self._lock:
            self.stopped = True
            self.frames._bins.clear()
            self.audio._chunks.clear()
        if self._analysis_lock.acquire(timeout=wait_s):
            try:
                if self.engine is not None:
                    self.engine.close()
            finally:
                self._analysis_lock.release()
        else:
            logger.warning("live session closed while an analysis still ran after %.0f s; it frees the rest", wait_s)


def check_audio_chunk(samples, sampling_rate) -> np.ndarray:
    """The chunk as an array, or `FERInputError` (in words) when its rate, shape, type, length or values cannot be
    a microphone's: checked before anything is resampled or stored."""
    try:
        rate = int(sampling_rate)
    except (TypeError, ValueError, OverflowError):
        raise FERInputError(f"a microphone chunk needs a sampling rate in Hz, got {sampling_rate!r}") from None
    if not AUDIO_RATES[0] <= rate <= AUDIO_RATES[1]:
        raise FERInputError(f"a microphone chunk at {rate} Hz was refused: microphones record at "
                            f"{AUDIO_RATES[0]} to {AUDIO_RATES[1]} Hz")
    a = np.asarray(samples)
    if a.dtype.name not in AUDIO_DTYPES:
        raise FERInputError(f"a microphone chunk must hold int16, int32 or float samples, got {a.dtype}")
    if a.ndim not in (1, 2) or (a.ndim == 2 and min(a.shape) > MAX_CHANNELS):
        raise FERInputError(f"a microphone chunk must be (samples,) or (samples, channels) with at most "
                            f"{MAX_CHANNELS} channels, got {a.shape}")
    length = a.shape[0] if a.ndim == 1 else max(a.shape)
    if length > MAX_CHUNK_S * rate:
        raise FERInputError(f"a microphone chunk of {length / rate:.1f} s was refused: chunks last at most "
                            f"{MAX_CHUNK_S:.0f} s")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise FERInputError("a microphone chunk holds samples that are not numbers (NaN or infinity)")
    return a


# ----------------------------------------------------------------------------------------------------------------
# Classification of a planned window
class LiveAnalyzer:
    """Classifies a `LiveWindow` with the analysis engine's live session (`live_analysis_fer.FERLiveSession`):
    the face front-end and `embed_frames` run once per new frame, the speech decision and the audio encoder on
    the current window, and the result is the upload result type (`FERWindowResult`).

    Args:
        model: a `FERForEmotionClassification` in eval mode (any device; int8 allowed).
        processor: the matching `FERProcessor` (face front-end, speech detection, log-mel, labels).
    """

    def __init__(self, model, processor):
        from fer_hf.analysis_fer import FERAnalyzer

        cfg = model.config
        if abs(processor.clip_seconds - cfg.clip_seconds) > 1e-6 or processor.num_frames != cfg.num_frames:
            raise FERInputError(
                f"the processor's window ({processor.num_frames} frames in {processor.clip_seconds} s) does not "
                f"match the model's ({cfg.num_frames} frames in {cfg.clip_seconds} s)"
            )
        self.model, self.processor = model, processor
        self.engine = FERAnalyzer(model, processor, batch_size=1)
        self._int8 = None  # FERAnalyzer on the int8 copy of the model, once built (`prepare_int8`)
        self._int8_thread: threading.Thread | None = None
        self._int8_lock = threading.Lock()

    @property
    def int8_possible(self) -> bool:
        """Whether an int8 copy could make updates cheaper: the model runs in float on the CPU."""
        return self.engine.device.type == "cpu" and not getattr(self.model, "is_int8_quantized", False)

    @property
    def int8_ready(self) -> bool:
        return self._int8 is not None

    def prepare_int8(self, wait: bool = False) -> bool:
        """Build, once per analyzer, a copy of the model whose linear layers are quantised to int8
        (`quantize_int8_`), in a background thread so that no update waits for it; sessions with `int8` set use it
        from their next update on. It holds a second copy of the weights (int8 for the linear layers). Returns
        whether it is ready (`wait=True` waits for the build). False where `int8_possible` is False."""
        if not self.int8_possible:
            return False
        with self._int8_lock:
            if self._int8 is None and self._int8_thread is None:
                self._int8_thread = threading.Thread(target=self._build_int8, name="fer-live-int8", daemon=True)
                self._int8_thread.start()
            thread = self._int8_thread
        if wait and thread is not None:
            thread.join()
        return self._int8 is not None

    def _build_int8(self) -> None:
        from fer_hf.analysis_fer import FERAnalyzer

        began = time.perf_counter()
        try:
            quantised = copy.deepcopy(self.model).eval().quantize_int8_()
            self._int8 = FERAnalyzer(quantised, self.processor, batch_size=1)
            logger.info("live mode: int8 copy of the model ready in %.1f s", time.perf_counter() - began)
        except Exception:  # live mode goes on in float; the page still says it is falling behind
            logger.exception("live mode: building the int8 copy of the model failed")

    def _engine_for(self, session: LiveSession):
        return self._int8 if session.int8 and self._int8 is not None else self.engine

    def new_session(self, **kwargs) -> LiveSession:
        cfg = self.model.config
        session = LiveSession(cfg.clip_seconds, cfg.num_frames, sampling_rate=self.processor.sampling_rate,
                              decode_max_side=self.processor.decode_max_side, **kwargs)
        session.engine = self.engine.live_session()
        return session

    def prefetch(self, session: LiveSession) -> int:
        """While no window is due: put the frames whose bins are final (and used at the session's `frame_stride`)
        through the face front-end and SigLIP now (`FERLiveSession.prepare`), so the next update only runs the audio
        encoder and the fusion, and its latency drops by that much. Returns how many frames were prepared (0 when
        there is nothing new). Raises `LiveSessionClosedError` after `session.close()`."""
        with session.analysing():
            frames = [f for f in session.final_frames() if session.uses_bin_of(f.capture_s)]
            _hand_over(session, frames)
            if not frames:
                return 0
            session.engine.analyzer = self._engine_for(session)
            return session.engine.prepare(frames[-1].capture_s + 1e-6)

    def analyze(self, session: LiveSession, window: LiveWindow) -> LiveUpdate | None:
        """Classify one window; None when it holds neither usable sound nor a face (it is then kept in the
        session's result as a skipped window, with the reasons). With `session.frame_stride` > 1 only the frames of
        the bins it keeps are used; with `session.int8` the int8 copy runs it once built. Raises
        `LiveSessionClosedError` after `session.close()` (a close during the analysis waits for it)."""
        began = time.perf_counter()
        with session.analysing():
            engine = session.engine
            engine.analyzer = self._engine_for(session)
            stride = max(1, int(session.frame_stride))
            mask = None if stride == 1 else [session.uses_bin_of(t) for t in window.frame_times_s]
            _hand_over(session, window.frames if mask is None else [f for f, use in zip(window.frames, mask) if use])
            embedded = engine.frames_embedded
            item = engine.classify_window(window.audio, window.end_s, start_s=window.start_s,
                                          audio_missing=window.audio_reason, camera_reason=window.camera_reason,
                                          frame_mask=mask)
            if isinstance(item, FERSkippedWindow):
                return None
            new = engine.frames_embedded - embedded
            produced = session.now_s()
            model = engine.analyzer.model
            precision = "int8" if getattr(model, "is_int8_quantized", False) else \
                str(engine.analyzer.dtype).replace("torch.", "")
            update = LiveUpdate(
                index=session.updates_total, window=item, end_s=round(window.end_s, 4),
                latency_s=round(produced - window.end_s, 4), compute_s=round(time.perf_counter() - began, 4),
                new_frames=new, reused_frames=max(0, item.modalities["face_frames"] - new),
                produced_s=round(produced, 4), frame_stride=stride, precision=precision,
            )
            session.record(update)
            return update


def _hand_over(session: LiveSession, frames: list) -> None:
    """Give the engine the frames it has not had yet; the engine holds each picture until its face crop and vector
    are made, so the session's copy is dropped."""
    for f in frames:
        if f is not None and not f.sent:
            session.engine.add_frame(f.capture_s, f.image)
            f.sent, f.image = True, None


__all__ = [
    "AUDIO_RATES",
    "MAX_CHUNK_S",
    "MAX_FRAME_SIDE",
    "MAX_SESSION_BYTES",
    "AudioChunkAligner",
    "AudioPlacement",
    "FrameTimeline",
    "LiveAnalyzer",
    "LiveFrame",
    "LiveSession",
    "LiveUpdate",
    "LiveWindow",
    "check_audio_chunk",
]
