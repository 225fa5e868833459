"""Gradio app: upload or record a talking-face clip, see the 8 emotion probabilities and what the model attended to.

    python app.py                                   # newest trained checkpoint under checkpoints/, else untrained
    python app.py --model path/or/hub-repo-id       # or FER_MODEL=...
    python app.py --preset tiny                     # no trained weights: try the pipeline on a random model

Reading order: settings -> model loading (once, at import) -> `predict` (processor -> model -> report/plots)
-> the UI. The numbers and figures are built in `app_plots.py`.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before gradio imports pyplot

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import app_live  # noqa: E402
import app_plots  # noqa: E402
from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor  # noqa: E402

try:  # Hugging Face ZeroGPU Spaces: a GPU is attached only while a `@spaces.GPU` function runs
    import spaces

    gpu = spaces.GPU(duration=120)
except ImportError:  # CPU, a dedicated GPU, or local: a no-op

    def gpu(fn):
        return fn


logger = logging.getLogger("fer_app")
ROOT = Path(__file__).resolve().parent
CHECKPOINTS = ROOT / "checkpoints"
EXAMPLES = ROOT / "examples"
TRAIN_COMMAND = "python -m fer_hf.tools.train --data-root data/RAVDESS --preset realtime"
OUTPUT_NAMES = ("logits", "segment_logits", "segment_attention", "segment_mask", "audio_segment_attention",
                "audio_frame_mask", "roi_indices", "roi_patch_scores", "modalities_used")


# ----------------------------------------------------------------------------------------------------------------
# Settings: command line (when run as a script) over environment variables over defaults
@dataclass
class Settings:
    model: str | None
    preset: str
    host: str | None
    port: int | None
    max_seconds: float
    max_upload_mb: int
    concurrency: int
    queue_size: int
    batch_windows: int
    int8: bool


def parse_settings(argv: list[str]) -> Settings:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Audio-visual emotion recognition demo (Gradio).")
    parser.add_argument("--model", default=env("FER_MODEL"),
                        help="trained model: a local folder or a Hub repo id (env FER_MODEL); default: the newest "
                             "folder under checkpoints/ with config.json and model.safetensors")
    parser.add_argument("--preset", default=env("FER_PRESET", "realtime"), choices=list(FERConfig.PRESETS),
                        help="architecture of the UNTRAINED model used when no trained model is found (env FER_PRESET)")
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME"), help="interface to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "0")) or None)
    parser.add_argument("--max-seconds", type=float, default=float(env("FER_MAX_SECONDS", "30")),
                        help="longest clip accepted, in seconds (env FER_MAX_SECONDS)")
    parser.add_argument("--max-upload-mb", type=int, default=int(env("FER_MAX_UPLOAD_MB", "50")),
                        help="largest upload accepted, in MB (env FER_MAX_UPLOAD_MB)")
    parser.add_argument("--concurrency", type=int, default=int(env("FER_CONCURRENCY", "1")),
                        help="clips analysed at the same time; the rest wait in the queue (env FER_CONCURRENCY)")
    parser.add_argument("--queue-size", type=int, default=int(env("FER_QUEUE_SIZE", "16")),
                        help="requests that may wait in the queue before new ones are refused (env FER_QUEUE_SIZE)")
    parser.add_argument("--batch-windows", type=int, default=int(env("FER_BATCH_WINDOWS", "4")),
                        help="windows per model call in timeline mode (bounds memory)")
    parser.add_argument("--int8", action="store_true", default=env("FER_INT8", "0").lower() in ("1", "true", "yes"),
                        help="CPU only: dynamic int8 quantisation of the linear layers, ~2.8x faster for the realtime "
                             "model; outputs shift slightly (README, Performance) (env FER_INT8=1)")
    return Settings(**vars(parser.parse_args(argv)))


SETTINGS = parse_settings(sys.argv[1:] if __name__ == "__main__" else [])


# ----------------------------------------------------------------------------------------------------------------
# Model: loaded once per process
def untrained_reason(folder: Path) -> str | None:
    """Why the weights of a local model folder are not trained for emotions (None when nothing says so)."""
    if (folder / "backbone_report.json").is_file() and not (folder / "training_info.json").is_file():
        return "its backbones are pretrained but its emotion classifier was never trained (fer-backbones output)"
    return None


def newest_checkpoint(folder: Path = CHECKPOINTS) -> Path | None:
    """The newest trained folder under `folder` holding `config.json` and `model.safetensors`; finished training
    runs (`final/` with `training_info.json`) win over intermediate Trainer checkpoints."""
    if not folder.is_dir():
        return None
    found = [p.parent for p in folder.rglob("model.safetensors")
             if (p.parent / "config.json").is_file() and untrained_reason(p.parent) is None]
    rank = lambda p: ((p / "training_info.json").is_file(), (p / "model.safetensors").stat().st_mtime)
    return max(found, key=rank, default=None)


def load_model(source: str | None, preset: str):
    """(model, processor, info). `source` None builds an untrained model from `preset`, saying so in `info`."""
    if source is None:
        torch.manual_seed(0)  # the same untrained weights at every start, so results are at least reproducible
        config = FERConfig.from_preset(preset)
        model = FERForEmotionClassification(config)
        processor = FERProcessor.from_model_config(config)
        return model, processor, {
            "source": f"untrained '{preset}' preset (random weights)", "preset": preset, "trained": False,
            "why_untrained": f"no trained weights were found, so this app runs the '{preset}' architecture with "
                             "random weights, only to try the pipeline",
        }
    from transformers import AutoModel, AutoProcessor

    if source.startswith(("/", ".", "~")) and not Path(source).expanduser().is_dir():
        raise SystemExit(f"No model folder at {source!r}: give a folder saved with save_pretrained "
                         "(config.json + model.safetensors) or a Hub repo id.")
    source = str(Path(source).expanduser()) if source.startswith("~") else source
    try:
        model = AutoModel.from_pretrained(source, trust_remote_code=True)
    except Exception as exc:
        raise SystemExit(f"Could not load the model {source!r}: {type(exc).__name__}: {exc}\n"
                         "Give a local folder saved with save_pretrained (config.json + model.safetensors) "
                         "or a Hub repo id you can reach.") from None
    try:
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # no processor saved with it: derive one
        logger.warning("no processor found with %s (%s); building one from the model config", source, exc)
        processor = FERProcessor.from_model_config(model.config)
    folder = Path(source)
    reason = untrained_reason(folder) if folder.is_dir() else None
    info = {"source": str(source), "preset": getattr(model.config, "preset", None), "trained": reason is None}
    if reason:
        info["why_untrained"] = f"the model at {source} is not trained: {reason}"
    if (folder / "training_info.json").is_file():
        training = json.loads((folder / "training_info.json").read_text())
        info["validation"] = {k: round(v, 4) for k, v in (training.get("val_metrics") or {}).items()
                              if isinstance(v, float) and any(m in k for m in ("uar", "war", "accuracy", "f1"))}
    return model, processor, info


def _prepare(model, processor, int8: bool = False):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    if int8 and device == "cpu":
        model.quantize_int8_()
        logger.info("linear layers quantised to int8 for CPU inference")
    processor.max_duration_s = SETTINGS.max_seconds
    # Timeline mode: one window every `clip_seconds`, enough windows to cover the longest accepted clip.
    processor.max_windows = max(1, math.ceil(SETTINGS.max_seconds / model.config.clip_seconds))
    return model, processor, device


_checkpoint = newest_checkpoint()
_source = SETTINGS.model or (str(_checkpoint) if _checkpoint else None)
MODEL, PROCESSOR, MODEL_INFO = load_model(_source, SETTINGS.preset)
MODEL, PROCESSOR, DEVICE = _prepare(MODEL, PROCESSOR, int8=SETTINGS.int8)
CONFIG = MODEL.config
LABELS = [CONFIG.id2label[i] for i in range(len(CONFIG.id2label))]
logger.info("model: %s on %s", MODEL_INFO["source"], DEVICE)


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
@gpu
def run_model(inputs: dict) -> dict:
    """All windows of one clip through the model, `SETTINGS.batch_windows` at a time; numpy outputs by name."""
    rows = next(iter(inputs.values())).shape[0]
    parts, sizes = [], []
    with torch.inference_mode():
        for start in range(0, rows, SETTINGS.batch_windows):
            chunk = {k: v[start:start + SETTINGS.batch_windows].to(DEVICE) for k, v in inputs.items()}
            out = MODEL(**chunk)
            parts.append({name: _numpy(getattr(out, name, None)) for name in OUTPUT_NAMES})
            sizes.append(min(SETTINGS.batch_windows, rows - start))
    return {name: _concat([p[name] for p in parts], sizes) for name in OUTPUT_NAMES}


def _numpy(tensor):
    if tensor is None:
        return None
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).numpy()


def _concat(parts: list, sizes: list[int]):
    """Join per-chunk arrays; a chunk where an optional output was None (e.g. no audio in any of its windows) gets
    a stand-in of its row count: zeros, or -1 for indices ("frame not encoded")."""
    like = next((p for p in parts if p is not None), None)
    if like is None:
        return None
    fill = -1 if like.dtype.kind == "i" else 0
    stand_in = lambda n: np.full((n,) + like.shape[1:], fill, like.dtype)
    return np.concatenate([p if p is not None else stand_in(n) for p, n in zip(parts, sizes)])


def _is_user_error(exc: BaseException) -> bool:
    """The package's typed errors (also when raised by a model's remote copy of `errors_fer.py`)."""
    return any(cls.__name__ == "FERError" for cls in type(exc).__mro__)


def _error_for_person(exc: BaseException, video_path: str) -> gr.Error:
    if _is_user_error(exc):
        message = str(exc).replace(video_path, Path(video_path).name)
        return gr.Error(message, title="This clip cannot be analysed", print_exception=False)
    logger.exception("analysis failed")
    return gr.Error(f"The analysis failed unexpectedly ({type(exc).__name__}); the details are in the server log. "
                    "Try another clip.", title="Something went wrong", print_exception=False)


def predict(video: str | None, timeline: bool, progress=gr.Progress()):
    """Analyse one clip: probabilities, plots, the numbers behind them and downloadable files."""
    if not video:
        raise gr.Error("Upload a video or record one with the webcam first.", title="No video")
    started = time.perf_counter()
    try:
        progress(0.05, desc="Decoding the clip and finding the face")
        inputs, batch_info = PROCESSOR.prepare(videos=video, sliding_window=bool(timeline),
                                               stride_seconds=CONFIG.clip_seconds if timeline else None,
                                               return_face_frames=True, return_tensors="pt")
        clip_info = batch_info.windows
        progress(0.35, desc=f"Running the model on {len(clip_info)} window(s)")
        outputs = run_model({k: inputs[k] for k in inputs.keys()})
        report = app_plots.build_report(outputs, clip_info, CONFIG, MODEL_INFO, bool(timeline))
        report["skipped_windows"] = [
            {"window_index": w.index, "window_start_s": w.start_s, "window_end_s": w.end_s,
             "audio_reason": w.audio_reason, "video_reason": w.video_reason} for w in batch_info.clips[0].skipped
        ]
    except Exception as exc:  # every failure reaches the person as a short message, never a stack trace
        raise _error_for_person(exc, video) from None
    report["seconds_taken"] = round(time.perf_counter() - started, 2)
    report["device"] = DEVICE

    focus = app_plots.focus_window(report)
    window = report["windows"][focus]
    faces = clip_info[focus].get("face_frames") if window["video"]["used"] else None
    timeline_plot = app_plots.timeline_figure(report) if len(report["windows"]) > 1 else None
    folder = _request_folder()
    json_path, csv_path = folder / "emotion_report.json", folder / "emotion_report.csv"
    json_path.write_text(json.dumps(report, indent=1))
    csv_path.write_text(app_plots.report_csv(report))
    return (
        report["probabilities"],
        summary_markdown(report, focus),
        app_plots.segment_figure(window, LABELS),
        app_plots.audio_figure(window),
        app_plots.faces_figure(window, faces),
        gr.Plot(value=timeline_plot, visible=timeline_plot is not None),
        report,
        [str(json_path), str(csv_path)],
    )


def summary_markdown(report: dict, focus: int) -> str:
    top = report["top_label"]
    lines = [f"**Most likely: {top}** ({report['probabilities'][top]:.1%})  ·  {report['modalities']['summary']}"]
    clip = report["clip"]
    window = report["windows"][focus]
    if clip["num_windows"] > 1:
        lines.append(f"Timeline of {clip['num_windows']} windows of {clip['window_seconds']:.0f} s over a "
                     f"{clip['duration_s']:.1f} s clip; the probabilities are their average. The detail plots show "
                     f"the most confident window, {window['start_s']:.1f}–{window['end_s']:.1f} s.")
    else:
        lines.append(f"Analysed {window['start_s']:.1f}–{window['end_s']:.1f} s of a {clip['duration_s']:.1f} s "
                     "clip (the model sees one 3 s window; tick the timeline box for the whole video).")
    skipped = report.get("skipped_windows") or []
    if skipped:
        spans = ", ".join(f"{w['window_start_s']:.1f}–{w['window_end_s']:.1f} s" for w in skipped)
        lines.append(f"Left out (neither usable audio nor a face): {spans}.")
    lines.append(f"Took {report['seconds_taken']:.1f} s on {report['device']}.")
    if not report["model"]["trained"]:
        lines.append("⚠️ **Untrained model: these numbers are meaningless.**")
    return "\n\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# UI
def untrained_banner(info: dict) -> str:
    code = lambda text: (f'<code style="background:rgba(255,255,255,.2);color:#fff;padding:1px 5px;border-radius:3px">'
                         f"{text}</code>")
    return (
        '<div id="untrained-banner" style="background:#b71c1c;color:#fff;padding:14px 18px;border-radius:8px;'
        'font-size:1.05em;line-height:1.6">'
        "<b>⚠️ UNTRAINED MODEL — the predictions are meaningless.</b> "
        f"{info['why_untrained'][:1].upper()}{info['why_untrained'][1:]}. "
        f"To get real predictions, train a model ({code(TRAIN_COMMAND)}; it writes "
        f"{code('checkpoints/realtime/fold0/final/')}, which the app picks up at its next start) or start it with "
        f"{code('python app.py --model &lt;folder or Hub repo id&gt;')} (or set {code('FER_MODEL')}).</div>"
    )


def header() -> None:
    gr.Markdown(
        "# Emotion recognition from a talking face\n"
        "Upload a short video (or record one with your webcam, with sound). The model listens to the voice and "
        "looks at the face, and gives the probability of 8 emotions: "
        f"{', '.join(LABELS)}. The plots show which moments, sounds and parts of the face it relied on."
    )
    if not MODEL_INFO["trained"]:
        gr.HTML(untrained_banner(MODEL_INFO))
    else:
        scores = ", ".join(f"{k} {v}" for k, v in MODEL_INFO.get("validation", {}).items())
        gr.Markdown(f"Model: `{MODEL_INFO['source']}` on {DEVICE}" + (f" (validation: {scores})." if scores else "."))


def input_column():
    video = gr.Video(
        label="Video clip",
        sources=["upload", "webcam"],
        format=None,  # keep the upload as it is: converting would need an ffmpeg binary
        include_audio=True,  # Gradio drops webcam audio by default; the model needs the voice
        webcam_options=gr.WebcamOptions(mirror=False),  # mirroring is done server-side with ffmpeg
        elem_id="video-input",
    )
    timeline = gr.Checkbox(
        label=f"Analyse the whole video as a timeline (one prediction per {CONFIG.clip_seconds:.0f} s window)",
        value=False, elem_id="timeline-box",
    )
    button = gr.Button("Analyse emotions", variant="primary", elem_id="analyse-button")
    gr.Markdown(
        f"Limits: files up to **{SETTINGS.max_upload_mb} MB**, clips up to **{SETTINGS.max_seconds:.0f} s**. "
        f"Without the timeline, the model looks at the middle {CONFIG.clip_seconds:.0f} s. "
        f"Requests are handled {SETTINGS.concurrency} at a time; others wait in a queue of "
        f"{SETTINGS.queue_size}. Uploaded clips are deleted from the server within the hour."
    )
    examples = sorted(EXAMPLES.glob("*.mp4")) if EXAMPLES.is_dir() else []
    if examples:
        timeline_flags = ["timeline" in path.stem for path in examples]
        gr.Examples(
            examples=[[str(path), flag] for path, flag in zip(examples, timeline_flags)],
            inputs=[video, timeline],
            example_labels=[path.stem.replace("_", " ") + (" (timeline)" if flag else "")
                            for path, flag in zip(examples, timeline_flags)],
            label="Example clips (generated from public-domain pictures, synthetic voice)",
            cache_examples=False,
        )
    return video, timeline, button


def output_column():
    probabilities = gr.Label(
        num_top_classes=len(LABELS), elem_id="probabilities",
        label="Emotion probabilities" + ("" if MODEL_INFO["trained"] else " (UNTRAINED MODEL: meaningless)"),
    )
    summary = gr.Markdown(label="Summary", elem_id="summary")
    plot = dict(show_label=False, format="png")  # each figure has its own title
    with gr.Tab("What it attended to"):
        segments = gr.Plot(label="Attention over time (classifier segments)", elem_id="segment-plot", **plot)
        audio = gr.Plot(label="Audio attention", elem_id="audio-plot", **plot)
        faces = gr.Plot(label="Face patches kept (ROI tokens)", elem_id="faces-plot", **plot)
    with gr.Tab("Timeline"):
        timeline = gr.Plot(label="Emotions over time", visible=False, elem_id="timeline-plot", **plot)
        gr.Markdown("Tick *Analyse the whole video as a timeline* to see the emotions window by window.")
    with gr.Tab("Numbers (JSON / CSV)"):
        files = gr.File(label="Download the numbers behind the plots", file_count="multiple", interactive=False,
                        elem_id="downloads")
        numbers = gr.JSON(label="Numbers behind the plots", elem_id="numbers")
    return [probabilities, summary, segments, audio, faces, timeline, numbers, files]


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Emotion recognition", delete_cache=(600, 3600)) as demo:
        header()
        with gr.Tab("Analyse a clip", id="clip-tab"):
            with gr.Row():
                with gr.Column(scale=2):
                    video, timeline, button = input_column()
                with gr.Column(scale=3):
                    outputs = output_column()
        button.click(predict, inputs=[video, timeline], outputs=outputs, api_name="predict")
        app_live.add_live_tab(demo, MODEL, PROCESSOR, MODEL_INFO)  # webcam + microphone, docs/live.md
    return demo


demo = build_demo()

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `docker stop`, `kill`: exit cleanly so atexit runs
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    demo.queue(default_concurrency_limit=SETTINGS.concurrency, max_size=SETTINGS.queue_size).launch(
        server_name=SETTINGS.host,
        server_port=SETTINGS.port,
        max_file_size=f"{SETTINGS.max_upload_mb}mb",
        show_error=False,
    )
