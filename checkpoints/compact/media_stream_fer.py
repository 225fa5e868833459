"""One pass over a whole clip for the analysis engine: frames on a global time grid and the audio, streamed.

    for event in stream_file(path, targets_s, sampling_rate=16000, max_side=640):
        event.kind == "frame":  event.index (grid index), event.source_time_s, event.image (h, w, 3), event.scale
        event.kind == "audio":  event.samples float32 (n,) mono, continuing the clip's audio from t = 0

The file is demuxed and decoded once, front to back (no seeking); a decoded frame is converted to RGB only when it
is the nearest to a grid time, and nothing is kept once emitted, so memory does not grow with the clip's length.
`stream_arrays` gives the same events for decoded arrays (`media_fer.FERMedia`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors_fer import MediaDecodeError
from .media_fer import _downscale, _origin_s, _require_av, _target_size, demux_decoded, open_media, probe_frame_timing
from .media_timing_fer import FrameTiming

logger = logging.getLogger(__name__)


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
        w, h = _target_size(frame.width, frame.height, self.max_side)
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
                duration_s: float | None = None, timing: FrameTiming | None = None):
    """Yield `StreamEvent`s for a media file: frames for the grid times (in order), audio chunks (mono, resampled).

    Grid times past the end of the video get no frame event. `timing`: `probe_media(path).timing` (None: decided
    here). Raises `MediaDecodeError` if nothing decodes.
    """
    av = _require_av()
    timing = timing if timing is not None else probe_frame_timing(path)[0]
    container = open_media(path)
    try:
        origin = _origin_s(container)
        clock = timing.clock(origin)
        vstream, astream, packets = demux_decoded(container)
        picker = _GridPicker(np.asarray(targets_s, np.float64), max_side) if vstream is not None else None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate) if astream else None
        audio_started, last_t, times, decoded = False, None, [], False
        try:
            for stream, frames in packets:
                if stream is vstream:
                    for frame in frames:
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
                            if chunk.size:
                                yield StreamEvent("audio", samples=chunk)
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
                cache_i, cache_img = i, _downscale(np.asarray(media.frames[i]), max_side)
            yield StreamEvent("frame", int(k), float(times[i]), cache_img[0], cache_img[1])
    yield from audio_until(float("inf") if audio is None else len(audio) / sr)


__all__ = ["StreamEvent", "stream_arrays", "stream_file"]
