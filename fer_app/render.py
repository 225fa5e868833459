"""The annotated video: the uploaded clip rendered back with what the model saw and said, frame by frame.

    info = render_annotated_video("clip.mp4", result, "annotated.mp4")   # result: FERClipResult or its to_dict()
    info.frames, info.fps, info.size, info.seconds_taken

Drawn on every output frame at time `t` (seconds from the clip start):
- the tracked face box (interpolated between the sampled frames of the analysis) and the ROI heat map on the face
  (the model's patch scores of the nearest sampled frame, on its crop box);
- the emotion of the window that owns `t` (the one whose centre is nearest, among the windows covering `t`) with a
  probability bar per class; "no clear emotion" when that window's margin is below the threshold;
- a red marker where no face was used (no face found near `t`, or the window ran on audio only) and a grey one
  where the time lies in no analysed window (left out).

The words and bars are laid out from the frame's size and kept off the face (`overlay.plan_overlay`, once per
clip from the face and crop boxes of every sampled frame).

Nothing is recomputed: probabilities, labels, confidence and all times come from the result. The output is H.264
(yuv420p, `+faststart`) with AAC audio in MP4, written with PyAV (no ffmpeg binary), at a reduced size and frame
rate so the cost stays bounded (`benchmarks/bench_render.py` measures it). Frames are timed as the analysis timed
them (`probe_media(...).timing`: by frame order when the video's timestamps are unusable), and the audio is cut at
the clip's duration, so the video lasts as long as the clip whatever the container and audio codec.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from fer_hf.media_fer import probe_media

from . import overlay
from .overlay import EMOTION_COLOURS, LEFT_OUT_RGB, NO_FACE_RGB, hex_to_rgb  # re-exported (older imports)

logger = logging.getLogger("fer_app.render")

MAX_SIDE_PX = 480  # long side of the rendered video
MAX_FPS = 12.0  # the rendered video never has more frames per second than this (nor more than the source)
BOX_GAP_S = 1.0  # the face box is interpolated between sampled frames at most this far apart
NEAREST_FRAME_S = 0.6  # a sampled frame further than this from `t` says nothing about `t`
AUDIO_RATE = 44_100
AUDIO_BITRATE = 64_000


@dataclass
class RenderInfo:
    path: str
    frames: int
    fps: float
    size: tuple[int, int]  # (width, height)
    duration_s: float
    has_audio: bool
    seconds_taken: float


@dataclass
class _Sample:
    """One frame the analysis sampled: where the face was and what the model's ROI scorer made of it."""

    time_s: float
    face_box: tuple | None  # source pixels (x0, y0, x1, y1), None when no face was found or used
    crop_box: tuple | None
    scores: np.ndarray | None  # (grid, grid) in [0, 1], None without ROI scores


def _as_dict(result) -> dict:
    return result if isinstance(result, dict) else result.to_dict()


def _roi_grid(roi: dict | None, k: int) -> np.ndarray | None:
    """Patch scores of sampled frame `k` as a `(grid, grid)` map in [0, 1]; patches the model dropped are 0."""
    if not roi or not roi.get("patch_scores") or k >= len(roi["patch_scores"]):
        return None
    scores = np.asarray(roi["patch_scores"][k], np.float32)
    grid = math.isqrt(scores.size)
    if scores.size == 0 or grid * grid != scores.size:
        return None
    top = roi.get("top_patches")
    if top and k < len(top) and len(top[k]):
        kept = np.zeros(scores.size, bool)
        kept[[int(i) for i in top[k] if 0 <= int(i) < scores.size]] = True
    else:
        kept = np.ones(scores.size, bool)
    values = scores[kept]
    span = float(values.max() - values.min()) if values.size else 0.0
    heat = np.where(kept, (scores - (values.min() if values.size else 0.0)) / (span if span > 0 else 1.0), 0.0)
    return np.clip(heat, 0.0, 1.0).reshape(grid, grid)


def collect_samples(result: dict) -> list[_Sample]:
    """Every sampled frame of every window, sorted by time (one per time; the first window's wins)."""
    by_time: dict[float, _Sample] = {}
    for window in result.get("windows", []):
        video_used = bool(window.get("modalities", {}).get("video", True))
        for k, frame in enumerate(window.get("frames", [])):
            t = round(float(frame["time_s"]), 4)
            if t in by_time:
                continue
            found = bool(frame.get("face_found")) and video_used and frame.get("face_box") is not None
            by_time[t] = _Sample(
                time_s=t,
                face_box=tuple(frame["face_box"]) if found else None,
                crop_box=tuple(frame["crop_box"]) if found and frame.get("crop_box") else None,
                scores=_roi_grid(window.get("roi"), k) if found else None,
            )
    return [by_time[t] for t in sorted(by_time)]


