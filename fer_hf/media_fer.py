"""Media decoding and windowing for the processor (SPEC §0, §5).

A clip is cut into windows of `window_seconds`; each window yields

- audio: mono float32 at 16 kHz, the samples that really lie inside the window (not padded);
- video: `num_frames` RGB frames picked at the bin centres `t_k = start + (k + 0.5) * window / T`,
  each the decoded frame whose presentation time is nearest to `t_k` (so variable frame rate is handled; a video
  whose timestamps are unusable is timed by frame order, `media_timing_fer`),
  downscaled while decoding so that the long side is at most `max_side` pixels, and turned upright when the
  stream carries a rotation (display matrix), as phone recordings do.

Files are decoded with PyAV in one demux pass per window: seek near the window start, decode audio
(downmixed and resampled to 16 kHz by `av.AudioResampler`) and video together, stop after the window end.
Nothing longer than one window is held in memory. Decoded arrays take the same path through
`window_from_arrays`.

All times are seconds from the start of the clip (the container's `start_time` is subtracted).
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from .errors_fer import EmptyMediaError, MediaDecodeError, MediaNotFoundError, MediaTooLongError
from .media_timing_fer import FrameTiming, read_frame_timing

try:
    import av
except ImportError:  # pragma: no cover - only for users who pass decoded arrays
    av = None

logger = logging.getLogger(__name__)

AV_TIME_BASE = 1_000_000  # container.duration / start_time / seek offsets are in microseconds
# Demuxers that read a single still image: such a "video" is an image renamed to .mp4 or similar.
_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "gif_pipe", "svg_pipe")
SEEK_SLACK_S = 0.05  # a seek may land this much after the window start before we try an earlier point
AUDIO_PREROLL_S = 0.1  # a seek goes this much before the window: the audio decoder and resampler settle first
AUDIO_SETTLED_S = 0.05  # decoded audio this long before the window start equals a front-to-back decode's
LONG_GOP_S = 10.0  # second seek point: this much before the window start
DEFAULT_FRAME_S = 1 / 25  # one frame, the duration tolerance when the frame rate is unknown (audio-only files)
SCALE_THREADS = max(1, min(4, os.cpu_count() or 1))  # swscale threads for the RGB conversion + downscale


def require_av():
    """PyAV, or an ImportError that says how to install it."""
    if av is None:
        raise ImportError(
            "Decoding media files needs PyAV: `pip install av`. "
            "Alternatively pass decoded arrays: processor(audio=..., sampling_rate=16000, video_frames=..., fps=...)."
        )
    return av


@dataclass
class MediaInfo:
    """What `probe_media` learns about a file without decoding it."""

    source: str
    duration_s: float
    has_audio: bool
    has_video: bool
    width: int | None = None  # source pixels
    height: int | None = None
    fps: float | None = None  # nominal (average) rate, or the rate frames are timed at by order; None when unknown
    timing: FrameTiming = field(default_factory=FrameTiming)  # how decoded frames are timed (pass it to decoders)
    frame_count: int | None = None  # video frames the headers state (None: not stated)
    audio_rate: int | None = None  # the audio stream's own sampling rate in Hz (None: no audio or not stated)

    @property
    def notes(self) -> list[str]:
        """What a result should say about how the file was read (empty for a well-formed file)."""
        return [self.timing.note] if self.timing.note else []


@dataclass
class WindowMedia:
    """Decoded content of one window.

    Attributes:
        start_s, end_s: window bounds in seconds from the clip start (`end_s - start_s` = window length).
        audio: float32 `(n,)` mono at `sampling_rate`, `n <= round(window * sampling_rate)`; only real samples.
            `None` when there is no audio stream.
        frames: list of `T` uint8 `(h, w, 3)` RGB arrays (long side <= `max_side`) or `None` for invalid frames.
            Repeated source frames are the same array object. `None` (the whole list) when there is no video.
        frame_times_s: float64 `(T,)` target timestamps.
        frame_valid: bool `(T,)`: True where the target time lies inside the decoded video.
        scale: source pixels per decoded pixel (to report face boxes in source coordinates).
        source_times_s: float64 `(T,)` presentation time of the frame picked for each target (NaN if invalid).
    """

    start_s: float
    end_s: float
    audio: np.ndarray | None
    frames: list | None
    frame_times_s: np.ndarray
    frame_valid: np.ndarray
    scale: float = 1.0
    source_times_s: np.ndarray | None = None


# --------------------------------------------------------------------------------------
# Windows
def frame_timestamps(start_s: float, window_s: float, num_frames: int) -> np.ndarray:
    """Bin centres `(num_frames,)` in seconds: `start + (k + 0.5) * window / num_frames`."""
    return start_s + (np.arange(num_frames) + 0.5) * (window_s / num_frames)


def plan_windows(
    duration_s: float,
    window_s: float,
    sliding: bool = False,
    hop_s: float | None = None,
    max_windows: int = 20,
) -> list[tuple[float, float]]:
    """Window bounds `[(start_s, end_s), ...]` for a clip of `duration_s`.

    - Single window (`sliding=False`): one window of `window_s` centred on the clip; a clip shorter than the
      window gets one window starting at 0 (the part past the clip end is padding, masked downstream).
    - Sliding: windows every `hop_s` (default `window_s / 2`) from 0; the last one is aligned to end at the clip
      end so the tail is covered. If that gives more than `max_windows` windows, exactly `max_windows` windows are
      spread evenly from 0 to the end (the stride is widened; a warning is logged). Up to
      `max_windows * window_s` seconds they still overlap or touch; beyond that they sample the clip with gaps.
    """
    if window_s <= 0:
        raise ValueError(f"window length must be positive, got {window_s!r} s")
    if not sliding or duration_s <= window_s:
        start = max(0.0, (duration_s - window_s) / 2.0)
        return [(round(start, 6), round(start + window_s, 6))]
    stride = window_s / 2.0 if hop_s is None else float(hop_s)
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {hop_s!r} s")
    last_start = duration_s - window_s
    count = math.ceil(last_start / stride - 1e-9) + 1
    if count > max_windows:
        logger.warning(
            "clip of %.1f s needs %d windows at a %.2f s stride; capped at max_windows=%d "
            "by widening the stride to %.2f s",
            duration_s, count, stride, max_windows, last_start / max(max_windows - 1, 1),
        )
        count = max_windows
        starts = np.linspace(0.0, last_start, count) if count > 1 else np.array([last_start / 2.0])
    else:
        starts = np.minimum(np.arange(count) * stride, last_start)
    return [(round(float(s), 6), round(float(s) + window_s, 6)) for s in starts]


def decode_target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Decoded size `(w, h)`: long side at most `max_side`, even numbers, aspect kept."""
    scale = min(1.0, max_side / max(width, height))
    w = max(2, round(width * scale / 2) * 2)
    h = max(2, round(height * scale / 2) * 2)
    return w, h


