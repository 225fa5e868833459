"""Generate test media with the project's one clip writer (`fer_hf.tools.synthetic.encode_clip`, PyAV); no files
are shipped with the tests, nothing is downloaded.

    info = make_clip(tmp_path / "a.mp4", seconds=2, fps=30, size=(1280, 720), audio="tone",
                     sample_rate=48000, channels=2, face_image=astronaut_face(), face_box=(400, 150, 780, 530))
    info["face_box"]      # where the face (Haar-style box) really is, in video pixels

Frames: a background ("noise", "plain" or "gradient"), a bar moving across the bottom (frames differ),
optionally a face image pasted at `face_box`, and the frame index (mod 256) written into two grey blocks at the
top left, one hex digit each as level 16 * digit + 8 (read it back with `frame_index_of`, also after downscaling).
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

from fer_hf.tools.synthetic import encode_clip

# Face box of the Haar frontal-face cascade on skimage's `data.astronaut()` (512 x 512): x0, y0, x1, y1.
ASTRONAUT_FACE_BOX = (177, 66, 272, 161)
# The region `astronaut_face()` cuts out of that image (x0, y0, x1, y1): the face with hair and chin around it.
ASTRONAUT_CROP = (132, 20, 317, 205)


def astronaut_face() -> np.ndarray:
    """uint8 RGB `(185, 185, 3)`: the astronaut's head from scikit-image, cut at `ASTRONAUT_CROP`."""
    from skimage import data

    x0, y0, x1, y1 = ASTRONAUT_CROP
    return np.ascontiguousarray(data.astronaut()[y0:y1, x0:x1])


def expected_face_box(face_box: tuple) -> tuple:
    """Where the astronaut's Haar face box lands when `astronaut_face()` is pasted into `face_box` (x0, y0, x1, y1)."""
    cx0, cy0, cx1, cy1 = ASTRONAUT_CROP
    sx = (face_box[2] - face_box[0]) / (cx1 - cx0)
    sy = (face_box[3] - face_box[1]) / (cy1 - cy0)
    fx0, fy0, fx1, fy1 = ASTRONAUT_FACE_BOX
    return (face_box[0] + (fx0 - cx0) * sx, face_box[1] + (fy0 - cy0) * sy,
            face_box[0] + (fx1 - cx0) * sx, face_box[1] + (fy1 - cy0) * sy)


