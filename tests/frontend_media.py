"""Generated media for the perception front-end tests and benchmark (nothing shipped, nothing downloaded).

- `speech(seconds)`: real synthetic speech from `espeak-ng` (None when it is not installed), 16 kHz.
- `music(seconds)`: chords of harmonic tones with a rhythm (plucked attacks, a kick drum on the beat).
- `noise(seconds, level)`: white noise; a low `level` is near-silence.
- `shout(seconds, f0)`: a generated voice (vowels with formants, consonant bursts, syllable-rate envelope), loud
  and clipped; at `f0` of 550-750 Hz it is pitched like shouted or screamed speech.
- `talking_face_frames(...)`: frames with one or two copies of the astronaut's real face whose mouths open and
  close (the mouth region is stretched vertically) following given envelopes.
- `write_people_clip(path, seconds)`: a video file of two people side by side (the right one larger) and a tone.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

RATE = 16000
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Kids are talking by the door, and dogs are sitting by the door.",
    "I never said she stole my money, she said it herself.",
    "Please call Stella and ask her to bring these things with her from the store.",
)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speech(seconds: float, voice: str = "en", seed: int = 0, pitch: int | None = None) -> np.ndarray | None:
    """float32 `(seconds * 16000,)`: espeak-ng sentences back to back (cut or zero-padded), None without espeak-ng.
    `pitch`: espeak-ng's pitch adjustment, 0-99 (its default 50)."""
    if not espeak_available():
        return None
    out = []
    total = int(seconds * RATE)
    i = seed
    with tempfile.TemporaryDirectory() as tmp:
        while sum(len(o) for o in out) < total:
            path = Path(tmp) / f"s{i}.wav"
            extra = [] if pitch is None else ["-p", str(int(pitch))]
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", *extra, "-w", str(path),
                            SENTENCES[i % len(SENTENCES)]], check=True, capture_output=True)
            with wave.open(str(path)) as w:
                rate = w.getframerate()
                data = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
            t_new = np.arange(int(len(data) * RATE / rate)) / RATE
            out.append(np.interp(t_new, np.arange(len(data)) / rate, data).astype(np.float32))
            i += 1
    return np.concatenate(out)[:total]


