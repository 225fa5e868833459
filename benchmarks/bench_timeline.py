"""Timeline cost: seconds of work per second of video, with and without the frame-feature cache.

    python benchmarks/bench_timeline.py                      # realtime preset, generated 30 s 720p clip
    python benchmarks/bench_timeline.py --seconds 12 --threads 2

With the cache: `FERAnalyzer.analyze` (one decode pass, each grid frame through the face front-end and SigLIP
once, the audio encoder per window). Without it: the processor's window path over the same windows
(`prepare(sliding_window=True, hop_seconds=hop)`: each window decoded, its faces found and its frames encoded
on their own) and the model on those inputs, in the same batches. Random weights (timing only). Prints one
line per path and their ratio; figures are noisy while other work shares the CPU, the ratio less so.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_hf import FERConfig, FERForEmotionClassification  # noqa: E402
from fer_hf.analysis_fer import FERAnalyzer  # noqa: E402
from fer_hf.media_fer import probe_media  # noqa: E402
from fer_hf.processing_fer import FERProcessor  # noqa: E402

logger = logging.getLogger("bench_timeline")


def make_clip(path: Path, seconds: float, voice: str = "espeak", face: bool = True) -> str:
    """A 720p 30 fps clip of the astronaut's face (`face=False`: nobody in the picture, so the face pass searches
    every frame, tiled small-face pass included) with espeak-ng speech (so the speech decision lets the audio
    encoder run), or the media factory's tone with `voice="tone"`."""
    import numpy as np

    from tests.media_factory import astronaut_face
    from tests.media_factory import make_clip as factory_make_clip

    audio = "tone"
    if voice == "espeak":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import frontend_media

        speech = frontend_media.speech(seconds)
        if speech is None:
            raise SystemExit("the spoken clip needs espeak-ng (apt-get install espeak-ng); or pass --voice tone")
        t = np.arange(int(seconds * 48000)) / 48000
        audio = np.interp(t, np.arange(len(speech)) / 16000, speech).astype(np.float32)
    factory_make_clip(path, seconds=seconds, fps=30, size=(1280, 720), audio=audio, sample_rate=48000,
                      channels=1 if voice == "espeak" else 2, face_image=astronaut_face(),
                      face_box=(450, 150, 830, 530), face_spans=None if face else [])
    return str(path)


def without_cache(model, processor, clip: str, hop_s: float, batch_size: int) -> int:
    inputs = processor(videos=clip, sliding_window=True, hop_seconds=hop_s)
    rows = inputs["input_features"].shape[0]
    with torch.inference_mode():
        for start in range(0, rows, batch_size):
            model(**{k: v[start:start + batch_size] for k, v in inputs.items()})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="realtime")
    parser.add_argument("--model", help="a saved model folder (e.g. checkpoints/compact) instead of --preset")
    parser.add_argument("--voice", choices=("espeak", "tone"), default="espeak",
                        help="sound of the generated clip: espeak-ng speech (the audio encoder runs) or a tone")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the generated clip")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--clip", default=None, help="use this clip instead of generating one")
    parser.add_argument("--no-face", action="store_true",
                        help="the generated clip shows nobody (the face pass's worst case: it searches every frame)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model:
        model = FERForEmotionClassification.from_pretrained(args.model).eval()
        processor = FERProcessor.from_pretrained(args.model, max_windows=10_000)
        args.preset = model.config.preset or args.model
    else:
        model = FERForEmotionClassification(FERConfig.from_preset(args.preset)).eval()
        processor = FERProcessor.from_model_config(model.config, max_windows=10_000)
    analyzer = FERAnalyzer(model, processor, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or make_clip(Path(tmp) / "clip.mp4", args.seconds, args.voice,
                                         face=not args.no_face)
        duration = probe_media(clip).duration_s  # (a clip with nothing to classify has a duration too)
        analyzer.analyze(clip, timeline=False)  # warm-up: codec init, cascade load, first-call allocations
        start = time.perf_counter()
        result = analyzer.analyze(clip)
        cached = time.perf_counter() - start
        start = time.perf_counter()
        rows = without_cache(model, processor, clip, analyzer.hop_s, args.batch_size)
        uncached = time.perf_counter() - start
    print(f"preset {args.preset}, clip {duration:.1f} s 1280x720 30 fps, {torch.get_num_threads()} torch threads, "
          f"hop {analyzer.hop_s:.3f} s, batch {args.batch_size}")
    used = [w.modalities for w in result.windows]
    print(f"with frame cache    : {len(result.windows) + len(result.skipped_windows)} windows, {cached:7.1f} s, "
          f"{cached / duration:.2f} s of work per s of video; windows using the voice "
          f"{sum(m['audio'] for m in used)}, the face {sum(m['video'] for m in used)} of {len(used)}")
    print(f"without frame cache : {rows} windows, {uncached:7.1f} s, "
          f"{uncached / duration:.2f} s of work per s of video")
    print(f"speed-up            : {uncached / cached:.2f}x")


if __name__ == "__main__":
    main()
