"""Live mode under load: a recorded clip streamed at real speed through the Live tab's server path.

    python benchmarks/bench_live.py --quick        # ~25 s per configuration (fp32 / int8, 1 and 2 sessions)
    python benchmarks/bench_live.py                # 10 minutes per configuration (the README's figures)
    python benchmarks/bench_live.py --preset tiny --quick      # a smoke run

What runs is what the app runs for a browser: per session, a feeder thread sends the clip's sound as 0.25 s
int16 chunks at 48 kHz (what Gradio's streaming microphone sends) and camera frames every 0.125 s (what the
streaming webcam sends), both when they would have been captured, into `fer_app.live.REGISTRY`'s `LiveSession`
(`push_audio` / `push_frame`); a ticker thread per session asks every 0.25 s for the newest window
(`next_window`, at least `STEP_S` after the last) and runs `LiveAnalyzer.analyze` under one lock shared by all
sessions (the Gradio `concurrency_limit=1` of the Live tab's model events). The clip loops.

Reported per configuration: updates per second per session, capture -> result latency (the time between the
window's newest sound/frame being captured and its result; the browser's display adds a few ms), p50 / p95,
compute per update, CPU use (cores) and RSS (start, peak, end; the state per session), and failures. Each
precision runs in its own process. Figures measured while other programs use the CPU are noisy: say so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK_S = 0.25
AUDIO_RATE = 48_000
FRAME_EVERY_S = 0.125
TICK_S = 0.25


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def spoken_audio(seconds: float):
    """int16 48 kHz mono: espeak-ng sentences back to back (tests/frontend_media.py), None without espeak-ng."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    import frontend_media

    voice = frontend_media.speech(seconds)
    if voice is None:
        return None
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    return (np.interp(t, np.arange(len(voice)) / 16000, voice) * 32767).astype(np.int16)


