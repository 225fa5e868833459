"""The speech decision on emotional speech of every intensity, and on music and noise.

    python benchmarks/bench_speech_decision.py /path/to/audio_speech_actors_01-24            # all 1,440 clips
    python benchmarks/bench_speech_decision.py /path/to/audio_speech_actors_01-24 --actors 1-6
    python benchmarks/bench_speech_decision.py --negatives-only                              # generated audio only
    python benchmarks/bench_speech_decision.py /path/to/audio_speech_actors_01-24 --compare  # before / after

Each RAVDESS clip (file names `03-01-EE-II-SS-RR-AA.wav` under `Actor_XX/`, any modality with audio) goes through
the processor's own path: `probe_media`, the single centred window of the model's length (`plan_windows`),
`decode_window` at 16 kHz, then `FERProcessor.window_row` (the audio check, then the speech check). The table
gives the share of clips whose window is rejected as "no speech found" per emotion x intensity.

The negatives are generated (numpy, nothing downloaded; `--negative-seeds` variants of each kind) and go through
`window_from_arrays` and the same `window_row`: music (chords with a kick drum, a band with melody, chords and
drums, a solo melody with vibrato, a piano-like melody, loud clipped versions), noise (white, pink, brown, pink
noise with a syllable-rate envelope), mains hum and a siren. A negative that is accepted is a false acceptance.
Generated positives: `tests/frontend_media.shout` (a formant voice, loud and clipped) at a speaking pitch (180 Hz)
and at shouting / screaming pitches (600-700 Hz).

`--compare` runs each window through two processors, Silero alone (`high_pitch_hz=0`, the decision before the
high-voice rescoring) and the default settings, on the same decoded audio, and reports both with the time the
speech check took per window.

The RAVDESS audio is read from where it lies and never copied. Writes `benchmarks/results/bench_speech_decision.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

RATE = 16000
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
INTENSITIES = {1: "normal", 2: "strong"}


# ------------------------------------------------------------------------------------------------------------------
# Generated negatives


def _norm(x: np.ndarray, peak: float = 0.3) -> np.ndarray:
    return (peak * x / max(float(np.abs(x).max()), 1e-12)).astype(np.float32)


def _pink(n: int, rng: np.random.Generator, exponent: float = 1.0) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (1: pink, 2: brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    f[0] = f[1]
    return np.fft.irfft(spectrum / f ** (exponent / 2), n)


def _note(f0: float, tt: np.ndarray, harmonics: int = 8, vibrato: float = 0.0, decay: float = 0.0) -> np.ndarray:
    """A harmonic note (1/h amplitudes) with an optional 5.5 Hz vibrato of relative depth `vibrato`."""
    phase = 2 * np.pi * np.cumsum(f0 * (1 + vibrato * np.sin(2 * np.pi * 5.5 * tt))) / RATE
    env = (1 - np.exp(-tt * 80)) * (np.exp(-tt * decay) if decay else 1.0)
    return env * sum(np.sin(h * phase) / h for h in range(1, harmonics + 1) if h * f0 < 7000)


def _melody(seconds: float, rng, notes_per_s: float = 3.0, low: int = 55, high: int = 79, vibrato: float = 0.01,
            harmonics: int = 8) -> np.ndarray:
    """Random notes (MIDI `low`..`high`) back to back, each fading."""
    n, step = int(seconds * RATE), 1 / notes_per_s
    out = np.zeros(n)
    for k in range(int(np.ceil(seconds / step))):
        s0, s1 = int(k * step * RATE), min(n, int((k + 1) * step * RATE))
        tt = np.arange(s1 - s0) / RATE
        f0 = 440 * 2 ** ((int(rng.integers(low, high)) - 69) / 12)
        out[s0:s1] += _note(f0, tt, harmonics, vibrato) * np.exp(-tt * 1.5)
    return out


def _chords(seconds: float, bpm: float = 100.0) -> np.ndarray:
    """A I-vi-IV-V progression of plucked 6-harmonic triads, one per beat."""
    n, beat = int(seconds * RATE), 60 / bpm
    out = np.zeros(n)
    progression = ((60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62))
    for k in range(int(np.ceil(seconds / beat))):
        s0, s1 = int(k * beat * RATE), min(n, int((k + 1) * beat * RATE))
        tt = np.arange(s1 - s0) / RATE
        for m in progression[(k // 4) % 4]:
            out[s0:s1] += _note(440 * 2 ** ((m - 69) / 12), tt, 6, decay=3.0)
    return out


def _drums(seconds: float, bpm: float, rng) -> np.ndarray:
    """Kick on 1, snare (noise burst) on 3, hi-hat (differenced noise) on every eighth."""
    n, eighth = int(seconds * RATE), 30 / bpm
    out = np.zeros(n)
    for k in range(int(seconds / eighth)):
        s0 = int(k * eighth * RATE)
        tt = np.arange(min(n - s0, int(0.3 * RATE))) / RATE
        if k % 4 == 0:
            out[s0:s0 + len(tt)] += np.sin(2 * np.pi * (50 + 80 * np.exp(-tt * 30)) * tt) * np.exp(-tt * 12)
        if k % 4 == 2:
            out[s0:s0 + len(tt)] += 0.6 * rng.standard_normal(len(tt)) * np.exp(-tt * 25)
        out[s0:s0 + len(tt)] += 0.15 * np.diff(rng.standard_normal(len(tt) + 1)) * np.exp(-tt * 60)
    return out


def negatives(seconds: float = 3.0, seeds: int = 3) -> dict[str, np.ndarray]:
    """`{kind/seed: float32 audio}`: generated music and noise at several levels (none of it is speech)."""
    out = {}
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        level = (0.05, 0.3, 0.9)[seed % 3]
        band = _melody(seconds, rng) + 0.7 * _chords(seconds, 100 + 10 * seed) + 0.8 * _drums(seconds, 110, rng)
        out[f"music: chords and kick/{seed}"] = _norm(_chords(seconds, 80 + 30 * seed) + _drums(seconds, 80, rng))
        out[f"music: band/{seed}"] = _norm(band)
        out[f"music: band, loud and clipped/{seed}"] = np.clip(3 * _norm(band), -0.99, 0.99).astype(np.float32)
        out[f"music: solo with vibrato/{seed}"] = _norm(_melody(seconds, rng, 2.5 + seed, vibrato=0.012))
        out[f"music: high solo, loud and clipped/{seed}"] = np.clip(
            4 * _norm(_melody(seconds, rng, 4, low=64, high=88, vibrato=0.015)), -0.99, 0.99).astype(np.float32)
        out[f"music: piano-like/{seed}"] = _norm(_melody(seconds, rng, 6, low=48, high=84, vibrato=0, harmonics=10))
        out[f"noise: white/{seed}"] = _norm(rng.standard_normal(n), level)
        out[f"noise: pink/{seed}"] = _norm(_pink(n, rng), level)
        out[f"noise: brown/{seed}"] = _norm(_pink(n, rng, 2.0), level)
        out[f"noise: pink, syllable-rate envelope/{seed}"] = _norm(
            _pink(n, rng) * (0.55 + 0.45 * np.sin(2 * np.pi * (3 + seed) * t)))
        hum = (50, 60, 100)[seed % 3]
        out[f"hum/{seed}"] = _norm(sum(np.sin(2 * np.pi * hum * h * t) / h for h in range(1, 12))
                                   + 0.05 * rng.standard_normal(n))
        sweep = 900 + 300 * np.sin(2 * np.pi * (0.5 + 0.7 * seed) * t)
        phase = 2 * np.pi * np.cumsum(sweep) / RATE
        out[f"siren/{seed}"] = _norm(np.sin(phase) + 0.3 * np.sin(2 * phase))
    return out


# ------------------------------------------------------------------------------------------------------------------
# Running the decision


def parse_actors(text: str | None) -> set[int] | None:
    """"1-6,9" -> {1, 2, 3, 4, 5, 6, 9}; None -> None (all)."""
    if not text:
        return None
    actors = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        actors.update(range(int(a), int(b or a) + 1))
    return actors


def ravdess_files(folder: Path, actors: set[int] | None) -> list[tuple[Path, int, int, int]]:
    """(path, emotion, intensity, actor) of the RAVDESS speech files under `folder` with audio (01 or 03)."""
    from fer_hf.tools.ravdess import RavdessNameError, parse_ravdess_name

    files = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in (".wav", ".mp4"):
            continue
        try:
            clip = parse_ravdess_name(path)
        except RavdessNameError:
            continue
        if clip.modality == 2 or clip.vocal_channel != 1 or (actors and clip.actor not in actors):
            continue
        files.append((path, clip.emotion, clip.intensity, clip.actor))
    return files


def decode_file(processor, path: Path):
    """The clip's single centred window, decoded as the processor decodes a file."""
    from fer_hf.media_fer import decode_window, plan_windows, probe_media

    info = probe_media(path, processor.max_duration_s)
    (start, end), = plan_windows(info.duration_s, processor.geometry.clip_seconds)
    return decode_window(str(path), start, end, processor.num_frames, info.duration_s, processor.sampling_rate,
                         processor.video_processing.decode_max_side, info.timing)


