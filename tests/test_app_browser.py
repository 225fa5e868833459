"""The app in a real browser: Debian's chromium driven by Playwright (sync API) against the loopback server.

A 25 s clip whose person leaves the frame: progress advances window by window, the button is disabled meanwhile,
the timeline renders and the annotated video plays (its duration, and a frame from the face-less span carries the
"no face used" marker); the "no clear emotion" headline; a bad file shows the app's own title, and nothing of the
clip analysed before it stays under the error; a clip the browser
cannot preview (FLV) gets a note instead of an error, and is analysed; the page at 390 px
has no horizontal overflow; the webcam path records through Chromium's fake capture device (a face picture and a
tone), the recording gets a real duration and is analysed with both modalities. Waits are on page state, except
the recording length itself.
"""

from __future__ import annotations

import re
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser_support import BROWSER_MARKS, CHROMIUM, LAUNCH_ARGS, TIMEOUT_MS  # noqa: E402
from media_factory import astronaut_face  # noqa: E402

pytestmark = BROWSER_MARKS
playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from test_app import MAX_SECONDS, start_app, write_app_clips  # noqa: E402

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


def _wait_for_the_result(page, timeout_ms: int = 90_000) -> None:
    """Wait until the analysis ends: its "done" message passes; any other message (an error, "no video yet"), or
    no end within `timeout_ms`, fails with what the page shows (message, progress, toasts) instead of a bare
    timeout."""
    ended = ("() => { const m = document.querySelector('#message-box .fer-message');"
             " return m && !m.classList.contains('fer-empty'); }")
    try:
        page.wait_for_function(ended, timeout=timeout_ms)
    except playwright_sync.TimeoutError:
        pass
    if page.query_selector("#message-box .fer-done") is None:
        shown = page.evaluate("() => ({message: document.querySelector('#message-box')?.innerText,"
                              " headline: document.querySelector('#summary')?.innerText,"
                              " toasts: [...document.querySelectorAll('.toast-body')].map(t => t.innerText),"
                              " button: document.querySelector('#analyse-button')?.disabled})")
        pytest.fail(f"the analysis did not end with its 'done' message within {timeout_ms / 1000:.0f} s: {shown}")


def _analyse_and_wait(page, timeout_ms: int = 90_000):
    page.click("#analyse-button")
    _wait_for_the_result(page, timeout_ms)


def _rendered_images(page, selector) -> int:
    """How many images under `selector` have been decoded by the browser (a width > 0)."""
    script = "els => els.filter(e => e.complete && e.naturalWidth > 0).length"
    return page.eval_on_selector_all(f"{selector} img", script)


def _assert_no_error_toast(page):
    assert page.locator(".toast-body.error").count() == 0, page.locator(".toast-body").all_inner_texts()


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """25 s with the face gone from 9 s to 16 s (the person leaves the frame)."""
    from media_factory import make_clip

    face = dict(face_image=astronaut_face(), face_box=(90, 30, 250, 190), face_spans=[(0, 9), (16, 25)])
    return make_clip(tmp_path_factory.mktemp("long") / "leaves.mp4", seconds=25, fps=8, size=(320, 240),
                     **face)["path"]


# ----------------------------------------------------------------------------------------------------------------
def test_timeline_annotated_video_and_progress(page, long_clip):
    """The 25 s clip: progress advances window by window, the timeline and the annotated video arrive."""
    _upload(page, long_clip)
    page.click("#analyse-button")
    page.wait_for_function("() => document.querySelector('#analyse-button').disabled")  # no second run meanwhile
    seen, deadline = set(), time.monotonic() + 120
    while not page.query_selector("#message-box .fer-done"):
        assert time.monotonic() < deadline and not page.query_selector("#app-message.fer-error"), (
            page.inner_text("#message-box"), seen)
        text = page.inner_text("body")
        seen.update(int(m) for m in re.findall(r"(\d+)/21 windows", text))  # 1.125 s hop
        page.wait_for_timeout(150)
    assert len(seen) >= 3 and max(seen) > min(seen), seen  # several steps, not one jump
    page.wait_for_function("() => !document.querySelector('#analyse-button').disabled")
    headline = page.inner_text("#summary")
    assert "No clear emotion" in headline or "Whole-clip answer" in headline
    page.wait_for_function(
        "() => [...document.querySelectorAll('#timeline-plot img')].some(e => e.complete && e.naturalWidth > 0)")
    video = page.locator("#annotated-video video")
    video.wait_for()
    page.wait_for_function("() => document.querySelector('#annotated-video video').readyState >= 2")
    duration = page.eval_on_selector("#annotated-video video", "v => v.duration")
    assert duration == pytest.approx(25.0, abs=0.3)
    # A frame from the face-less span: drawn into a canvas, its border is the red "no face used" marker.
    colour = page.eval_on_selector("#annotated-video video", """async v => {
        v.muted = true; v.currentTime = 12.0;
        await new Promise(r => v.addEventListener('seeked', r, {once: true}));
        const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0);
        return Array.from(g.getImageData(Math.floor(c.width / 2), 1, 1, 1).data.slice(0, 3)); }""")
    assert colour[0] > 170 and colour[1] < 110 and colour[2] < 110, colour
    _assert_no_error_toast(page)


def test_no_clear_emotion_headline(page, clips):
    _upload(page, clips["face"])
    _analyse_and_wait(page)
    headline = page.inner_text("#summary")
    assert "No clear emotion" in headline and "Top candidates:" in headline  # tiny random model: near-uniform
    assert "Voice and face both used" in headline
    assert "No clear emotion" in page.inner_text("#probabilities")  # the panel's big heading names no emotion either
    for label in ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"):
        assert label in page.inner_text("#emotion-legend")
    _assert_no_error_toast(page)


