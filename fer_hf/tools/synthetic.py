"""A small synthetic RAVDESS-named dataset for smoke tests and the training benchmark.

`python -m fer_hf.tools.synthetic --out DIR` writes `DIR/Actor_XX/01-01-EE-II-SS-RR-AA.mp4` files: real
H.264 + AAC mp4s (PyAV) whose content depends on the class so a model can learn it, and on the actor
so that held-out actors are a real generalisation test:

- video: the face of scikit-image's `astronaut()` photo (a real face, so the face detector finds it)
  composited on an actor-specific background at an actor-specific position and scale, with a
  class-specific colour tint and brightness over the face, a mouth-region bar that opens and closes at a
  class-specific rate, and a class-specific horizontal sway;
- audio: a harmonic tone whose pitch (a 1.25x step per class, shifted a few percent per actor) and on/off
  rate depend on the class, plus white noise. The slow switching matters: the mel features are normalised
  per mel bin over time, which would flatten a steady tone.

It also writes `folds.json` (consecutive actors split into `--folds` folds) for `--folds` of the train CLI, and
the marker `SYNTHETIC_DATASET.json` (`ravdess.SYNTHETIC_MARKER`: the generator and its settings), from which the
index, the results JSON, the model's provenance record and its card all know the set is synthetic, not RAVDESS.

`--modalities 1 2 3` also writes each recording's video-only mp4 (`02-...mp4`, no audio stream) and audio-only
wav (`03-...wav`, 48 kHz 16-bit mono), as RAVDESS ships them: the same frames and the same sound as the 01 file.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import logging
import os
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .ravdess import SYNTHETIC_MARKER

logger = logging.getLogger(__name__)

NUM_CLASSES = 8
AUDIO_RATE = 48_000  # Hz, as in RAVDESS (the processor resamples to 16 kHz)
AAC_FRAME = 1024  # samples per AAC frame
# Face region of skimage.data.astronaut(): rows 20-250, cols 120-330; the face box inside it.
_HEAD_ROWS, _HEAD_COLS = (20, 250), (120, 330)
_MOUTH_CENTRE = (105, 131)  # (x, y) in head-crop pixels
# One hue per class (45 degrees apart on the colour wheel), RGB; neighbouring hues also differ in brightness.
CLASS_TINTS = np.array(
    [[255, 0, 0], [255, 191, 0], [128, 255, 0], [0, 255, 64], [0, 255, 255], [0, 64, 255], [128, 0, 255],
     [255, 0, 191]], np.float32,
)
CLASS_BRIGHTNESS = np.array([0.85, 1.15] * 4)
TINT_ALPHA = 0.4


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Sizes in pixels, times in seconds."""

    num_actors: int = 8
    clips_per_class: int = 3
    seconds: tuple[float, float] = (2.0, 3.0)
    width: int = 320
    height: int = 240
    fps: int = 25
    num_folds: int = 4
    seed: int = 0
    modalities: tuple[int, ...] = (1,)  # RAVDESS modality codes to write: 1 audio-video, 2 video-only, 3 audio-only


def _head() -> np.ndarray:
    from skimage import data

    return data.astronaut()[_HEAD_ROWS[0]:_HEAD_ROWS[1], _HEAD_COLS[0]:_HEAD_COLS[1]].copy()  # (230, 210, 3)


def clip_names(spec: SyntheticSpec, actor: int) -> list[tuple[str, int]]:
    """`[(name, class_index), ...]` for one actor: 8 classes x `clips_per_class` distinct RAVDESS names."""
    names = []
    for cls in range(NUM_CLASSES):
        # Neutral has no strong intensity, so it only has the 4 statement x repetition combinations.
        combos = [(i, s, r) for i in (1, 2) for s in (1, 2) for r in (1, 2) if not (cls == 0 and i == 2)]
        if spec.clips_per_class > len(combos):
            raise ValueError(f"clips_per_class must be at most {len(combos)}, got {spec.clips_per_class}")
        order = [combos[(k * 3) % len(combos)] for k in range(len(combos))]  # mix intensities early
        for intensity, statement, repetition in sorted(set(order[: spec.clips_per_class])):
            names.append((f"01-01-{cls + 1:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}", cls))
    return names


