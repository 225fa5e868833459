"""The Gradio app: upload or record a talking-face clip; watch it annotated, see its emotions over time and why.

Built at import from `settings.current()` (app.py configures it from the command line first): the model is loaded
once, then `predict` (analysis window by window, streamed; then the annotated video and the detail plots), the data
API (`analyze`) and the UI (`demo`, with the Live tab of `fer_app.live`). Figures and words come from
`fer_app.plots`, the annotated video from `fer_app.render`, the per-request budgets from `fer_app.limits`.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before gradio imports pyplot

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from . import analysis, limits, live, media, plots, render  # noqa: E402
from .model_loading import EXAMPLES, load_model, newest_checkpoint, provenance  # noqa: E402
from .settings import PRESET_NAMES, current  # noqa: E402, F401  (PRESET_NAMES: the app's public settings)

try:  # Hugging Face ZeroGPU Spaces: a GPU is attached only while a `@spaces.GPU` function runs
    import spaces

    gpu = spaces.GPU(duration=120)
    ZERO_GPU = True  # the model call runs in a forked worker: a cancel token cannot reach it
except ImportError:  # CPU, a dedicated GPU, or local: a no-op

    def gpu(fn):
        return fn

    ZERO_GPU = False


logger = logging.getLogger("fer_app")
TRAIN_COMMAND = "python -m fer_hf.tools.train --data-root data/RAVDESS --preset realtime"
APP_TITLE = "Emotion recognition"
SETTINGS = current()


def prepare(model, processor, int8: bool = False):
    """The model on its device (int8 on request) and the processor bounded by the app's clip limits."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    if int8 and device == "cpu":
        model.quantize_int8_()
        logger.info("linear layers quantised to int8 for CPU inference")
    processor.max_duration_s = SETTINGS.max_seconds
    processor.max_windows = analysis.windows_needed(SETTINGS.max_seconds, model.config.clip_seconds,
                                                    SETTINGS.hop_seconds)
    return model, processor, device


_checkpoint = newest_checkpoint()
_source = SETTINGS.model or (str(_checkpoint) if _checkpoint else None)
MODEL, PROCESSOR, MODEL_INFO = load_model(_source, SETTINGS.preset)
MODEL, PROCESSOR, DEVICE = prepare(MODEL, PROCESSOR, int8=SETTINGS.int8)
CONFIG = MODEL.config
LABELS = [CONFIG.id2label[i] for i in range(len(CONFIG.id2label))]
HOP_SECONDS = PROCESSOR.geometry.timeline_hop(SETTINGS.hop_seconds)[1]  # --hop-seconds on whole frame steps
PROVENANCE = provenance(CONFIG, MODEL_INFO)
# what every result says about the model: a local folder by its name only (no server path reaches a client)
MODEL_SUMMARY = limits.scrub_paths({**PROVENANCE, "source": MODEL_INFO["source"], "preset": MODEL_INFO["preset"]})
LIMITS = limits.ServingLimits.from_env(SETTINGS.max_seconds, SETTINGS.max_upload_mb)  # README, "Limits"
logger.info("model %s (preset %s) | %s | device %s%s", MODEL_INFO["source"], MODEL_INFO["preset"],
            PROVENANCE["summary"], DEVICE, " int8" if SETTINGS.int8 and DEVICE == "cpu" else "")


# ----------------------------------------------------------------------------------------------------------------
# Temporary files: our downloads live in one folder per request, removed after a while and at exit.
# (Gradio copies returned files into its own cache, which `delete_cache` below clears.)
TEMP_PREFIX = "fer_app_"
TEMP_MAX_AGE_S = 600