# --------------------------------------------------------------------------------------
# Files
def check_media_file(path: str | os.PathLike) -> str:
    """Refuse paths that cannot be media before PyAV sees them. Returns the path as a string."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MediaNotFoundError(f"media file not found: {path!r}")
    if os.path.isdir(path):
        raise MediaNotFoundError(f"expected a media file but {path!r} is a directory")
    if os.path.getsize(path) == 0:
        raise EmptyMediaError(f"media file {path!r} is empty (0 bytes)")
    return path


def decoder_reason(exc: BaseException) -> str:
    """What a decoder error says, in words: FFmpeg's own sentence without its error number (`[Errno 1094995529]`)
    or the file name, e.g. "invalid data found when processing input"."""
    text = getattr(exc, "strerror", None)
    if not isinstance(text, str) or not text:
        text = str(exc)
        filename = getattr(exc, "filename", None)
        if filename:
            text = text.replace(f": {str(filename)!r}", "")
        text = re.sub(r"\[Errno -?\d+\]\s*", "", text)
    text = text.strip().rstrip(".") or type(exc).__name__
    return text[0].lower() + text[1:]


def open_media(path: str):
    """Open a container with PyAV, turning every failure into `MediaDecodeError`."""
    require_av()
    try:
        container = av.open(path, mode="r")
    except Exception as exc:  # noqa: BLE001 - av.error.FFmpegError subclasses, OSError, UnicodeDecodeError ...
        raise MediaDecodeError(
            f"could not read {os.path.basename(path)!r} as audio/video: the file is corrupt, truncated or not a "
            f"media container (the decoder says: {decoder_reason(exc)})"
        ) from None
    fmt = container.format.name if container.format is not None else ""
    if fmt in _IMAGE_FORMATS or fmt.endswith("_pipe"):
        container.close()
        raise MediaDecodeError(
            f"{os.path.basename(path)!r} is a still image ({fmt}), not a video or audio file; "
            "pass a video clip (e.g. mp4 or webm) or an audio file"
        )
    if not container.streams.video and not container.streams.audio:
        container.close()
        raise MediaDecodeError(f"{os.path.basename(path)!r} has neither an audio nor a video stream")
    return container


def stream_origin_s(container) -> float:
    """The container's start time in seconds (0 when unset or negative): the clip clock's origin."""
    start = container.start_time
    return float(start) / AV_TIME_BASE if start not in (None, 0) and start > 0 else 0.0


def check_duration(duration_s: float, max_duration_s: float | None, fps: float | None, name: str) -> None:
    """Raise `MediaTooLongError` when a clip is longer than `max_duration_s` by more than one frame.

    Containers report a nominal 10-minute recording as e.g. 600.02 s (the last frame's duration, audio priming):
    that is accepted under a 600 s cap. Both figures are printed with two decimals, so a refused clip always reads
    as longer than the cap.
    """
    if max_duration_s is None:
        return
    tolerance = 1.0 / fps if fps else DEFAULT_FRAME_S
    if duration_s > max_duration_s + tolerance:
        raise MediaTooLongError(
            f"{name} lasts {duration_s:.2f} s, more than the {max_duration_s:.2f} s this processor accepts "
            "(`max_duration_s`); trim the clip or raise the limit"
        )


def _duration_from_header(container) -> float | None:
    """Duration written in the container or stream headers, or None (e.g. webm from a browser's MediaRecorder)."""
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / AV_TIME_BASE
    ends = []
    for stream in list(container.streams.video[:1]) + list(container.streams.audio[:1]):
        if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
            start = stream.start_time or 0
            ends.append(float((start + stream.duration) * stream.time_base) - stream_origin_s(container))
    return max(ends) if ends else None


def _duration_from_packets(container, max_duration_s: float | None) -> float | None:
    """Demux (not decode) every packet and take the latest end time. Stops early beyond `max_duration_s`."""
    origin = stream_origin_s(container)
    end = None
    streams = list(container.streams.video[:1]) + list(container.streams.audio[:1])
    try:
        for packet in container.demux(*streams):
            if packet.pts is None or packet.time_base is None:
                continue
            t = float((packet.pts + (packet.duration or 0)) * packet.time_base) - origin
            end = t if end is None else max(end, t)
            if max_duration_s is not None and end > max_duration_s:
                break
    except Exception as exc:  # noqa: BLE001 - a truncated tail: keep what was read
        logger.debug("packet scan stopped early: %s", exc)
    return end


def probe_frame_timing(path: str) -> tuple[FrameTiming, float | None]:
    """`media_timing_fer.read_frame_timing` of a file (opened afresh): (timing, clip length by frame order or None)."""
    container = open_media(path)
    try:
        return read_frame_timing(container)
    finally:
        container.close()


def probe_media(path: str | os.PathLike, max_duration_s: float | None = None) -> MediaInfo:
    """Check the file, open it, decide how its frames are timed and find its duration (header first, else by
    scanning packets; by frame order when the video's timestamps are unusable).

    Raises: MediaNotFoundError, EmptyMediaError, MediaDecodeError, MediaTooLongError.
    """
    path = check_media_file(path)
    container = open_media(path)
    try:
        vstreams, astreams = container.streams.video, container.streams.audio
        timing, duration = probe_frame_timing(path) if vstreams else (FrameTiming(), None)
        if duration is None:
            duration = _duration_from_header(container)
        if duration is None:
            duration = _duration_from_packets(container, max_duration_s)
        if duration is None or duration <= 0:
            raise MediaDecodeError(f"{os.path.basename(path)!r} contains no decodable audio or video packets")
        width = height = fps = frame_count = audio_rate = None
        if vstreams:
            ctx = vstreams[0].codec_context
            width, height = ctx.width or None, ctx.height or None
            rate = vstreams[0].average_rate or vstreams[0].guessed_rate
            fps = timing.fps if timing.by_order else float(rate) if rate else None
            frame_count = int(vstreams[0].frames or 0) or None
        if astreams:
            audio_rate = int(astreams[0].codec_context.sample_rate or astreams[0].rate or 0) or None
        check_duration(duration, max_duration_s, fps, repr(os.path.basename(path)))
        return MediaInfo(path, float(duration), bool(astreams), bool(vstreams), width, height, fps, timing,
                         frame_count, audio_rate)
    finally:
        container.close()


class _FramePicker:
    """Keeps, for each target time, the decoded frame nearest to it (frames arrive in presentation order)."""

    def __init__(self, targets: np.ndarray, max_side: int):
        self.targets = targets
        self.max_side = max_side
        self.picked: list = [None] * len(targets)  # uint8 (h, w, 3) or None
        self.picked_times = np.full(len(targets), np.nan)
        self.k = 0  # next target to fill
        self.prev = None  # (time_s, av.VideoFrame)
        self._cache = (None, None)  # (frame object, converted array)
        self.first_time = None
        self.last_time = None
        self.times: list[float] = []
        self.scale = 1.0

    @property
    def done(self) -> bool:
        return self.k >= len(self.targets)

    def _convert(self, frame) -> np.ndarray:
        if self._cache[0] is frame:
            return self._cache[1]
        w, h = decode_target_size(frame.width, frame.height, self.max_side)
        self.scale = frame.width / w
        try:  # swscale threads halve the conversion time (the largest cost after decoding)
            small = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA", threads=SCALE_THREADS)
        except TypeError:  # PyAV < 14 has no `threads`
            small = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA")
        rgb = small.to_ndarray()  # (h, w, 3) uint8
        quarter_turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4  # display matrix (phone videos)
        if quarter_turns:
            rgb = np.ascontiguousarray(np.rot90(rgb, quarter_turns))  # counter-clockwise, as the matrix says
        self._cache = (frame, rgb)
        return rgb

    def _pick(self, k: int, t: float, frame) -> None:
        self.picked[k] = self._convert(frame)
        self.picked_times[k] = t

    def push(self, t: float, frame) -> None:
        if self.first_time is None:
            self.first_time = t
        self.last_time = t if self.last_time is None else max(self.last_time, t)
        self.times.append(t)
        while self.k < len(self.targets) and t >= self.targets[self.k]:
            target = self.targets[self.k]
            if self.prev is not None and target - self.prev[0] <= t - target:
                self._pick(self.k, *self.prev)
            else:
                self._pick(self.k, t, frame)
            self.k += 1
        self.prev = (t, frame)

    def finish(self) -> None:
        """End of stream: remaining targets get the last frame (validity is decided later)."""
        while self.prev is not None and self.k < len(self.targets):
            self._pick(self.k, *self.prev)
            self.k += 1

    def frame_interval(self, default: float) -> float:
        diffs = np.diff(np.unique(np.asarray(self.times)))
        return float(np.median(diffs)) if diffs.size else default


def demux_decoded(container):
    """Open the first video and audio streams of `container` and decode them in file order.

    Returns (video stream or None, audio stream or None, iterator of (stream, decoded frames)). A packet that
    cannot be decoded (one corrupt packet) is skipped and logged; the rest of the file is still read.
    """
    vstream = container.streams.video[0] if container.streams.video else None
    astream = container.streams.audio[0] if container.streams.audio else None
    if vstream is not None:
        vstream.thread_type = "AUTO"  # frame + slice threads: the decode is the main cost
    streams = [s for s in (vstream, astream) if s is not None]

    def packets():
        for packet in container.demux(*streams):
            try:
                frames = packet.decode()
            except Exception as exc:  # noqa: BLE001 - one corrupt packet: skip it, keep the rest
                logger.debug("skipping undecodable %s packet: %s", packet.stream.type, exc)
                continue
            yield packet.stream, frames

    return vstream, astream, packets()


def _decode_pass(container, seek_s, end_s, targets, sampling_rate, max_side, timing: FrameTiming):
    """One demux pass from `seek_s` (None: from the start); returns (picker or None, audio (n,) or None, audio t0)."""
    origin = stream_origin_s(container)
    if seek_s is not None:
        container.seek(int((seek_s + origin) * AV_TIME_BASE), backward=True, any_frame=False)
    clock = timing.clock(origin)
    vstream, astream, packets = demux_decoded(container)
    picker = _FramePicker(targets, max_side) if vstream is not None else None
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate) if astream is not None else None
    align = seek_s is not None  # after a seek: start the resampler on the front-to-back decode's sample grid
    chunks, t0, n_audio = [], None, 0
    video_done, audio_done = vstream is None, astream is None
    try:
        for stream, frames in packets:
            if stream is vstream and not video_done:
                for frame in frames:
                    t = clock(frame)
                    if t is not None:
                        picker.push(t, frame)
                video_done = picker.done
            elif stream is astream and not audio_done:
                for frame in frames:
                    if t0 is None:
                        t0 = (frame.time - origin) if frame.time is not None else 0.0
                        if align:
                            frame, t0 = _on_output_grid(frame, t0, _audio_start_s(astream, origin), sampling_rate)
                            if frame is None:
                                t0 = None
                                continue
                    for out in resampler.resample(frame):
                        chunk = out.to_ndarray().reshape(-1)  # packed mono flt: (1, n) -> (n,)
                        chunks.append(chunk)
                        n_audio += chunk.size
                audio_done = t0 is not None and t0 + n_audio / sampling_rate >= end_s
            if video_done and audio_done:
                break
    except Exception as exc:  # noqa: BLE001 - truncated or damaged tail: keep what was decoded
        logger.warning("decoding stopped early (%s: %s); using the part decoded so far", type(exc).__name__, exc)
    if resampler is not None and not audio_done:
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if picker is not None:
        picker.finish()
    audio = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else None
    return picker, audio, t0


def _audio_start_s(astream, origin: float) -> float:
    """Time of the audio stream's first sample (where a front-to-back decode starts its resampler), seconds."""
    if astream.start_time is None or astream.time_base is None:
        return 0.0
    return float(astream.start_time * astream.time_base) - origin


def _on_output_grid(frame, t0: float, first_s: float, out_rate: int):
    """The first decoded audio frame after a seek, trimmed so that its first sample lies on the output sample grid
    of a front-to-back decode (which starts at `first_s`): the resampler then makes the very samples that decode
    makes, instead of samples shifted by a fraction of an output sample. Returns (frame or None if all of it was
    trimmed, its new start time)."""
    av = require_av()
    in_rate = frame.sample_rate
    step = in_rate // math.gcd(in_rate, out_rate)  # input samples between two shared grid points
    index = round((t0 - first_s) * in_rate)
    drop = (-index) % step
    if drop == 0:
        return frame, t0
    if drop >= frame.samples:
        return None, t0
    data = frame.to_ndarray()
    data = data[:, drop:] if frame.format.is_planar else data[:, drop * len(frame.layout.channels):]
    trimmed = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name,
                                         layout=frame.layout.name)
    trimmed.sample_rate = in_rate
    return trimmed, first_s + (index + drop) / in_rate


