"""Live mode's two browser streams placed on one session clock: microphone chunks and webcam frames.

A browser sends two independent streams (Gradio's streaming `gr.Audio` and `gr.Image`):

- audio: contiguous PCM chunks cut by a WAV recorder every `stream_every` seconds. They reach the server with
  jitter, sometimes late, sometimes several at once, and sometimes not at all (the recorder drops a chunk
  while the page waits for the server);
- frames: single camera snapshots, each sent once the previous one was received (so a slow server gets fewer).

Neither carries a capture time, so both are placed on one **session clock** (seconds since the session
started, on the server's monotonic clock) by this module:

- `AudioChunkAligner`: the audio's own sample count is the authority inside the stream. The offset between the
  sample clock and the session clock is the smallest "arrival time minus end of chunk" seen over the last
  `baseline_s` seconds: network and queueing delays only ever add to it, so the minimum is the least-delayed
  placement. A late chunk (or a burst of bundled chunks) raises that difference for a moment only; a dropped
  chunk raises it for every chunk after it. When every chunk arriving over `drop_confirm_s` of wall time is
  more than `drop_tolerance_s` behind, the missing span is inserted as a gap (zeros, marked not covered).
- `FrameTimeline`: each frame is placed at its arrival time and competes for the frame bin it falls in
  (bins of `clip_seconds / num_frames`, the model's own frame spacing); only the frame nearest to each bin
  centre is kept, so memory is a few frames whatever the camera rate.

Both clocks are "arrival with the least delay", so their common transport delay cancels out; what remains
is the jitter of frame arrivals (tens of milliseconds on a loaded machine), well inside a 375 ms frame bin.

`fer_app.streaming.LiveSession` holds one of each per browser session.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from fer_hf.errors_fer import FERInputError
from fer_hf.faces_fer import resize_image

try:
    import av
except ImportError:  # pragma: no cover - av is a payload requirement; only resampling needs it
    av = None

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Audio: chunks -> the session clock
@dataclass
class _AudioChunk:
    stream_start_s: float  # position on the audio's own sample clock (gaps included)
    samples: np.ndarray  # float32 (n,) at the aligner's rate
    arrival_s: float
    lag_s: float  # arrival - end on the sample clock (offset estimate from this chunk)
    duration_s: float


@dataclass
class AudioPlacement:
    """Where `AudioChunkAligner.push` put a chunk: session-clock bounds, and a gap inserted before it (s)."""

    start_s: float
    end_s: float
    gap_inserted_s: float = 0.0


class AudioChunkAligner:
    """Places contiguous microphone chunks on the session clock (see the module docstring).

    Args:
        sampling_rate: rate of the stored audio (the model's, 16 kHz); other input rates are resampled with
            PyAV's resampler, whose filter state runs across chunks (no seams).
        keep_seconds: audio older than this (from the newest sample) is dropped.
        drop_tolerance_s: lateness beyond which a chunk counts as "behind"; drops shorter than this go unnoticed.
        drop_confirm_s: how long (wall time) chunks must keep arriving behind before the gap is inserted.
        baseline_s: the offset is the smallest lag over this many seconds of arrivals (follows clock drift).
    """

    def __init__(self, sampling_rate: int = 16000, keep_seconds: float = 5.0, drop_tolerance_s: float = 0.2,
                 drop_confirm_s: float = 0.75, baseline_s: float = 30.0):
        self.sampling_rate = int(sampling_rate)
        self.keep_seconds = float(keep_seconds)
        self.drop_tolerance_s = float(drop_tolerance_s)
        self.drop_confirm_s = float(drop_confirm_s)
        self.baseline_s = float(baseline_s)
        self._chunks: deque[_AudioChunk] = deque()
        self._lags: deque[list] = deque()  # [arrival_s, lag_s] of recent chunks (mutable: gaps shift them)
        self._behind: list[_AudioChunk] = []  # the current run of chunks arriving later than the offset allows
        self._stream_pos_s = 0.0
        self._resampler = None
        self._input_rate = None
        self.gaps_inserted = 0
        self.gap_seconds = 0.0
        self.chunks_received = 0

    # ------------------------------------------------------------------------------------------------
    @property
    def offset_s(self) -> float | None:
        """Session time of sample-clock zero (None before the first chunk)."""
        return min(lag for _, lag in self._lags) if self._lags else None

    @property
    def latest_s(self) -> float | None:
        """Session time of the end of the newest chunk."""
        return None if not self._chunks else self._stream_pos_s + self.offset_s

    @property
    def last_arrival_s(self) -> float | None:
        return self._chunks[-1].arrival_s if self._chunks else None

    @property
    def first_s(self) -> float | None:
        """Session time of the first sample received (None before any)."""
        return None if self.offset_s is None else self.offset_s

    def _to_rate(self, samples: np.ndarray, rate: int) -> np.ndarray:
        if rate == self.sampling_rate:
            return samples
        if av is None:
            raise ImportError("resampling microphone audio needs PyAV: `pip install av`")
        if self._resampler is None or rate != self._input_rate:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sampling_rate)
            self._input_rate = rate
        frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
        frame.sample_rate = rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def push(self, samples: np.ndarray, sampling_rate: int, arrival_s: float) -> AudioPlacement:
        """Add one chunk: mono float32 `(n,)` in [-1, 1] at `sampling_rate`, received at `arrival_s` (session)."""
        if sampling_rate <= 0:
            raise FERInputError(f"the microphone chunk has an invalid sampling rate {sampling_rate!r}")
        samples = self._to_rate(np.ascontiguousarray(samples, np.float32), int(sampling_rate))
        self.chunks_received += 1
        start = self._stream_pos_s
        self._stream_pos_s = start + len(samples) / self.sampling_rate
        chunk = _AudioChunk(start, samples, float(arrival_s), float(arrival_s) - self._stream_pos_s,
                            len(samples) / self.sampling_rate)
        self._chunks.append(chunk)
        offset = self.offset_s
        self._lags.append([chunk.arrival_s, chunk.lag_s])
        while self._lags and self._lags[0][0] < chunk.arrival_s - self.baseline_s and len(self._lags) > 1:
            self._lags.popleft()
        gap = 0.0
        if offset is not None and chunk.lag_s - offset > self.drop_tolerance_s:
            self._behind.append(chunk)
            if len(self._behind) >= 2 and chunk.arrival_s - self._behind[0].arrival_s >= self.drop_confirm_s:
                gap = min(c.lag_s for c in self._behind) - offset
                self._insert_gap(gap)
        else:
            self._behind.clear()
        self._trim()
        end = self.latest_s
        return AudioPlacement(end - len(samples) / self.sampling_rate, end, gap)

    def _insert_gap(self, gap: float) -> None:
        """Samples were lost before the first chunk of the current late run: move that run later by `gap`."""
        moved = {id(c) for c in self._behind}
        for c in self._behind:
            c.stream_start_s += gap
            c.lag_s -= gap
        for entry in list(self._lags)[-len(self._behind):]:
            entry[1] -= gap
        self._stream_pos_s += gap
        self.gaps_inserted += 1
        self.gap_seconds += gap
        logger.info("microphone: %.2f s of audio never arrived; left as a gap (%d moved chunks)", gap, len(moved))
        self._behind.clear()

    def _trim(self) -> None:
        horizon = self._stream_pos_s - self.keep_seconds
        while len(self._chunks) > 1 and self._chunks[0].stream_start_s + self._chunks[0].duration_s < horizon:
            self._chunks.popleft()

    def read(self, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Audio between two session times: float32 `(n,)` (zeros where nothing arrived) and bool `(n,)` covered."""
        n = max(0, round((end_s - start_s) * self.sampling_rate))
        audio = np.zeros(n, np.float32)
        covered = np.zeros(n, bool)
        if not self._chunks or n == 0:
            return audio, covered
        offset = self.offset_s
        for c in self._chunks:
            first = round((c.stream_start_s + offset - start_s) * self.sampling_rate)  # index of its 1st sample
            lo, hi = max(0, first), min(n, first + len(c.samples))
            if hi > lo:
                audio[lo:hi] = c.samples[lo - first: hi - first]
                covered[lo:hi] = True
        return audio, covered

    @property
    def stored_samples(self) -> int:
        return sum(len(c.samples) for c in self._chunks)


# ----------------------------------------------------------------------------------------------------------------
# Frames: one per frame bin, with the work done on it cached
@dataclass
class LiveFrame:
    """A kept camera frame (the best of its frame bin).

    Attributes:
        capture_s: session time of the frame (its arrival; see the module docstring).
        image: uint8 RGB `(h, w, 3)` (long side <= the processor's `decode_max_side`); dropped once handed to the
            analysis engine, which runs the face front-end and `embed_frames` on it once and caches the result.
        sent: handed to the engine (`FERLiveSession.add_frame`).
    """

    capture_s: float
    image: np.ndarray | None
    sent: bool = False


class FrameTimeline:
    """Frames by frame bin: bin `m` covers `[m * bin_s, (m + 1) * bin_s)` and keeps the frame nearest its centre.

    Args:
        bin_s: the model's frame spacing, `clip_seconds / num_frames`.
        keep_seconds: bins older than this (from the newest frame) are dropped.
        max_side: frames are downscaled to this long side on arrival.
    """

    def __init__(self, bin_s: float, keep_seconds: float = 5.0, max_side: int = 640):
        if bin_s <= 0:
            raise FERInputError(f"the frame spacing must be positive, got {bin_s!r}")
        self.bin_s = float(bin_s)
        self.keep_seconds = float(keep_seconds)
        self.max_side = int(max_side)
        self._bins: dict[int, LiveFrame] = {}
        self.latest_s: float | None = None
        self.first_s: float | None = None
        self.frames_received = 0
        self.frames_kept = 0

    def push(self, image: np.ndarray, capture_s: float) -> bool:
        """Add a frame (uint8 RGB `(h, w, 3)`); True when it is kept as its bin's best frame."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] not in (3, 4) or image.dtype != np.uint8:
            raise FERInputError(f"a camera frame must be uint8 RGB (h, w, 3), got {image.dtype} {image.shape}")
        self.frames_received += 1
        self.latest_s = capture_s if self.latest_s is None else max(self.latest_s, capture_s)
        self.first_s = capture_s if self.first_s is None else min(self.first_s, capture_s)
        m = math.floor(capture_s / self.bin_s)
        centre = (m + 0.5) * self.bin_s
        held = self._bins.get(m)
        if held is not None and abs(held.capture_s - centre) <= abs(capture_s - centre):
            return False
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        frame = np.ascontiguousarray(image[..., :3])
        if scale < 1.0:
            frame = resize_image(frame, (max(1, round(w * scale)), max(1, round(h * scale))))
        self._bins[m] = LiveFrame(float(capture_s), frame)
        self.frames_kept += 1
        horizon = math.floor((self.latest_s - self.keep_seconds) / self.bin_s)
        for old in [k for k in self._bins if k < horizon]:
            del self._bins[old]
        return True

    def frame_for(self, target_s: float) -> LiveFrame | None:
        """The kept frame of the bin holding `target_s` (a bin centre), or None when that bin got no frame."""
        return self._bins.get(math.floor(target_s / self.bin_s))

    def __len__(self) -> int:
        return len(self._bins)


__all__ = ["AudioChunkAligner", "AudioPlacement", "FrameTimeline", "LiveFrame"]