def _remove_stale_temp_roots() -> None:
    """Delete the download folders of earlier app processes that died without cleaning up (e.g. killed)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        try:
            os.kill(int(folder.name[len(TEMP_PREFIX):].split("_")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


_remove_stale_temp_roots()
TEMP_ROOT = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}_"))
atexit.register(shutil.rmtree, TEMP_ROOT, ignore_errors=True)


def _request_folder() -> Path:
    now = time.time()
    for old in TEMP_ROOT.iterdir():
        if now - old.stat().st_mtime > TEMP_MAX_AGE_S:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=TEMP_ROOT))


# ----------------------------------------------------------------------------------------------------------------
# Inference
def new_analysis() -> analysis.ClipAnalysis:
    return analysis.ClipAnalysis(MODEL, PROCESSOR, DEVICE, SETTINGS.batch_windows, SETTINGS.hop_seconds,
                                     model_summary=MODEL_SUMMARY, budget=LIMITS.media_budget())


@gpu
def run_model(video: str, name: str | None = None, cancel=None):
    """The analysis of one clip (the only part that needs the accelerator): yields `AnalysisStep`s. `name`: the
    result's `source` (default: the uploaded file's own name, not its path on the server). `cancel`: a
    `WorkToken` that stops it between steps (the request was cancelled, its client left, or it ran out of time)."""
    yield from new_analysis().run(video, name, cancel=None if ZERO_GPU else cancel)


def _is_user_error(exc: BaseException) -> bool:
    """The package's typed errors (also when raised by a model's remote copy of `errors_fer.py`)."""
    return any(cls.__name__ == "FERError" for cls in type(exc).__mro__)


def _is_too_long(exc: BaseException) -> bool:
    return any(cls.__name__ == "MediaTooLongError" for cls in type(exc).__mro__)


def explain_error(exc: BaseException, video_path: str) -> tuple[str, str]:
    """(title, message) in a person's words: what happened and what to do. Unexpected failures are logged."""
    name = Path(video_path).name
    if _is_too_long(exc):
        return ("This clip is too long", f"The app analyses clips of up to {SETTINGS.max_seconds:.0f} s and this one "
                "is longer. Press “Analyse the first part” below to analyse its first "
                f"{SETTINGS.max_seconds:.0f} s, or trim the clip and upload it again.")
    if _is_user_error(exc):
        text = limits.scrub_paths(str(exc).replace(video_path, name))
        if any(cls.__name__ in ("MediaTooLargeError", "WorkTimeExceededError") for cls in type(exc).__mro__):
            return "This clip is too much work for this server", f"{text[:1].upper()}{text[1:]}."
        if "not a media container" in text or "still image" in text or "neither an audio" in text:
            return ("This file is not a video the app can read",
                    f"{text[:1].upper()}{text[1:]}. Upload a video clip (for example MP4 or WebM) with a face "
                    "and/or a voice in it.")
        return "This clip cannot be analysed", f"{text[:1].upper()}{text[1:]}."
    logger.exception("analysis of %s failed", name)
    return ("Something went wrong", f"The analysis failed unexpectedly ({type(exc).__name__}); the details are in "
            "the server log. Try again, or try another clip.")


def message_html(title: str, text: str, kind: str = "error") -> str:
    return (f'<div id="app-message" class="fer-message fer-{kind}"><div class="fer-message-title">{title}</div>'
            f"<div>{text}</div></div>")


# ----------------------------------------------------------------------------------------------------------------
# The UI event: analysis streamed window by window, then the annotated video and the detail plots
def _focus_window(result: dict) -> dict:
    """The window the detail plots show: the one with the largest margin between its top two emotions."""
    def margin(w):
        top2 = sorted(w["probabilities"].values(), reverse=True)[:2]
        return top2[0] - (top2[1] if len(top2) > 1 else 0.0)
    return max(result["windows"], key=margin)


def label_value(result: dict, folder: Path):
    """What the probabilities panel shows: the heading names the top emotion only when the answer is clear."""
    if not result.get("probabilities"):
        return gr.skip()
    return plots.label_value(result["probabilities"], result.get("top_label"),
                                 Path(tempfile.mkstemp(suffix=".json", dir=folder)[1]))


def _stream_outputs(result: dict, done: int, total: int, folder: Path) -> tuple:
    timeline = plots.timeline_figure(result) if result["windows"] else gr.skip()
    return (gr.skip(), plots.headline_markdown(result, done, total), label_value(result, folder),
            gr.skip(), timeline, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())


def _analyse(video: str, progress, folder: Path, name: str | None, cancel=None) -> tuple[dict | None, float]:
    """Run the analysis with progress; yields the streamed outputs, returns (result, seconds) at the end."""
    started = time.perf_counter()
    result = None
    for step in run_model(video, name, cancel):
        result = limits.scrub_paths(step.result)
        progress((step.done, step.total), desc=f"Analysing: {step.stage}", unit="windows")
        yield _stream_outputs(result, step.done, step.total, folder)
    return result, time.perf_counter() - started


