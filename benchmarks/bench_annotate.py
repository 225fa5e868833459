"""Throughput and memory of `fer-annotate` on generated clips: decode workers, the Ray path against the local one,
and the peak memory of a short against a long clip.

    python benchmarks/bench_annotate.py            # realtime preset (random weights), 8 clips, a 120 s long clip
    python benchmarks/bench_annotate.py --quick    # a smoke run: tiny preset, 2 short clips, a 30 s clip

Each configuration runs in its own process on the same clips, into a fresh output: clips and video-seconds per
minute (annotation time only: model build and Ray start-up are reported apart), windows per second, and the peak
memory of the whole process tree (main + decode workers, or driver + Ray workers), sampled every 0.2 s: the sum
of RSS (which counts the model pages a forked worker shares with its parent once per process) and PSS (which
counts them once). The memory rows run one short and one long clip alone (1 worker) and also give the run's own
counts: the most model rows that waited for the model and the most decoded frames a worker held (`AnnotateSummary`
`peak_rows`, `peak_frames`); with streaming these, and the peak memory, should not grow with the clip's length.
Clips are the synthetic set's (`fer_hf.tools.synthetic`: a real face, a tone, 320x240 at 25 fps; the long clip
repeats a 4 s rendering). Weights are random (the model's cost does not depend on them). On a shared machine the
figures are noisy; the ratios between configurations measured in one run are the robust part.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
logger = logging.getLogger("bench_annotate")

_RUNNER = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.monotonic()
    from fer_hf.tools.annotate import annotate, build_parser
    args = build_parser().parse_args(sys.argv[2:])
    ray_start = None
    if args.ray:
        import ray
        t = time.monotonic()
        ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        ray_start = time.monotonic() - t
    summary = annotate(args)
    print("RESULT " + json.dumps(dict(run_seconds=summary.run_seconds, windows=summary.table_windows,
                                      ok=summary.table_ok, failed=summary.table_failed, ray_start_s=ray_start,
                                      total_s=time.monotonic() - t0, peak_rows=summary.peak_rows,
                                      peak_frames=summary.peak_frames)))
    """
)


def make_clips(folder: Path, count: int, seconds: float) -> float:
    """Write `count` synthetic clips of about `seconds` each; returns their total duration."""
    from fer_hf.tools.synthetic import SyntheticSpec, write_clip

    spec = SyntheticSpec()
    rng = np.random.default_rng(0)
    total = 0.0
    for i in range(count):
        length = float(seconds * (0.75 + 0.5 * i / max(1, count - 1)))  # 0.75x .. 1.25x
        write_clip(folder / f"clip{i:03d}.mp4", i % 8, 1 + i % 4, length, spec, rng)
        total += length
    return total


def make_long_clip(path: Path, seconds: float) -> float:
    """One clip of `seconds`: a 4 s synthetic rendering (frames and sound) repeated; returns its duration."""
    from fer_hf.tools.synthetic import AUDIO_RATE, SyntheticSpec, _actor_style, encode_clip, render_audio, render_frames

    spec = SyntheticSpec()
    rng = np.random.default_rng(1)
    style = _actor_style(1, spec)
    frames = render_frames(3, style, spec, 4 * spec.fps, rng)
    audio = render_audio(3, style, 4.0, rng)
    count = round(seconds * spec.fps)
    encode_clip(path, (frames[i % len(frames)] for i in range(count)), spec.fps,
                np.resize(audio, round(seconds * AUDIO_RATE)), AUDIO_RATE, container="mp4")
    return count / spec.fps