def test_bad_file_shows_the_apps_own_title(page, clips):
    _upload(page, clips["text"])
    page.click("#analyse-button")
    message = page.locator("#app-message.fer-error")
    message.wait_for()
    assert "This file is not a video the app can read" in message.inner_text()
    assert "notes.mp4" in message.inner_text() and "Traceback" not in message.inner_text()
    toasts = page.locator(".toast-body").all_inner_texts()  # only the player's own note on the text file
    assert all("Video not playable" in t for t in toasts), toasts
    pills = page.evaluate("() => [...document.querySelectorAll('.error')]"
                          ".filter(e => !e.closest('.toast-wrap, .toast-body, #message-box')).length")
    assert pills == 0  # the outputs are not turned into error pills


def test_an_error_clears_the_previous_clips_results(page, clips):
    """A clip is analysed, then a file that is not a video: under the error, nothing of the first clip is left
    (headline, probabilities, annotated video, timeline, details, numbers, downloads)."""
    _upload(page, clips["face"])
    _analyse_and_wait(page)
    assert "Whole-clip answer" in page.inner_text("#summary")
    page.wait_for_function("() => document.querySelector('#annotated-video video')")
    page.click("#video-input button[aria-label='Clear']")
    _upload(page, clips["text"])
    page.click("#analyse-button")
    page.locator("#app-message.fer-error").wait_for()
    page.wait_for_function("() => !document.querySelector('#annotated-video video')")
    assert page.inner_text("#summary").strip() == ""
    assert not any(label in page.inner_text("#probabilities") for label in ("neutral", "happy", "surprised"))
    assert _rendered_images(page, "#timeline-plot") == 0
    page.get_by_role("tab", name="Numbers (JSON / CSV)").click()
    assert page.locator("#downloads a").count() == 0 and "schema_version" not in page.inner_text("#numbers")


def test_a_clip_the_browser_cannot_preview_gets_a_note_not_an_error(page, tmp_path):
    """FLV (H.264 + MP3): Chromium cannot play it, PyAV decodes it. The upload box says so instead of Gradio's red
    "Error", and the clip is analysed with voice and face."""
    import av
    from media_factory import make_clip

    if "flv" not in av.formats_available or "libmp3lame" not in av.codecs_available:
        pytest.skip("PyAV has no FLV muxer or no MP3 encoder (libmp3lame)")
    clip = make_clip(tmp_path / "clip.flv", seconds=3, fps=15, size=(320, 240), container="flv",
                     video_codec="libx264", audio_codec="libmp3lame", sample_rate=44100, channels=1,
                     face_image=astronaut_face(), face_box=(90, 30, 250, 190))["path"]
    _upload(page, clip)
    note = page.locator("#preview-note .fer-preview-note")
    note.wait_for(state="visible")
    assert "cannot preview this video format" in note.inner_text() and "will still be analysed" in note.inner_text()
    assert page.locator(".toast-body").count() == 0, page.locator(".toast-body").all_inner_texts()
    assert "Error" not in page.inner_text("#video-input")  # no red status pill in the upload box
    _analyse_and_wait(page)
    assert "Voice and face both used" in page.inner_text("#summary")
    page.click("#video-input button[aria-label='Clear']")
    note.wait_for(state="hidden")
    _assert_no_error_toast(page)


def test_small_screen_has_no_horizontal_overflow(browser, url):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#analyse-button")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, width
    context.close()


def test_small_screen_text_of_the_timeline_and_the_video_is_readable(browser, url, long_clip):
    """At 390 px the timeline image and the annotated video shrink to the column: their smallest text (the
    timeline's TIMELINE_FONT_PT, the overlay's class labels) still shows at least 8.5 px high (was about 5 px).
    With FER_OVERLAY_SCREENSHOTS=<folder> the page is saved there as overlay_390.png."""
    import os

    from fer_app import overlay as app_overlay
    from fer_app import plots as app_plots
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#analyse-button")
    try:
        _upload(page, long_clip)
        _analyse_and_wait(page, 180_000)
        page.wait_for_function("() => document.querySelector('#annotated-video video')?.readyState >= 1")
        shown, natural = page.eval_on_selector("#timeline-plot img", "i => [i.clientWidth, i.naturalWidth]")
        assert shown <= 390 and app_plots.TIMELINE_FONT_PT * 100 / 72 * shown / natural >= 8.5, (shown, natural)
        shown, vw, vh = page.eval_on_selector("#annotated-video video",
                                              "v => [v.clientWidth, v.videoWidth, v.videoHeight]")
        labels = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
        text_px = app_overlay.plan_overlay(vw, vh, labels).text_px
        assert text_px * min(shown, vw) / vw >= 8.5, (text_px, shown, vw)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        folder = os.environ.get("FER_OVERLAY_SCREENSHOTS")
        if folder:
            page.locator("#annotated-video").scroll_into_view_if_needed()
            page.screenshot(path=str(Path(folder) / "overlay_390.png"), full_page=True)
    finally:
        context.close()


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
    page.wait_for_function("() => { const v = document.querySelector('#video-input video');"
                           " return v && v.readyState >= 1 && isFinite(v.duration) && v.duration > 1; }")
    _analyse_and_wait(page)
    summary = page.inner_text("#summary")
    assert "Voice and face both used" in summary, summary  # webcam audio kept (include_audio=True), face found
    _assert_no_error_toast(page)