async def predict(video: str | None, progress=gr.Progress()):
    """Analyse one clip (generator: the outputs fill in as the windows finish). The work runs in its own thread,
    stopped when the request is cancelled, its client leaves or it runs out of time (`fer_app.limits`)."""
    token = LIMITS.work_token()
    async for outputs in limits.run_in_worker(lambda: _predict(video, progress, cancel=token), token):
        yield outputs


# The nine result outputs after the message (headline, probabilities, annotated video, timeline, the three detail
# plots, the JSON, the downloads), emptied: a new run or an error never leaves the previous clip's results on the page.
CLEARED = ("", None, None, None, None, None, None, None, None)


def _predict(video: str | None, progress, name: str | None = None, cancel=None):
    """`predict`, with the name the result gives the clip (`source`; default: the file's own name)."""
    hide_first_part = gr.Button(visible=False)
    if not video:
        yield (message_html("No video yet", "Upload a video or record one with the webcam, then press "
                            "“Analyse emotions”.", "info"), *CLEARED, hide_first_part)
        return
    yield (message_html("", "", "empty"), *CLEARED, hide_first_part)
    folder = _request_folder()
    try:
        result, seconds = yield from _analyse(video, progress, folder, name, cancel)
        progress(0.95, desc="Drawing the annotated video")
        annotated = None
        if SETTINGS.render_side > 0:
            annotated = render.render_annotated_video(video, result, folder / "annotated.mp4",
                                                          max_side=SETTINGS.render_side).path
        window = _focus_window(result)
        audio, crops = media.window_media(video, window, CONFIG, result["duration_s"])
        frame_s = 0.01 * getattr(CONFIG.audio_config, "subsampling_factor", 8)
        details = (plots.segment_figure(window, LABELS),
                   plots.audio_figure(window, audio, CONFIG.sampling_rate, frame_s),
                   plots.faces_figure(window, crops, LABELS))
    except Exception as exc:  # noqa: BLE001 - every failure reaches the person as words, never a stack trace
        title, text = explain_error(exc, video)  # and nothing of this run's partial results stays under it
        yield (message_html(title, text), *CLEARED, gr.Button(visible=_is_too_long(exc)))
        return
    json_path, csv_path = folder / "emotion_result.json", folder / "emotion_result.csv"
    json_path.write_text(json.dumps(analysis.compact(result), indent=1))
    csv_path.write_text(plots.report_csv(result))
    done = message_html("", f"Analysed {result['duration_s']:.1f} s in {seconds:.1f} s on {DEVICE}.", "done")
    yield (done, plots.headline_markdown(result), label_value(result, folder), annotated,
           plots.timeline_figure(result), *details, analysis.compact(result),
           [str(json_path), str(csv_path)], hide_first_part)


async def predict_first_part(video: str | None, progress=gr.Progress()):
    """The first `max_seconds` of an over-long clip (stream copy), then the same analysis."""
    token = LIMITS.work_token()

    def steps():
        if not video:
            yield from _predict(video, progress)
            return
        cut = media.remux(video, _request_folder() / f"first_part{Path(video).suffix or '.mp4'}",
                              max_seconds=SETTINGS.max_seconds - 0.2)
        yield from _predict(cut, progress, Path(video).name, cancel=token)

    async for outputs in limits.run_in_worker(steps, token):
        yield outputs


def fix_recording(video: str | None):
    """Browser recordings (webm from MediaRecorder) state no duration: the player shows "Infinity". Remux them."""
    if not video or media.has_duration(video):
        return gr.skip()
    try:
        return media.remux(video, _request_folder() / "recording.webm")
    except Exception as exc:  # noqa: BLE001 - keep the original recording; the analysis decodes it anyway
        logger.warning("could not remux the recording: %s", exc)
        return gr.skip()


# ----------------------------------------------------------------------------------------------------------------
# The data API: the result type as JSON, no images
async def analyze(video: str | None):
    """The result of one clip as JSON (the schema in docs/architecture.md, without per-patch ROI scores).

    A generator whose last value is the result (the ones before change nothing): between two steps Gradio notices
    a client that left, and the work stops (`limits.run_in_worker`); a cancel stops it at once."""
    if not video:
        raise gr.Error("Give a video file.", title="No video", print_exception=False)
    token = LIMITS.work_token()
    result = None
    try:
        async for step in limits.run_in_worker(lambda: run_model(video, None, token), token):
            result = step.result
            yield gr.skip()
    except Exception as exc:  # noqa: BLE001
        title, text = explain_error(exc, video)
        raise gr.Error(text, title=title, print_exception=False) from None
    yield limits.scrub_paths(analysis.compact(result))