def run_config(name: str, clips: Path, out: Path, extra: list[str], cores: int, preset: str) -> dict:
    cmd = [sys.executable, "-c", _RUNNER, str(cores), str(clips), "--preset", preset, "--output", str(out),
           "--no-progress", "--log-level", "WARNING", *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    root = psutil.Process(proc.pid)
    peak = peak_pss = 0
    while proc.poll() is None:
        try:
            tree = [p for p in (root, *root.children(recursive=True)) if p.is_running()]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
            # PSS shares each page among the processes mapping it: forked workers' copy-on-write pages count once
            peak_pss = max(peak_pss, sum(getattr(p.memory_full_info(), "pss", 0) for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode not in (0, 1) or not lines:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result.update(name=name, peak_rss_gb=peak / 2**30, peak_pss_gb=peak_pss / 2**30)
    return result


def _table(results: list[dict], clips: int, video_s: float) -> None:
    print("| configuration | annotation time | clips / min | video-s / min | windows / s | peak RSS (tree sum) "
          "| peak PSS (tree) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        minutes = r["run_seconds"] / 60
        print(f"| {r['name']} | {r['run_seconds']:.1f} s | {clips / minutes:.1f} | {video_s / minutes:.1f} | "
              f"{r['windows'] / r['run_seconds']:.2f} | {r['peak_rss_gb']:.2f} GB | {r['peak_pss_gb']:.2f} GB |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="realtime")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0, help="mean clip length (clips span 0.75x-1.25x)")
    p.add_argument("--long-seconds", type=float, default=120.0, help="length of the long clip of the memory rows")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-ray", action="store_true", help="skip the Ray configuration")
    p.add_argument("--no-memory", action="store_true", help="skip the short-against-long memory rows")
    p.add_argument("--no-throughput", action="store_true", help="only the memory rows")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: --preset tiny --clips 2 --seconds 3 --long-seconds 30 --batch-size 4")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.clips, args.seconds, args.long_seconds, args.batch_size = "tiny", 2, 3.0, 30.0, 4
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from fer_hf.tools.annotate.model import usable_cores

    cores = usable_cores()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "clips").mkdir()
        video_s = make_clips(tmp / "clips", args.clips, args.seconds) if not args.no_throughput else 0.0
        common = ["--batch-size", str(args.batch_size)]
        configs = [("local, 1 worker", ["--workers", "1"]), ("local, 2 workers", ["--workers", "2"]),
                   ("local, decode in the main process", ["--workers", "0"])] if not args.no_throughput else []
        if not args.no_ray and not args.no_throughput:
            configs.append(("Ray (local, 1 actor)", ["--ray", "--ray-actors", "1"]))
        results = []
        for name, extra in configs:
            logger.info("running %s ...", name)
            results.append(run_config(name, tmp / "clips", tmp / f"out{len(results)}.parquet", common + extra, cores,
                                      args.preset))
        memory = []
        if not args.no_memory:
            for kind, seconds in (("short", args.seconds), ("long", args.long_seconds)):
                folder = tmp / kind
                folder.mkdir()
                length = make_long_clip(folder / f"{kind}.mp4", seconds)
                logger.info("running the %s clip (%.0f s) ...", kind, length)
                r = run_config(f"{kind} clip ({length:.0f} s), 1 worker", folder, tmp / f"{kind}.parquet",
                               common + ["--workers", "1"], cores, args.preset)
                memory.append(dict(r, video_s=length))
    load = os.getloadavg()
    clips = f"{args.clips} clips, {video_s:.1f} s of video, " if results else ""
    print(f"\nfer-annotate, preset {args.preset} (random weights), {clips}batch {args.batch_size}, {cores} cores, "
          f"load average {load[0]:.1f} (shared machine: noisy figures)\n")
    if results:
        _table(results, args.clips, video_s)
    base = results[0]["run_seconds"] if results else None
    for r in results[1:]:
        print(f"\n{r['name']}: {r['run_seconds'] / base:.2f}x the time of {results[0]['name']}", end="")
        if r.get("ray_start_s") is not None:
            print(f" (plus {r['ray_start_s']:.1f} s to start Ray; Ray overhead: "
                  f"{r['run_seconds'] - base:+.1f} s over {args.clips} clips)", end="")
    print()
    if memory:
        print("\nMemory against clip length (1 worker):\n")
        print("| clip | windows | annotation time | peak RSS (tree sum) | peak PSS (tree) | rows waiting (peak) "
              "| frames held by the worker (peak) |")
        print("|---|---|---|---|---|---|---|")
        for r in memory:
            print(f"| {r['video_s']:.0f} s | {r['windows']} | {r['run_seconds']:.1f} s | {r['peak_rss_gb']:.2f} GB | "
                  f"{r['peak_pss_gb']:.2f} GB | {r['peak_rows']} | {r['peak_frames']} |")
        short, long = memory
        print(f"\nlong / short: {long['video_s'] / short['video_s']:.0f}x the length, "
              f"{long['peak_pss_gb'] / short['peak_pss_gb']:.2f}x the peak PSS")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(preset=args.preset, clips=args.clips, video_s=video_s,
                                                   cores=cores, load=load, results=results, memory=memory),
                                              indent=2))


if __name__ == "__main__":
    main()