def _cut_audio(audio: np.ndarray, t0: float, start_s: float, end_s: float, sampling_rate: int) -> np.ndarray:
    """Samples of `[start_s, end_s)` from a signal whose first sample is at `t0`; leading gap zero-filled."""
    n_window = round((end_s - start_s) * sampling_rate)
    offset = round((start_s - t0) * sampling_rate)
    if offset >= 0:
        return audio[offset:offset + n_window]
    lead = np.zeros(min(-offset, n_window), np.float32)
    return np.concatenate([lead, audio[: max(0, n_window - lead.size)]])


def decode_window(
    path: str,
    start_s: float,
    end_s: float,
    num_frames: int,
    duration_s: float,
    sampling_rate: int = 16000,
    max_side: int = 640,
    timing: FrameTiming | None = None,
) -> WindowMedia:
    """Decode one window of a media file (first audio stream and first video stream).

    Args:
        path: media file (already checked by `probe_media`).
        start_s, end_s: window bounds in seconds; `end_s` may lie past the clip end (padding).
        num_frames: frames `T` to sample at the bin centres.
        duration_s: clip duration from `probe_media`; targets past it are invalid.
        sampling_rate: output audio rate in Hz (mono).
        max_side: long side of the decoded frames in pixels.
        timing: `probe_media(path).timing` (None: decided here, `probe_frame_timing`).
    """
    require_av()
    targets = frame_timestamps(start_s, end_s - start_s, num_frames)
    name = os.path.basename(path)
    timing = timing if timing is not None else probe_frame_timing(path)[0]
    # Seek to the window start; if the demuxer lands late (no keyframe index, e.g. MPEG-TS or webm without cues,
    # or a long GOP), seek further back, and as a last resort decode from the beginning (always, when frames are
    # timed by their order: a seek loses count).
    seek_points = [s for s in (start_s - AUDIO_PREROLL_S, start_s - LONG_GOP_S) if s > 0 and not timing.by_order]
    seek_points.append(None)
    result = None
    for seek_to in seek_points:
        container = open_media(path)
        try:
            result = _decode_pass(container, seek_to, end_s, targets, sampling_rate, max_side, timing)
        except Exception as exc:  # noqa: BLE001 - PyAV raises many types; ours is the one the user sees
            if seek_to is not None:
                logger.debug("seeking in %s failed (%s); trying an earlier point", name, exc)
                continue
            raise MediaDecodeError(f"could not decode {name!r}: the file is damaged or uses a form this decoder "
                                   f"cannot read (the decoder says: {decoder_reason(exc)})") from None
        finally:
            container.close()
        picker, audio, t0 = result
        video_late = picker is not None and (picker.first_time is None or picker.first_time > start_s + SEEK_SLACK_S)
        audio_late = t0 is not None and t0 > start_s - AUDIO_SETTLED_S
        if seek_to is not None and (video_late or audio_late):
            logger.debug("seek in %s to %.2f s landed after the window start; trying an earlier point", name, seek_to)
            continue
        break
    picker, audio, t0 = result
    if (picker is None or picker.first_time is None) and audio is None:
        raise MediaDecodeError(f"no audio or video could be decoded from {name!r}; the file may be corrupt")

    frames, valid, scale, source_times = None, np.zeros(num_frames, bool), 1.0, None
    if picker is not None and picker.first_time is not None:
        dt = picker.frame_interval(default=1.0 / 30.0)
        # Stopped early -> the video goes on past the window; reached the end -> it ends one frame after the last.
        video_end = duration_s if picker.done else min(picker.last_time + dt, duration_s)
        valid = (targets < video_end + 1e-6) & (targets >= picker.first_time - dt)
        frames = [f if ok else None for f, ok in zip(picker.picked, valid)]
        scale = picker.scale
        source_times = np.where(valid, picker.picked_times, np.nan)
    window_audio = _cut_audio(audio, t0, start_s, end_s, sampling_rate) if audio is not None else None
    if window_audio is not None:
        real = max(0, round((min(end_s, duration_s) - start_s) * sampling_rate))
        window_audio = window_audio[:real]
    return WindowMedia(start_s, end_s, window_audio, frames, targets, valid, scale, source_times)


