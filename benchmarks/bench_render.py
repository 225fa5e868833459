"""What the app costs per second of video: the timeline analysis (3 s windows every `--hop` s) and the annotated
video, on a generated talking-face clip, with an untrained model of `--preset` (the cost does not depend on the
weights).

    python benchmarks/bench_render.py                               # realtime preset, 30 s clip, 2 threads
    python benchmarks/bench_render.py --preset tiny --seconds 10    # a quick run

Prints one JSON object (and writes benchmarks/results/bench_render.json): seconds of work per second of video for
the analysis and for the rendering, and the total for the clip. The target (issue 12) is a 30 s clip's timeline
plus annotated video in <= 30 s on 2 cores with the realtime preset. On a shared machine the figures are noisy:
report the machine's load with them (this script records `os.getloadavg()` before and after).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (str(ROOT), str(ROOT / "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="realtime", choices=("seed", "realtime", "tiny"))
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the generated clip")
    parser.add_argument("--size", default="1280x720", help="clip size WxH (RAVDESS is 1280x720)")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--hop", type=float, default=1.0, help="seconds between window starts")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--render-side", type=int, default=480)
    parser.add_argument("--batch-windows", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_render.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch
    from media_factory import astronaut_face, make_clip

    from fer_app.analysis import ClipAnalysis, windows_needed
    from fer_app.render import render_annotated_video
    from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = FERConfig.from_preset(args.preset)
    model = FERForEmotionClassification(config).eval()
    processor = FERProcessor.from_model_config(config)
    processor.max_duration_s = args.seconds + 1
    processor.max_windows = windows_needed(args.seconds, config.clip_seconds, args.hop)
    width, height = (int(v) for v in args.size.split("x"))
    side = int(0.5 * height)
    box = ((width - side) // 2, (height - side) // 3, (width - side) // 2 + side, (height - side) // 3 + side)
    folder = Path(tempfile.mkdtemp(prefix="bench_render_"))
    clip = make_clip(folder / "clip.mp4", seconds=args.seconds, fps=args.fps, size=(width, height),
                     face_image=astronaut_face(), face_box=box)["path"]
    load_before = os.getloadavg()

    analysis = ClipAnalysis(model, processor, "cpu", batch_windows=args.batch_windows, hop_s=args.hop)
    started = time.perf_counter()
    first_result_s, result = None, None
    for step in analysis.run(clip):
        result = step.result
        if first_result_s is None and result["windows"]:
            first_result_s = time.perf_counter() - started
    analysis_s = time.perf_counter() - started
    info = render_annotated_video(clip, result, folder / "annotated.mp4", max_side=args.render_side)
    figures = {
        "preset": args.preset, "clip": f"{args.seconds:g} s {width}x{height} {args.fps:g} fps H.264/AAC",
        "hop_s": analysis.analyzer.hop_s, "windows": len(result["windows"]) + len(result["skipped_windows"]),
        "torch_threads": args.threads, "cpu_count": os.cpu_count(),
        "analysis_s": round(analysis_s, 2), "analysis_s_per_video_s": round(analysis_s / args.seconds, 3),
        "first_windows_after_s": round(first_result_s or 0.0, 2),
        "render_s": info.seconds_taken, "render_s_per_video_s": round(info.seconds_taken / args.seconds, 3),
        "render": f"{info.size[0]}x{info.size[1]} at {info.fps:g} fps, {info.frames} frames",
        "total_s": round(analysis_s + info.seconds_taken, 2),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "frame_feature_cache": True,  # FERAnalyzer: each grid frame decoded and embedded once
    }
    print(json.dumps(figures, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
