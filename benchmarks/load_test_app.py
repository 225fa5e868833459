"""Load test of the Gradio app: several gradio_client clients against one server on 127.0.0.1.

    python benchmarks/load_test_app.py                                   # tiny model, 4 clients, 40 requests
    python benchmarks/load_test_app.py --preset realtime --requests 12 --clients 3 --concurrency 1
    python benchmarks/load_test_app.py --model checkpoints/realtime/fold0/final

Starts `app.py` in a subprocess on a free loopback port (never any other host), waits until it answers, sends a
fixed number of requests from `--clients` threads (each its own `gradio_client.Client`), and stops at
`--max-seconds` whatever happens. Requests go to the data API `/analyze` (or, with `--ui`, to the UI endpoint
`/predict`, which also draws the figures and the annotated video). Every response is checked: 8 probabilities
summing to 1 in the result (and in the Label, with `--ui`). Meanwhile the server's resident memory (with its
children) is sampled every `--sample-every` s.
Prints latency percentiles, failures and RSS start/peak/end, and writes them as JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its children (psutil when installed, else /proc)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total
    except ImportError:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except Exception:  # the process is gone
        return 0
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every_s: float):
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, int]] = []
        self.stop_event = threading.Event()
        self.t0 = time.perf_counter()

    def run(self):
        while not self.stop_event.is_set():
            self.samples.append((round(time.perf_counter() - self.t0, 2), rss_bytes(self.pid)))
            self.stop_event.wait(self.every_s)


def start_server(args, port: int) -> subprocess.Popen:
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               FER_PRESET=args.preset)
    env.pop("FER_MODEL", None)
    cmd = [sys.executable, str(ROOT / "app.py"), "--host", HOST, "--port", str(port), "--preset", args.preset,
           "--concurrency", str(args.concurrency), "--queue-size", str(max(args.clients * 2, 4))]
    if args.model:
        cmd += ["--model", args.model]
    log = open(args.server_log, "w")
    return subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_until_up(url: str, server: subprocess.Popen, timeout_s: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}; see its log")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the server did not answer within {timeout_s:.0f} s")


def check_response(result, ui: bool) -> str | None:
    """None when the response is right, else what is wrong."""
    report = result
    if ui:  # /predict: message, headline, Label, annotated video, figures..., the result, files
        label, report = result[2], result[8]
        confidences = [c["confidence"] for c in label.get("confidences", [])]
        if len(confidences) != 8 or not math.isclose(sum(confidences), 1.0, abs_tol=1e-4):
            return f"label has {len(confidences)} confidences summing to {sum(confidences):.6f}"
        if not result[3]:
            return "no annotated video"
    probs = list(report.get("probabilities", {}).values())
    if len(probs) != 8 or not math.isclose(sum(probs), 1.0, abs_tol=1e-4):
        return f"report has {len(probs)} probabilities summing to {sum(probs):.6f}"
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run(args) -> dict:
    from gradio_client import Client, handle_file

    port = free_port()
    url = f"http://{HOST}:{port}/"
    server = start_server(args, port)
    sampler = RssSampler(server.pid, args.sample_every)
    sampler.start()
    records, lock = [], threading.Lock()
    try:
        startup_s = wait_until_up(url, server, args.startup_timeout)
        clients = [Client(url, verbose=False, download_files=False) for _ in range(args.clients)]
        rss_ready = rss_bytes(server.pid)
        deadline = time.perf_counter() + args.max_seconds
        counter = iter(range(args.requests))

        def worker(client):
            while time.perf_counter() < deadline:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                start = time.perf_counter()
                try:
                    job = client.submit(handle_file(args.clip), api_name="/predict" if args.ui else "/analyze")
                    result = job.result(timeout=max(1.0, deadline - time.perf_counter()))
                    error = check_response(result, args.ui)
                except Exception as exc:  # any failure is counted and reported
                    error = f"{type(exc).__name__}: {exc}"[:300]
                with lock:
                    records.append({"request": index, "latency_s": time.perf_counter() - start, "error": error})

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(worker, clients))
        wall_s = time.perf_counter() - t0
    finally:
        sampler.stop_event.set()
        sampler.join()
        rss_end = rss_bytes(server.pid)
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    ok = [r["latency_s"] for r in records if r["error"] is None]
    failures = [r for r in records if r["error"] is not None]
    rss = [b for _, b in sampler.samples if b > 0]
    mb = lambda b: round(b / 2**20, 1)
    return {
        "settings": {"preset": args.preset, "model": args.model, "clip": os.path.relpath(args.clip, ROOT),
                     "endpoint": "/predict" if args.ui else "/analyze", "clients": args.clients,
                     "server_concurrency": args.concurrency,
                     "requests_planned": args.requests, "max_seconds": args.max_seconds},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "server_startup_s": round(startup_s, 1),
        "requests_done": len(records),
        "requests_not_started": args.requests - len(records),
        "failures": len(failures),
        "failure_examples": [f["error"] for f in failures[:5]],
        "wall_s": round(wall_s, 2),
        "throughput_per_min": round(60 * len(ok) / wall_s, 2) if wall_s else 0.0,
        "latency_s": {
            "p50": round(percentile(ok, 0.50), 2) if ok else None,
            "p95": round(percentile(ok, 0.95), 2) if ok else None,
            "mean": round(statistics.fmean(ok), 2) if ok else None,
            "min": round(min(ok), 2) if ok else None,
            "max": round(max(ok), 2) if ok else None,
        },
        "rss_mb": {"after_startup": mb(rss_ready), "peak": mb(max(rss)) if rss else None, "end": mb(rss_end),
                   "first_sample": mb(rss[0]) if rss else None},
        "rss_samples": [(t, mb(b)) for t, b in sampler.samples],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=("tiny", "realtime", "seed"),
                        help="untrained model architecture when --model is not given (default tiny)")
    parser.add_argument("--model", help="trained model folder or repo id (passed to app.py --model)")
    parser.add_argument("--clip", default=str(ROOT / "examples" / "astronaut_speaking.mp4"))
    parser.add_argument("--ui", action="store_true",
                        help="call the UI endpoint /predict (figures + annotated video) instead of the data API "
                             "/analyze")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--requests", type=int, default=40, help="requests in total (default 40)")
    parser.add_argument("--concurrency", type=int, default=2, help="server's concurrency limit (default 2)")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop sending after this long (default 300)")
    parser.add_argument("--startup-timeout", type=float, default=180)
    parser.add_argument("--sample-every", type=float, default=0.5, help="RSS sampling period in s")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "load_test_app.json")
    parser.add_argument("--server-log", type=Path, default=Path("/tmp/load_test_app_server.log"))
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1:
        parser.error("--clients and --requests must be at least 1")

    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    lat, rss = result["latency_s"], result["rss_mb"]
    print(f"model: {args.model or 'untrained ' + args.preset}; clip {result['settings']['clip']}"
          f" via {'/predict' if args.ui else '/analyze'}")
    print(f"requests: {result['requests_done']} done, {result['requests_not_started']} not started, "
          f"{result['failures']} failed; {args.clients} clients, server concurrency {args.concurrency}")
    print(f"latency s: p50 {lat['p50']}  p95 {lat['p95']}  mean {lat['mean']}  min {lat['min']}  max {lat['max']}")
    print(f"throughput: {result['throughput_per_min']} requests/min over {result['wall_s']} s")
    print(f"server RSS MB: after startup {rss['after_startup']}  peak {rss['peak']}  end {rss['end']}")
    for example in result["failure_examples"]:
        print("failure:", example)
    print(f"written: {args.out}")
    return 0 if result["failures"] == 0 and result["requests_not_started"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
