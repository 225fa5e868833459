"""Abuse suite for the Gradio app (issue 22): replays each abuse case against `python app.py` on 127.0.0.1.

    python benchmarks/abuse_app.py                          # tiny untrained model, every case
    python benchmarks/abuse_app.py --cases cancel,large     # some of them
    python benchmarks/abuse_app.py --preset realtime --out benchmarks/results/abuse_app.json

Starts the app in a subprocess on a free loopback port (never any other host) with its own GRADIO_TEMP_DIR, measures
the idle latency of a normal 4 s clip through `/analyze`, then for each case runs the abuse (bounded in count and
time) while a normal client sends the same 4 s clip, and reports: what the server answered, its resident memory
(with children) at the start / peak / 20 s after the case, and the normal clip's latency during the abuse next to
the idle one. The criterion of the issue: latency within 3x idle, memory back within 300 MB of the start.

Cases (the numbers of the issue):
  cancel      1. three submit-and-cancel cycles of a heavy (but allowed) 29 s 4K clip, then the normal clip
  large       2. sixteen uploads of clips over the decoding budget (5120x4096 frames; 5000 frames of 64x64)
  live_audio  3. live microphone chunks (plain HTTP) declaring 4 Hz and 1 Hz
  live_start  4. two plain-HTTP "Start" calls that never come back; when can someone else start?
  upload      5. uploads as fast as one client can for 5 s (64 MB/s in the issue)
  paths       8. does an /analyze result name a server path?
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from load_test_app import HOST, RssSampler, free_port, rss_bytes, wait_until_up  # noqa: E402

MB = 2**20


# ----------------------------------------------------------------------------------------------------------------
# Media
def make_media(folder: Path) -> dict:
    from media_factory import astronaut_face, make_clip

    face = dict(face_image=astronaut_face(), face_box=(90, 30, 250, 190))
    return {
        "normal": make_clip(folder / "normal.mp4", seconds=4, fps=15, size=(320, 240), **face)["path"],
        "heavy": make_clip(folder / "heavy.mp4", seconds=29, fps=10, size=(3840, 2160), background="plain",
                           face_image=astronaut_face())["path"],
        "big_frames": make_clip(folder / "big_frames.mp4", seconds=2, fps=2, size=(5120, 4096), audio=None,
                                background="plain")["path"],
        "many_frames": make_clip(folder / "many_frames.mp4", seconds=10, fps=500, size=(64, 64), audio=None,
                                 background="plain")["path"],
    }


def wav_bytes(rate: int, samples: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.random.default_rng(0).standard_normal(samples) * 3000).astype(np.int16).tobytes())
    return out.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# Plain HTTP against Gradio's queue
class Http:
    def __init__(self, url: str):
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=60)
        self.config = self.http.get(f"{self.url}/config").json()

    def fn_index(self, elem_id: str, trigger: str) -> tuple[int, int]:
        comp = next(c["id"] for c in self.config["components"] if c.get("props", {}).get("elem_id") == elem_id)
        for dep in self.config["dependencies"]:
            if [comp, trigger] in [list(t) for t in dep["targets"]]:
                return dep["id"], comp
        raise LookupError(f"no {trigger} event on #{elem_id}")

    def upload(self, name: str, data: bytes):
        return self.http.post(f"{self.url}/gradio_api/upload", files={"files": (name, data)})

    def call(self, fn: int, trigger: int, data: list, session: str, timeout_s: float = 30,
             until: tuple = ("process_completed",)) -> dict:
        """Join the queue as a browser would and wait for the completion message (or one of `until`)."""
        join = self.http.post(f"{self.url}/gradio_api/queue/join", json={
            "data": data, "event_data": None, "fn_index": fn, "trigger_id": trigger, "session_hash": session})
        if join.status_code != 200:
            return {"success": False, "status": join.status_code, "text": join.text[:200]}
        deadline = time.monotonic() + timeout_s
        with self.http.stream("GET", f"{self.url}/gradio_api/queue/data", params={"session_hash": session},
                              timeout=timeout_s) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if msg.get("msg") in until:
                        return {"success": True, **msg}
                if time.monotonic() > deadline:
                    break
        return {"success": False, "text": "no answer"}


# ----------------------------------------------------------------------------------------------------------------
class Suite:
    def __init__(self, args):
        self.args = args
        self.folder = Path(tempfile.mkdtemp(prefix="fer_abuse_"))
        self.media = make_media(self.folder)
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/"
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   GRADIO_TEMP_DIR=str(self.folder / "gradio"), FER_LIVE_SECONDS="30", FER_LIVE_IDLE_S="10")
        env.pop("FER_MODEL", None)
        cmd = [sys.executable, str(ROOT / "app.py"), "--host", HOST, "--port", str(self.port), "--preset",
               args.preset, "--concurrency", "1", "--render-side", "0"]
        if args.model:
            cmd += ["--model", args.model]
        import subprocess

        self.log = open(args.server_log, "w")
        self.server = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until_up(self.url, self.server, 300)
        from gradio_client import Client

        self.client = Client(self.url, verbose=False, download_files=False)
        self.http = Http(self.url)

    def close(self):
        self.server.terminate()
        try:
            self.server.wait(timeout=30)
        except Exception:  # noqa: BLE001
            self.server.kill()

    def analyze(self, path: str, timeout_s: float = 120):
        from gradio_client import handle_file

        start = time.perf_counter()
        try:
            result = self.client.submit(handle_file(path), api_name="/analyze").result(timeout=timeout_s)
            return time.perf_counter() - start, result, None
        except Exception as exc:  # noqa: BLE001 - the refusal is the outcome
            return time.perf_counter() - start, None, f"{type(exc).__name__}: {exc}"

    def normal_latency(self) -> float | None:
        seconds, result, error = self.analyze(self.media["normal"])
        return None if error else seconds

    def run_case(self, name: str, abuse) -> dict:
        """Run `abuse()` in a thread; meanwhile time the normal clip; then watch memory settle."""
        sampler = RssSampler(self.server.pid, 0.25)
        sampler.start()
        rss_start = rss_bytes(self.server.pid)
        box: dict = {}
        worker = threading.Thread(target=lambda: box.update(outcome=abuse()), daemon=True)
        began = time.perf_counter()
        worker.start()
        if name in AFTER_ABUSE:  # the measure: a normal clip right after the abuse (leftover work?)
            worker.join(timeout=self.args.case_timeout)
        else:
            time.sleep(self.args.normal_delay)
        during = self.normal_latency()
        worker.join(timeout=self.args.case_timeout)
        settle = time.perf_counter()
        while time.perf_counter() - settle < 20 and rss_bytes(self.server.pid) > rss_start + 300 * MB:
            time.sleep(0.5)
        after = self.normal_latency()
        sampler.stop_event.set()
        sampler.join()
        rss_end = rss_bytes(self.server.pid)
        peak = max([b for _, b in sampler.samples] + [rss_end])
        return {"case": name, "outcome": box.get("outcome", "abuse still running at the case timeout"),
                "rss_start_mb": round(rss_start / MB), "rss_peak_mb": round(peak / MB),
                "rss_end_mb": round(rss_end / MB), "normal_during_s": during, "normal_after_s": after,
                "case_s": round(time.perf_counter() - began, 1)}

    # ------------------------------------------------------------------------------------------------------------
    def case_cancel(self) -> str:
        from gradio_client import handle_file
        from gradio_client.utils import Status

        times, running = [], 0
        for _ in range(3):
            job = self.client.submit(handle_file(self.media["heavy"]), api_name="/analyze")
            began = time.perf_counter()
            while job.status().code != Status.PROCESSING and time.perf_counter() - began < 30:
                time.sleep(0.05)
            time.sleep(2.0)  # well into the analysis
            running += not job.done()
            start = time.perf_counter()
            job.cancel()
            times.append(time.perf_counter() - start)
        time.sleep(0.5)
        stopped = Path(self.args.server_log).read_text(errors="replace").count("request stopped")
        return (f"3 submit+cancel cycles ({running} cancelled while analysing); cancel answered in "
                f"{max(times):.2f} s at most; {stopped} analyses stopped (server log)")

    def case_large(self) -> str:
        answers = []
        for i in range(16):
            seconds, _, error = self.analyze(self.media["big_frames" if i % 2 == 0 else "many_frames"], 60)
            answers.append((seconds, (error or "accepted!").split(": ", 1)[-1][:90]))
        refused = sum("too much work" in a or "pixels" in a or "frames" in a for _, a in answers)
        return (f"{refused}/16 refused, slowest answer {max(s for s, _ in answers):.1f} s; "
                f"e.g. {answers[0][1]!r}")

    def case_live_audio(self) -> str:
        start_fn, start_id = self.http.fn_index("live-start", "click")
        audio_fn, audio_id = self.http.fn_index("live-microphone", "stream")
        session, began = "abuse-audio", time.perf_counter()
        while True:  # an earlier case's session may still hold this client's place until it is reaped
            started = self.http.call(start_fn, start_id, [], session)
            if started.get("success") or time.perf_counter() - began > 40:
                break
            time.sleep(2)
        if not started.get("success"):
            return f"Start refused: {str(started)[:120]}"
        results = []
        for rate, samples in ((4, 12_000), (1, 96_000)):
            up = self.http.upload(f"chunk_{rate}hz.wav", wav_bytes(rate, samples))
            if up.status_code != 200:
                results.append(f"{rate} Hz upload: HTTP {up.status_code}")
                continue
            path = up.json()[0]
            for _ in range(3):  # a streaming event answers once the chunk is handled, then waits for the next one
                msg = self.http.call(audio_fn, audio_id, [{"path": path, "meta": {"_type": "gradio.FileData"}}],
                                     session, timeout_s=60, until=STREAM_DONE)
            results.append(f"{rate} Hz chunk x3 handled={msg.get('success')}")
        time.sleep(1.0)
        refused = Path(self.args.server_log).read_text(errors="replace").count("microphone chunk refused")
        return "; ".join(results) + f"; {refused} chunks refused by the server (its log)"

    def case_live_start(self) -> str:
        start_fn, start_id = self.http.fn_index("live-start", "click")
        first = self.http.call(start_fn, start_id, [], "abuse-start-1")
        second = self.http.call(start_fn, start_id, [], "abuse-start-2")
        began = time.perf_counter()
        while time.perf_counter() - began < 60:
            third = self.http.call(start_fn, start_id, [], f"someone-else-{int(time.perf_counter())}")
            if third.get("success"):
                break
            time.sleep(2)
        waited = time.perf_counter() - began
        return (f"start 1 success={first.get('success')}, start 2 success={second.get('success')}; "
                f"a new session was accepted after {waited:.0f} s" if third.get("success") else
                f"a new session was still refused after {waited:.0f} s")

    def case_upload(self) -> str:
        began, sent, codes = time.perf_counter(), 0, {}
        while time.perf_counter() - began < 5:
            blob = os.urandom(5 * MB)  # distinct files (Gradio stores identical ones once)
            answer = self.http.upload("blob.mp4", blob)
            codes[answer.status_code] = codes.get(answer.status_code, 0) + 1
            sent += len(blob) if answer.status_code == 200 else 0
        disk = sum(p.stat().st_size for p in (self.folder / "gradio").rglob("*") if p.is_file())
        return (f"{sent / MB:.0f} MB stored in {time.perf_counter() - began:.0f} s, then refused; HTTP answers "
                f"{codes}; uploads folder {disk / MB:.0f} MB")

    def case_paths(self) -> str:
        _, result, error = self.analyze(self.media["normal"])
        text = json.dumps(result)
        leaks = [p for p in (tempfile.gettempdir(), str(self.folder), str(ROOT)) if p in text]
        return f"error {error}" if error else f"server paths in the result: {leaks or 'none'}; " \
                                              f"source {result['source']!r}, model {result['model']['source']!r}"


STREAM_DONE = ("process_completed", "process_generating", "process_streaming")
AFTER_ABUSE = {"cancel"}  # the normal clip is timed right after these cases' abuse, not during it
CASES = ("cancel", "large", "live_start", "live_audio", "paths", "upload")  # upload last: it spends the
# loopback client's upload allowance, which the normal clip shares


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=("tiny", "realtime", "seed", "compact"))
    parser.add_argument("--model", help="trained model folder or repo id (passed to app.py --model)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--normal-delay", type=float, default=1.0, help="s after a case starts to send the normal clip")
    parser.add_argument("--case-timeout", type=float, default=180)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "abuse_app.json")
    parser.add_argument("--server-log", type=Path, default=Path(tempfile.gettempdir()) / "abuse_app_server.log")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}")
    suite = Suite(args)
    rows = []
    try:
        idle = [suite.normal_latency() for _ in range(3)]
        idle_s = statistics.median([s for s in idle if s is not None])
        rss = rss_bytes(suite.server.pid) / MB
        print(f"normal 4 s clip, idle: {idle_s:.2f} s (median of 3); server RSS {rss:.0f} MB")
        for name in cases:
            row = suite.run_case(name, getattr(suite, f"case_{name}"))
            during = row["normal_during_s"]
            row["within_3x_idle"] = during is not None and during <= 3 * idle_s
            row["memory_back"] = row["rss_end_mb"] - row["rss_start_mb"] <= 300
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        suite.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"idle_latency_s": idle_s, "preset": args.preset, "model": args.model,
                                    "cases": rows}, indent=1))
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    print(f"\n| case | outcome | RSS start / peak / end MB | normal clip during (after) s, idle {idle_s:.2f} s | "
          "ok |\n|---|---|---|---|---|")
    for r in rows:
        ok = "yes" if r["within_3x_idle"] and r["memory_back"] else "NO"
        print(f"| {r['case']} | {r['outcome']} | {r['rss_start_mb']} / {r['rss_peak_mb']} / {r['rss_end_mb']} | "
              f"{fmt(r['normal_during_s'])} ({fmt(r['normal_after_s'])}) | {ok} |")
    return 0 if all(r["within_3x_idle"] and r["memory_back"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