# --------------------------------------------------------------------------------------
# Arrays
@dataclass
class FERMedia:
    """Decoded media for the processor and the analysis engine (`videos=FERMedia(...)` or the same keys as a dict).

    Attributes:
        audio: mono waveform `(n,)` float (or int16) at `sampling_rate`; stereo `(n, 2)` is averaged. None: no audio.
        sampling_rate: rate of `audio` in Hz (must be the model's, 16 000; nothing is resampled for arrays).
        frames: uint8 RGB frames `(F, H, W, 3)` (or a list of `(H, W, 3)`); None: no video.
        fps: frame `i` is shown at `i / fps` seconds (give this or `frame_times_s`).
        frame_times_s: presentation time of each frame `(F,)` in seconds, increasing (e.g. webcam timestamps).
        start_s: time of the first audio sample and of t = 0 for the frames (live mode: seconds since the session
            start); results are reported on this clock.
    """

    audio: np.ndarray | None = None
    sampling_rate: int | None = None
    frames: np.ndarray | list | None = None
    fps: float | None = None
    frame_times_s: np.ndarray | None = None
    start_s: float = 0.0

    @property
    def duration_s(self) -> float:
        """Length covered by the audio or the frames (the longer), from `start_s`."""
        audio_s = len(self.audio) / self.sampling_rate if self.audio is not None and self.sampling_rate else 0.0
        video_s = 0.0
        if self.frames is not None and len(self.frames):
            times = self.times_s()
            step = float(np.median(np.diff(times))) if len(times) > 1 else (1.0 / self.fps if self.fps else 0.0)
            video_s = float(times[-1]) - self.start_s + step
        return max(audio_s, video_s)

    def times_s(self) -> np.ndarray:
        """float64 `(F,)` presentation times of the frames on the result clock."""
        n = 0 if self.frames is None else len(self.frames)
        if self.frame_times_s is not None:
            return np.asarray(self.frame_times_s, np.float64)
        return self.start_s + np.arange(n) / float(self.fps)


