"""Benchmark: the tiny preset trained on the synthetic set, evaluated on held-out synthetic actors, from cold.

    python benchmarks/bench_train_synthetic.py                 # all 4 folds (every actor held out once)
    python benchmarks/bench_train_synthetic.py --folds 0       # one fold
    python benchmarks/bench_train_synthetic.py --cache-sizes   # cache bytes per clip for the seed/realtime presets

Counted from a cold start (the work folder is deleted first): generating the dataset (8 actors x 8 classes x 3
clips), building the preprocessing cache, training one model per fold with `python -m fer_hf.tools.train` and
evaluating it on that fold's test actors with `python -m fer_hf.tools.evaluate` (both run in-process through their
`parse_args`/`run`, with exactly the flags logged). Target: >= 90 % accuracy on held-out actors within 10 minutes
on 2 CPU cores. Writes `benchmarks/results/bench_train_synthetic.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_hf import FERConfig, FERProcessor  # noqa: E402
from fer_hf.tools import evaluate as fer_evaluate  # noqa: E402
from fer_hf.tools import train as fer_train  # noqa: E402
from fer_hf.tools.data import build_cache  # noqa: E402
from fer_hf.tools.ravdess import build_index  # noqa: E402
from fer_hf.tools.synthetic import SyntheticSpec, generate  # noqa: E402

logger = logging.getLogger("bench_train_synthetic")

TARGET_ACCURACY = 0.90
TARGET_SECONDS = 600.0


def train_flags(work: Path, fold: str | None, epochs: int | None, workers: int) -> list[str]:
    """The fold runs' flags; `fold=None, epochs=None`: the release run's (epochs chosen by the folds)."""
    return [
        "--data-root", str(work / "data"), "--folds", str(work / "data" / "folds.json"),
        *(["--fold", fold] if fold is not None else ["--mode", "release"]),
        "--preset", "tiny", "--cache-dir", str(work / "cache"), "--output-dir", str(work / "checkpoints"),
        *(["--epochs", str(epochs)] if epochs is not None else []), "--batch-size", "16", "--lr", "1e-3",
        "--backbone-lr", "1e-3", "--warmup-ratio", "0.1", "--workers", str(workers), "--logging-steps", "6",
        "--no-progress",
    ]


def eval_flags(work: Path, fold: str, workers: int) -> list[str]:
    return [
        "--data-root", str(work / "data"), "--folds", str(work / "data" / "folds.json"), "--fold", fold,
        "--checkpoint", str(work / "checkpoints" / "fold{fold}" / "final"), "--cache-dir", str(work / "cache"),
        "--workers", str(workers), "--out", str(work / "results"), "--no-progress",
    ]


def measure_cache_sizes(work: Path, out: Path, num_clips: int = 8) -> dict:
    """Cache bytes per clip for the seed (90 frames) and realtime (8 frames) presets, JPEG and PNG crops, on
    RAVDESS-shaped synthetic clips (1280x720, 30 fps, 3.5-4 s, 48 kHz audio), and x 1440 for RAVDESS."""
    shutil.rmtree(work, ignore_errors=True)
    spec = SyntheticSpec(num_actors=1, clips_per_class=1, seconds=(3.5, 4.0), width=1280, height=720, fps=30,
                         num_folds=1)
    generate(work / "data", spec)
    clips = build_index(work / "data").clips[:num_clips]
    sizes = {}
    for preset in ("seed", "realtime"):
        processor = FERProcessor.from_model_config(FERConfig.from_preset(preset))
        for image_format in ("jpeg", "png"):
            t = time.perf_counter()
            report = build_cache(clips, processor, work / "cache", image_format=image_format, progress=False)
            per_clip = report.bytes_written / max(len(report.entries), 1)
            sizes[f"{preset}/{image_format}"] = {
                "frames": processor.num_frames, "crop": processor.image_size, "clips": len(report.entries),
                "kb_per_clip": round(per_clip / 1e3, 1), "ravdess_1440_gb": round(per_clip * 1440 / 1e9, 3),
                "seconds_per_clip": round((time.perf_counter() - t) / max(len(clips), 1), 3),
            }
            logger.info("%s %s: %.1f kB per clip -> %.2f GB for 1440 RAVDESS clips (%.2f s per clip)", preset,
                        image_format, per_clip / 1e3, per_clip * 1440 / 1e9, sizes[f"{preset}/{image_format}"][
                            "seconds_per_clip"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"source": "synthetic 1280x720 30 fps clips", "sizes": sizes}, indent=1))
    return sizes


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/fer_bench_train_synthetic", help="deleted first (cold start)")
    p.add_argument("--folds", default="all", help="'all' (default) or one fold index (0-3)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--workers", type=int, default=2, help="processes for generation and caching")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_train_synthetic.json"))
    p.add_argument("--cache-sizes", action="store_true", help="only measure the cache size per clip and preset")
    p.add_argument("--release", action="store_true",
                   help="also train the release model on every actor (epochs = median of the folds' best epochs)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("transformers").setLevel(logging.WARNING)
    if args.cache_sizes:
        return measure_cache_sizes(Path(args.workdir), Path(args.out).with_name("cache_sizes.json"))

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    timings = {}
    load_start = os.getloadavg()
    t0 = time.perf_counter()

    spec = SyntheticSpec()
    generate(work / "data", spec, workers=args.workers)
    timings["generate"] = time.perf_counter() - t0

    t = time.perf_counter()
    processor = FERProcessor.from_model_config(FERConfig.from_preset("tiny"))
    report = build_cache(build_index(work / "data").clips, processor, work / "cache", workers=args.workers,
                         progress=False)
    timings["cache"] = time.perf_counter() - t

    t = time.perf_counter()
    tflags = train_flags(work, args.folds, args.epochs, args.workers)
    logger.info("python -m fer_hf.tools.train %s", shlex.join(tflags))
    infos = fer_train.run(fer_train.parse_args(tflags))
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    eflags = eval_flags(work, args.folds, args.workers)
    logger.info("python -m fer_hf.tools.evaluate %s", shlex.join(eflags))
    results = fer_evaluate.run(fer_evaluate.parse_args(eflags))
    timings["evaluate"] = time.perf_counter() - t
    release = None
    if args.release:
        t = time.perf_counter()
        release = fer_train.run(fer_train.parse_args(train_flags(work, None, None, args.workers)))[0]
        timings["release"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    accuracies = [f["accuracy"] for f in results["folds"]]
    summary = {
        "command": "python benchmarks/bench_train_synthetic.py " + shlex.join(argv or sys.argv[1:]),
        "train_command": "python -m fer_hf.tools.train " + shlex.join(tflags),
        "evaluate_command": "python -m fer_hf.tools.evaluate " + shlex.join(eflags),
        "dataset": {"actors": spec.num_actors, "clips": len(report.entries), "failed": report.failed,
                    "folds": spec.num_folds, "size": f"{spec.width}x{spec.height}", "fps": spec.fps,
                    "seconds": list(spec.seconds), "cache_mb": round(report.bytes_written / 1e6, 2)},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "per_fold": [{"fold": f["fold"], "test_actors": f["test_actors"], "accuracy": f["accuracy"], "uar": f["uar"],
                      "macro_f1": f["macro_f1"]} for f in results["folds"]],
        "train_seconds_per_fold": [i["seconds"] for i in infos],
        "release": None if release is None else {"epochs": release["epochs_trained"],
                                                 "best_epochs_of_folds": release["release"]["best_epochs"],
                                                 "train_clips": release["num_train_clips"]},
        "accuracy": results["summary"]["accuracy"],
        "uar": results["summary"]["uar"],
        "macro_f1": results["summary"]["macro_f1"],
        "passed": bool(min(accuracies) >= TARGET_ACCURACY and timings["total"] <= TARGET_SECONDS),
        "targets": {"accuracy_each_fold": TARGET_ACCURACY, "seconds_total": TARGET_SECONDS},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    logger.info("stages (s): %s", summary["seconds"])
    logger.info("held-out accuracy per fold: %s; mean %.4f ± %.4f; passed=%s -> %s",
                [round(a, 4) for a in accuracies], summary["accuracy"]["mean"], summary["accuracy"]["std"],
                summary["passed"], out)
    return summary


if __name__ == "__main__":
    main()