def load_clip(path: Path, frame_every_s: float, max_side: int = 640):
    """The clip's frames every `frame_every_s` (uint8 RGB, long side <= max_side) and its sound (int16, 48 kHz)."""
    import av
    import numpy as np

    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            if not times or t >= times[-1] + frame_every_s - 1e-3:
                scale = min(1.0, max_side / max(frame.width, frame.height))
                image = frame.reformat(width=round(frame.width * scale) // 2 * 2,
                                       height=round(frame.height * scale) // 2 * 2, format="rgb24")
                frames.append(image.to_ndarray())
                times.append(t)
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
        parts = []
        for frame in container.decode(container.streams.audio[0]):
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        audio = np.concatenate(parts).astype(np.int16)
    return frames, audio


def run_sessions(analyzer, registry, frames, audio, sessions: int, seconds: float, step_s: float) -> dict:
    """Stream to `sessions` concurrent sessions for `seconds`; the model runs under one shared lock."""
    model_lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []
    stats = [dict(compute=[], updates=0) for _ in range(sessions)]
    live = [registry.start(f"bench-{i}", analyzer, client=f"bench-client-{i}") for i in range(sessions)]  # one each
    chunk = round(CHUNK_S * AUDIO_RATE)

    def feed(session):
        begun = time.monotonic()
        next_chunk, next_frame, k, c = CHUNK_S, 0.0, 0, 0
        while not stop.is_set():
            now = time.monotonic() - begun
            if now >= next_chunk:  # a chunk is sent once its last sample has been captured
                start = (c * chunk) % max(1, len(audio) - chunk)
                session.push_audio(audio[start:start + chunk], AUDIO_RATE)
                c, next_chunk = c + 1, next_chunk + CHUNK_S
            if now >= next_frame:
                session.push_frame(frames[k % len(frames)])
                k, next_frame = k + 1, next_frame + FRAME_EVERY_S
            time.sleep(max(0.0, min(next_chunk, next_frame) - (time.monotonic() - begun)))

    def tick(i, session):
        while not stop.is_set():
            due = time.monotonic() + TICK_S
            registry.touch(f"bench-{i}")  # the page's tick and chunks keep the session alive (else reaped when idle)
            with model_lock:
                window = session.next_window(step_s)
                if window is None:  # as the Live tab's tick does: prepare the final frames ahead
                    analyzer.prefetch(session)
                else:
                    try:
                        update = analyzer.analyze(session, window)
                        if update is not None:
                            stats[i]["updates"] += 1
                            stats[i]["compute"].append(update.compute_s)
                    except Exception as exc:  # counted, never hidden
                        failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(max(0.0, due - time.monotonic()))

    threads = [threading.Thread(target=feed, args=(s,), daemon=True) for s in live]
    threads += [threading.Thread(target=tick, args=(i, s), daemon=True) for i, s in enumerate(live)]
    cpu0, wall0, rss0 = os.times(), time.monotonic(), rss_mb()
    rss_trace, state_trace = [], []
    for t in threads:
        t.start()
    while time.monotonic() - wall0 < seconds:
        time.sleep(1.0)
        rss_trace.append(rss_mb())
        state_trace.append(max(s.stored_bytes() for s in live) / 2**20)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    cpu1, wall = os.times(), time.monotonic() - wall0
    per_session = []
    for i, s in enumerate(live):
        latencies = sorted(u.latency_s for u in s.updates)
        q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None  # noqa: E731
        gaps = [b.produced_s - a.produced_s for a, b in zip(list(s.updates), list(s.updates)[1:])]
        per_session.append({
            "updates": stats[i]["updates"], "updates_per_s": round(stats[i]["updates"] / wall, 3),
            "latency_p50_s": q(0.5), "latency_p95_s": q(0.95),
            "update_interval_p95_s": round(sorted(gaps)[int(0.95 * (len(gaps) - 1))], 3) if gaps else None,
            "compute_median_s": round(statistics.median(stats[i]["compute"]), 3) if stats[i]["compute"] else None,
            "both_modalities": sum(u.modalities["audio"] and u.modalities["video"] for u in s.updates),
            "frames_received": s.frames.frames_received, "audio_gaps": s.audio.gaps_inserted,
            "session_expired": s.expired,  # True would mean the app's session limit cut the run short
        })
        registry.end(f"bench-{i}")
    half = len(rss_trace) // 2
    return {
        "sessions": sessions, "seconds": round(wall, 1), "failures": failures[:5], "num_failures": len(failures),
        "per_session": per_session,
        "cpu_cores": round((cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall, 2),
        "rss_mb": {"start": round(rss0), "peak": round(max(rss_trace)), "end": round(rss_trace[-1]),
                   "first_half_peak": round(max(rss_trace[:half] or rss_trace)),
                   "second_half_peak": round(max(rss_trace[half:]))},
        "session_state_mb_peak": round(max(state_trace), 2),
    }


def incremental_vs_full(analyzer, frames, audio, repeats: int = 4) -> dict:
    """Seconds per update of the live path (2 new frames through the face front-end and SigLIP, 6 from the cache)
    against the same window made from scratch (a fresh session: all 8 frames through the face front-end and
    SigLIP), alternated on the same windows so that machine load hits both alike."""
    sent = {"frames": 0, "chunks": 0, "now": 0.0}
    session = analyzer.new_session(session_seconds=600, clock=lambda: sent["now"])  # the streams' own clock
    chunk = round(CHUNK_S * AUDIO_RATE)
    pictures = {}

    def stream_until(t_end):
        sent["now"] = t_end
        while sent["frames"] * FRAME_EVERY_S < t_end:
            k = sent["frames"]
            pictures[round(k * FRAME_EVERY_S, 6)] = frames[k % len(frames)]
            session.push_frame(frames[k % len(frames)], arrival_s=k * FRAME_EVERY_S)
            sent["frames"] += 1
        while (sent["chunks"] + 1) * CHUNK_S <= t_end:
            c = sent["chunks"]
            start = (c * chunk) % max(1, len(audio) - chunk)
            session.push_audio(audio[start:start + chunk], AUDIO_RATE, arrival_s=(c + 1) * CHUNK_S)
            sent["chunks"] += 1

    stream_until(3.5)
    analyzer.analyze(session, session.next_window(0.0))  # fills the cache
    live, full = [], []
    for i in range(repeats):
        stream_until(3.5 + 0.75 * (i + 1))
        window = session.next_window(0.75)
        began = time.perf_counter()
        update = analyzer.analyze(session, window)
        live.append(time.perf_counter() - began)
        fresh = analyzer.new_session(session_seconds=600).engine
        for f in update.window.frames:
            fresh.add_frame(f.source_time_s, pictures[round(f.source_time_s, 6)])
        began = time.perf_counter()
        fresh.classify_window(window.audio, window.end_s, start_s=window.start_s)
        full.append(time.perf_counter() - began)
        assert update.new_frames == 2 and fresh.frames_embedded == 8, (update, fresh.frames_embedded)
    return {"live_update_s": round(statistics.median(live), 3), "full_window_s": round(statistics.median(full), 3),
            "ratio": round(statistics.median(live) / statistics.median(full), 3)}


def child(args) -> None:
    """One precision in this process: 1 session, then 2 concurrent sessions."""
    import torch

    # The app's session limit (FER_LIVE_SECONDS, 300 s by default) would end a session before a 10-minute run does.
    os.environ["FER_LIVE_SECONDS"] = str(int(args.seconds + 120))
    from fer_app import live as app_live
    from fer_app.streaming import LiveAnalyzer
    from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor

    torch.manual_seed(0)
    if args.model:  # a saved folder, e.g. the shipped checkpoints/compact
        model = FERForEmotionClassification.from_pretrained(args.model).eval()
        processor = FERProcessor.from_pretrained(args.model)
        args.preset = model.config.preset or args.model
    else:
        config = FERConfig.from_preset(args.preset)
        model = FERForEmotionClassification(config).eval()
        processor = FERProcessor.from_model_config(config)
    if args.precision == "int8":
        model.quantize_int8_()
    frames, audio = load_clip(Path(args.clip), FRAME_EVERY_S)
    if args.voice == "espeak":  # real (synthetic) speech: the clip's own tone-like voice is borderline for the VAD
        audio = spoken_audio(len(frames) * FRAME_EVERY_S)
        if audio is None:
            raise SystemExit("--voice espeak needs espeak-ng (apt-get install espeak-ng); or pass --voice clip")
    analyzer = LiveAnalyzer(model, processor)
    registry = app_live.LiveRegistry(max_sessions=2)
    warm = analyzer.new_session(session_seconds=600)  # first call pays one-time costs (detector, kernels)
    for k in range(24):
        warm.push_frame(frames[k % len(frames)], arrival_s=k * FRAME_EVERY_S)
    warm.push_audio(audio[: 3 * AUDIO_RATE], AUDIO_RATE, arrival_s=3.0)
    window = warm.next_window(0.0)
    if window is not None:
        analyzer.analyze(warm, window)
    results = {"preset": args.preset, "precision": args.precision, "torch_threads": torch.get_num_threads(),
               "voice": args.voice,
               "incremental_vs_full": incremental_vs_full(analyzer, frames, audio),
               "runs": [run_sessions(analyzer, registry, frames, audio, n, args.seconds, app_live.STEP_S)
                        for n in (1, 2)],
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print(json.dumps(results))


def table(results: list[dict]) -> str:
    lines = ["| preset, precision | sessions | updates/s per session | latency p50 / p95 (s) | compute per update (s) "
             "| face + speech used | CPU (cores) | RSS start → peak → end (MB) | failures |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for run in r["runs"]:
            s = run["per_session"]
            rate = " / ".join(f"{x['updates_per_s']:.2f}" for x in s)
            lat = " / ".join(f"{x['latency_p50_s']:.2f} / {x['latency_p95_s']:.2f}" if x["latency_p50_s"] is not None
                             else "–" for x in s)
            comp = " / ".join(f"{x['compute_median_s']}" for x in s)
            both = " / ".join(f"{x['both_modalities']} of {x['updates']}" for x in s)
            rss = run["rss_mb"]
            lines.append(f"| {r['preset']}, {r['precision']} | {run['sessions']} | {rate} | {lat} | {comp} | {both} | "
                         f"{run['cpu_cores']} | {rss['start']} → {rss['peak']} → {rss['end']} | "
                         f"{run['num_failures']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="25 s per configuration instead of 10 minutes")
    parser.add_argument("--seconds", type=float, default=None, help="streaming time per configuration")
    parser.add_argument("--preset", default="realtime")
    parser.add_argument("--model", help="a saved model folder (e.g. checkpoints/compact) instead of --preset")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--clip", default=str(ROOT / "examples" / "astronaut_timeline.mp4"),
                        help="the recorded clip streamed in a loop (needs sound and a face)")
    parser.add_argument("--voice", choices=("espeak", "clip"), default="espeak",
                        help="the sound streamed: espeak-ng sentences over the clip's frames (default; speech, so the "
                             "speech decision lets it through as for a person talking) or the clip's own sound")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.seconds = args.seconds or (25.0 if args.quick else 600.0)
    if args.child:
        logging.basicConfig(level=logging.WARNING)
        child(args)
        return
    results = []
    for precision in args.precisions.split(","):
        cmd = [sys.executable, __file__, "--child", "--precision", precision, "--preset", args.preset,
               "--seconds", str(args.seconds), "--clip", args.clip, "--voice", args.voice,
               *(["--model", args.model] if args.model else [])]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{precision} run failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1], indent=1), flush=True)
    load = os.getloadavg()
    print(f"\nmachine: {os.cpu_count()} logical cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          f"(1 / 5 / 15 min) at the end; {args.seconds:.0f} s per configuration\n")
    print(table(results))
    for r in results:
        c = r["incremental_vs_full"]
        print(f"\n{r['preset']} {r['precision']}: a live update (2 new frames, 6 cached) takes "
              f"{c['live_update_s']} s; the same window from scratch (8 frames through the face front-end and "
              f"SigLIP) {c['full_window_s']} s: ratio {c['ratio']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