# ----------------------------------------------------------------------------------------------------------------
# UI
CSS = """
.fer-banner { color: #fff; padding: 12px 16px; border-radius: 8px; line-height: 1.5; overflow-wrap: anywhere; }
.fer-banner code { white-space: normal; overflow-wrap: anywhere; background: rgba(255, 255, 255, 0.92) !important;
                  color: #5f0f0f !important; padding: 1px 5px; border-radius: 4px; }
.fer-message { padding: 10px 14px; border-radius: 8px; margin: 4px 0; }
.fer-error { background: #fdecea; color: #611a15; border: 1px solid #f5c2bd; }
.fer-info { background: #e8f0fe; color: #174ea6; }
.fer-done { color: #555; font-size: 0.9em; padding: 2px 4px; }
.fer-empty { display: none; }
.fer-message-title { font-weight: 700; font-size: 1.1em; margin-bottom: 4px; }
.fer-legend { font-size: 0.9em; line-height: 1.9; }
.fer-chip { display: inline-block; margin-right: 10px; white-space: nowrap; }
.fer-swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 4px;
              vertical-align: middle; }
#timeline-plot img, #segment-plot img, #audio-plot img, #faces-plot img { max-width: 100%; height: auto; }
@media (max-width: 500px) { .gradio-container { padding: 4px !important; } }
"""


def header() -> None:
    gr.Markdown(
        f"# {APP_TITLE} from a talking face\n"
        "Upload a short video (or record one with your webcam, with sound). The model listens to the voice and "
        "looks at the face, and gives the probability of 8 emotions over time. The annotated video shows what it "
        "saw; the plots show which moments, sounds and parts of the face it relied on."
    )
    banner = plots.provenance_banner(PROVENANCE["summary"], PROVENANCE["status"])
    if banner and not MODEL_INFO["trained"]:
        banner = banner.replace("</div>", f" To get real predictions, train a model (<code>{TRAIN_COMMAND}</code>) "
                                          "or start the app with <code>--model &lt;folder or Hub repo id&gt;</code>."
                                          "</div>")
    if banner:
        gr.HTML(banner)
    else:
        gr.Markdown(f"Model: `{MODEL_INFO['source']}` on {DEVICE}. {PROVENANCE['summary']}.")


def input_column():
    video = gr.Video(
        label="Video clip", sources=["upload", "webcam"],
        format=None,  # keep the upload as it is: converting would need an ffmpeg binary
        include_audio=True,  # Gradio drops webcam audio by default; the model needs the voice
        webcam_options=gr.WebcamOptions(mirror=False),  # mirroring is done server-side with ffmpeg
        elem_id="video-input",
    )
    gr.HTML(media.PREVIEW_NOTE, html_template=media.PREVIEW_NOTE_TEMPLATE,
            js_on_load=media.PREVIEW_NOTE_JS, elem_id="preview-note")
    button = gr.Button("Analyse emotions", variant="primary", elem_id="analyse-button")
    first_part = gr.Button(f"Analyse the first part ({SETTINGS.max_seconds:.0f} s)", visible=False,
                           elem_id="first-part-button")
    gr.Markdown(
        f"Limits: files up to **{SETTINGS.max_upload_mb} MB**, clips up to **{SETTINGS.max_seconds:.0f} s**. "
        f"The model reads {CONFIG.clip_seconds:.0f} s windows, one starting every {HOP_SECONDS:g} s. "
        f"Requests are handled {SETTINGS.concurrency} at a time; others wait in a queue of "
        f"{SETTINGS.queue_size}. Per clip: {LIMITS.describe()}. Uploaded clips and results are deleted from the "
        f"server after {LIMITS.delete_cache()[1] // 60} minutes."
    )
    examples = sorted(EXAMPLES.glob("*.mp4")) if EXAMPLES.is_dir() else []
    if examples:
        gr.Examples(examples=[[str(path)] for path in examples], inputs=[video],
                    example_labels=[path.stem.replace("_", " ") for path in examples],
                    label="Example clips (generated from public-domain pictures, synthetic voice)",
                    cache_examples=False)
    return video, button, first_part