@functools.lru_cache(maxsize=32)  # one style per actor, shared by all of its clips (read-only)
def _actor_style(actor: int, spec: SyntheticSpec) -> dict:
    rng = np.random.default_rng([spec.seed, actor, 7])
    h, w = spec.height, spec.width
    # Background: a diagonal gradient between two random colours plus a few soft blobs.
    c0, c1 = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)
    t = (np.linspace(0, 1, w)[None, :] * 0.6 + np.linspace(0, 1, h)[:, None] * 0.4)[..., None]
    bg = (1 - t) * c0 + t * c1  # (h, w, 3)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(15, 60)
        yy, xx = np.mgrid[0:h, 0:w]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))[..., None]
        bg = bg * (1 - 0.5 * blob) + rng.uniform(0, 255, 3) * 0.5 * blob
    scale = rng.uniform(0.75, 0.95) * h / 240
    return dict(
        background=bg.astype(np.float32),
        scale=scale,
        offset=(rng.uniform(-0.12, 0.12) * w, rng.uniform(-0.06, 0.06) * h),
        gain=rng.uniform(0.95, 1.05),
        pitch=1.0 + rng.uniform(-0.04, 0.04),
    )


def render_frames(cls: int, style: dict, spec: SyntheticSpec, num_frames: int, rng) -> np.ndarray:
    """uint8 `(num_frames, height, width, 3)` RGB frames of one clip."""
    head = _head().astype(np.float32)
    tint = CLASS_TINTS[cls]
    head = (head * (1 - TINT_ALPHA) + tint * TINT_ALPHA) * (CLASS_BRIGHTNESS[cls] * style["gain"])
    hh, hw = round(head.shape[0] * style["scale"]), round(head.shape[1] * style["scale"])
    head = cv2.resize(np.clip(head, 0, 255), (hw, hh), interpolation=cv2.INTER_AREA)
    mx, my = (round(_MOUTH_CENTRE[0] * style["scale"]), round(_MOUTH_CENTRE[1] * style["scale"]))
    bar_w = max(4, round(24 * style["scale"]))
    mouth_rate = 0.8 + 0.45 * cls  # Hz
    sway_amp = 2.0 + 1.5 * (cls % 4)  # px
    phase = rng.uniform(0, 2 * np.pi)
    # Elliptical alpha mask so the head blends into the background.
    yy, xx = np.mgrid[0:hh, 0:hw]
    alpha = np.clip(1.6 - np.hypot((xx - hw / 2) / (hw / 2), (yy - hh / 2) / (hh / 2)) * 1.2, 0, 1)[..., None]
    alpha = alpha.astype(np.float32)
    # Sensor noise: a few fixed noise frames cycled (drawing fresh noise per frame dominated the run time).
    noise = rng.normal(0, 2.0, (4, spec.height, spec.width, 3)).astype(np.float32)
    frames = np.empty((num_frames, spec.height, spec.width, 3), np.uint8)
    for f in range(num_frames):
        t = f / spec.fps
        canvas = style["background"].copy()
        x0 = round(spec.width / 2 - hw / 2 + style["offset"][0] + sway_amp * np.sin(2 * np.pi * 0.7 * t + phase))
        y0 = round(spec.height / 2 - hh / 2 + style["offset"][1])
        face = head.copy()
        opening = 0.5 + 0.5 * np.sin(2 * np.pi * mouth_rate * t + phase)  # 0..1
        bar_h = max(1, round((1 + 7 * opening) * style["scale"]))
        colour = (90.0, 20.0, 30.0) if cls % 2 == 0 else (235.0, 225.0, 215.0)  # dark lips or teeth
        cv2.ellipse(face, (mx, my), (bar_w // 2, bar_h), 0, 0, 360, colour, -1)
        # Paste with clipping at the frame border.
        ys, xs = max(0, y0), max(0, x0)
        ye, xe = min(spec.height, y0 + hh), min(spec.width, x0 + hw)
        if ye > ys and xe > xs:
            sub = (slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))
            a = alpha[sub]
            canvas[ys:ye, xs:xe] += (face[sub] - canvas[ys:ye, xs:xe]) * a
        canvas += noise[f % len(noise)]
        np.clip(canvas, 0, 255, out=canvas)
        frames[f] = canvas
    return frames


def render_audio(cls: int, style: dict, seconds: float, rng) -> np.ndarray:
    """float32 `(round(seconds * 48000),)` mono waveform in [-1, 1].

    A harmonic tone (f0 = 300 Hz x 1.25^class, shifted a few percent per actor, plus its octave) switched on and
    off slowly (0.6 + 0.1 x class Hz, random phase) over white noise. The slow switching matters: the mel features
    are normalised per mel bin over time, which turns a steady tone into noise; a tone that is on for several
    hundred milliseconds at a time stays visible in every 375 ms segment the model pools.
    """
    n = round(seconds * AUDIO_RATE)
    t = np.arange(n) / AUDIO_RATE
    f0 = 300.0 * 1.25**cls * style["pitch"]
    gate_hz = 0.6 + 0.1 * cls
    gate = (np.sin(2 * np.pi * gate_hz * t + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float32)
    ramp = np.hanning(481)  # 10 ms ramps: no clicks
    gate = np.convolve(gate, ramp / ramp.sum(), mode="same")
    tone = np.sin(2 * np.pi * f0 * t) + 0.4 * np.sin(2 * np.pi * 2 * f0 * t)
    sig = 0.6 * gate * tone + rng.normal(0, 0.05, n)
    return (0.4 * sig / np.max(np.abs(sig))).astype(np.float32)


def encode_clip(
    path: str | os.PathLike,
    frames=None,
    fps: float = 25,
    audio: np.ndarray | None = None,
    sample_rate: int = AUDIO_RATE,
    container: str | None = None,
    video_codec: str | None = None,
    audio_codec: str | None = None,
    video_options: dict | None = None,
    audio_bit_rate: int | None = None,
    frame_times_s=None,
    faststart: bool = False,
    live: bool = False,
) -> int:
    """The project's one clip writer (tests, the synthetic set, the examples): encode RGB frames and audio with PyAV.

    Args:
        path: output file; the container comes from its suffix ("mp4", "webm", "ts") unless `container` is given.
        frames: uint8 RGB frames `(H, W, 3)` (an array `(F, H, W, 3)` or any iterable), or None for audio only.
        fps: nominal frame rate; frame i is at i / fps unless `frame_times_s` gives each frame's time (variable
            frame rate, written with a 1 ms time base).
        audio: float waveform in [-1, 1], `(n,)` mono or `(channels, n)` (1 or 2 channels), or None (no stream).
        sample_rate: audio rate in Hz (Opus needs 48 kHz).
        video_codec, audio_codec: default libx264 / aac (mp4, ts) and libvpx / libopus (webm).
        video_options: encoder options (default: libx264 ultrafast crf 20; libvpx realtime 1 Mb/s).
        audio_bit_rate: audio bits per second (encoder default when None).
        faststart: mp4 index (moov) at the front; live: webm without duration or cues, as browsers record.

    Returns: the file size in bytes.
    """
    path = Path(path)
    container = container or {"ts": "mpegts"}.get(path.suffix.lstrip(".").lower(), path.suffix.lstrip(".").lower())
    options = {}
    if container == "mp4" and faststart:
        options["movflags"] = "+faststart"
    if container == "webm" and live:
        options["live"] = "1"
    frames_iter = iter(frames) if frames is not None else iter(())
    first = next(frames_iter, None)
    with av.open(str(path), mode="w", format=container, options=options) as out:
        vstream = astream = None
        if first is not None:
            vcodec = video_codec or ("libvpx" if container == "webm" else "libx264")
            vstream = out.add_stream(vcodec, rate=Fraction(fps).limit_denominator(1001))
            vstream.height, vstream.width = np.asarray(first).shape[:2]
            vstream.pix_fmt = "yuv420p"
            defaults = ({"preset": "ultrafast", "crf": "20"} if vcodec == "libx264"
                        else {"deadline": "realtime", "cpu-used": "8", "b": "1M"} if vcodec.startswith("libvpx")
                        else {})
            vstream.options = dict(video_options if video_options is not None else defaults)
            if frame_times_s is not None:
                vstream.codec_context.time_base = Fraction(1, 1000)
        signal = None
        if audio is not None:
            signal = np.asarray(audio, np.float32)
            signal = np.ascontiguousarray(signal[None] if signal.ndim == 1 else signal)  # (channels, n)
            layout = "stereo" if signal.shape[0] == 2 else "mono"
            acodec = audio_codec or ("libopus" if container == "webm" else "aac")
            astream = out.add_stream(acodec, rate=sample_rate, layout=layout)
            if audio_bit_rate:
                astream.bit_rate = int(audio_bit_rate)
        if vstream is not None:
            for i, rgb in enumerate(itertools.chain([first], frames_iter)):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24")
                if frame_times_s is not None:
                    frame.pts, frame.time_base = round(float(frame_times_s[i]) * 1000), Fraction(1, 1000)
                else:
                    frame.pts = i
                out.mux(vstream.encode(frame))
            out.mux(vstream.encode())
        if astream is not None:
            chunk = astream.codec_context.frame_size or AAC_FRAME
            for start in range(0, signal.shape[1], chunk):
                piece = np.ascontiguousarray(signal[:, start:start + chunk])
                aframe = av.AudioFrame.from_ndarray(piece, format="fltp", layout=layout)
                aframe.sample_rate, aframe.pts, aframe.time_base = sample_rate, start, Fraction(1, sample_rate)
                out.mux(astream.encode(aframe))
            out.mux(astream.encode())
    return path.stat().st_size


def write_clip(path: str | os.PathLike, cls: int, actor: int, seconds: float, spec: SyntheticSpec, rng) -> None:
    """Render and encode one clip of class index `cls` in the style of `actor` (H.264 + AAC mp4)."""
    style = _actor_style(actor, spec)
    frames = render_frames(cls, style, spec, max(1, round(seconds * spec.fps)), rng)
    encode_clip(path, frames, spec.fps, render_audio(cls, style, seconds, rng), AUDIO_RATE, container="mp4")


def write_wav(path: str | os.PathLike, audio: np.ndarray, rate: int = AUDIO_RATE) -> None:
    """`audio` float32 `(n,)` in [-1, 1] as a 16-bit mono PCM wav (RAVDESS's audio-only format)."""
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm.tobytes())


def _write_clip(job: tuple[str, int, str, int, SyntheticSpec]) -> str:
    """One file of the dataset (atomic rename, so an interrupted run leaves no half-written file).

    The random stream is seeded by the recording (the 01 name), so a recording's 02 mp4 and 03 wav hold the same
    frames and sound as its 01 mp4.
    """
    path, actor, name, cls, spec = job
    modality = int(name[:2])
    recording = "01" + name[2:]
    rng = np.random.default_rng([spec.seed, actor, int(recording.replace("-", ""))])
    seconds = float(rng.uniform(*spec.seconds))
    suffix = Path(path).suffix
    tmp = Path(path).with_name(name + ".part" + suffix)
    if modality == 1:
        write_clip(tmp, cls, actor, seconds, spec, rng)
    else:  # the same draws, in the same order, as write_clip
        style = _actor_style(actor, spec)
        frames = render_frames(cls, style, spec, max(1, round(seconds * spec.fps)), rng)
        audio = render_audio(cls, style, seconds, rng)
        if modality == 2:
            encode_clip(tmp, frames, spec.fps, None, container="mp4")
        else:
            write_wav(tmp, audio)
    os.replace(tmp, path)
    return path


def generate(
    out_dir: str | os.PathLike, spec: SyntheticSpec = SyntheticSpec(), progress: bool = False, workers: int = 1
) -> list[Path]:
    """Write the dataset and `folds.json` under `out_dir` with `workers` processes.

    Existing clips are kept (resumable); the content is a function of `spec` only (seeded per clip).
    Returns the clip paths.
    """
    if spec.num_actors < 1 or spec.num_actors > 24:
        raise ValueError(f"num_actors must be in 1-24, got {spec.num_actors}")
    if not 1 <= spec.num_folds <= spec.num_actors:
        raise ValueError(f"num_folds must be in 1-{spec.num_actors} (the number of actors), got {spec.num_folds}")
    if not spec.modalities or set(spec.modalities) - {1, 2, 3}:
        raise ValueError(f"modalities must be RAVDESS modality codes among 1, 2, 3, got {spec.modalities}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    marker = {"dataset": "synthetic", "generator": "fer_hf.tools.synthetic",
              "note": "generated clips with RAVDESS-style names; not RAVDESS", "spec": dataclasses.asdict(spec)}
    (out / SYNTHETIC_MARKER).write_text(json.dumps(marker, indent=1))
    paths, todo = [], []
    for actor in range(1, spec.num_actors + 1):
        (out / f"Actor_{actor:02d}").mkdir(parents=True, exist_ok=True)
        for name01, cls in clip_names(spec, actor):
            for modality in sorted(set(spec.modalities)):
                name = f"{modality:02d}{name01[2:]}"
                path = out / f"Actor_{actor:02d}" / f"{name}{'.wav' if modality == 3 else '.mp4'}"
                paths.append(path)
                if not (path.exists() and path.stat().st_size > 0):
                    todo.append((str(path), actor, name, cls, spec))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="synthetic clips", unit="clip", disable=not progress)
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        # fork: the workers only use numpy, OpenCV and PyAV (no torch), and skip re-importing the package.
        with mp.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_clip, todo, chunksize=2):
                bar.update()
    else:
        for job in todo:
            _write_clip(job)
            bar.update()
    bar.close()
    folds = [a.tolist() for a in np.array_split(np.arange(1, spec.num_actors + 1), spec.num_folds)]
    (out / "folds.json").write_text(json.dumps({"folds": folds}))
    logger.info("wrote %d synthetic clips (%d new) of %d actors to %s", len(paths), len(todo), spec.num_actors, out)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fer-synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--actors", type=int, default=SyntheticSpec.num_actors, help="number of actors (1-24)")
    parser.add_argument("--clips-per-class", type=int, default=SyntheticSpec.clips_per_class,
                        help="clips per class and actor (1-4)")
    parser.add_argument("--min-seconds", type=float, default=SyntheticSpec.seconds[0])
    parser.add_argument("--max-seconds", type=float, default=SyntheticSpec.seconds[1])
    parser.add_argument("--width", type=int, default=SyntheticSpec.width)
    parser.add_argument("--height", type=int, default=SyntheticSpec.height)
    parser.add_argument("--fps", type=int, default=SyntheticSpec.fps)
    parser.add_argument("--folds", type=int, default=SyntheticSpec.num_folds, help="folds written to folds.json")
    parser.add_argument("--seed", type=int, default=SyntheticSpec.seed)
    parser.add_argument("--modalities", type=int, nargs="+", choices=(1, 2, 3), default=[1],
                        help="RAVDESS files to write per recording: 1 audio-video mp4, 2 video-only mp4, 3 audio-only "
                             "wav (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = SyntheticSpec(args.actors, args.clips_per_class, (args.min_seconds, args.max_seconds), args.width,
                         args.height, args.fps, args.folds, args.seed, tuple(args.modalities))
    generate(args.out, spec, progress=True, workers=args.workers)


if __name__ == "__main__":
    main()


__all__ = ["SyntheticSpec", "clip_names", "generate", "render_audio", "render_frames", "encode_clip",
           "write_clip", "write_wav"]
