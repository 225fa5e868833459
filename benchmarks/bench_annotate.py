"""Throughput of `fer-annotate` on generated clips: 1 and 2 decode workers, and the Ray path against the local one.

    python benchmarks/bench_annotate.py                      # realtime preset (random weights), 8 clips
    python benchmarks/bench_annotate.py --preset tiny --clips 4 --seconds 3   # a quick smoke run

Each configuration runs in its own process on the same clips, into a fresh output: clips and video-seconds per
minute (annotation time only: model build and Ray start-up are reported apart), windows per second, and the peak
memory of the whole process tree (main + decode workers, or driver + Ray workers), sampled every 0.2 s: the sum
of RSS (which counts the model pages a forked worker shares with its parent once per process) and PSS (which
counts them once). Clips are
the synthetic set's (`fer_hf.tools.synthetic.write_clip`: a real face, a tone, 320x240 at 25 fps).
Weights are random (the model's cost does not depend on them). On a shared machine the figures are noisy; the
ratios between configurations measured in one run are the robust part.
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
                                      total_s=time.monotonic() - t0)))
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="realtime")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0, help="mean clip length (clips span 0.75x-1.25x)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-ray", action="store_true", help="skip the Ray configuration")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from fer_hf.tools.annotate_model import usable_cores

    cores = usable_cores()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "clips").mkdir()
        video_s = make_clips(tmp / "clips", args.clips, args.seconds)
        common = ["--batch-size", str(args.batch_size)]
        configs = [("local, 1 worker", ["--workers", "1"]), ("local, 2 workers", ["--workers", "2"]),
                   ("local, decode in the main process", ["--workers", "0"])]
        if not args.no_ray:
            configs.append(("Ray (local, 1 actor)", ["--ray", "--ray-actors", "1"]))
        results = []
        for name, extra in configs:
            logger.info("running %s ...", name)
            results.append(run_config(name, tmp / "clips", tmp / f"out{len(results)}.parquet", common + extra, cores,
                                      args.preset))
    load = os.getloadavg()
    print(f"\nfer-annotate, preset {args.preset} (random weights), {args.clips} clips, {video_s:.1f} s of video, "
          f"batch {args.batch_size}, {cores} cores, load average {load[0]:.1f} (shared machine: noisy figures)\n")
    print("| configuration | annotation time | clips / min | video-s / min | windows / s | peak RSS (tree sum) "
          "| peak PSS (tree) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        minutes = r["run_seconds"] / 60
        print(f"| {r['name']} | {r['run_seconds']:.1f} s | {args.clips / minutes:.1f} | {video_s / minutes:.1f} | "
              f"{r['windows'] / r['run_seconds']:.2f} | {r['peak_rss_gb']:.2f} GB | {r['peak_pss_gb']:.2f} GB |")
    base = results[0]["run_seconds"]
    for r in results[1:]:
        print(f"\n{r['name']}: {r['run_seconds'] / base:.2f}x the time of {results[0]['name']}", end="")
        if r.get("ray_start_s") is not None:
            print(f" (plus {r['ray_start_s']:.1f} s to start Ray)", end="")
    print()
    if args.json:
        Path(args.json).write_text(json.dumps(dict(preset=args.preset, clips=args.clips, video_s=video_s,
                                                   cores=cores, load=load, results=results), indent=2))


if __name__ == "__main__":
    main()
