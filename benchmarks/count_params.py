"""Print the parameter count of each part of a preset (built on the meta device: no memory, no weights).

python benchmarks/count_params.py --preset seed
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fer_hf import FERConfig, FERForEmotionClassification  # noqa: E402

# The architecture diagram's estimates (seed/architecture-diagram.md §7), in millions.
DIAGRAM_ESTIMATES_M = {"audio": 50, "visual": 90, "fusion": 103, "classifier": 0.5, "total": 243}


def count_parts(model: FERForEmotionClassification) -> dict[str, int]:
    """Parameters per part: audio (encoder + segment pooling), visual (SigLIP + ROI + temporal), fusion, classifier."""
    count = lambda *modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    parts = {
        "audio": count(model.audio_encoder, model.audio_segment_pool),
        "  FastConformer encoder": count(model.audio_encoder),
        "visual": count(model.vision_encoder, model.roi_compressor, model.frame_pool, model.temporal_encoder),
        "  SigLIP vision tower": count(model.vision_encoder),
        "  ROI + frame pool + temporal": count(model.roi_compressor, model.frame_pool, model.temporal_encoder),
        "fusion": count(model.fusion),
        "  LFM2 layers": count(model.fusion.backbone),
        "classifier": count(model.temporal_pool, model.classifier),
    }
    parts["total"] = count(model)
    return parts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="seed", choices=FERConfig.PRESETS)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    with torch.device("meta"):
        model = FERForEmotionClassification(FERConfig.from_preset(args.preset))
    parts = count_parts(model)
    if args.json:
        sys.stdout.write(json.dumps(parts, indent=2) + "\n")
        return
    lines = [f"preset {args.preset}", f"{'part':32s} {'params (M)':>12s} {'diagram (M)':>12s}"]
    for name, value in parts.items():
        estimate = DIAGRAM_ESTIMATES_M.get(name.strip())
        lines.append(f"{name:32s} {value / 1e6:12.2f} {'' if estimate is None else f'{estimate:12.1f}'}")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