def array_window(processor, audio: np.ndarray):
    """A window of generated audio, as the processor cuts one from arrays."""
    from fer_hf.media_fer import window_from_arrays

    return window_from_arrays(audio, None, None, 0.0, processor.geometry.clip_seconds, processor.num_frames,
                              len(audio) / RATE, processor.sampling_rate)


def decide(processors: dict, window) -> dict:
    """`{setting name: decision}` for one window: `FERProcessor.window_row` (audio check, then speech check)."""
    out = {}
    for name, processor in processors.items():
        t0 = time.perf_counter()
        info = processor.window_row(window, no_video="no video")["info"]
        out[name] = {"used": bool(info["audio_used"]), "reason": info["audio_reason"],
                     "speech_fraction": info["speech_fraction"], "ms": 1000 * (time.perf_counter() - t0)}
    return out


def build_processor(**settings):
    from fer_hf.configuration_fer import FERConfig
    from fer_hf.processing_fer import FERProcessor

    return FERProcessor.from_model_config(FERConfig.from_preset("realtime"), **settings)


def report_ravdess(rows: list[dict]) -> dict:
    """Rejection counts per emotion x intensity, per intensity, and the rejected files (rows of one setting)."""
    cells = defaultdict(lambda: [0, 0])  # (emotion, intensity) -> [rejected, total]
    for r in rows:
        cell = cells[(r["emotion"], r["intensity"])]
        cell[0] += not r["used"]
        cell[1] += 1
    print(f"\n{'emotion':10s} " + " ".join(f"{INTENSITIES[i]:>14s}" for i in (1, 2)))
    for e in range(1, 9):
        line = []
        for i in (1, 2):
            rej, tot = cells.get((e, i), (0, 0))
            line.append(f"{rej:3d}/{tot:3d} {100 * rej / tot:4.1f}%" if tot else f"{'-':>14s}")
        print(f"{EMOTIONS[e - 1]:10s} " + " ".join(line))
    per_intensity = {}
    for i in (1, 2):
        rej = sum(c[0] for (e, ii), c in cells.items() if ii == i)
        tot = sum(c[1] for (e, ii), c in cells.items() if ii == i)
        per_intensity[INTENSITIES[i]] = {"rejected": rej, "total": tot}
        print(f"{INTENSITIES[i]:10s} rejected {rej}/{tot} ({100 * rej / max(tot, 1):.1f} %)")
    rejected = [r for r in rows if not r["used"]]
    print(f"all        rejected {len(rejected)}/{len(rows)}; speech check {_ms(rows)}")
    for r in rejected:
        print(f"  {r['file']}: {r['reason']}")
    return {"per_cell": {f"{EMOTIONS[e - 1]}/{INTENSITIES[i]}": {"rejected": c[0], "total": c[1]}
                         for (e, i), c in sorted(cells.items())},
            "per_intensity": per_intensity, "rejected": [r["file"] for r in rejected]}