def music(seconds: float, bpm: float = 100.0, seed: int = 0) -> np.ndarray:
    """float32 mono music: a I-vi-IV-V progression of 5-harmonic chords, plucked on every beat, a kick drum."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    beat = 60.0 / bpm
    chords = ((261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (196.0, 246.9, 293.7))
    out = np.zeros(n, np.float64)
    for k in range(int(np.ceil(seconds / beat))):
        s0 = int(k * beat * RATE)
        s1 = min(n, int((k + 1) * beat * RATE))
        tt = t[s0:s1] - t[s0]
        env = np.exp(-tt * 3.0) * (1 - np.exp(-tt * 200))
        for f in chords[(k // 4) % 4]:
            for h in range(1, 6):
                out[s0:s1] += env * np.sin(2 * np.pi * f * h * tt + rng.uniform(0, 2 * np.pi)) / h**1.5
        kick = np.sin(2 * np.pi * (50 + 80 * np.exp(-tt * 30)) * tt) * np.exp(-tt * 12)
        out[s0:s1] += 1.5 * kick
    return (0.25 * out / np.abs(out).max()).astype(np.float32)


def noise(seconds: float, level: float = 0.1, seed: int = 0) -> np.ndarray:
    """float32 white noise with standard deviation `level`."""
    return (np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * level).astype(np.float32)


# First three formants (Hz) of five vowels as shouted (F1 raised).
VOWEL_FORMANTS = ((850, 1400, 2800), (600, 2000, 2800), (400, 2500, 3200), (650, 1000, 2700), (450, 1000, 2500))


def shout(seconds: float, f0: float = 650.0, seed: int = 0, syllables_per_s: float = 4.5,
          clipped: bool = True) -> np.ndarray:
    """float32 mono: a source-filter voice. Each syllable is a vowel (harmonics of a pitch gliding up and down around
    `f0`, shaped by the vowel's formants) for 70 % of the syllable, then a short noise burst (a consonant).
    `clipped`: driven 2.5x past full scale and clipped, like a shout recorded too hot; else peak 0.5."""
    rng = np.random.default_rng(seed)
    n, step = int(seconds * RATE), 1.0 / syllables_per_s
    out = np.zeros(n)
    for k in range(int(np.ceil(seconds / step))):
        s0 = int(k * step * RATE)
        length = int(0.7 * step * RATE)
        s1 = min(n, s0 + length)
        if s1 <= s0:
            break
        tt = np.arange(s1 - s0) / RATE
        base = f0 * (1 + 0.1 * rng.standard_normal())
        pitch = base * (1 + 0.15 * np.sin(np.pi * tt * RATE / length) - 0.1 * tt * RATE / length)
        phase = 2 * np.pi * np.cumsum(pitch) / RATE
        formants = VOWEL_FORMANTS[int(rng.integers(len(VOWEL_FORMANTS)))]
        vowel = np.zeros(len(tt))
        for h in range(1, int(7000 / base)):
            gain = sum(1 / (1 + ((h * base - f) / (80 + 0.05 * f)) ** 2) for f in formants) / np.sqrt(h)
            vowel += gain * np.sin(h * phase)
        vowel *= np.minimum(1, tt / 0.02) * np.minimum(1, (tt[-1] - tt) / 0.04 + 1e-9)
        out[s0:s1] += vowel
        c1 = min(n, s1 + int(0.06 * RATE))
        if c1 > s1:
            out[s1:c1] += 0.1 * np.abs(vowel).max() * np.diff(rng.standard_normal(c1 - s1 + 1))
    out /= max(float(np.abs(out).max()), 1e-12)
    return (np.clip(2.5 * out, -1, 1) if clipped else 0.5 * out).astype(np.float32)


def envelope(audio: np.ndarray, times: np.ndarray, half_window_s: float = 0.04) -> np.ndarray:
    """RMS of `audio` in +-`half_window_s` around each time (s), scaled to [0, 1] (the mouth-opening driver)."""
    h = int(half_window_s * RATE)
    rms = np.array([np.sqrt(np.mean(audio[max(0, int(t * RATE) - h): int(t * RATE) + h] ** 2) + 1e-12)
                    for t in times])
    return rms / max(float(rms.max()), 1e-9)


# The astronaut's mouth in `astronaut_face()` pixels (measured with the face mesh): centre between the lips,
# half its width, and the distance from there to below the chin.
ASTRONAUT_MOUTH = {"centre": (91.0, 126.0), "half_width": 26.0, "jaw": 45.0}


def open_mouth(face: np.ndarray, opening: float, mouth: dict = ASTRONAUT_MOUTH) -> np.ndarray:
    """The face with its jaw dropped by `opening` (0 = unchanged, 1 = a gap of 18 % of the mouth width): everything
    below the lip line moves down (fading out below the chin and towards the cheeks), the gap is dark."""
    import cv2

    if opening <= 0.0:
        return face.copy()
    h, w = face.shape[:2]
    cx, cy = mouth["centre"]
    half, jaw = mouth["half_width"], mouth["jaw"]
    gap = 0.18 * 2 * half * min(1.0, float(opening))  # the face mesh follows gaps up to about this size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    across = np.clip(1 - ((xs - cx) / (2.4 * half)) ** 2, 0, 1) ** 0.5  # the jaw: 1 at the centre, 0 at the cheeks
    down = np.clip(1 - (ys - cy - jaw) / 25.0, 0, 1)  # the whole jaw moves, fading out below the chin
    shift = gap * across * np.where(ys >= cy, np.maximum(down, 0), 0)
    inside = (ys >= cy) & (ys < cy + gap * np.clip(1 - ((xs - cx) / half) ** 2, 0, 1))
    src_y = np.where(ys >= cy, np.maximum(ys - shift, cy), ys)
    out = cv2.remap(face, xs, src_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out[inside] = (45, 20, 25)  # the open mouth
    return out


def scene(size: tuple, faces: list, background: str = "plain", seed: int = 0) -> np.ndarray:
    """uint8 `(h, w, 3)` frame: `background` ("plain" grey wall, "busy" = scikit-image's coffee photo, "dark")
    with each `(face_image, (x0, y0, side))` pasted as a square of that side."""
    import cv2
    from skimage import data

    w, h = size
    if background == "plain":
        frame = np.full((h, w, 3), (128, 124, 118), np.uint8)
    elif background == "dark":
        frame = np.full((h, w, 3), 25, np.uint8)
    elif background == "busy":
        frame = cv2.resize(data.coffee(), (w, h), interpolation=cv2.INTER_AREA)
    else:
        raise ValueError(f"unknown background {background!r}")
    for image, (x0, y0, side) in faces:
        frame[y0:y0 + side, x0:x0 + side] = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    return frame


def face_box_in_scene(x0: int, y0: int, side: int) -> tuple:
    """Where the astronaut's face (face-mesh oval box) lies when `astronaut_face()` is pasted at (x0, y0, side)."""
    k = side / 185.0
    return (x0 + 46.5 * k, y0 + 48.7 * k, x0 + 139.7 * k, y0 + 153.1 * k)


def write_people_clip(path, seconds: float, fps: float = 10.0, size: tuple = (480, 270),
                      faces: tuple = ((20, 60, 150), (300, 50, 160))) -> str:
    """Encode `seconds` of two still copies of the astronaut's face at `faces` (x0, y0, side) on a plain wall, with a
    220 Hz tone (not speech: use `min_speech_fraction=0.0` for it to count), as H.264 + AAC (`tests` only)."""
    from media_factory import astronaut_face

    from fer_hf.tools.synthetic import encode_clip

    face = astronaut_face()
    frame = scene(size, [(face, box) for box in faces], "plain")
    n = int(round(seconds * fps))
    t = np.arange(int(seconds * 48000)) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    encode_clip(path, (frame.copy() for _ in range(n)), fps, tone, 48000)
    return str(path)


__all__ = ["ASTRONAUT_MOUTH", "RATE", "envelope", "espeak_available", "face_box_in_scene", "music", "noise",
           "open_mouth", "scene", "shout", "speech", "write_people_clip"]
