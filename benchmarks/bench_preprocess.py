"""Preprocessing cost per clip: decode -> face track/crop -> features, on a generated 3 s 720p 30 fps clip.

    python benchmarks/bench_preprocess.py                 # seed (90 frames, 224 px) and realtime (8 frames), 7 runs
    python benchmarks/bench_preprocess.py --runs 3 --presets realtime

Each preset runs in its own subprocess (so its peak RSS is its own). Per preset: median and minimum wall time of the
whole `processor(videos=path)` call over `--runs` runs (after one warm-up), its median CPU time (user + system, all
threads: what the call costs even when other processes share the cores), and medians of the stages timed separately:
probe (open + duration), decode (PyAV demux/decode, resample, pick + downscale frames), faces (detect, track,
crop, ROI maps), features (log-mel + pixel normalisation + batching). Prints a table and writes
`benchmarks/results/bench_preprocess.json`. Target: <= 1 s per 3 s clip for the seed preset on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIP_SECONDS, CLIP_FPS, CLIP_SIZE = 3.0, 30, (1280, 720)
FACE_BOX = (450, 150, 830, 530)  # the astronaut's head, 380 px, in the 1280x720 frame


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (robust to other processes sharing the cores)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_clip(path: Path) -> Path:
    from tests.media_factory import astronaut_face
    from tests.media_factory import make_clip as factory_make_clip

    factory_make_clip(path, seconds=CLIP_SECONDS, fps=CLIP_FPS, size=CLIP_SIZE, audio="tone", sample_rate=48000,
                      channels=2, face_image=astronaut_face(), face_box=FACE_BOX)
    return path


def run_preset(preset: str, clip: str, runs: int) -> dict:
    """Time one preset in this process."""
    import torch

    from fer_hf.configuration_fer import FERConfig
    from fer_hf.media_fer import decode_window, plan_windows, probe_media
    from fer_hf.processing_fer import FERProcessor

    processor = FERProcessor.from_model_config(FERConfig.from_preset(preset))
    rss_before = peak_rss_mb()
    processor(videos=clip)  # warm-up: cascade load, codec init, mel filters
    totals, stages = [], {"probe": [], "decode": [], "faces": [], "features": []}
    cpu_times = []
    for _ in range(runs):
        cpu_start, start = cpu_seconds(), time.perf_counter()
        out, info = processor.prepare(videos=clip, return_tensors="pt")
        totals.append(time.perf_counter() - start)
        cpu_times.append(cpu_seconds() - cpu_start)
    peak_rss = peak_rss_mb()  # of the processor calls alone (ru_maxrss only grows)
    for _ in range(runs):  # the same work, stage by stage
        t0 = time.perf_counter()
        info = probe_media(clip, processor.max_duration_s)
        t1 = time.perf_counter()
        (begin, end), = plan_windows(info.duration_s, processor.clip_seconds)
        media = decode_window(clip, begin, end, processor.num_frames, info.duration_s, processor.sampling_rate,
                              processor.decode_max_side)
        t2 = time.perf_counter()
        row = processor._window_row(media, "no audio stream", "no video stream", False)
        t3 = time.perf_counter()
        processor._batch([row], processor.clip_seconds, "pt")
        t4 = time.perf_counter()
        for name, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[name].append(value)
    assert out["video_mask"].item() and out["audio_mask"].item(), info.windows
    return {
        "preset": preset,
        "num_frames": processor.num_frames,
        "image_size": processor.image_size,
        "runs": runs,
        "median_s": statistics.median(totals),
        "min_s": min(totals),
        "cpu_median_s": statistics.median(cpu_times),
        "stages_median_s": {k: statistics.median(v) for k, v in stages.items()},
        "pixel_values_mb": out["pixel_values_videos"].numel() * 4 / 2**20,
        "peak_rss_mb": peak_rss,
        "rss_after_imports_mb": rss_before,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["seed", "realtime"])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bench_preprocess.json"))
    parser.add_argument("--child", nargs=2, metavar=("PRESET", "CLIP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_preset(args.child[0], args.child[1], args.runs)))
        return

    results = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "face_720p.mp4")
        for preset in args.presets:
            proc = subprocess.run(
                [sys.executable, __file__, "--runs", str(args.runs), "--child", preset, str(clip)],
                capture_output=True, text=True, check=False, cwd=ROOT,
            )
            if proc.returncode != 0:
                raise SystemExit(f"preset {preset} failed:\n{proc.stderr}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    header = (f"{'preset':<10}{'T':>4}{'S':>5}{'median s':>10}{'min s':>8}{'CPU s':>8}{'probe':>8}{'decode':>8}"
              f"{'faces':>8}{'features':>10}{'peak RSS MB':>13}")
    load_after = os.getloadavg()[0]
    print(f"clip: {CLIP_SECONDS:.0f} s, {CLIP_SIZE[0]}x{CLIP_SIZE[1]} @ {CLIP_FPS} fps, H.264 + AAC 48 kHz stereo; "
          f"{os.cpu_count()} CPUs; load average {load_before:.1f} before, {load_after:.1f} after "
          "(other processes inflate the times)")
    print(header)
    for r in results:
        s = r["stages_median_s"]
        print(f"{r['preset']:<10}{r['num_frames']:>4}{r['image_size']:>5}{r['median_s']:>10.3f}{r['min_s']:>8.3f}"
              f"{r['cpu_median_s']:>8.3f}{s['probe']:>8.3f}"
              f"{s['decode']:>8.3f}{s['faces']:>8.3f}{s['features']:>10.3f}{r['peak_rss_mb']:>13.0f}")
    report = {
        "benchmark": "bench_preprocess",
        "clip": {"seconds": CLIP_SECONDS, "fps": CLIP_FPS, "size": list(CLIP_SIZE), "video": "h264",
                 "audio": "aac 48 kHz stereo", "face_box": list(FACE_BOX)},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": load_after},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "results": results,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