def output_column():
    message = gr.HTML(elem_id="message-box")
    headline = gr.Markdown(elem_id="summary")
    gr.HTML(plots.legend_html(LABELS))
    annotated = gr.Video(label="Annotated video", interactive=False, elem_id="annotated-video")
    plot = dict(show_label=False, format="png")  # each figure has its own title
    with gr.Tabs(selected="over-time"):
        with gr.Tab("Emotions over time", id="over-time"):
            timeline = gr.Plot(label="Emotions over time", elem_id="timeline-plot", **plot)
            gr.Markdown(plots.CAPTIONS["timeline"], elem_classes="fer-caption")
        with gr.Tab("What it attended to", id="attention"):
            gr.Markdown("The window with the clearest answer.", elem_classes="fer-caption")
            segments = gr.Plot(label="Attention over the window", elem_id="segment-plot", **plot)
            gr.Markdown(plots.CAPTIONS["segments"], elem_classes="fer-caption")
            audio = gr.Plot(label="Audio attention", elem_id="audio-plot", **plot)
            gr.Markdown(plots.CAPTIONS["audio"], elem_classes="fer-caption")
            faces = gr.Plot(label="Face patches", elem_id="faces-plot", **plot)
            gr.Markdown(plots.CAPTIONS["faces"], elem_classes="fer-caption")
        with gr.Tab("Numbers (JSON / CSV)", id="numbers"):
            files = gr.File(label="Download the result", file_count="multiple", interactive=False,
                            elem_id="downloads")
            numbers = gr.JSON(label="Result", elem_id="numbers")
    probabilities = gr.Label(num_top_classes=len(LABELS), label="Emotion probabilities (whole clip)",
                             elem_id="probabilities")
    return message, headline, probabilities, annotated, timeline, segments, audio, faces, numbers, files


def build_demo() -> gr.Blocks:
    with gr.Blocks(title=APP_TITLE, delete_cache=LIMITS.delete_cache()) as demo:
        header()
        with gr.Tabs():
            with gr.Tab("Analyse a clip", id="clip-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=300):
                        video, button, first_part = input_column()
                    with gr.Column(scale=3, min_width=300):
                        outputs = list(output_column())
            live.add_live_tab(demo, MODEL, PROCESSOR, MODEL_INFO)  # webcam + microphone, docs/live.md
        outputs.append(first_part)
        headline = outputs[1]
        busy = dict(fn=lambda: gr.Button(interactive=False), outputs=button, queue=False, api_visibility="private")
        idle = dict(fn=lambda: gr.Button(interactive=True), outputs=button, queue=False, api_visibility="private")
        run = dict(inputs=video, outputs=outputs, show_progress="full", show_progress_on=[headline])
        button.click(**busy).then(predict, api_name="predict", **run).then(**idle)
        first_part.click(**busy).then(predict_first_part, api_name="predict_first_part", **run).then(**idle)
        video.stop_recording(fix_recording, inputs=video, outputs=video, show_progress="hidden",
                             api_visibility="private")
        video.clear(None, js=media.PREVIEW_NOTE_HIDE_JS, queue=False, api_visibility="private")
        api_result = gr.JSON(visible=False, label="result")
        gr.Button(visible=False).click(analyze, inputs=video, outputs=api_result, api_name="analyze")
    return demo


demo = build_demo()
UPLOAD_QUOTA = limits.UploadQuota(LIMITS.upload_mb_per_minute, LIMITS.temp_disk_mb,
                                      lambda: limits.upload_folders(TEMP_ROOT))
LAUNCH_OPTIONS = dict(css=CSS, show_error=False,  # `css` is a launch() option in Gradio 6
                      app_kwargs={"middleware": [limits.quota_middleware(UPLOAD_QUOTA)]})



def launch() -> None:
    """Serve the demo with the configured settings (`python app.py`)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `docker stop`, `kill`: exit cleanly so atexit runs
    demo.queue(default_concurrency_limit=SETTINGS.concurrency, max_size=SETTINGS.queue_size).launch(
        server_name=SETTINGS.host, server_port=SETTINGS.port, max_file_size=f"{SETTINGS.max_upload_mb}mb",
        **LAUNCH_OPTIONS,
    )
