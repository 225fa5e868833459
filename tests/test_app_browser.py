"""The app in a real browser: Debian's chromium driven by Playwright (sync API) against the loopback server.

Upload -> analyse -> the label and the plots render; an undecodable upload shows the processor's message; the
webcam path records through Chromium's fake capture device, fed with a face picture and a tone, and the recording
(WebM with audio) is analysed with both modalities. Waits are on page state, except the recording length itself.
"""

from __future__ import annotations

import os
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from media_factory import astronaut_face  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]
playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from test_app import MAX_SECONDS, start_app, write_app_clips  # noqa: E402

LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 30_000
RECORD_MS = 3_000  # length of the webcam recording


def _fake_capture_files(folder: Path) -> tuple[Path, Path]:
    """A Y4M video (the astronaut's face on grey, 10 fps, 3 s) and a WAV tone for Chromium's fake devices."""
    import cv2

    width, height, fps = 320, 240, 10
    face = cv2.resize(astronaut_face(), (160, 160), interpolation=cv2.INTER_AREA)
    video = folder / "fake_camera.y4m"
    with open(video, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(3 * fps):
            frame = np.full((height, width, 3), 90, np.uint8)
            x = 80 + i % 5  # a little motion
            frame[40:200, x:x + 160] = face
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    rate = 48_000
    t = np.arange(3 * rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    audio = folder / "fake_microphone.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((tone * 32767).astype(np.int16).tobytes())
    return video, audio


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    return start_app(tmp_path_factory.mktemp("app"))[1]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    video, audio = _fake_capture_files(tmp_path_factory.mktemp("fake_devices"))
    args = LAUNCH_ARGS + [
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}", f"--use-file-for-fake-audio-capture={audio}",
    ]
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera", "microphone"])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#analyse-button")
    yield page
    context.close()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_app_clips(tmp_path_factory.mktemp("browser_clips"))


def _upload(page, path):
    page.set_input_files("#video-input input[type=file]", path)
    page.wait_for_selector("#video-input video")  # the upload reached the server and the player shows it


def _analyse_and_wait(page):
    page.click("#analyse-button")
    page.wait_for_function("() => document.querySelector('#summary')?.innerText.includes('Most likely')")


def _rendered_images(page, selector) -> int:
    """How many images under `selector` have been decoded by the browser (a width > 0)."""
    script = "els => els.filter(e => e.complete && e.naturalWidth > 0).length"
    return page.eval_on_selector_all(f"{selector} img", script)


def _assert_no_error_toast(page):
    assert page.locator(".toast-body.error").count() == 0, page.locator(".toast-body").all_inner_texts()


# ----------------------------------------------------------------------------------------------------------------
def test_upload_shows_label_and_plots(page, clips):
    _upload(page, clips["face"])
    _analyse_and_wait(page)
    probabilities = page.inner_text("#probabilities")
    for label in ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"):
        assert label in probabilities
    for selector in ("#segment-plot", "#audio-plot", "#faces-plot"):
        page.wait_for_function(
            f"() => [...document.querySelectorAll('{selector} img')].some(e => e.complete && e.naturalWidth > 0)"
        )
        assert _rendered_images(page, selector) == 1
    assert "Audio and face both used" in page.inner_text("#summary")
    page.get_by_role("tab", name="Numbers (JSON / CSV)").click()
    link = page.locator("#downloads a[download='emotion_report.json']")
    link.wait_for()
    report = page.request.get(link.get_attribute("href")).json()  # the download link serves the numbers
    assert len(report["probabilities"]) == 8 and report["windows"][0]["segments"]
    assert page.locator("#downloads a[download='emotion_report.csv']").count() == 1
    _assert_no_error_toast(page)


def test_timeline_plot_in_the_browser(page, clips):
    _upload(page, clips["long"])
    page.check("#timeline-box input[type=checkbox]")
    _analyse_and_wait(page)
    page.get_by_role("tab", name="Timeline").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#timeline-plot img')].some(e => e.complete && e.naturalWidth > 0)"
    )
    assert "Timeline of 3 windows" in page.inner_text("#summary")
    _assert_no_error_toast(page)


def test_undecodable_upload_shows_the_clear_message(page, clips):
    _upload(page, clips["text"])
    page.click("#analyse-button")
    message = page.locator("[data-testid='toast-text']", has_text="not a media container")
    message.wait_for()
    text = message.inner_text()
    assert "notes.mp4" in text and "Traceback" not in text


def test_limits_are_stated(page):
    text = page.inner_text("body")
    assert f"clips up to {MAX_SECONDS} s" in text and "files up to 5 MB" in text


def test_webcam_recording_with_sound_is_analysed(page):
    page.click("#video-input button[aria-label='Capture from camera']")
    page.click("#video-input [title='grant webcam access'] button")
    page.click("#video-input button.capture-button")
    page.wait_for_selector("#video-input [title='stop recording']")
    page.wait_for_timeout(RECORD_MS)  # the recording itself: nothing to wait for but time
    page.click("#video-input button.capture-button")
    page.wait_for_selector("#video-input video[src]")  # the recording was uploaded
    _analyse_and_wait(page)
    summary = page.inner_text("#summary")
    assert "Audio and face both used" in summary, summary  # webcam audio kept (include_audio=True), face found
    _assert_no_error_toast(page)