def iou(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def frame_index_of(frame_rgb: np.ndarray) -> int:
    """The frame index (mod 256) written by `make_clip` at the top left (survives lossy coding and downscaling)."""
    block = _index_block(frame_rgb.shape[1])
    high = round((float(frame_rgb[2:6, 2:6].mean()) - 8) / 16)
    low = round((float(frame_rgb[2:6, block + 2: block + 6].mean()) - 8) / 16)
    return (min(15, max(0, high)) * 16 + min(15, max(0, low))) % 256


def _index_block(width: int) -> int:
    """Side of the frame-index blocks for a frame `width` wide as decoded (same rule at any scale)."""
    return max(8, width // 40)


def _background(kind: str, size: tuple, rng: np.random.Generator) -> np.ndarray:
    w, h = size
    if kind == "noise":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "plain":
        return np.full((h, w, 3), 90, np.uint8)
    if kind == "gradient":
        x = np.linspace(40, 200, w, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 40, h, dtype=np.float32)[:, None, None]
        return np.broadcast_to(x + y, (h, w, 3)).astype(np.uint8)
    raise ValueError(f"unknown background {kind!r}")


def _audio_signal(audio, seconds: float, sample_rate: int, channels: int, rng) -> np.ndarray:
    """float32 `(channels, n)`."""
    n = round(seconds * sample_rate)
    if isinstance(audio, np.ndarray):
        sig = audio.astype(np.float32)
        sig = np.tile(sig[None], (channels, 1)) if sig.ndim == 1 else sig
        return np.ascontiguousarray(sig)
    t = np.arange(n) / sample_rate
    if audio == "tone":  # a 220 Hz voice-like tone with harmonics and a 4 Hz syllable envelope
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
        mono = env * (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t))
        mono += 0.01 * rng.standard_normal(n)
    elif audio == "silence":
        mono = np.zeros(n)
    elif audio == "noise":
        mono = 0.1 * rng.standard_normal(n)
    else:
        raise ValueError(f"unknown audio {audio!r}")
    return np.tile(mono.astype(np.float32)[None], (channels, 1))


def make_clip(
    path,
    seconds: float = 2.0,
    fps: float = 30,
    size: tuple = (320, 240),
    audio="tone",
    sample_rate: int = 48000,
    channels: int = 2,
    container: str | None = None,
    video_codec: str | None = None,
    audio_codec: str | None = None,
    vfr: bool = False,
    face_image: np.ndarray | None = None,
    face_box: tuple | None = None,
    face_spans: list[tuple[float, float]] | None = None,
    background: str = "gradient",
    video: bool = True,
    faststart: bool = False,
    live: bool = False,
    seed: int = 0,
) -> dict:
    """Write a test clip and describe it.

    Args:
        path: output file; the container is taken from its suffix unless `container` ("mp4" | "webm") is given.
        seconds, fps, size: length, nominal frame rate and `(width, height)` of the video.
        audio: "tone", "silence", "noise", a float array `(n,)` / `(channels, n)` in [-1, 1], or None (no stream).
        sample_rate, channels: audio stream format (AAC in mp4, Opus in webm; Opus needs 48 kHz).
        video_codec, audio_codec: override the defaults (libx264 / aac for mp4, libvpx (VP8) / libopus for webm;
            e.g. "libvpx-vp9").
        vfr: irregular frame intervals (20-70 ms) instead of `1 / fps`; timestamps in ms.
        face_image: uint8 RGB image pasted into every frame at `face_box` (x0, y0, x1, y1), resized to fit;
            without `face_box` it is centred, 60 % of the frame height.
        face_spans: `[(start_s, end_s), ...]`: paste the face only in frames whose time lies in one of them
            (None: in every frame); e.g. a person who leaves the frame.
        background: "gradient", "plain" or "noise" (static random noise).
        video: False writes an audio-only file.
        faststart: mp4 with the index (moov) at the front, so a truncated copy still opens.
        live: webm written as a live stream: no duration and no cues in the file (like a browser recording).

    Returns: dict with path, frame_times_s (presentation time of each written frame), face_box (the expected
        Haar face box when `face_image` is the astronaut), paste_box, duration_s.
    """
    import cv2

    path = Path(path)
    rng = np.random.default_rng(seed)
    frame_times, frames = [], None
    if video:
        if vfr:
            intervals = rng.uniform(0.020, 0.070, int(seconds / 0.02) + 2)
            times = np.concatenate([[0.0], np.cumsum(intervals)])
            frame_times = [float(t) for t in times if t < seconds]
        else:
            frame_times = [i / fps for i in range(round(seconds * fps))]
        base = _background(background, size, rng)
        paste = None
        if face_image is not None:
            if face_box is None:  # default: centred, 60 % of the frame height
                w, h = size
                side = int(0.6 * min(w, h))
                face_box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
            x0, y0, x1, y1 = (int(v) for v in face_box)
            paste = cv2.resize(face_image, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        frames = _frames(base, paste, face_box, frame_times, face_spans)
    signal = _audio_signal(audio, seconds, sample_rate, channels, rng) if audio is not None else None
    codec = video_codec or ("libvpx" if (container or path.suffix.lstrip(".")) == "webm" else "libx264")
    x264 = {"preset": "ultrafast", "crf": "23"} if codec == "libx264" else None
    encode_clip(path, frames, fps, signal, sample_rate, container=container, video_codec=video_codec,
                audio_codec=audio_codec, video_options=x264,
                frame_times_s=frame_times if vfr else None, faststart=faststart, live=live)
    info = {"path": str(path), "frame_times_s": frame_times, "duration_s": seconds, "paste_box": face_box,
            "face_box": expected_face_box(face_box) if face_image is not None and face_box is not None else None}
    return info


def _frames(base: np.ndarray, paste: np.ndarray | None, face_box, frame_times, face_spans=None):
    """Yield the clip's frames: background, pasted face (only inside `face_spans` when given), a moving bar,
    the frame index in two grey blocks."""
    h, w = base.shape[:2]
    block = _index_block(w)
    for i, t in enumerate(frame_times):
        img = base.copy()
        if paste is not None and (face_spans is None or any(a <= t < b for a, b in face_spans)):
            x0, y0, x1, y1 = (int(v) for v in face_box)
            img[y0:y1, x0:x1] = paste
        bar_x = int((i * 7) % max(1, w - 16))
        img[h - 12: h - 4, bar_x: bar_x + 16] = (255, 0, 0)
        img[0:block, 0:block] = (i // 16 % 16) * 16 + 8  # frame index, high digit
        img[0:block, block:2 * block] = (i % 16) * 16 + 8  # low digit
        yield img


def set_mp4_rotation(path, degrees: int) -> str:
    """Write a display matrix into the video track header (tkhd) of an mp4: players turn the picture `degrees`
    clockwise, as for a phone held upright (PyAV cannot write this side data itself)."""
    import struct

    data = bytearray(Path(path).read_bytes())
    sin, cos = round(np.sin(np.radians(degrees))), round(np.cos(np.radians(degrees)))
    pos = 0
    while (i := data.find(b"tkhd", pos)) > 0:
        body = i + 4
        times = 8 + 8 + 4 + 4 + 8 if data[body] == 1 else 4 + 4 + 4 + 4 + 4  # version 1 has 64-bit times
        matrix = body + 4 + times + 8 + 2 + 2 + 2 + 2  # after reserved, layer, group, volume, reserved
        width = struct.unpack(">I", data[matrix + 36: matrix + 40])[0]
        if width:  # the video track (audio tracks have no size)
            def fixed(v):
                return struct.pack(">i", int(v * 65536))

            data[matrix: matrix + 36] = (fixed(cos) + fixed(sin) + struct.pack(">i", 0) + fixed(-sin) + fixed(cos)
                                         + struct.pack(">i", 0) + struct.pack(">iii", 0, 0, 1 << 30))
            Path(path).write_bytes(bytes(data))
            return str(path)
        pos = i + 4
    raise ValueError(f"no video track header in {path}")


def restamp_video(src, dst, pts: int = 0, rate: float | None = None) -> str:
    """Copy a webm clip (VP8 / VP9 video, no re-encoding) with every video packet stamped `pts` (1 ms ticks), as
    some muxers and re-encoders write webm; the audio is copied as it is.

    `rate`: the frame rate the header states (Matroska's default frame duration; needs PyAV's `add_mux_stream`),
    else the file states none and a reader can only infer it.
    """
    import av

    with av.open(str(src)) as source, av.open(str(dst), mode="w", format="webm") as out:
        vin, ain = source.streams.video[0], source.streams.audio[:1]
        if rate is not None:  # a stream without codec context: the muxer takes its rate from here
            vout = out.add_mux_stream(vin.codec_context.name, rate=Fraction(rate).limit_denominator(1001),
                                      width=vin.width, height=vin.height)
        else:
            vout = out.add_stream_from_template(vin)
        mapping = {vin.index: vout, **{a.index: out.add_stream_from_template(a) for a in ain}}
        for packet in source.demux(vin, *ain):
            if packet.size == 0:  # the flush packet at the end of each stream
                continue
            if packet.stream is vin:
                packet.pts = packet.dts = pts
                packet.duration = 0
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)
    return str(dst)


def make_truncated_copy(src, dst, keep_fraction: float = 0.5) -> str:
    """Copy the first `keep_fraction` of a file's bytes (a download cut short)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep_fraction)])
    return str(dst)


def make_image_file(path, size=(64, 48)) -> str:
    """A PNG image written under `path` (give it a video suffix to fake a video)."""
    import cv2

    ok, buf = cv2.imencode(".png", np.full((size[1], size[0], 3), 128, np.uint8))
    assert ok
    Path(path).write_bytes(buf.tobytes())
    return str(path)


def make_text_file(path, text: str = "this is not a video\n" * 40) -> str:
    Path(path).write_text(text)
    return str(path)


def make_empty_file(path) -> str:
    Path(path).write_bytes(b"")
    return str(path)


def copy_as(src, dst) -> str:
    shutil.copyfile(src, dst)
    return os.fspath(dst)
