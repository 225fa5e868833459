"""Regenerate `docs/app_screenshot.png`: the app after a prediction, as a browser shows it.

    python docs/make_screenshot.py                                  # untrained realtime model (the banner says so)
    python docs/make_screenshot.py --model checkpoints/realtime/fold0/final --clip talk.mp4

Starts `app.py` on a free 127.0.0.1 port in a subprocess, opens it in Debian's Chromium through Playwright
(`/usr/bin/chromium`; Playwright cannot download browsers here), uploads the clip (default: the generated
`examples/astronaut_timeline.mp4`), presses "Analyse emotions", waits until the run is done and the annotated
video can play, shows that video's frame at `--seek` seconds, and saves a full-page screenshot.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
logger = logging.getLogger("make_screenshot")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"app.py exited with status {server.returncode} before it answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"app.py did not answer on {url} within {timeout_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model folder or Hub repo id (default: the app's own choice)")
    parser.add_argument("--clip", default=str(ROOT / "examples" / "astronaut_timeline.mp4"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "app_screenshot.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--seek", type=float, default=4.0, help="annotated video time shown (s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from playwright.sync_api import sync_playwright

    port = free_port()
    command = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    if args.model:
        command += ["--model", args.model]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, server)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox",
                                                                        "--disable-gpu"])
            page = browser.new_page(viewport={"width": args.width, "height": 900})
            page.set_default_timeout(180_000)
            page.goto(url)
            page.set_input_files("#video-input input[type=file]", args.clip)
            page.wait_for_selector("#video-input video")
            page.click("#analyse-button")
            page.wait_for_function("() => document.querySelector('#message-box .fer-done')")
            page.wait_for_function("() => document.querySelector('#annotated-video video')?.readyState >= 2")
            page.evaluate("async (t) => { const v = document.querySelector('#annotated-video video'); v.pause();"
                          " v.currentTime = t; await new Promise((r) => v.addEventListener('seeked', r, "
                          "{once: true})); }", args.seek)
            page.wait_for_timeout(500)  # plots and the frame settle
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        logger.info("wrote %s", args.out)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