class _Timeline:
    """What to draw at time t, looked up from the result."""

    def __init__(self, result: dict):
        self.labels = list(result["labels"])
        self.windows = sorted(result.get("windows", []), key=lambda w: w["start_s"])
        self.samples = collect_samples(result)
        self.times = [s.time_s for s in self.samples]
        self._layouts: dict[tuple, overlay.OverlayLayout] = {}

    def layout(self, width: int, height: int, scale: float) -> overlay.OverlayLayout:
        """The overlay's layout for frames of `width` x `height` (`scale`: output px per source px), kept off every
        sampled face and crop box; made once per size."""
        key = (width, height, round(scale, 6))
        if key not in self._layouts:
            faces = [tuple(v * scale for v in s.face_box) for s in self.samples if s.face_box is not None]
            crops = [tuple(v * scale for v in s.crop_box) for s in self.samples  # where the heat map goes
                     if s.face_box is not None and s.crop_box is not None]
            self._layouts[key] = overlay.plan_overlay(width, height, self.labels, faces, crops)
        return self._layouts[key]

    def window_at(self, t: float) -> dict | None:
        """The window covering `t` whose centre is nearest to it (None in a left-out span)."""
        covering = [w for w in self.windows if w["start_s"] - 1e-6 <= t <= w["end_s"] + 1e-6]
        if not covering:
            return None
        return min(covering, key=lambda w: abs((w["start_s"] + w["end_s"]) / 2 - t))

    def face_at(self, t: float) -> tuple[tuple | None, _Sample | None]:
        """(face box at `t` in source pixels, the nearest sampled frame); the box is None where no face was used."""
        if not self.samples:
            return None, None
        i = bisect.bisect_left(self.times, t)
        before = self.samples[i - 1] if i > 0 else None
        after = self.samples[i] if i < len(self.samples) else None
        nearest = min((s for s in (before, after) if s is not None), key=lambda s: abs(s.time_s - t))
        if abs(nearest.time_s - t) > NEAREST_FRAME_S or nearest.face_box is None:
            return None, nearest
        if (before is not None and after is not None and before.face_box is not None and after.face_box is not None
                and after.time_s - before.time_s <= BOX_GAP_S and after.time_s > before.time_s):
            a = (t - before.time_s) / (after.time_s - before.time_s)
            box = tuple((1 - a) * p + a * q for p, q in zip(before.face_box, after.face_box))
            return box, nearest
        return nearest.face_box, nearest


# ----------------------------------------------------------------------------------------------------------------
# Drawing (on RGB uint8 frames of the output size)
def _draw_heat(img: np.ndarray, box: tuple, heat: np.ndarray) -> None:
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if cx1 - cx0 < 4 or cy1 - cy0 < 4:
        return
    full = cv2.resize(heat.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    part = full[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    colour = cv2.applyColorMap((part * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]  # BGR -> RGB
    alpha = (0.55 * part)[..., None]
    region = img[cy0:cy1, cx0:cx1].astype(np.float32)
    img[cy0:cy1, cx0:cx1] = (region * (1 - alpha) + colour.astype(np.float32) * alpha).astype(np.uint8)


def annotate_frame(img: np.ndarray, t: float, timeline: _Timeline, scale: float) -> np.ndarray:
    """Draw the annotations for time `t` on `img` (RGB uint8, output size); `scale`: output px per source px."""
    layout = timeline.layout(img.shape[1], img.shape[0], scale)
    window = timeline.window_at(t)
    box, sample = timeline.face_at(t)
    video_used = window is not None and bool(window.get("modalities", {}).get("video", False))
    if box is not None and video_used:
        if sample is not None and sample.scores is not None and sample.crop_box is not None:
            _draw_heat(img, tuple(v * scale for v in sample.crop_box), sample.scores)
        x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
        colour = (255, 255, 255)
        if window is not None and window.get("confident") and window.get("top_label") in timeline.labels:
            colour = overlay.emotion_rgb(timeline.labels, window["top_label"])
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, overlay.box_line_px(img.shape[0]))
        no_face = False
    else:
        overlay.draw_border(img, layout, LEFT_OUT_RGB if window is None else NO_FACE_RGB)
        no_face = window is not None
    overlay.draw_panel(img, layout, window)
    overlay.draw_footer(img, layout, t, no_face=no_face)
    return img


# ----------------------------------------------------------------------------------------------------------------
def _output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    s = min(1.0, max_side / max(width, height))
    return max(2, round(width * s / 2) * 2), max(2, round(height * s / 2) * 2)


def _mux_audio(out, aout, chunks, pts: int, end: int) -> int:
    """Encode resampled audio `chunks` (fltp mono at `AUDIO_RATE`) into `out` with consecutive timestamps from `pts`
    (samples), leaving out every sample from `end` on (the clip's end); returns the next pts."""
    for chunk in chunks:
        keep = min(chunk.samples, end - pts)
        if keep <= 0:
            break
        if keep < chunk.samples:
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.to_ndarray()[:, :keep]), format="fltp",
                                               layout="mono")
            chunk.sample_rate = AUDIO_RATE
        # A resampler hands a frame already in its output format through unchanged, on its source's clock (1 ms
        # ticks in FLV or webm): restate the clock, or the samples count as milliseconds.
        chunk.pts, chunk.time_base = pts, Fraction(1, AUDIO_RATE)
        pts += chunk.samples
        for packet in aout.encode(chunk):
            out.mux(packet)
    return pts


