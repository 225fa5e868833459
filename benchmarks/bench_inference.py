"""Where inference time goes, per preset, on a generated 3 s 720p clip — and the speed levers.

    python benchmarks/bench_inference.py --quick            # CI-sized: realtime preset + VideoMAE, 1 run each
    python benchmarks/bench_inference.py                    # README figures: seed, realtime, levers, 3 runs each
    python benchmarks/bench_inference.py --device cuda      # on a GPU machine

One run measures this machine's fp32 matmul peak, then each configuration in its own subprocess (so peak RSS is
that configuration's own): parameters and FLOPs per component (counted with `torch.utils.flop_counter`), time per
component (medians over runs), achieved GFLOP/s and fraction of the measured peak, end-to-end time (decode → face →
features → model → probabilities), real-time factor (wall time / clip length) and peak RSS. It also times
transformers' `VideoMAEForVideoClassification` (base shape, 16 frames, random weights) as the peer a user would
otherwise pick. Each lever (frame count, ROI patch dropping, int8, chunk size, threads) is reported with its speed-up
and its fidelity to the fp32 seed-path outputs on the same weights (top-1 agreement, max probability difference).
Weights are random unless `--model DIR` names a trained checkpoint, so fidelity figures describe the numerical path,
not accuracy.
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

COMPONENTS = {  # report name -> module prefixes inside FERForEmotionClassification
    "audio encoder (FastConformer)": ("audio_encoder",),
    "audio segment pool": ("audio_segment_pool",),
    "vision encoder (SigLIP)": ("vision_encoder",),
    "visual head (ROI, frame pool, temporal)": (
        "roi_compressor",
        "frame_pool",
        "temporal_encoder",
        "visual_segment_pool",
    ),
    "fusion (LFM2)": ("fusion",),
    "classifier": ("temporal_pool", "classifier"),
}
TIMED_MODULES = {  # modules whose forward is timed (SigLIP pieces: the ROI path calls them one by one)
    "audio encoder (FastConformer)": ["audio_encoder"],
    "audio segment pool": ["audio_segment_pool"],
    "vision encoder (SigLIP)": ["vision_encoder.embeddings", "vision_encoder.encoder", "vision_encoder.post_layernorm"],
    "visual head (ROI, frame pool, temporal)": COMPONENTS["visual head (ROI, frame pool, temporal)"],
    "fusion (LFM2)": ["fusion"],
    "classifier": ["temporal_pool", "classifier"],
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def matmul_peak_gflops(device: str, sizes=(1024, 2048, 3072), repeats: int = 8) -> float:
    """Best fp32 GFLOP/s of square matmuls on this device (a practical roofline for the model's matmuls)."""
    import torch

    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, device=device)
        b = torch.randn(size, size, device=device)
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ b
            if device == "cuda":
                torch.cuda.synchronize()
            best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def make_clip(path: Path, index: int = 0, seconds: float = 3.0) -> Path:
    """A 3 s 1280x720 30 fps H.264/AAC clip with a real face (scikit-image's astronaut photo) and real speech
    (espeak-ng sentences, so the speech decision lets the audio encoder run: a tone is rejected as "music or
    noise" and the FastConformer would never be timed); `index` varies the background, the sentence, the noise and
    the face placement so the fidelity clips differ."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    import frontend_media

    from tests.media_factory import astronaut_face
    from tests.media_factory import make_clip as factory_make_clip

    speech = frontend_media.speech(seconds + 1.0 * index)
    if speech is None:
        raise SystemExit("bench_inference needs espeak-ng for its spoken clips (apt-get install espeak-ng)")
    speech = speech[int(16000 * index):][:int(16000 * seconds)]
    t = np.arange(int(seconds * 48000)) / 48000
    audio = np.interp(t, np.arange(len(speech)) / 16000, speech, right=0.0).astype(np.float32)

    backgrounds = ("gradient", "noise", "gradient", "noise")
    x0, y0, side = 380 + 60 * index, 140 + 20 * index, 380 + 20 * index
    box = (x0, y0, x0 + side, y0 + side)  # where the face image is pasted, (x0, y0, x1, y1) in video pixels
    factory_make_clip(
        path,
        seconds=seconds,
        fps=30,
        size=(1280, 720),
        face_image=astronaut_face(),
        face_box=box,
        background=backgrounds[index % 4],
        seed=index,
        audio=audio,
        sample_rate=48000,
        channels=1,
    )
    return path


# ------------------------------------------------------------------------------------------------------------
# Worker: one configuration, in its own process.
def run_worker(spec: dict) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor

    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    device = spec["device"]
    if spec.get("model"):
        model = FERForEmotionClassification.from_pretrained(spec["model"])
        for key, value in spec.get("overrides", {}).items():
            setattr(model.config, key, value)
    else:
        torch.manual_seed(0)  # same weights in every worker: fidelity compares the same model on other paths
        model = FERForEmotionClassification(FERConfig.from_preset(spec["preset"], **spec.get("overrides", {})))
    model = model.eval().to(device)
    if spec.get("int8"):
        model.quantize_int8_()
    processor = FERProcessor.from_model_config(model.config)

    timings: dict[str, float] = {}

    def timer(name):
        def pre(*_):
            if device == "cuda":
                torch.cuda.synchronize()
            timings.setdefault(name + "#start", time.perf_counter())

        def post(*_):
            if device == "cuda":
                torch.cuda.synchronize()
            start = timings.pop(name + "#start")
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

        return pre, post

    modules = dict(model.named_modules())
    for component, names in TIMED_MODULES.items():
        for name in names:
            pre, post = timer(component)
            modules[name].register_forward_pre_hook(pre)
            modules[name].register_forward_hook(post)

    def end_to_end(clip):
        start = time.perf_counter()
        inputs = processor(videos=str(clip), return_tensors="pt")
        preprocess = time.perf_counter() - start
        with torch.inference_mode():
            outputs = model(**inputs.to(device))
        probs = [r.probabilities for r in processor.post_process(outputs)]
        if device == "cuda":
            torch.cuda.synchronize()
        return preprocess, time.perf_counter() - start, probs, outputs

    clips = spec["clips"]
    _, _, _, warm = end_to_end(clips[0])  # warm-up (allocations, lazy imports, cascade loading)
    used = warm.modalities_used[0].tolist()
    if used != [True, True]:  # a figure of a model whose branch did not run would be a figure of another model
        raise SystemExit(f"{spec['name']}: the clip did not run both branches (audio, video used: {used}); the "
                         "timings would leave a branch out")
    runs = []
    for _ in range(spec["runs"]):
        timings.clear()
        preprocess, total, _, _ = end_to_end(clips[0])
        runs.append({"preprocess (decode, face, features)": preprocess, "end to end": total, **timings})
    medians = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    spread = {key: (min(r[key] for r in runs), max(r[key] for r in runs)) for key in runs[0]}

    probabilities = [end_to_end(clip)[2][0] for clip in clips]  # one dict per fidelity clip

    flops = {}
    if not spec.get("int8"):  # the FLOP counter does not see quantised kernels
        inputs = processor(videos=str(clips[0]), return_tensors="pt").to(device)
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            model(**inputs)
        per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
        root = type(model).__name__
        for component, prefixes in COMPONENTS.items():
            # a module's count includes its children's; the ROI path calls SigLIP's children directly, so take the
            # outermost recorded modules under each prefix
            names = [n for n in per_module for p in prefixes if n == f"{root}.{p}" or n.startswith(f"{root}.{p}.")]
            outermost = [n for n in names if not any(n.startswith(other + ".") for other in names)]
            flops[component] = sum(per_module[n] for n in outermost)
        flops["model total"] = per_module.get("Global", 0)

    params = {
        component: sum(p.numel() for prefix in prefixes for p in modules[prefix].parameters())
        for component, prefixes in COMPONENTS.items()
    }
    return {
        "name": spec["name"],
        "preset": spec["preset"],
        "num_frames": model.config.num_frames,
        "vision_keep_patches": model.config.vision_keep_patches,
        "int8": bool(spec.get("int8")),
        "threads": torch.get_num_threads(),
        "chunk": model.config.vision_chunk_size,
        "seconds": medians,
        "seconds_min_max": spread,
        "flops": flops,
        "params": params,
        "probabilities": probabilities,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_videomae(spec: dict) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    torch.manual_seed(0)
    model = VideoMAEForVideoClassification(VideoMAEConfig(num_frames=16, image_size=224, num_labels=8))
    model = model.eval().to(spec["device"])
    pixels = torch.randn(1, 16, 3, 224, 224, device=spec["device"])
    with torch.inference_mode():
        model(pixel_values=pixels)
        times = []
        for _ in range(spec["runs"]):
            start = time.perf_counter()
            model(pixel_values=pixels)
            if spec["device"] == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        counter = FlopCounterMode(display=False)
        with counter:
            model(pixel_values=pixels)
    return {
        "name": "VideoMAE-base (16 frames)",
        "seconds": {"model forward": statistics.median(times)},
        "seconds_min_max": {"model forward": (min(times), max(times))},
        "flops": {"model total": counter.get_total_flops()},
        "params": {"total": sum(p.numel() for p in model.parameters())},
        "peak_rss_mb": peak_rss_mb(),
    }


# ------------------------------------------------------------------------------------------------------------
def spawn(spec: dict) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env, cwd=ROOT
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {spec['name']} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fidelity(result: dict, reference: dict) -> dict:
    """Top-1 agreement, max |probability difference| and the mean Pearson correlation of the 8 probabilities
    (per clip) over the fidelity clips."""
    import numpy as np

    agree, worst, corr = [], 0.0, []
    for probs, ref in zip(result["probabilities"], reference["probabilities"]):
        agree.append(max(probs, key=probs.get) == max(ref, key=ref.get))
        worst = max(worst, max(abs(probs[k] - ref[k]) for k in ref))
        a, b = np.array([probs[k] for k in ref]), np.array([ref[k] for k in ref])
        corr.append(float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 1.0)
    return {"top1_agreement": sum(agree) / len(agree), "max_prob_diff": worst, "prob_correlation": float(np.mean(corr))}


def plan(args) -> list[dict]:
    base = dict(device=args.device, runs=args.runs, model=args.model)
    realtime = dict(base, name="realtime", preset="realtime")
    specs = [dict(base, name="seed-path fp32 (reference for fidelity)", preset="seed")] if not args.quick else []
    specs.append(realtime)
    if not args.quick:
        specs += [
            dict(realtime, name="realtime, int8", int8=True),
            dict(realtime, name="realtime, all 196 patches", overrides={"vision_keep_patches": None}),
            dict(realtime, name="realtime, 1 thread", threads=1),
            dict(realtime, name="realtime, 16 frames", overrides={"num_frames": 16}),
            dict(base, name="seed, int8", preset="seed", int8=True),
            dict(base, name="seed, one 90-frame chunk", preset="seed", overrides={"vision_chunk_size": 90}),
            dict(base, name="seed, chunks of 16", preset="seed", overrides={"vision_chunk_size": 16}),
            dict(base, name="seed, chunks of 4", preset="seed", overrides={"vision_chunk_size": 4}),
        ]
    return specs


def table(results: list[dict], peak: float, clip_seconds: float) -> str:
    lines = []
    for r in results:
        sec, flops = r["seconds"], r.get("flops", {})
        lines.append(f"\n== {r['name']}  (peak RSS {r['peak_rss_mb']:.0f} MB)")
        lines.append(
            f"{'component':42s} {'params M':>9s} {'GFLOPs':>9s} {'time s':>8s} {'GFLOP/s':>8s} {'of peak':>8s}"
        )
        for component in list(COMPONENTS) + ["model total"]:
            if component not in sec and component not in flops:
                continue
            t, f = sec.get(component), flops.get(component)
            p = r.get("params", {}).get(component)
            rate = f / t / 1e9 if f and t else None
            lines.append(
                f"{component:42s} {'' if p is None else f'{p / 1e6:9.1f}':>9s} "
                f"{'' if f is None else f'{f / 1e9:9.1f}':>9s} {'' if t is None else f'{t:8.3f}':>8s} "
                f"{'' if rate is None else f'{rate:8.1f}':>8s} {'' if rate is None else f'{rate / peak:8.0%}':>8s}"
            )
        for key in ("preprocess (decode, face, features)", "end to end", "model forward"):
            if key in sec:
                lo, hi = r["seconds_min_max"][key]
                lines.append(f"{key:42s} {'':>9s} {'':>9s} {sec[key]:8.3f}   (min {lo:.3f}, max {hi:.3f})")
        if "end to end" in sec:
            lines.append(
                f"{f'real-time factor (wall / {clip_seconds} s clip)':42s} {sec['end to end'] / clip_seconds:27.2f}"
            )
        if "fidelity" in r:
            fid = r["fidelity"]
            lines.append(
                f"fidelity vs seed-path fp32: top-1 agreement {fid['top1_agreement']:.0%}, "
                f"max prob diff {fid['max_prob_diff']:.4f}"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="realtime preset and VideoMAE only, 1 run")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--runs", type=int, default=None, help="timed runs per configuration (default 3; quick 1)")
    parser.add_argument("--model", default=None, help="a trained checkpoint folder instead of random weights")
    parser.add_argument("--fidelity-clips", type=int, default=3)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bench_inference.json"))
    parser.add_argument("--from-json", default=None, help="print the report of an earlier run's JSON")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.from_json:
        sys.stdout.write(report(json.loads(Path(args.from_json).read_text())) + "\n")
        return
    if args.worker:
        spec = json.loads(args.worker)
        result = run_videomae(spec) if spec.get("videomae") else run_worker(spec)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    args.runs = args.runs or (1 if args.quick else 3)

    import torch

    peak_start = matmul_peak_gflops(args.device)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"
    with tempfile.TemporaryDirectory() as tmp:
        clips = [str(make_clip(Path(tmp) / f"clip{i}.mp4", i)) for i in range(max(1, args.fidelity_clips))]
        results = []
        for spec in plan(args):
            spec["clips"] = clips
            results.append(spawn(spec))
            sys.stderr.write(f"done: {spec['name']}\n")
        results.append(spawn(dict(name="videomae", videomae=True, device=args.device, runs=args.runs)))
    peak = max(peak_start, matmul_peak_gflops(args.device))  # the best of two measurements, start and end
    summary = {
        "machine": machine,
        "device": args.device,
        "matmul_peak_gflops": peak,
        "peak_at_start": peak_start,
        "results": results,
    }
    reference = next((r for r in results if r["name"].startswith("seed-path")), None)
    for r in results[:-1]:
        if reference is not None and r is not reference:
            r["fidelity"] = fidelity(r, reference)  # against the fp32 seed path
    text = report(summary)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(summary, indent=2))
    sys.stdout.write(text + f"\nwritten: {args.output}\n")


def lever_baseline(name: str, names: list[str]) -> str | None:
    """The configuration a lever changes: 'realtime, X' -> 'realtime'; 'seed, X' and 'realtime' -> the seed path."""
    seed = next((n for n in names if n.startswith("seed-path")), None)
    if name.startswith("realtime,") and "realtime" in names:
        return "realtime"
    return seed if name != seed else None


def report(summary: dict) -> str:
    """The per-configuration tables, the target lines and the lever table, from a results dict."""
    results, peak = summary["results"], summary["matmul_peak_gflops"]
    text = [
        f"machine: {summary['machine']}; fp32 matmul peak {peak:.0f} GFLOP/s; device {summary['device']}",
        table(results, peak, 3.0),
        "",
    ]
    videomae = results[-1]["seconds"]["model forward"]
    by_name = {r["name"]: r for r in results[:-1]}
    for r in results[:-1]:
        model_time = sum(v for k, v in r["seconds"].items() if k in COMPONENTS)
        r["model_seconds"] = model_time
        floor = r["flops"].get("model total", 0) / (peak * 1e9) if r["flops"] else None
        ratio = (
            f", model {model_time / floor:.2f}x / end to end {r['seconds']['end to end'] / floor:.2f}x its FLOP floor"
            if floor
            else ""
        )
        text.append(
            f"{r['name']}: model {model_time:.2f} s{ratio}; VideoMAE-base forward {videomae:.2f} s "
            f"(ratio {model_time / videomae:.2f}); end to end {r['seconds']['end to end']:.2f} s"
        )
    text += ["", "levers (speed-up and fidelity against the configuration each one changes; weights identical):"]
    header = (
        f"{'configuration':32s} {'vs':12s} {'e2e s':>7s} {'speed-up':>9s} {'top-1':>6s} {'max dp':>7s} "
        f"{'corr':>6s} {'RSS MB':>7s}"
    )
    text.append(header)
    for name, r in by_name.items():
        base_name = lever_baseline(name, list(by_name))
        if base_name is None:
            continue
        base = by_name[base_name]
        fid = fidelity(r, base)
        speed = base["seconds"]["end to end"] / r["seconds"]["end to end"]
        text.append(
            f"{name:32s} {base_name[:12]:12s} {r['seconds']['end to end']:7.2f} {speed:8.2f}x "
            f"{fid['top1_agreement']:6.0%} {fid['max_prob_diff']:7.4f} {fid['prob_correlation']:6.3f} "
            f"{r['peak_rss_mb']:7.0f}"
        )
    seed = next((r for r in results if r["name"].startswith("seed-path")), None)
    if seed is not None:
        top = max(max(p.values()) for p in seed["probabilities"])
        text.append(
            f"(largest class probability of the reference: {top:.3f}; near-uniform outputs of random weights "
            "make top-1 agreement a weak signal: pass --model with trained weights)"
        )
    return "\n".join(text)


if __name__ == "__main__":
    main()
