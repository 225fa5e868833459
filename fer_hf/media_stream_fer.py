"""One pass over a whole clip for the analysis engine: frames on a global time grid and the audio, streamed.

    for event in stream_file(path, targets_s, sampling_rate=16000, max_side=640):
        event.kind == "frame":  event.index (grid index), event.source_time_s, event.image (h, w, 3), event.scale
        event.kind == "audio":  event.samples float32 (n,) mono, continuing the clip's audio from t = 0

The file is demuxed and decoded once, front to back (no seeking); a decoded frame is converted to RGB only when it
is the nearest to a grid time, and nothing is kept once emitted, so memory does not grow with the clip's length.
`stream_arrays` gives the same events for decoded arrays (`media_fer.FERMedia`).

Bounded work: a `MediaBudget` (pixels per frame, frames and pixels per clip, audio length, the audio's own rate) is
checked against the file's headers before decoding (`check_budget`) and again while decoding (headers can lie), and
a `WorkToken` (cancelled by the caller, or past its time budget) is checked between packets; both raise typed
errors whose messages are meant for a person.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from .errors_fer import AnalysisCancelledError, MediaDecodeError, MediaTooLargeError, WorkTimeExceededError
from .media_fer import (
    decode_target_size,
    demux_decoded,
    downscale_frame,
    open_media,
    probe_frame_timing,
    require_av,
    stream_origin_s,
)
from .media_timing_fer import FrameTiming

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Budgets
@dataclass(frozen=True)
class MediaBudget:
    """The decoding work one clip may cause (None: no limit).

    Attributes:
        max_frame_pixels: source pixels of one video frame (width x height, before any downscaling).
        max_frames: video frames decoded over the clip.
        max_pixels: source pixels decoded over the clip (frames x frame pixels).
        max_audio_seconds: audio decoded, in seconds at the output rate.
        audio_rates: the range of audio sampling rates (Hz) a file may declare; resampling a 4 Hz stream to 16 kHz
            multiplies its samples by 4000.
    """

    max_frame_pixels: int | None = None
    max_frames: int | None = None
    max_pixels: int | None = None
    max_audio_seconds: float | None = None
    audio_rates: tuple[int, int] | None = (4000, 768000)


def _megapixels(pixels: float) -> str:
    return f"{pixels / 1e6:.1f} megapixels"


def _refuse_frame(name: str, width: int, height: int, budget: MediaBudget) -> None:
    if budget.max_frame_pixels is not None and width * height > budget.max_frame_pixels:
        raise MediaTooLargeError(
            f"{name} has frames of {width}×{height} pixels ({_megapixels(width * height)}); this server decodes "
            f"frames of up to {_megapixels(budget.max_frame_pixels)}. Scale the video down "
            "(1280×720 is plenty for a face) and upload it again")


def check_budget(info, budget: MediaBudget | None, name: str | None = None) -> None:
    """Refuse a probed file (`media_fer.MediaInfo`) whose headers promise more work than `budget` allows.

    Raises `MediaTooLargeError` (a person's words: what is too large, the limit, and what to do)."""
    if budget is None:
        return
    name = name or repr(os.path.basename(str(info.source)))
    if info.has_video and info.width and info.height:
        _refuse_frame(name, info.width, info.height, budget)
        frames = info.frame_count or (round(info.duration_s * info.fps) if info.fps else None)
        if frames and budget.max_frames is not None and frames > budget.max_frames:
            raise MediaTooLargeError(
                f"{name} has about {frames} video frames ({frames / max(info.duration_s, 1e-6):.0f} per second); "
                f"this server decodes up to {budget.max_frames} frames per clip. Lower the frame rate (30 frames "
                "per second is plenty) or trim the clip, and upload it again")
        if frames and budget.max_pixels is not None and frames * info.width * info.height > budget.max_pixels:
            raise MediaTooLargeError(
                f"{name} would need {frames * info.width * info.height / 1e9:.1f} gigapixels decoded "
                f"({frames} frames of {info.width}×{info.height}); this server decodes up to "
                f"{budget.max_pixels / 1e9:.1f} gigapixels per clip. Scale the video down or trim it, and upload "
                "it again")
    if info.has_audio and info.audio_rate and budget.audio_rates is not None:
        low, high = budget.audio_rates
        if not low <= info.audio_rate <= high:
            raise MediaTooLargeError(
                f"{name} declares an audio sampling rate of {info.audio_rate} Hz; only rates from {low} Hz to "
                f"{high // 1000} kHz are read. Re-encode the sound at 16 or 48 kHz and upload it again")


class WorkToken:
    """Stops one request's work: `cancel()` (the client cancelled or left) or its time budget running out.

    The decoder checks it between packets and the analysis engine between windows (`check()`), so cancelled work
    ends within one packet or one batch of windows, and its memory is freed."""

    def __init__(self, max_seconds: float | None = None, clock=time.monotonic):
        self.max_seconds, self.clock = max_seconds, clock
        self.deadline = None if not max_seconds else clock() + float(max_seconds)
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "the request was cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise `AnalysisCancelledError` once cancelled, `WorkTimeExceededError` past the time budget."""
        if self._event.is_set():
            raise AnalysisCancelledError(f"the analysis was stopped: {self.reason}")
        if self.deadline is not None and self.clock() > self.deadline:
            self.cancel("it ran past its time budget")
            raise WorkTimeExceededError(
                f"the analysis took longer than the {self.max_seconds:.0f} s one request may use on this server; "
                "try a shorter clip or one with fewer or smaller frames")


class _Meter:
    """Counts what a decode pass produces against a `MediaBudget` (headers can understate it)."""

    def __init__(self, budget: MediaBudget | None, name: str, cancel: WorkToken | None, sampling_rate: int):
        self.budget, self.name, self.cancel = budget or MediaBudget(audio_rates=None), name, cancel
        self.sr = sampling_rate
        self.frames = self.pixels = self.samples = 0

    def frame(self, width: int, height: int) -> None:
        b = self.budget
        _refuse_frame(self.name, width, height, b)
        self.frames += 1
        self.pixels += width * height
        if b.max_frames is not None and self.frames > b.max_frames:
            raise MediaTooLargeError(f"{self.name} has more than {b.max_frames} video frames, the most this server "
                                     "decodes per clip; lower the frame rate or trim the clip and upload it again")
        if b.max_pixels is not None and self.pixels > b.max_pixels:
            raise MediaTooLargeError(f"{self.name} needs more than {b.max_pixels / 1e9:.1f} gigapixels decoded, the "
                                     "most this server decodes per clip; scale the video down or trim it")

    def audio(self, samples: int) -> None:
        self.samples += samples
        limit = self.budget.max_audio_seconds
        if limit is not None and self.samples > limit * self.sr:
            raise MediaTooLargeError(f"{self.name} holds more than {limit:.0f} s of sound, the most this server "
                                     "decodes per clip; trim the clip and upload it again")

    def step(self) -> None:
        if self.cancel is not None:
            self.cancel.check()


# ----------------------------------------------------------------------------------------------------------------
@dataclass
class StreamEvent:
    """A frame picked for grid time `index`, or the next chunk of audio samples."""

    kind: str  # "frame" or "audio"
    index: int = -1
    source_time_s: float | None = None
    image: np.ndarray | None = None
    scale: float = 1.0
    samples: np.ndarray | None = None


class _GridPicker:
    """For each grid time (increasing), the decoded frame nearest to it; emits picks as soon as they are known."""

    def __init__(self, targets: np.ndarray, max_side: int):
        self.targets, self.max_side = targets, max_side
        self.k = 0
        self.prev = None  # (time_s, frame)
        self._cache = (None, None, 1.0)

    def _convert(self, frame) -> tuple[np.ndarray, float]:
        if self._cache[0] is frame:
            return self._cache[1], self._cache[2]
        w, h = decode_target_size(frame.width, frame.height, self.max_side)
        rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
        quarter_turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4  # display matrix (phone videos)
        if quarter_turns:
            rgb = np.ascontiguousarray(np.rot90(rgb, quarter_turns))
        self._cache = (frame, rgb, frame.width / w)
        return rgb, frame.width / w

    def _emit(self, k: int, t: float, frame) -> StreamEvent:
        rgb, scale = self._convert(frame)
        return StreamEvent("frame", k, float(t), rgb, scale)

    def push(self, t: float, frame) -> list[StreamEvent]:
        out = []
        while self.k < len(self.targets) and t >= self.targets[self.k]:
            target = self.targets[self.k]
            if self.prev is not None and target - self.prev[0] <= t - target:
                out.append(self._emit(self.k, *self.prev))
            else:
                out.append(self._emit(self.k, t, frame))
            self.k += 1
        self.prev = (t, frame)
        return out

    def finish(self, video_end_s: float) -> list[StreamEvent]:
        """End of stream: targets before the video's end get the last frame; later ones are past the clip."""
        out = []
        while self.prev is not None and self.k < len(self.targets) and self.targets[self.k] < video_end_s:
            out.append(self._emit(self.k, *self.prev))
            self.k += 1
        return out


def stream_file(path: str, targets_s: np.ndarray, sampling_rate: int = 16000, max_side: int = 640,
                duration_s: float | None = None, timing: FrameTiming | None = None,
                budget: MediaBudget | None = None, cancel: WorkToken | None = None):
    """Yield `StreamEvent`s for a media file: frames for the grid times (in order), audio chunks (mono, resampled).

    Grid times past the end of the video get no frame event. `timing`: `probe_media(path).timing` (None: decided
    here). `budget`: decoding limits enforced on what is really decoded (`MediaTooLargeError`); `cancel`: checked
    between packets. Raises `MediaDecodeError` if nothing decodes.
    """
    av = require_av()
    timing = timing if timing is not None else probe_frame_timing(path)[0]
    meter = _Meter(budget, repr(os.path.basename(path)), cancel, sampling_rate)
    container = open_media(path)
    try:
        origin = stream_origin_s(container)
        clock = timing.clock(origin)
        vstream, astream, packets = demux_decoded(container)
        picker = _GridPicker(np.asarray(targets_s, np.float64), max_side) if vstream is not None else None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate) if astream else None
        audio_started, last_t, times, decoded = False, None, [], False
        try:
            for stream, frames in packets:
                meter.step()
                if stream is vstream:
                    for frame in frames:
                        meter.frame(frame.width, frame.height)
                        t = clock(frame)
                        if t is None:
                            continue
                        decoded = True
                        last_t = t if last_t is None else max(last_t, t)
                        if len(times) < 64:
                            times.append(t)
                        yield from picker.push(t, frame)
                elif stream is astream:
                    for frame in frames:
                        if not audio_started:
                            audio_started = True
                            lead = round(((frame.time - origin) if frame.time is not None else 0.0) * sampling_rate)
                            if lead > 0:  # audio starting after t = 0: silence before it
                                yield StreamEvent("audio", samples=np.zeros(lead, np.float32))
                            skip = -lead if lead < 0 else 0
                        for out in resampler.resample(frame):
                            chunk = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                            if skip:
                                cut = min(skip, chunk.size)
                                chunk, skip = chunk[cut:], skip - cut
                            decoded = decoded or chunk.size > 0
                            meter.audio(chunk.size)
                            if chunk.size:
                                yield StreamEvent("audio", samples=chunk)
        except (MediaTooLargeError, AnalysisCancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - truncated or damaged tail: keep what was decoded
            logger.warning("decoding stopped early (%s: %s); using the part decoded so far", type(exc).__name__, exc)
        if resampler is not None and audio_started:
            for out in resampler.resample(None):
                chunk = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                if chunk.size:
                    yield StreamEvent("audio", samples=chunk)
        if picker is not None and last_t is not None:
            diffs = np.diff(np.unique(times))
            step = float(np.median(diffs)) if diffs.size else 1.0 / 30.0
            end = last_t + step if duration_s is None else min(last_t + step, duration_s)
            yield from picker.finish(end + 1e-6)
        if not decoded:
            raise MediaDecodeError(f"no audio or video could be decoded from {path!r}; the file may be corrupt")
    finally:
        container.close()


def stream_arrays(media, targets_s: np.ndarray, max_side: int = 640):
    """The same events for decoded arrays (`FERMedia` already cleaned by the processor), interleaved in time as a
    file's would be. `media.start_s` is t = 0 of the event times, as for files."""
    targets = np.asarray(targets_s, np.float64)
    sr = int(media.sampling_rate or 16000)
    audio = media.audio
    sent = 0  # audio samples emitted so far

    def audio_until(t_s: float):
        nonlocal sent
        if audio is None:
            return
        stop = min(len(audio), max(sent, round(t_s * sr)))
        if stop > sent:
            yield StreamEvent("audio", samples=audio[sent:stop])
            sent = stop

    if media.frames is not None and len(media.frames):
        times = media.times_s() - media.start_s
        n = len(times)
        step = float(np.median(np.diff(times))) if n > 1 else (1.0 / media.fps if media.fps else 1.0 / 30.0)
        right = np.clip(np.searchsorted(times, targets - 1e-9), 0, n - 1)
        left = np.clip(right - 1, 0, n - 1)
        idx = np.where(np.abs(times[left] - targets) <= np.abs(times[right] - targets), left, right)
        valid = (targets < times[-1] + step) & (targets >= times[0] - step)
        cache_i, cache_img = -1, None
        for k in np.nonzero(valid)[0]:
            yield from audio_until(targets[k])
            i = int(idx[k])
            if i != cache_i:
                cache_i, cache_img = i, downscale_frame(np.asarray(media.frames[i]), max_side)
            yield StreamEvent("frame", int(k), float(times[i]), cache_img[0], cache_img[1])
    yield from audio_until(float("inf") if audio is None else len(audio) / sr)


__all__ = ["MediaBudget", "StreamEvent", "WorkToken", "check_budget", "stream_arrays", "stream_file"]