def _ms(rows: list[dict]) -> str:
    ms = np.array([r["ms"] for r in rows])
    return f"median {np.median(ms):.1f} ms, mean {ms.mean():.1f} ms, max {ms.max():.0f} ms per window"


def report_generated(rows: list[dict], title: str, positive: bool) -> dict:
    """Acceptances per kind of generated audio (rows of one setting)."""
    kinds = defaultdict(list)
    for r in rows:
        kinds[r["name"].rsplit("/", 1)[0]].append(r)
    print(f"\n{title:40s} accepted (speech fraction per seed)")
    for kind, rs in kinds.items():
        fractions = " ".join("-" if r["speech_fraction"] is None else f"{r['speech_fraction']:.2f}" for r in rs)
        print(f"{kind:40s} {sum(r['used'] for r in rs)}/{len(rs)}  ({fractions})")
    accepted = sum(r["used"] for r in rows)
    label = "accepted" if positive else "false acceptance"
    print(f"{label}: {accepted}/{len(rows)} ({100 * accepted / max(len(rows), 1):.1f} %); speech check {_ms(rows)}")
    return {"accepted": accepted, "total": len(rows),
            "per_kind": {k: {"accepted": sum(r["used"] for r in rs), "total": len(rs)} for k, rs in kinds.items()}}


