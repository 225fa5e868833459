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

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reports to the network from tests

gradio_client = pytest.importorskip("gradio_client")
LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
MAX_SECONDS = 12  # the duration cap the test server runs with
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
    """Save a tiny model + processor into `folder`, import app.py with it and serve it on loopback (once)."""
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
    sys.modules.pop("app", None)
    app = importlib.import_module("app")
    app.demo.queue(default_concurrency_limit=2, max_size=16).launch(
        server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, max_file_size="5mb",
        quiet=True, show_error=False,
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


def _predict(client, path, timeline=False):
    return client.predict(gradio_client.handle_file(path), timeline, api_name="/predict")


def _check_probabilities(probs: dict):
    assert sorted(probs) == sorted(LABELS)
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-5)
    assert all(0.0 <= p <= 1.0 for p in probs.values())


# ----------------------------------------------------------------------------------------------------------------
def test_predict_is_a_named_api(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert "/predict" in api["named_endpoints"]
    assert [p["label"] for p in api["named_endpoints"]["/predict"]["parameters"]][0] == "Video clip"


def test_upload_gives_probabilities_and_plot_data(client, clips):
    label, summary, segments, audio, faces, timeline, report, files = _predict(client, clips["face"])
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    _check_probabilities(confidences)
    _check_probabilities(report["probabilities"])
    assert label["label"] == report["top_label"] == max(confidences, key=confidences.get)
    assert "Audio and face both used" in summary
    for plot in (segments, audio, faces):
        assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/png;base64,")
    assert timeline["visible"] is False  # one window: no timeline

    (window,) = report["windows"]
    assert window["audio"]["used"] and window["video"]["used"]
    assert window["end_s"] - window["start_s"] == pytest.approx(3.0)
    segs = window["segments"]
    assert len(segs) == 8 and sum(s["weight"] for s in segs) == pytest.approx(1.0, abs=1e-4)
    assert all(s["emotion"] in LABELS for s in segs)
    assert segs[0]["start_s"] == window["start_s"] and segs[-1]["end_s"] == pytest.approx(window["end_s"])
    att = window["audio_attention"]
    assert att["frame_seconds"] == pytest.approx(0.08)
    assert len(att["times_s"]) == len(att["weights"]) > 30
    assert all(window["start_s"] < t <= window["end_s"] + 1e-6 for t in att["times_s"])
    assert sum(att["weights"]) == pytest.approx(1.0, abs=1e-3)  # segment weights x within-segment weights
    assert len(window["faces"]) == 8  # every frame of the tiny model's 8 has the face
    assert all(len(f["kept_patches"]) == len(f["kept_scores"]) == 8 for f in window["faces"])  # roi_top_k
    assert all(0 <= p < window["patch_grid"] ** 2 for f in window["faces"] for p in f["kept_patches"])


def test_downloads_hold_the_same_numbers(client, clips):
    *_, report, files = _predict(client, clips["face"])
    by_suffix = {Path(f).suffix: f for f in files}
    assert set(by_suffix) == {".json", ".csv"}
    fetch = lambda path: Path(path).read_text()  # the client downloaded them
    assert json.loads(fetch(by_suffix[".json"]))["probabilities"] == report["probabilities"]
    rows = list(csv.DictReader(io.StringIO(fetch(by_suffix[".csv"]))))
    clip_rows = {r["name"]: float(r["value"]) for r in rows if r["table"] == "clip_probability"}
    assert clip_rows == pytest.approx(report["probabilities"], abs=1e-6)
    tables = {r["table"] for r in rows}
    assert {"window_probability", "segment_attention", "audio_attention", "roi_kept_patch"} <= tables


def test_timeline_gives_one_prediction_per_window(client, clips):
    label, summary, *_, timeline, report, _files = _predict(client, clips["long"], timeline=True)
    bounds = [(w["start_s"], w["end_s"]) for w in report["windows"]]
    assert bounds == [(0.0, 3.0), (3.0, 6.0), (4.0, 7.0)]  # 3 s windows; the last one ends at the clip end
    assert timeline["visible"] is True and timeline["value"]["plot"].startswith("data:image/png;base64,")
    for w in report["windows"]:
        _check_probabilities(w["probabilities"])
    for name, p in report["probabilities"].items():  # the clip's probabilities are the windows' average
        assert p == pytest.approx(sum(w["probabilities"][name] for w in report["windows"]) / 3)
    assert "Timeline of 3 windows" in summary


def test_timeline_lists_windows_with_nothing_usable(client, tmp_path):
    import numpy as np

    sr = 48000
    t = np.arange(7 * sr) / sr
    voice_then_silence = np.where(t < 2.5, 0.3 * np.sin(2 * np.pi * 220 * t), 0.0).astype(np.float32)
    clip = make_clip(tmp_path / "fades.mp4", seconds=7, fps=10, size=(160, 120), background="noise",
                     audio=voice_then_silence, sample_rate=sr)["path"]
    label, summary, *_, report, _files = _predict(client, clip, timeline=True)
    assert [(w["start_s"], w["end_s"]) for w in report["windows"]] == [(0.0, 3.0)]
    assert [(w["window_start_s"], w["window_end_s"]) for w in report["skipped_windows"]] == [(3.0, 6.0), (4.0, 7.0)]
    assert "Left out (neither usable audio nor a face): 3.0–6.0 s, 4.0–7.0 s" in summary
    _check_probabilities(report["probabilities"])


def test_no_face_says_audio_only(client, clips):
    _, summary, _, _, faces, _, report, _ = _predict(client, clips["no_face"])
    assert "Audio only: no face found" in summary
    assert report["windows"][0]["video"] == {"used": False, "reason": report["windows"][0]["video"]["reason"]}
    assert report["windows"][0]["faces"] == []
    assert faces["plot"].startswith("data:image/png;base64,")  # a figure that says why
    _check_probabilities(report["probabilities"])


def test_browser_recording_format_works(client, clips):
    """Webcam recordings arrive as WebM without duration or cues; they must decode like any upload."""
    *_, report, _ = _predict(client, clips["webm"])
    _check_probabilities(report["probabilities"])
    assert report["modalities"]["audio_windows"] == report["modalities"]["video_windows"] == 1


def test_undecodable_upload_gives_the_clear_message(client, clips):
    with pytest.raises(gradio_client.exceptions.AppError) as info:
        _predict(client, clips["text"])
    message = str(info.value)
    assert "notes.mp4" in message and "not a media container" in message
    assert "Traceback" not in message and "/tmp" not in message  # no stack trace, no server paths


def test_too_long_clip_is_refused_with_the_limit(client, clips):
    with pytest.raises(gradio_client.exceptions.AppError) as info:
        _predict(client, clips["too_long"])
    assert f"{MAX_SECONDS}" in str(info.value) and "trim" in str(info.value)


def test_no_ffmpeg_binary_is_ever_called(client, clips):
    _predict(client, clips["face"])
    assert FFMPEG_CALLS == []


def test_limits_and_api_are_stated_in_the_page(served_app):
    import httpx

    app, url = served_app
    config = httpx.get(f"{url.rstrip('/')}/config", timeout=30).json()
    text = json.dumps(config)
    assert f"clips up to **{MAX_SECONDS} s**" in text and "files up to **5 MB**" in text
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
    assert app.untrained_reason(init) and app.untrained_reason(tmp_path / "run/fold0/final") is None
    assert app.newest_checkpoint(tmp_path) == tmp_path / "run/fold0/final"  # never picked up as "trained"
    (tmp_path / "run/fold0/final/training_info.json").unlink()
    os.utime(tmp_path / "run/fold0/checkpoint-9/model.safetensors", (2e9, 2e9))
    assert app.newest_checkpoint(tmp_path) == tmp_path / "run/fold0/checkpoint-9"


def test_untrained_model_never_pretends(served_app):
    app, _ = served_app
    model, processor, info = app.load_model(None, "tiny")
    assert info["trained"] is False and "random weights" in info["source"]
    banner = app.untrained_banner(info)
    assert "UNTRAINED MODEL" in banner and "meaningless" in banner and "--model" in banner
    assert "random weights" in banner and app.TRAIN_COMMAND in banner
    assert model.config.preset == "tiny" and processor.num_frames == model.config.num_frames


def test_int8_option_quantises_the_model_for_cpu(served_app, clips):
    app, _ = served_app
    model, processor, _ = app.load_model(None, "tiny")
    model, processor, device = app._prepare(model, processor, int8=True)
    if device != "cpu":
        pytest.skip("int8 is a CPU-only option")
    assert getattr(model, "is_int8_quantized", False)
    assert app.parse_settings(["--int8"]).int8 and not app.parse_settings([]).int8
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
    spec = importlib.util.spec_from_file_location("app_on_spaces", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "app_on_spaces", module)
    spec.loader.exec_module(module)
    assert decorated == [("run_model", 120)]
    assert module.DEVICE == ("cuda" if module.torch.cuda.is_available() else "cpu")


def test_timeline_chunks_with_a_missing_modality_are_joined(served_app):
    """Windows run in chunks; a chunk without audio (or faces) has None outputs that must keep the row count."""
    import numpy as np

    app, _ = served_app
    att = np.ones((2, 8, 38), np.float32)
    joined = app._concat([att, None, att[:1]], [2, 3, 1])
    assert joined.shape == (6, 8, 38) and (joined[2:5] == 0).all()
    idx = np.zeros((2, 8, 4), np.int64)
    assert (app._concat([None, idx], [3, 2])[:3] == -1).all()
    assert app._concat([None, None], [1, 1]) is None
