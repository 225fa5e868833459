"""Generate the example clips the app offers (small files the repository may legally ship).

    python examples/make_examples.py            # writes examples/*.mp4 (needs PyAV, OpenCV, scikit-image)

Pictures: scikit-image's `astronaut` (Eileen Collins, NASA: public domain) and `coffee` (Rachel Michetti: CC0),
panned and zoomed slowly so the frames differ. Sound: a synthetic voice (harmonics of a varying pitch shaped by
vowel formants, in syllables and pauses): no recording of a person. Nothing is downloaded. The output is
deterministic for a given library version; each file stays under 300 KB.

These clips show the pipeline and the app's messages (audio + face, audio only, face only, a timeline);
they carry no emotion label and an untrained or trained model's answer on them means nothing in particular.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: the repository root
from fer_hf.tools.synthetic import encode_clip  # noqa: E402

logger = logging.getLogger("make_examples")
HERE = Path(__file__).resolve().parent
SIZE = (480, 360)  # width, height
FPS = 25
AUDIO_RATE = 48_000
MAX_BYTES = 300_000

# First three formants (Hz) of five vowels, and their bandwidths (Hz).
VOWELS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010), "o": (570, 840, 2410),
          "u": (300, 870, 2240)}
FORMANT_BANDWIDTHS = (80, 100, 120)


def synthetic_voice(seconds: float, rate: int, seed: int, pitch_hz: float = 150.0, lively: float = 1.0):
    """float32 `(n,)` in [-1, 1]: syllables (0.12-0.35 s) of random vowels separated by short pauses.

    `pitch_hz` is the mean pitch; `lively` scales the pitch movement and the syllable rate.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    out = np.zeros(n, np.float64)
    t0 = 0.15
    while t0 < seconds - 0.3:
        dur = rng.uniform(0.12, 0.35) / lively
        start, stop = int(t0 * rate), min(n, int((t0 + dur) * rate))
        t = np.arange(stop - start) / rate
        f0 = pitch_hz * (1 + 0.12 * lively * rng.uniform(-1, 1)) * (1 + 0.08 * lively * np.sin(2 * np.pi * t / dur))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        formants = VOWELS[rng.choice(list(VOWELS))]
        mean_f0 = float(f0.mean())
        syllable = np.zeros_like(t)
        for k in range(1, int(4000 / mean_f0)):
            freq = k * mean_f0
            gain = sum(1 / (1 + ((freq - f) / b) ** 2) for f, b in zip(formants, FORMANT_BANDWIDTHS)) / k**0.5
            syllable += gain * np.sin(k * phase)
        ramp = min(len(t) // 2, int(0.03 * rate))
        env = np.ones_like(t)
        env[:ramp] = np.linspace(0, 1, ramp)
        env[len(t) - ramp:] = np.linspace(1, 0, ramp)
        out[start:stop] += syllable * env
        t0 += dur + (rng.uniform(0.04, 0.12) if rng.random() < 0.75 else rng.uniform(0.3, 0.6)) / lively
    out += 0.003 * rng.standard_normal(n)  # a little room noise
    return (0.6 * out / np.abs(out).max()).astype(np.float32)


def panned_frames(image: np.ndarray, seconds: float, crop_h: int, zoom: float = 0.08):
    """Yield RGB frames of `SIZE`: a 4:3 window over `image`, slowly zooming in and drifting."""
    h, w = image.shape[:2]
    count = int(round(seconds * FPS))
    for i in range(count):
        phase = i / max(1, count - 1)
        ch = int(crop_h * (1 - zoom * np.sin(np.pi * phase)))  # zoom in then out
        cw = min(w, int(ch * SIZE[0] / SIZE[1]))
        x0 = int((w - cw) / 2 + 6 * np.sin(2 * np.pi * phase))
        y0 = int(max(0, min(h - ch, (crop_h - ch) / 2 + 4 * np.sin(4 * np.pi * phase))))
        crop = image[y0:y0 + ch, max(0, x0):max(0, x0) + cw]
        yield cv2.resize(crop, SIZE, interpolation=cv2.INTER_AREA)


def write_clip(path: Path, frames, audio: np.ndarray | None) -> int:
    """H.264 + AAC mp4 (browser-playable, index at the front) through the project's one clip writer; returns the
    file size in bytes."""
    return encode_clip(path, frames, FPS, audio, AUDIO_RATE, container="mp4", faststart=True, audio_bit_rate=32_000,
                       video_options={"preset": "veryslow", "crf": "31", "tune": "stillimage"})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: examples/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from skimage import data

    astronaut, coffee = data.astronaut(), data.coffee()
    clips = {  # name: (picture, crop height, seconds, voice settings or None)
        "astronaut_speaking.mp4": (astronaut, 384, 4.0, dict(seed=1, pitch_hz=190, lively=1.3)),
        "astronaut_timeline.mp4": (astronaut, 384, 9.0, dict(seed=2, pitch_hz=140, lively=0.8)),
        "coffee_voice_no_face.mp4": (coffee, 400, 4.0, dict(seed=3, pitch_hz=120, lively=1.0)),
        "astronaut_silent_no_audio.mp4": (astronaut, 384, 4.0, None),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (picture, crop_h, seconds, voice) in clips.items():
        audio = synthetic_voice(seconds, AUDIO_RATE, **voice) if voice else None
        size = write_clip(args.out / name, panned_frames(picture, seconds, crop_h), audio)
        logger.info("%-32s %5.1f s  %6.1f KB", name, seconds, size / 1000)
        if size > MAX_BYTES:
            raise SystemExit(f"{name} is {size} bytes, over the {MAX_BYTES}-byte budget; lower the quality")


if __name__ == "__main__":
    main()