def window_from_arrays(
    audio: np.ndarray | None,
    frames: np.ndarray | None,
    fps: float | None,
    start_s: float,
    end_s: float,
    num_frames: int,
    duration_s: float,
    sampling_rate: int = 16000,
    max_side: int = 640,
    frame_times_s: np.ndarray | None = None,
    origin_s: float = 0.0,
) -> WindowMedia:
    """The same as `decode_window` for decoded input.

    Args:
        audio: float32 `(n,)` mono at `sampling_rate` (first sample at `origin_s`), or None.
        frames: uint8 `(F, H, W, 3)` RGB (or a list of `(H, W, 3)`), frame `i` shown at `frame_times_s[i]`
            (default `origin_s + i / fps`); or None.
        start_s, end_s, duration_s: window bounds and clip length on the same clock (`duration_s` from `origin_s`).
    """
    targets = frame_timestamps(start_s, end_s - start_s, num_frames)
    clip_end = origin_s + duration_s
    window_audio = None
    if audio is not None:
        a = max(0, round((start_s - origin_s) * sampling_rate))
        b = max(a, round((min(end_s, clip_end) - origin_s) * sampling_rate))
        window_audio = np.asarray(audio[a:b], np.float32)
        lead = round((origin_s - start_s) * sampling_rate)  # window starting before the audio: zero-fill
        if lead > 0:
            window_audio = np.concatenate([np.zeros(lead, np.float32), window_audio])
    picked, valid, scale, source_times = None, np.zeros(num_frames, bool), 1.0, None
    if frames is not None and len(frames) > 0:
        n = len(frames)
        times = (np.asarray(frame_times_s, np.float64) if frame_times_s is not None
                 else origin_s + np.arange(n) / float(fps))
        step = float(np.median(np.diff(times))) if n > 1 else (1.0 / fps if fps else 1.0 / 30.0)
        right = np.clip(np.searchsorted(times, targets - 1e-9), 0, n - 1)  # nearest presentation time
        left = np.clip(right - 1, 0, n - 1)
        idx = np.where(np.abs(times[left] - targets) <= np.abs(times[right] - targets), left, right)
        valid = (targets < times[-1] + step) & (targets >= times[0] - step) & (targets < clip_end)
        cache: dict[int, np.ndarray] = {}
        picked = []
        for i, ok in zip(idx, valid):
            if not ok:
                picked.append(None)
                continue
            if i not in cache:
                cache[i], scale = downscale_frame(np.asarray(frames[i]), max_side)
            picked.append(cache[i])
        source_times = np.where(valid, times[idx], np.nan)
    return WindowMedia(start_s, end_s, window_audio, picked, targets, valid, scale, source_times)


def downscale_frame(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A uint8 RGB frame `(H, W, 3)` with its long side at most `max_side`.

    Returns the frame and the factor from its pixels back to the source's (>= 1)."""
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return np.ascontiguousarray(frame), 1.0
    from .faces_fer import resize_image

    tw, th = decode_target_size(w, h, max_side)
    return resize_image(frame, (tw, th)), w / tw


__all__ = [
    "FERMedia",
    "decode_target_size",
    "downscale_frame",
    "require_av",
    "stream_origin_s",
    "MediaInfo",
    "WindowMedia",
    "check_duration",
    "check_media_file",
    "decode_window",
    "frame_timestamps",
    "open_media",
    "plan_windows",
    "probe_frame_timing",
    "probe_media",
    "window_from_arrays",
]
