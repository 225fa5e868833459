"""Real audio-visual clips the model never trained on: the fused answer beside each modality alone.

    python benchmarks/eval_real_clips.py /data/av_clips --model checkpoints/compact

Each clip's label is read from its name: the first RAVDESS emotion word in it (`neutral`, `calm`, `happy`, `sad`,
`angry`, `fearful`/`fear`, `disgust`/`disgusted`, `surprised`/`surprise`), e.g. MEAD's `M030_sad_3_001.mp4`, or a
RAVDESS name (`01-01-05-…mp4`: the third field). The clip is analysed by the processor's sliding windows; the clip
answer is the mean of the window probabilities (the result type's rule), computed three times: with both modalities,
with the voice only (the face hidden with `video_mask`) and with the face only (`audio_mask`). Prints a table and
the accuracy of each; `--json` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_hf import FERForEmotionClassification, FERProcessor  # noqa: E402
from fer_hf.configuration_fer import RAVDESS_LABELS  # noqa: E402

WORDS = {"neutral": "neutral", "calm": "calm", "happy": "happy", "sad": "sad", "angry": "angry", "fearful": "fearful",
         "fear": "fearful", "disgusted": "disgust", "disgust": "disgust", "surprised": "surprised",
         "surprise": "surprised"}
MEDIA = (".mp4", ".webm", ".flv", ".avi", ".mov", ".mkv")


def label_of(path: Path) -> str | None:
    ravdess = re.fullmatch(r"0[12]-0[12]-(0[1-8])-0[12]-0[12]-0[12]-\d\d", path.stem)
    if ravdess:
        return RAVDESS_LABELS[int(ravdess.group(1)) - 1]
    for token in re.split(r"[^a-z]+", path.stem.lower()):
        if token in WORDS:
            return WORDS[token]
    return None


def clip_answers(model, processor, path: Path) -> dict:
    inputs, info = processor.prepare(videos=str(path), sliding_window=True)
    answers = {}
    for name, masks in (("fused", {}), ("voice only", {"video_mask": torch.zeros_like(inputs["video_mask"])}),
                        ("face only", {"audio_mask": torch.zeros_like(inputs["audio_mask"])})):
        keep = (inputs["audio_mask"] if name == "voice only" else inputs["video_mask"] if name == "face only"
                else inputs["audio_mask"] | inputs["video_mask"]).bool()
        if not keep.any():
            answers[name] = None
            continue
        rows = {k: v[keep] for k, v in {**inputs, **masks}.items()}
        with torch.inference_mode():
            probs = model(**rows).logits.softmax(-1).mean(0).numpy()
        answers[name] = RAVDESS_LABELS[int(np.argmax(probs))]
    answers["windows"] = int(inputs["audio_mask"].shape[0])
    answers["voice_windows"] = int(inputs["audio_mask"].sum())
    answers["face_windows"] = int(inputs["video_mask"].sum())
    return answers


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "checkpoints" / "compact"))
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    model = FERForEmotionClassification.from_pretrained(args.model).eval()
    processor = FERProcessor.from_pretrained(args.model)
    rows = []
    for path in sorted(p for p in Path(args.folder).rglob("*") if p.suffix.lower() in MEDIA):
        label = label_of(path)
        if label is None:
            continue
        rows.append({"clip": path.name, "label": label, **clip_answers(model, processor, path)})
        r = rows[-1]
        print(f"{path.name:28s} {label:9s} fused {r['fused']!s:9s} voice {r['voice only']!s:9s} "
              f"face {r['face only']!s:9s} ({r['voice_windows']}/{r['windows']} windows with speech, "
              f"{r['face_windows']} with a face)")
    for name in ("fused", "voice only", "face only"):
        scored = [r for r in rows if r[name] is not None]
        right = sum(r[name] == r["label"] for r in scored)
        print(f"{name:10s}: {right}/{len(scored)} clips right")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