def positives(seconds: float = 3.0, seeds: int = 3) -> dict[str, np.ndarray]:
    """`{kind/seed: float32 audio}`: the generated formant voice, loud and clipped, at speaking and shouting pitch."""
    import frontend_media as fm

    return {f"voice at {f0} Hz, clipped/{seed}": fm.shout(seconds, f0, seed)
            for f0 in (180, 600, 650, 700) for seed in range(seeds)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ravdess", nargs="?", type=Path, help="folder of RAVDESS speech files (Actor_XX/...)")
    parser.add_argument("--actors", help="actors to use, e.g. 1-6 or 1,3,5 (default: all)")
    parser.add_argument("--negative-seeds", type=int, default=3, help="variants of each generated negative")
    parser.add_argument("--negatives-only", action="store_true", help="skip RAVDESS")
    parser.add_argument("--compare", action="store_true",
                        help="also run Silero alone (high_pitch_hz=0), the decision before the high-voice rescoring")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "bench_speech_decision.json")
    args = parser.parse_args(argv)
    if args.ravdess is None and not args.negatives_only:
        parser.error("give the RAVDESS folder, or --negatives-only")

    processors = {"default": build_processor()}
    if args.compare:
        processors = {"silero alone": build_processor(high_pitch_hz=0.0), **processors}
    result = {"machine": {"platform": platform.platform(), "python": platform.python_version()},
              "audio_settings": {name: p.audio_processing.to_dict() for name, p in processors.items()}}
    for name, p in processors.items():
        print(f"{name}: {p.audio_processing.to_dict()}")
    rows = {name: [] for name in processors}

    if not args.negatives_only:
        files = ravdess_files(args.ravdess, parse_actors(args.actors))
        if not files:
            parser.error(f"no RAVDESS speech files under {args.ravdess}")
        t0 = time.perf_counter()
        for k, (path, emotion, intensity, actor) in enumerate(files):
            window = decode_file(processors["default"], path)
            for name, decision in decide(processors, window).items():
                rows[name].append(dict(decision, file=path.name, emotion=emotion, intensity=intensity, actor=actor))
            if (k + 1) % 120 == 0:
                print(f"  {k + 1}/{len(files)} clips, {time.perf_counter() - t0:.0f} s", flush=True)
        result["ravdess"] = {}
        for name in processors:
            print(f"\n== RAVDESS, {name}: clips rejected as no speech")
            result["ravdess"][name] = report_ravdess(rows[name])
        result["ravdess_seconds"] = round(time.perf_counter() - t0, 1)

    clip_s = processors["default"].geometry.clip_seconds
    result["negatives"], result["positives"] = {}, {}
    for kind, generated in (("negatives", negatives(clip_s, args.negative_seeds)), ("positives", positives(clip_s))):
        generated_rows = {name: [] for name in processors}
        for sample, audio in generated.items():
            for name, decision in decide(processors, array_window(processors["default"], audio)).items():
                generated_rows[name].append(dict(decision, name=sample))
        for name in processors:
            title = f"{kind}, {name}"
            result[kind][name] = report_generated(generated_rows[name], title, positive=kind == "positives")
            rows[name] += generated_rows[name]
    result["rows"] = rows
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