def render_annotated_video(video_path, result, out_path, max_side: int = MAX_SIDE_PX,
                           max_fps: float = MAX_FPS) -> RenderInfo:
    """Render `video_path` with the annotations of `result` into `out_path` (H.264 + AAC in MP4).

    Args:
        video_path: the analysed clip (any container PyAV reads; rotation metadata is applied).
        result: a `FERClipResult` or its `to_dict()` (with `roi` when the heat map is wanted).
        out_path: where to write the `.mp4`.
        max_side, max_fps: bounds of the rendered size and frame rate (cost is about linear in both).
    Raises:
        ValueError: the clip has no video stream (nothing to draw on).
        MediaDecodeError (and the other `FERInputError`s of `probe_media`): the file cannot be read.
    """
    started = time.perf_counter()
    result = _as_dict(result)
    timeline = _Timeline(result)
    media = probe_media(video_path)  # the frame timing and the duration the analysis used
    source = av.open(str(video_path))
    try:
        if not source.streams.video:
            raise ValueError(f"{Path(str(video_path)).name!r} has no video stream to annotate")
        vin = source.streams.video[0]
        vin.thread_type = "AUTO"
        ain = source.streams.audio[0] if source.streams.audio else None
        origin = float(source.start_time) / 1_000_000 if source.start_time and source.start_time > 0 else 0.0
        clock = media.timing.clock(origin)
        src_fps = media.fps or max_fps
        fps = Fraction(min(max_fps, src_fps)).limit_denominator(1001)
        audio_end = round(media.duration_s * AUDIO_RATE)  # samples: the audio stops where the clip ends
        out = av.open(str(out_path), mode="w", format="mp4", options={"movflags": "+faststart"})
        vout = aout = resampler = None
        frames_written, next_index, audio_pts, scale = 0, 0, 0, 1.0
        try:
            streams = [vin] + ([ain] if ain is not None else [])
            for packet in source.demux(*streams):
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as exc:  # one damaged packet: skip it, keep the rest
                    logger.debug("skipping undecodable packet: %s", exc)
                    continue
                for frame in decoded:
                    if packet.stream is vin:
                        t = clock(frame)
                        if t is None:
                            continue
                        if t + 0.5 / src_fps < next_index / float(fps):
                            continue  # between two output frames: dropped (reduced frame rate)
                        rotation = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
                        upright_w, upright_h = ((frame.height, frame.width) if rotation % 2
                                                else (frame.width, frame.height))
                        w, h = _output_size(upright_w, upright_h, max_side)
                        if vout is None:
                            vout = out.add_stream("libx264", rate=fps)
                            vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
                            vout.options = {"preset": "veryfast", "crf": "26", "tune": "fastdecode"}
                            scale = w / upright_w
                            if ain is not None:
                                aout = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
                                aout.bit_rate = AUDIO_BITRATE
                                resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
                        fw, fh = (h, w) if rotation % 2 else (w, h)
                        img = frame.reformat(width=fw, height=fh, format="rgb24").to_ndarray()
                        if rotation:
                            img = np.ascontiguousarray(np.rot90(img, rotation))
                        annotate_frame(img, max(0.0, t), timeline, scale)
                        out_frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                        out_frame.pts = next_index
                        out_frame.time_base = Fraction(1) / fps
                        for out_packet in vout.encode(out_frame):
                            out.mux(out_packet)
                        frames_written += 1
                        next_index = max(next_index + 1, math.floor((t + 0.5 / src_fps) * float(fps)) + 1)
                    elif aout is not None:
                        audio_pts = _mux_audio(out, aout, resampler.resample(frame), audio_pts, audio_end)
        except av.error.FFmpegError as exc:  # a truncated tail: keep what was rendered
            logger.warning("rendering stopped early (%s); the video ends there", exc)
        if vout is None:
            raise ValueError(f"no decodable video frames in {Path(str(video_path)).name!r}")
        for out_packet in vout.encode():
            out.mux(out_packet)
        if aout is not None:
            audio_pts = _mux_audio(out, aout, resampler.resample(None), audio_pts, audio_end)  # resampler's tail
            for out_packet in aout.encode():
                out.mux(out_packet)
        out.close()
    finally:
        source.close()
    info = RenderInfo(
        path=str(out_path), frames=frames_written, fps=float(fps), size=(vout.width, vout.height),
        duration_s=round(next_index / float(fps), 3), has_audio=aout is not None,
        seconds_taken=round(time.perf_counter() - started, 3),
    )
    logger.info("annotated video: %d frames at %.1f fps, %dx%d, %.2f s", info.frames, info.fps, *info.size,
                info.seconds_taken)
    return info


__all__ = ["EMOTION_COLOURS", "LEFT_OUT_RGB", "NO_FACE_RGB", "RenderInfo", "annotate_frame", "collect_samples",
           "hex_to_rgb", "render_annotated_video"]
