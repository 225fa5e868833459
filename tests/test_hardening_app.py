"""Bounded work per request, per session and per file (issue 22, the app's half): each limit, fast and without a
server where possible; the cases that need the served app reuse `test_app.start_app` (loopback, tiny model).

The abuse suite that replays the issue's cases against `python app.py` and measures memory and latency is
`benchmarks/abuse_app.py` (not part of the test run).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for path in (str(TESTS), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

from media_factory import astronaut_face, make_clip  # noqa: E402

from fer_app import limits as app_limits  # noqa: E402
from fer_hf.errors_fer import (  # noqa: E402
    AnalysisCancelledError,
    FERInputError,
    MediaTooLargeError,
    WorkTimeExceededError,
)
from fer_hf.media_fer import probe_media  # noqa: E402
from fer_hf.media_stream_fer import MediaBudget, WorkToken, check_budget, stream_file  # noqa: E402


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    face = dict(face_image=astronaut_face(), face_box=(90, 30, 250, 190))
    return make_clip(tmp_path_factory.mktemp("hardening") / "face.mp4", seconds=4, fps=15, size=(320, 240),
                     **face)["path"]


@pytest.fixture(scope="module")
def tiny():
    import torch

    from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor

    torch.manual_seed(0)
    config = FERConfig.from_preset("tiny")
    return FERForEmotionClassification(config).eval(), FERProcessor.from_model_config(config, min_speech_fraction=0.0)


# ----------------------------------------------------------------------------------------------------------------
# Case 2: decoded frame size and count
def test_frames_above_the_pixel_budget_are_refused_from_the_headers(clip):
    info = probe_media(clip)
    assert (info.width, info.height) == (320, 240) and info.frame_count == 60 and info.audio_rate == 48000
    check_budget(info, MediaBudget(max_frame_pixels=320 * 240, max_frames=60, max_pixels=60 * 320 * 240))
    with pytest.raises(MediaTooLargeError, match=r"320×240 pixels .* Scale the video down"):
        check_budget(info, MediaBudget(max_frame_pixels=320 * 240 - 1))
    with pytest.raises(MediaTooLargeError, match=r"about 60 video frames .* up to 59 frames per clip"):
        check_budget(info, MediaBudget(max_frames=59))
    with pytest.raises(MediaTooLargeError, match=r"gigapixels"):
        check_budget(info, MediaBudget(max_pixels=60 * 320 * 240 - 1))
    with pytest.raises(MediaTooLargeError, match=r"48000 Hz"):
        check_budget(info, MediaBudget(audio_rates=(8000, 44100)))


def test_the_budget_holds_while_decoding_when_headers_understate(clip):
    """Headers can lie: what is really decoded is counted too (frames, pixels, seconds of audio)."""
    targets = (np.arange(10) + 0.5) * 0.375
    for budget, words in ((MediaBudget(max_frames=20), "more than 20 video frames"),
                          (MediaBudget(max_pixels=20 * 320 * 240), "gigapixels"),
                          (MediaBudget(max_audio_seconds=1.0), "more than 1 s of sound")):
        with pytest.raises(MediaTooLargeError, match=words):
            list(stream_file(clip, targets, budget=budget))
    assert list(stream_file(clip, targets, budget=MediaBudget(max_frames=60, max_audio_seconds=5.0)))


def test_the_engine_refuses_before_decoding(clip, tiny):
    from fer_hf.analysis_fer import FERAnalyzer

    model, processor = tiny
    analyzer = FERAnalyzer(model, processor, budget=MediaBudget(max_frame_pixels=1000))
    with pytest.raises(MediaTooLargeError):
        next(analyzer.stream(clip))


# ----------------------------------------------------------------------------------------------------------------
# Case 1: cancelled work stops, and a request has a time budget
def test_a_cancelled_token_stops_the_engine_between_steps(clip, tiny):
    from fer_hf.analysis_fer import FERAnalyzer

    model, processor = tiny
    analyzer = FERAnalyzer(model, processor, batch_size=1)
    token = WorkToken()
    events = analyzer.stream(clip, cancel=token)
    next(events)
    token.cancel("the test cancelled it")
    with pytest.raises(AnalysisCancelledError, match="the test cancelled it"):
        list(events)
    now = [0.0]
    late = WorkToken(max_seconds=5, clock=lambda: now[0])
    events = analyzer.stream(clip, cancel=late)
    next(events)
    now[0] = 6.0
    with pytest.raises(WorkTimeExceededError, match="longer than the 5 s one request may use"):
        list(events)
    assert isinstance(WorkTimeExceededError("x"), FERInputError)  # the app shows it as words


def _slow_steps(token: WorkToken, log: list):
    try:
        for i in range(10_000):
            time.sleep(0.05)
            token.check()
            yield i
    finally:
        log.append("closed")


def _worker_threads() -> list:
    return [t for t in threading.enumerate() if t.name == "fer-request"]


def test_cancelling_the_request_stops_its_thread():
    log: list = []
    token = WorkToken()

    async def consume(got: list):
        async for item in app_limits.run_in_worker(lambda: _slow_steps(token, log), token):
            got.append(item)

    async def main():
        got: list = []
        task = asyncio.ensure_future(consume(got))
        while len(got) < 3:
            await asyncio.sleep(0.01)
        task.cancel()  # what Gradio's cancel does to the awaiting task
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    start = time.monotonic()
    while _worker_threads() and time.monotonic() - start < 5:
        time.sleep(0.05)
    assert not _worker_threads() and log == ["closed"] and token.cancelled
    assert time.monotonic() - start < 1.0


def test_a_client_that_stops_listening_stops_the_work():
    """Gradio stops iterating a generator whose client left: the work notices it is not consumed."""
    log: list = []
    token = WorkToken()

    async def main():
        steps = app_limits.run_in_worker(lambda: _slow_steps(token, log), token, stall_s=0.5)
        assert await steps.__anext__() == 0  # one item taken, then nobody asks again
        await asyncio.sleep(2.0)
        assert token.cancelled and "stopped listening" in token.reason

    asyncio.run(main())
    start = time.monotonic()
    while _worker_threads() and time.monotonic() - start < 5:
        time.sleep(0.05)
    assert not _worker_threads() and log == ["closed"]


def test_errors_of_the_work_reach_the_request():
    def broken():
        yield 1
        raise MediaTooLargeError("too big")

    async def main():
        token = WorkToken()
        with pytest.raises(MediaTooLargeError, match="too big"):
            async for _ in app_limits.run_in_worker(broken, token):
                pass

    asyncio.run(main())


# ----------------------------------------------------------------------------------------------------------------
# Case 5: uploads
def test_upload_quota_per_client_and_for_the_disk(tmp_path):
    now = [0.0]
    quota = app_limits.UploadQuota(mb_per_minute=10, disk_mb=15, folders=lambda: [tmp_path], clock=lambda: now[0])
    mb = 2**20
    assert quota.admit("a", 6 * mb) is None
    status, text = quota.admit("a", 6 * mb)
    assert status == 429 and "uploaded 6 MB in the last minute" in text and "Try again in 60 s" in text
    assert quota.admit("b", 6 * mb) is None  # another client has its own allowance
    (tmp_path / "held.bin").write_bytes(b"\0" * (8 * mb))  # files still on disk count
    now[0] = 61.0
    status, text = quota.admit("c", 8 * mb)
    assert status == 507 and "space for uploads is full" in text
    assert quota.admit("a", 6 * mb) is None  # a minute later: allowed again, within the disk cap


def test_upload_quota_middleware_answers_before_reading_the_body(tmp_path):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    async def upload(request):
        return PlainTextResponse(str(len(await request.body())))

    quota = app_limits.UploadQuota(mb_per_minute=1, disk_mb=100, folders=lambda: [tmp_path])
    api = Starlette(routes=[Route("/gradio_api/upload", upload, methods=["POST"])],
                    middleware=[app_limits.quota_middleware(quota)])
    with TestClient(api) as web:
        assert web.post("/gradio_api/upload", content=b"x" * 600_000).text == "600000"
        refused = web.post("/gradio_api/upload", content=b"x" * 600_000)
        assert refused.status_code == 429 and "1 MB a minute" in refused.json()["error"]


def test_limits_from_the_environment():
    limits = app_limits.ServingLimits.from_env(30, 50, environ={"FER_MAX_FRAMES": "100", "FER_CACHE_MINUTES": "4"})
    assert limits.max_frames == 100 and limits.upload_mb_per_minute == 200 and limits.delete_cache() == (60, 240)
    budget = limits.media_budget()
    assert budget.max_frame_pixels == limits.max_frame_pixels and budget.max_audio_seconds == 32.0
    assert "megapixels" in limits.describe()


# ----------------------------------------------------------------------------------------------------------------
# Case 8: no server path in what a client gets
def test_server_paths_are_cut_to_their_last_part():
    tmp = tempfile.gettempdir()
    result = {"source": f"{tmp}/gradio/3fa9/clip.mp4", "model": {"source": f"{tmp}/pytest-1/tiny_model"},
              "notes": [f"could not read '{tmp}/gradio/ab/x.mp4' as audio"], "n": 3, "hub": "org/model"}
    clean = app_limits.scrub_paths(result)
    assert clean == {"source": "clip.mp4", "model": {"source": "tiny_model"},
                     "notes": ["could not read 'x.mp4' as audio"], "n": 3, "hub": "org/model"}
    assert tmp not in json.dumps(clean)
    shipped = str(ROOT / "checkpoints" / "compact")  # the default model's folder, inside the checkout
    assert app_limits.scrub_paths({"model": {"source": shipped}}) == {"model": {"source": "compact"}}


# ----------------------------------------------------------------------------------------------------------------
# Cases 3 and 4: live sessions
def _session(**kwargs):
    from fer_app.streaming import LiveSession

    return LiveSession(3.0, 8, **kwargs)


@pytest.mark.parametrize("rate, samples, words", [
    (4, np.zeros(12_000, np.int16), "at 4 Hz was refused"),
    (1, np.zeros(96_000, np.int16), "at 1 Hz was refused"),
    (10_000_000, np.zeros(100, np.int16), "Hz was refused"),
    (16000, np.zeros(16000 * 6, np.int16), "chunks last at most 5 s"),
    (16000, np.zeros((4000, 32), np.int16), "at most 8 channels"),
    (16000, np.zeros(4000, np.complex64), "int16, int32 or float"),
    (16000, np.full(4000, np.nan, np.float32), "not numbers"),
    ("fast", np.zeros(4000, np.int16), "sampling rate in Hz"),
])
def test_live_audio_chunks_are_checked_before_they_cost_memory(rate, samples, words):
    session = _session()
    with pytest.raises(FERInputError, match=words):
        session.push_audio(samples, rate)
    assert session.audio.stored_samples == 0
    assert session.push_audio(np.zeros(4000, np.int16), 16000) is not None  # a normal 0.25 s chunk


def test_live_frames_and_session_memory_are_bounded(monkeypatch):
    import fer_app.streaming as streaming

    session = _session()
    with pytest.raises(FERInputError, match="sides of 1 to 4096"):
        session.push_frame(np.zeros((5000, 10, 3), np.uint8))
    with pytest.raises(FERInputError, match="uint8"):
        session.push_frame(np.zeros((10, 10, 3), np.float32))
    assert session.push_frame(np.zeros((48, 64, 3), np.uint8), arrival_s=0.1)
    monkeypatch.setattr(streaming, "MAX_SESSION_BYTES", 100)
    with pytest.raises(FERInputError, match="MB one session may"):
        session.push_audio(np.zeros(4000, np.int16), 16000)


class _Analyzer:
    int8_possible = False

    def new_session(self, session_seconds):
        return _session(session_seconds=session_seconds)


def test_abandoned_live_sessions_are_reaped_and_clients_capped():
    import gradio as gr

    from fer_app import live as app_live
    now = [0.0]
    registry = app_live.LiveRegistry(max_sessions=2, max_per_client=1, idle_s=20, clock=lambda: now[0])
    registry.start("a", _Analyzer(), client="10.0.0.1")
    with pytest.raises(gr.Error, match="already open from your address"):
        registry.start("b", _Analyzer(), client="10.0.0.1")  # a second plain-HTTP Start from the same client
    registry.start("c", _Analyzer(), client="10.0.0.2")
    with pytest.raises(gr.Error, match="Live mode is busy"):
        registry.start("d", _Analyzer(), client="10.0.0.3")
    now[0] = 15.0
    registry.touch("c")  # page c keeps sending; page a went quiet
    now[0] = 25.0
    assert registry.reap() == ["a"] and registry.keys() == ["c"]
    registry.start("d", _Analyzer(), client="10.0.0.3")  # the place is free again
    assert sorted(registry.keys()) == ["c", "d"]
    now[0] = 100.0  # nobody sends anything: both go
    assert sorted(registry.reap()) == ["c", "d"] and len(registry) == 0


def test_the_reaper_runs_without_any_request(monkeypatch):
    from fer_app import live as app_live
    monkeypatch.setattr(app_live, "REAP_EVERY_S", 0.05)
    registry = app_live.LiveRegistry(max_sessions=2, idle_s=0.1)
    session = registry.start("a", _Analyzer(), client="10.0.0.1")
    start = time.monotonic()
    while len(registry) and time.monotonic() - start < 5:
        time.sleep(0.05)
    assert len(registry) == 0 and session.stopped


# ----------------------------------------------------------------------------------------------------------------
# The served app (loopback, tiny model): the same limits through Gradio
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    pytest.importorskip("gradio_client")
    from test_app import start_app

    return start_app(tmp_path_factory.mktemp("app"))


def test_analyze_result_has_no_server_path(served, clip):
    import gradio_client

    _, url = served
    client = gradio_client.Client(url, verbose=False, download_files=False)
    result = client.predict(gradio_client.handle_file(clip), api_name="/analyze")
    text = json.dumps(result)
    assert result["source"] == "face.mp4" and result["model"]["source"] == "tiny_model"
    assert tempfile.gettempdir() not in text and str(ROOT) not in text


def test_cancelling_analyze_stops_the_work_on_the_server(served, clip, monkeypatch):
    import gradio_client

    app, url = served
    log: list = []
    monkeypatch.setattr(app, "run_model", lambda video, name=None, cancel=None: _slow_steps(cancel, log))
    client = gradio_client.Client(url, verbose=False, download_files=False)
    job = client.submit(gradio_client.handle_file(clip), api_name="/analyze")
    start = time.monotonic()
    while not _worker_threads() and time.monotonic() - start < 30:
        time.sleep(0.05)
    assert _worker_threads(), "the analysis never started"
    time.sleep(0.3)
    job.cancel()
    start = time.monotonic()
    while _worker_threads() and time.monotonic() - start < 10:
        time.sleep(0.05)
    assert not _worker_threads() and log == ["closed"], "the work went on after the cancel"
    assert time.monotonic() - start < 5


def test_a_too_large_clip_is_refused_in_words(served, clip, monkeypatch):
    import gradio_client

    app, url = served
    monkeypatch.setattr(app, "LIMITS", app_limits.ServingLimits(max_frame_pixels=1000))
    client = gradio_client.Client(url, verbose=False, download_files=False)
    with pytest.raises(Exception, match=r"320×240 pixels"):
        client.predict(gradio_client.handle_file(clip), api_name="/analyze")


def test_the_served_app_refuses_uploads_over_the_quota(served):
    _, url = served
    parts = urlparse(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.putrequest("POST", "/gradio_api/upload")
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str(10 * 2**30))  # claims 10 GB, sends nothing
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 429 and "a minute from one client" in json.loads(response.read())["error"]
    connection.close()
