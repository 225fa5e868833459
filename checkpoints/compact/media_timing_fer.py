"""When each decoded video frame is shown: the one place that decides it from a file's packets.

    timing, scanned_s = read_frame_timing(container)   # demuxes from the start (no decoding); `probe_media` calls it
    clock = timing.clock(origin_s)                     # one per decoding pass that starts at the file's beginning
    t = clock(frame)                                   # seconds from the clip start, or None (frame left out)

Most files stamp every frame with its presentation time, and a frame is shown at that time. Some muxers and
re-encoders write webm whose video packets carry no usable timestamps (every packet at pts 0, or one constant
value); players then show the frames one after the other at the stream's rate, and so does this module: the
timestamps of the first `TIMING_PACKETS` video packets are checked (`timestamp_problem`), and when they are missing,
constant or not increasing, frame i (in the decoder's output order) is timed at `i / fps`, with `fps` the stream's
nominal rate (else the frame count over the audio's length, else `DEFAULT_FPS`). The decision travels with
`media_fer.MediaInfo.timing` to every decoder (window decoding, the streamed timeline, batch annotation, the app's
annotated video), and `FrameTiming.note` says it in words for the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

TIMING_PACKETS = 64  # video packets (in file order) whose timestamps decide whether the file's can be used
REORDER_PACKETS = 16  # B-frames: a packet may be shown before at most this many packets stored ahead of it
MAX_NOMINAL_FPS = 240.0  # a stated rate above this is a time base (e.g. 1000 for 1 ms ticks), not a frame rate
DEFAULT_FPS = 25.0  # the rate of frames timed by their order when nothing in the file states or implies one


@dataclass(frozen=True)
class FrameTiming:
    """How a video's decoded frames are put on the clip's clock (decided once per file by `read_frame_timing`).

    Attributes:
        by_order: False: each frame at its own presentation timestamp. True: the timestamps are unusable and frame
            i (decoder output order, counted from the start of the file) is shown at `i / fps`.
        fps: the nominal frame rate (None when unknown); with `by_order`, the rate the frames are timed at.
        problem: why the timestamps were not used ("missing", "constant", "not increasing"); None when they were.
    """

    by_order: bool = False
    fps: float | None = None
    problem: str | None = None

    @property
    def note(self) -> str | None:
        """The decision in a person's words when the timestamps were not used, else None."""
        if not self.by_order:
            return None
        return (f"the video's timestamps are unusable ({self.problem}); frames were timed by their order at "
                f"{self.fps:.4g} fps")

    def clock(self, origin_s: float = 0.0) -> FrameClock:
        """A fresh clock for one decoding pass; `origin_s` is the container's start time (subtracted)."""
        return FrameClock(self, origin_s)


class FrameClock:
    """Clip times of the frames one decoding pass yields, in the decoder's output order.

    Timestamps: `frame.time - origin_s` (None for a frame without a time: leave it out). By order: the pass must
    start at the beginning of the file (never after a seek), and the i-th frame it decodes is at `i / fps`.
    """

    def __init__(self, timing: FrameTiming, origin_s: float = 0.0):
        self.timing, self.origin_s, self.count = timing, float(origin_s), 0

    def __call__(self, frame) -> float | None:
        index = self.count
        self.count += 1
        if self.timing.by_order:
            return index / self.timing.fps
        return None if frame.time is None else float(frame.time) - self.origin_s


def timestamp_problem(stamps: list) -> str | None:
    """Why a video's packet timestamps cannot time its frames, or None when they can.

    Args:
        stamps: the timestamps (pts, else dts; None when a packet has neither) of the first video packets, in file
            order. B-frames make them jump back by up to `REORDER_PACKETS` packets; that is not a problem.
    Returns:
        "missing" (no packet has one), "constant" (all the same), "not increasing" (more than a quarter repeat an
        earlier value or lie behind packets stored further back than reordering allows), or None.
    """
    known = [s for s in stamps if s is not None]
    if stamps and not known:
        return "missing"
    if len(known) < 2:
        return None
    if len(set(known)) == 1:
        return "constant"
    behind = len(known) - len(set(known))  # repeats
    running = None  # the largest timestamp stored more than REORDER_PACKETS packets earlier
    for i in range(REORDER_PACKETS, len(known)):
        old = known[i - REORDER_PACKETS]
        running = old if running is None else max(running, old)
        behind += known[i] < running
    return "not increasing" if behind * 4 > len(known) else None


def _plausible_rate(rate) -> float | None:
    value = float(rate) if rate else 0.0
    return value if 0.0 < value <= MAX_NOMINAL_FPS else None


def read_frame_timing(container) -> tuple[FrameTiming, float | None]:
    """Decide how the first video stream's frames are timed; demuxes `container` from its current position (open it
    fresh) without decoding.

    Returns:
        (timing, scanned_s): `scanned_s` is None when the timestamps are usable (only the first `TIMING_PACKETS`
        video packets were read); otherwise every packet was read, and it is the clip's length on the corrected
        clock: the longer of the video (frames / fps) and the audio (end of its last packet), in seconds.
    """
    if not container.streams.video:
        return FrameTiming(), None
    vstream = container.streams.video[0]
    astream = container.streams.audio[0] if container.streams.audio else None
    nominal = _plausible_rate(vstream.average_rate)
    origin = container.start_time / 1_000_000 if container.start_time and container.start_time > 0 else 0.0
    stamps, frames, audio_start, audio_end, problem = [], 0, None, None, None
    try:
        for packet in container.demux(*[s for s in (vstream, astream) if s is not None]):
            if packet.size == 0:  # the flush packet at the end of each stream
                continue
            if packet.stream is vstream:
                frames += 1
                if len(stamps) < TIMING_PACKETS:
                    stamps.append(packet.pts if packet.pts is not None else packet.dts)
                    if len(stamps) == TIMING_PACKETS:
                        problem = timestamp_problem(stamps)
                        if problem is None:
                            return FrameTiming(fps=nominal), None
            elif packet.pts is not None and packet.time_base is not None:
                start = float(packet.pts * packet.time_base) - origin
                audio_start = start if audio_start is None else min(audio_start, start)
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base) - origin
                audio_end = end if audio_end is None else max(audio_end, end)
    except Exception as exc:  # noqa: BLE001 - a truncated or damaged tail: decide on what was read
        logger.debug("timestamp scan stopped early: %s", exc)
    problem = problem or timestamp_problem(stamps)
    if problem is None:
        return FrameTiming(fps=nominal), None
    audio_s = max(0.0, audio_end - max(0.0, audio_start)) if audio_end is not None else None
    fps = (nominal or (_plausible_rate(frames / audio_s) if audio_s else None)
           or _plausible_rate(vstream.guessed_rate) or DEFAULT_FPS)
    timing = FrameTiming(by_order=True, fps=fps, problem=problem)
    logger.info("%s: %s", getattr(container, "name", "video"), timing.note)
    return timing, max(frames / fps, audio_end or 0.0)


__all__ = [
    "DEFAULT_FPS",
    "FrameClock",
    "FrameTiming",
    "read_frame_timing",
    "timestamp_problem",
]
