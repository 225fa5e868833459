"""The Gradio app end to end: launched on 127.0.0.1 with a tiny model saved by the test, driven by gradio_client.

`start_app` is shared with tests/test_app_browser.py: one server per test session (the app loads its model once,
at import). Every clip is generated here with PyAV; nothing touches the network except the loopback server.
"""

from __future__ import annotations

import atexit
import csv
import importlib
import io
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for path in (str(TESTS), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

from media_factory import astronaut_face, make_clip, make_text_file  # noqa: E402

from fer_app.model_loading import untrained_reason  # noqa: E402  (light: no model is loaded)
from fer_app.settings import parse_settings  # noqa: E402

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reports to the network from tests

gradio_client = pytest.importorskip("gradio_client")
LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
MAX_SECONDS = 30  # the duration cap the test server runs with (the browser test uploads a 25 s clip)
FFMPEG_CALLS: list[list[str]] = []  # every ffmpeg/ffprobe process started in this test process
_SERVER: dict = {}


def _spy_on_ffmpeg() -> None:
    """Record any subprocess whose program is ffmpeg/ffprobe (Gradio runs its video conversions that way)."""
    original = subprocess.Popen.__init__
    if getattr(original, "_fer_spy", False):
        return

    def init(self, args, *rest, **kwargs):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        program = os.path.basename(os.fsdecode(argv[0]).split()[0]) if argv else ""
        if program.startswith(("ffmpeg", "ffprobe")):
            FFMPEG_CALLS.append([os.fsdecode(a) for a in argv])
        return original(self, args, *rest, **kwargs)

    init._fer_spy = True
    subprocess.Popen.__init__ = init


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(folder: Path):
    """Save a tiny model + processor into `folder`, import the app (`fer_app.server`) with it, serve it (once)."""
    if _SERVER:
        return _SERVER["app"], _SERVER["url"]
    import torch

    from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor

    torch.manual_seed(0)
    config = FERConfig.from_preset("tiny")
    model_dir = folder / "tiny_model"
    FERForEmotionClassification(config).save_pretrained(model_dir)
    # generated tones are not speech; speech detection has its own tests (test_frontend_*)
    FERProcessor.from_model_config(config, min_speech_fraction=0.0).save_pretrained(model_dir)
    os.environ.update(FER_MODEL=str(model_dir), FER_MAX_SECONDS=str(MAX_SECONDS), FER_MAX_UPLOAD_MB="5")
    _spy_on_ffmpeg()
    sys.modules.pop("fer_app.server", None)
    app = importlib.import_module("fer_app.server")
    app.demo.queue(default_concurrency_limit=2, max_size=16).launch(
        server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, max_file_size="5mb",
        quiet=True, **app.LAUNCH_OPTIONS,
    )
    atexit.register(app.demo.close)
    _SERVER.update(app=app, url=app.demo.local_url)
    return app, app.demo.local_url


@pytest.fixture(scope="session")
def served_app(tmp_path_factory):
    return start_app(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="session")
def client(served_app, tmp_path_factory):
    return gradio_client.Client(served_app[1], verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    return write_app_clips(tmp_path_factory.mktemp("clips"))


def write_app_clips(folder: Path) -> dict:
    """The clips the app tests (API and browser) upload, by name."""
    face = dict(face_image=astronaut_face(), face_box=(90, 30, 250, 190))
    return {
        "face": make_clip(folder / "face.mp4", seconds=4, fps=15, size=(320, 240), **face)["path"],
        "long": make_clip(folder / "long.mp4", seconds=7, fps=10, size=(320, 240), **face)["path"],
        "no_face": make_clip(folder / "no_face.mp4", seconds=3, fps=10, size=(160, 120))["path"],
        "webm": make_clip(folder / "rec.webm", seconds=3, fps=15, size=(320, 240), live=True, **face)["path"],
        "too_long": make_clip(folder / "too_long.mp4", seconds=MAX_SECONDS + 1, fps=2, size=(64, 48))["path"],
        "text": make_text_file(folder / "notes.mp4"),
    }


OUTPUTS = ("message", "headline", "probabilities", "annotated", "timeline", "segments", "audio", "faces", "result",
           "files")  # the UI's "Analyse the first part" button is an output too, but buttons are not in the API
RESULT_KEYS = {"schema_version", "source", "duration_s", "labels", "probabilities", "aggregation", "top_label",
               "confident", "confidence_margin", "windows", "skipped_windows", "tracks", "person", "notes", "model"}
WINDOW_KEYS = {"index", "start_s", "end_s", "probabilities", "top_label", "confident", "modalities", "segments",
               "frames", "audio_attention"}


def _predict(client, path) -> dict:
    """The UI endpoint's final outputs by name."""
    return dict(zip(OUTPUTS, client.predict(gradio_client.handle_file(path), api_name="/predict")))


def _analyze(client, path) -> dict:
    return client.predict(gradio_client.handle_file(path), api_name="/analyze")


def _check_probabilities(probs: dict):
    assert sorted(probs) == sorted(LABELS)
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-4)
    assert all(0.0 <= p <= 1.0 for p in probs.values())


def _video_duration(path) -> float:
    import av

    with av.open(str(path)) as container:
        return container.duration / 1e6


# ----------------------------------------------------------------------------------------------------------------
def test_endpoints_have_stable_names(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/predict", "/analyze", "/predict_first_part"} <= set(api)
    assert [p["label"] for p in api["/analyze"]["parameters"]] == ["Video clip"]
    (returned,) = api["/analyze"]["returns"]
    assert returned["label"] == "result"  # names never depend on label text or on the model's state
    labels = [r["label"] for r in api["/predict"]["returns"]]
    assert not any("untrained" in str(label).lower() for label in labels)


def test_data_api_returns_the_result_as_json_only(client, tmp_path):
    face = dict(face_image=astronaut_face(), face_box=(90, 30, 250, 190))
    clip = make_clip(tmp_path / "ten.mp4", seconds=10, fps=10, size=(320, 240), **face)["path"]
    result = _analyze(client, clip)
    text = json.dumps(result)
    assert len(text.encode()) < 50_000, len(text)
    assert "base64" not in text and "data:image" not in text
    assert RESULT_KEYS <= set(result) and result["labels"] == list(LABELS)
    _check_probabilities(result["probabilities"])
    assert result["duration_s"] == pytest.approx(10.0, abs=0.1)
    assert result["source"] == "ten.mp4"  # the uploaded file's name, not its temporary path on the server
    starts = [w["start_s"] for w in result["windows"]]
    # 3 s windows about every second: the engine rounds the 1 s hop to whole frame steps (3 x 0.375 s)
    assert starts == pytest.approx([1.125 * k for k in range(8)])
    for w in result["windows"]:
        assert WINDOW_KEYS <= set(w) and "roi" not in w
        _check_probabilities(w["probabilities"])
        assert w["modalities"]["audio"] and w["modalities"]["video"]
        assert len(w["segments"]) == 8 and w["segments"][0]["start_s"] == w["start_s"]
        assert w["confident"] == (w["top_label"] is not None)
    if not result["confident"]:
        assert result["top_label"] is None
    top2 = sorted(result["probabilities"].values(), reverse=True)[:2]
    assert result["confident"] == (top2[0] - top2[1] >= result["confidence_margin"])


def test_ui_endpoint_gives_annotated_video_timeline_and_details(client, clips):
    out = _predict(client, clips["long"])
    video = out["annotated"]["video"]["path"] if isinstance(out["annotated"], dict) else out["annotated"]
    assert Path(video).suffix == ".mp4" and _video_duration(video) == pytest.approx(7.0, abs=0.25)
    for name in ("timeline", "segments", "audio", "faces"):
        assert out[name]["type"] == "matplotlib" and out[name]["plot"].startswith("data:image/png;base64,")
    confidences = {c["label"]: c["confidence"] for c in out["probabilities"]["confidences"]}
    assert confidences == pytest.approx(out["result"]["probabilities"], abs=1e-4)
    assert ("No clear emotion" in out["headline"]) != bool(out["result"]["confident"])
    # the probabilities panel's heading: the top emotion only when the answer is clear
    assert out["probabilities"]["label"] == (out["result"]["top_label"] or "No clear emotion")
    assert "Voice and face both used" in out["headline"]
    by_suffix = {Path(f).suffix: f for f in out["files"]}
    assert set(by_suffix) == {".json", ".csv"}
    saved = json.loads(Path(by_suffix[".json"]).read_text())
    assert saved["probabilities"] == out["result"]["probabilities"]
    assert saved["source"] == out["result"]["source"] == Path(clips["long"]).name
    rows = list(csv.DictReader(io.StringIO(Path(by_suffix[".csv"]).read_text())))
    assert {"clip_probability", "window_probability", "segment_attention", "face_found"} <= {r["table"] for r in rows}


def test_windows_with_nothing_usable_are_listed(client, tmp_path):
    import numpy as np

    sr = 48000
    t = np.arange(7 * sr) / sr
    voice_then_silence = np.where(t < 2.5, 0.3 * np.sin(2 * np.pi * 220 * t), 0.0).astype(np.float32)
    clip = make_clip(tmp_path / "fades.mp4", seconds=7, fps=10, size=(160, 120), background="noise",
                     audio=voice_then_silence, sample_rate=sr)["path"]
    out = _predict(client, clip)
    result = out["result"]
    # windows every 1.125 s (the 1 s hop in whole 0.375 s frame steps); the tone ends at 2.5 s
    assert [(w["start_s"], w["end_s"]) for w in result["windows"]] == [(0.0, 3.0), (1.125, 4.125), (2.25, 5.25)]
    assert [(w["start_s"], w["end_s"]) for w in result["skipped_windows"]] == [(3.375, 6.375), (4.5, 7.5)]
    assert "Left out (neither usable audio nor a face): 3.4–6.4 s, 4.5–7.5 s" in out["headline"]


def test_no_face_says_voice_only(client, clips):
    out = _predict(client, clips["no_face"])
    assert "Voice only: no face found" in out["headline"]
    (window,) = out["result"]["windows"]
    assert window["modalities"]["video"] is False and not any(f["face_found"] for f in window["frames"])
    assert out["faces"]["plot"].startswith("data:image/png;base64,")  # a figure that says why


def test_browser_recording_format_works(client, clips):
    """Webcam recordings arrive as WebM without duration or cues; they must decode like any upload."""
    result = _analyze(client, clips["webm"])
    _check_probabilities(result["probabilities"])
    assert all(w["modalities"]["audio"] and w["modalities"]["video"] for w in result["windows"])


def test_recording_gets_a_duration(served_app, clips):
    app, _ = served_app
    from fer_app.media import has_duration

    assert not has_duration(clips["webm"])  # as a browser's MediaRecorder writes it
    fixed = app.fix_recording(clips["webm"])
    assert has_duration(fixed) and _video_duration(fixed) == pytest.approx(3.0, abs=0.15)
    assert not isinstance(app.fix_recording(fixed), str)  # already has one: the input is left alone


def test_undecodable_upload_gives_words_not_a_traceback(client, clips):
    out = _predict(client, clips["text"])
    assert "This file is not a video the app can read" in out["message"]
    assert "notes.mp4" in out["message"] and "Traceback" not in out["message"] and "/tmp" not in out["message"]
    emptied = {name: out[name] for name in OUTPUTS[1:]}  # the Label's empty value is {} over the API
    assert not any(emptied.values()), emptied  # nothing of an earlier clip stays under the error
    with pytest.raises(gradio_client.exceptions.AppError) as info:
        _analyze(client, clips["text"])
    assert "not a media container" in str(info.value) and "/tmp" not in str(info.value)


def test_too_long_clip_offers_its_first_part(served_app, client, clips):
    out = _predict(client, clips["too_long"])
    assert "too long" in out["message"] and f"{MAX_SECONDS} s" in out["message"]
    *_, last = app_outputs = list(served_app[0]._predict(clips["too_long"], progress=lambda *a, **k: None))
    assert last[-1].visible is True and len(app_outputs) == 2  # the button appears; no stack trace, no pills
    first = dict(zip(OUTPUTS, client.predict(gradio_client.handle_file(clips["too_long"]),
                                             api_name="/predict_first_part")))
    assert first["result"]["duration_s"] <= MAX_SECONDS
    assert first["result"]["source"] == Path(clips["too_long"]).name  # the upload's name, not the cut's
    _check_probabilities(first["result"]["probabilities"])


def test_no_ffmpeg_binary_is_ever_called(client, clips):
    _predict(client, clips["face"])
    assert FFMPEG_CALLS == []


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import runpy, sys; sys.argv = ['app.py', '--help']\n"
            "try:\n    runpy.run_path('app.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('HEAVY' if {'torch', 'gradio', 'transformers'} & set(sys.modules) else 'LIGHT')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "--max-seconds" in out.stdout and out.stdout.strip().endswith("LIGHT"), out.stdout + out.stderr


def test_preset_names_match_the_config(served_app):
    app, _ = served_app
    from fer_hf import FERConfig

    assert tuple(app.PRESET_NAMES) == tuple(FERConfig.PRESETS)


def test_limits_and_api_are_stated_in_the_page(served_app):
    import httpx

    app, url = served_app
    config = httpx.get(f"{url.rstrip('/')}/config", timeout=30).json()
    text = json.dumps(config)
    assert f"clips up to **{MAX_SECONDS} s**" in text and "files up to **5 MB**" in text
    hop = app.new_analysis().analyzer.hop_s  # the hop the windows really have: 1 s on whole 0.375 s frame steps
    assert hop == app.HOP_SECONDS == pytest.approx(1.125) and f"one starting every {hop:g} s" in text
    video = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "video-input")
    assert video["props"]["sources"] == ["upload", "webcam"] and video["props"]["include_audio"] is True
    assert video["props"]["webcam_options"]["mirror"] is False
    component = next(b for b in app.demo.blocks.values() if getattr(b, "elem_id", None) == "video-input")
    assert component.format is None  # no conversion of uploads (it would need ffmpeg)
    assert config.get("max_file_size") == 5 * 1024 * 1024


# ----------------------------------------------------------------------------------------------------------------
# Model selection (no server needed)
def test_newest_checkpoint_prefers_finished_runs(served_app, tmp_path):
    app, _ = served_app
    assert app.newest_checkpoint(tmp_path / "missing") is None
    for name in ("run/fold0/final", "run/fold0/checkpoint-9", "incomplete"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "model.safetensors").write_bytes(b"")
        if name != "incomplete":
            (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "run/fold0/final/training_info.json").write_text("{}")
    assert app.newest_checkpoint(tmp_path) == tmp_path / "run/fold0/final"
    init = tmp_path / "seed-init"  # fer_hf.tools.backbones output: pretrained backbones, untrained head
    init.mkdir()
    for name in ("model.safetensors", "config.json", "backbone_report.json"):
        (init / name).write_text("{}")
    os.utime(init / "model.safetensors", (3e9, 3e9))
    assert untrained_reason(init) and untrained_reason(tmp_path / "run/fold0/final") is None
    assert app.newest_checkpoint(tmp_path) == tmp_path / "run/fold0/final"  # never picked up as "trained"
    (tmp_path / "run/fold0/final/training_info.json").unlink()
    os.utime(tmp_path / "run/fold0/checkpoint-9/model.safetensors", (2e9, 2e9))
    assert app.newest_checkpoint(tmp_path) == tmp_path / "run/fold0/checkpoint-9"


def test_untrained_model_never_pretends(served_app):
    app, _ = served_app
    model, processor, info = app.load_model(None, "tiny")
    assert info["trained"] is False and "random weights" in info["source"]
    record = app.provenance(model.config, info)
    assert record["status"] == "untrained" and "meaningless" in record["summary"]
    banner = app.plots.provenance_banner(record["summary"], record["status"])
    assert "untrained-banner" in banner and "meaningless" in banner
    assert model.config.preset == "tiny" and processor.num_frames == model.config.num_frames


def test_int8_option_quantises_the_model_for_cpu(served_app, clips):
    app, _ = served_app
    model, processor, _ = app.load_model(None, "tiny")
    model, processor, device = app.prepare(model, processor, int8=True)
    if device != "cpu":
        pytest.skip("int8 is a CPU-only option")
    assert getattr(model, "is_int8_quantized", False)
    assert parse_settings(["--int8"]).int8 and not parse_settings([]).int8
    import torch

    with torch.inference_mode():
        outputs = model(**processor(videos=str(clips["face"]), return_tensors="pt"))
    assert abs(float(outputs.probabilities().sum()) - 1.0) < 1e-5


def test_temporary_files_are_cleaned_up(served_app, tmp_path):
    app, _ = served_app
    old = app.TEMP_ROOT / "old_request"
    old.mkdir()
    os.utime(old, (1e9, 1e9))  # far older than TEMP_MAX_AGE_S
    fresh = app._request_folder()
    assert fresh.parent == app.TEMP_ROOT and fresh.is_dir() and not old.exists()
    import tempfile

    dead = Path(tempfile.gettempdir()) / f"{app.TEMP_PREFIX}999999999_test"  # a process that no longer exists
    dead.mkdir(exist_ok=True)
    app._remove_stale_temp_roots()
    assert not dead.exists() and app.TEMP_ROOT.is_dir()  # our own folder (live pid) stays


def test_spaces_gpu_decorates_only_the_model_call(served_app, monkeypatch):
    """On a ZeroGPU Space `spaces` is installed: `run_model` (and nothing else) must go through `spaces.GPU`."""
    import importlib.util
    import types

    decorated = []
    fake = types.ModuleType("spaces")
    fake.GPU = lambda duration=60: (lambda fn: decorated.append((fn.__name__, duration)) or fn)
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.delitem(sys.modules, "fer_app.server")  # imported afresh here; the served one comes back after
    module = importlib.import_module("fer_app.server")
    assert decorated == [("run_model", 120)]
    assert module.DEVICE == ("cuda" if module.torch.cuda.is_available() else "cpu")


def test_live_mode_says_it_cannot_run_on_zerogpu(served_app):
    """ZeroGPU runs GPU calls in forked workers that cannot keep a live session's state: the tab says so and
    refuses to start, instead of silently losing its frame cache and results."""
    from fer_app import live as app_live
    assert app_live.live_unavailable_reason({}) is None
    assert app_live.live_unavailable_reason({"SPACES_ZERO_GPU": "false"}) is None
    reason = app_live.live_unavailable_reason({"SPACES_ZERO_GPU": "true"})
    assert reason and "ZeroGPU" in reason and "CPU Space" in reason
