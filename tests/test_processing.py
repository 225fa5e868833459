"""FERProcessor end to end on clips generated with PyAV (tiny preset: 8 frames of 32x32, 4x4 patches)."""

import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from media_factory import (  # noqa: E402
    astronaut_face,
    iou,
    make_clip,
    make_empty_file,
    make_image_file,
    make_text_file,
    make_truncated_copy,
    set_mp4_rotation,
)

from fer_hf.configuration_fer import FERConfig  # noqa: E402
from fer_hf.errors_fer import (  # noqa: E402
    EmptyMediaError,
    FERInputError,
    MediaDecodeError,
    MediaNotFoundError,
    MediaTooLongError,
    NoUsableModalityError,
    UnsupportedSampleRateError,
)
from fer_hf.processing_fer import FERProcessor  # noqa: E402

KEYS = {"input_features", "audio_attention_mask", "pixel_values_videos", "video_frame_mask", "roi_weights",
        "audio_mask", "video_mask"}
FACE_PASTE = (450, 150, 830, 530)  # where the astronaut's head goes in a 1280x720 frame


@pytest.fixture(scope="module")
def config():
    return FERConfig.from_preset("tiny")


@pytest.fixture(scope="module")
def processor(config):
    return FERProcessor.from_model_config(config)


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    """H.264 + AAC 48 kHz stereo, 1280x720 at 30 fps, 3 s, the astronaut's face on a gradient."""
    path = tmp_path_factory.mktemp("clips") / "face.mp4"
    return make_clip(path, seconds=3.0, fps=30, size=(1280, 720), audio="tone", sample_rate=48000, channels=2,
                     face_image=astronaut_face(), face_box=FACE_PASTE)


@pytest.fixture(scope="module")
def face_clip_out(processor, face_clip):
    return processor(videos=face_clip["path"], return_tensors="pt", return_face_frames=True)


def test_contract_shapes_and_dtypes(face_clip_out, config):
    out = face_clip_out
    assert set(out.keys()) == KEYS
    T, S, N = config.num_frames, config.vision_config.image_size, config.num_patches  # noqa: N806
    assert out["input_features"].shape == (1, 301, 80) and out["input_features"].dtype == torch.float32
    assert out["audio_attention_mask"].shape == (1, 301)
    assert out["pixel_values_videos"].shape == (1, T, 3, S, S) and out["pixel_values_videos"].dtype == torch.float32
    assert out["video_frame_mask"].shape == (1, T) and out["video_frame_mask"].dtype == torch.bool
    assert out["roi_weights"].shape == (1, T, N) and out["roi_weights"].dtype == torch.float32
    assert out["audio_mask"].tolist() == [True] and out["video_mask"].tolist() == [True]
    assert out["video_frame_mask"].all()
    assert out["audio_attention_mask"].sum() == 300  # 3 s of audio at a 10 ms hop
    assert out["pixel_values_videos"].min() >= -1 and out["pixel_values_videos"].max() <= 1
    roi = out["roi_weights"]
    assert roi.min() >= 0 and roi.max() <= 1


def test_clip_info_and_face_box_on_the_real_face(face_clip_out, face_clip, config):
    info = face_clip_out.clip_info[0]
    assert info["source"] == face_clip["path"] and info["clip_index"] == 0
    assert info["duration_s"] == pytest.approx(3.0, abs=0.05)
    assert (info["window_start_s"], info["window_end_s"]) == (0.0, 3.0)
    assert info["audio_used"] and info["audio_reason"] == "ok"
    assert info["video_used"] and info["video_reason"] == "ok"
    assert len(info["frame_times_s"]) == config.num_frames
    assert info["face_frames"].shape == (8, 32, 32, 3) and info["face_frames"].dtype == np.uint8
    for box in info["face_boxes"]:  # source (1280x720) pixels
        assert iou(box, face_clip["face_box"]) > 0.5
    # the ROI peak patch lies on the face, mapped back into source pixels through the crop box
    roi = face_clip_out["roi_weights"][0, 0].numpy()
    grid = config.vision_config.image_size // config.vision_config.patch_size
    row, col = divmod(int(roi.argmax()), grid)
    x0, y0, x1, y1 = info["crop_boxes"][0]
    px = x0 + (col + 0.5) / grid * (x1 - x0)
    py = y0 + (row + 0.5) / grid * (y1 - y0)
    fx0, fy0, fx1, fy1 = face_clip["face_box"]
    assert fx0 <= px <= fx1 and fy0 <= py <= fy1


def test_clip_info_survives_to_and_model_call_keys(face_clip_out):
    moved = face_clip_out.to("cpu")
    assert moved.clip_info[0]["video_used"]
    assert set(dict(**moved).keys()) == KEYS  # model(**inputs) sees only the tensors


def test_seed_size_crops(face_clip):
    proc = FERProcessor.from_model_config(FERConfig.from_preset("realtime"))
    out = proc(videos=face_clip["path"])
    assert out["pixel_values_videos"].shape == (1, 8, 3, 224, 224)
    assert out["roi_weights"].shape == (1, 8, 196)
    assert out["video_mask"].item()


def test_webm_without_duration(processor, tmp_path):
    clip = make_clip(tmp_path / "rec.webm", seconds=2.0, size=(320, 240), live=True)
    out = processor(videos=clip["path"])
    info = out.clip_info[0]
    assert info["duration_s"] == pytest.approx(2.0, abs=0.1)
    assert out["audio_mask"].item() and abs(int(out["audio_attention_mask"].sum()) - 200) <= 3
    assert out["video_frame_mask"].sum() == 5  # 2 s of a 3 s window: targets 0.19 ... 1.69 s
    assert not out["video_mask"].item() and info["video_reason"] == "no face found in any of 5 frames"


def test_no_audio_stream(processor, face_clip, tmp_path):
    clip = make_clip(tmp_path / "mute.mp4", seconds=1.0, size=(640, 360), audio=None,
                     face_image=astronaut_face(), face_box=(200, 60, 500, 360))
    out = processor(videos=clip["path"])
    assert out["audio_mask"].tolist() == [False] and out["video_mask"].tolist() == [True]
    assert out.clip_info[0]["audio_reason"] == "no audio stream"
    assert out["audio_attention_mask"].sum() == 0 and out["input_features"].abs().sum() == 0


def test_phone_video_with_rotation_is_turned_upright(processor, tmp_path):
    sideways = np.ascontiguousarray(np.rot90(astronaut_face(), 1))  # stored turned 90 degrees counter-clockwise
    clip = make_clip(tmp_path / "phone.mp4", seconds=1.0, size=(360, 640), face_image=sideways,
                     face_box=(40, 140, 320, 420))
    set_mp4_rotation(clip["path"], 90)  # players turn it 90 degrees clockwise: upright
    out = processor(videos=clip["path"])
    assert out["video_mask"].item(), out.clip_info[0]["video_reason"]
    x0, y0, x1, y1 = out.clip_info[0]["face_boxes"][0]  # in the upright 640x360 picture
    # stored (x, y) -> upright (640 - y, x): the pasted head's centre (180, 280) lands near (360, 180)
    assert 280 <= (x0 + x1) / 2 <= 440 and 120 <= (y0 + y1) / 2 <= 240


def test_silent_audio(processor, tmp_path):
    clip = make_clip(tmp_path / "silent.mp4", seconds=1.0, size=(640, 360), audio="silence",
                     face_image=astronaut_face(), face_box=(200, 60, 500, 360))
    out = processor(videos=clip["path"])
    assert out["audio_mask"].tolist() == [False]
    assert out.clip_info[0]["audio_reason"] == "silent audio track"


def test_half_second_clip_is_padded_with_masks(processor, tmp_path):
    clip = make_clip(tmp_path / "short.mp4", seconds=0.5, fps=30, size=(640, 360),
                     face_image=astronaut_face(), face_box=(200, 60, 500, 360))
    out = processor(videos=clip["path"])
    assert abs(int(out["audio_attention_mask"].sum()) - 50) <= 2  # ~50 frames of real audio
    mask = out["video_frame_mask"][0]
    assert mask.tolist() == [True] + [False] * 7  # only t = 0.1875 s lies inside the clip
    assert out["pixel_values_videos"][0, 1:].abs().sum() == 0 and out["roi_weights"][0, 1:].sum() == 0
    assert out.clip_info[0]["face_boxes"][1] is None
    assert out.clip_info[0]["frame_source_times_s"][0] == pytest.approx(0.2, abs=0.02)  # frame 6 of 30 fps
    assert out.clip_info[0]["frame_source_times_s"][1:] == [None] * 7
    assert out["audio_mask"].item() and out["video_mask"].item()


def test_sliding_windows_on_a_20_s_clip(processor, tmp_path, caplog):
    clip = make_clip(tmp_path / "long.mp4", seconds=20.0, fps=15, size=(160, 120), audio="tone")
    out = processor(videos=clip["path"], sliding_window=True)
    starts = [i["window_start_s"] for i in out.clip_info]
    assert out["input_features"].shape[0] == len(out.clip_info) == 13
    np.testing.assert_allclose(starts, [*(np.arange(12) * 1.5), 17.0])
    assert all(i["window_end_s"] - i["window_start_s"] == pytest.approx(3.0) for i in out.clip_info)
    assert [i["window_index"] for i in out.clip_info] == list(range(13))
    assert out["audio_mask"].all() and out["video_frame_mask"].all()
    assert out.clip_info[5]["frame_times_s"][0] == pytest.approx(7.5 + 0.1875)
    with caplog.at_level(logging.WARNING):
        capped = processor(videos=clip["path"], sliding_window=True, window_seconds=2.0, stride_seconds=0.5)
    assert len(capped.clip_info) == 20 == processor.max_windows  # 37 windows needed: capped, stride widened
    assert capped.clip_info[-1]["window_end_s"] == pytest.approx(20.0)
    assert capped["input_features"].shape[1] == 201  # 2 s windows: 32 000 samples
    assert "max_windows=20" in caplog.text


def test_noise_video_has_no_face(processor, tmp_path):
    clip = make_clip(tmp_path / "noise.mp4", seconds=1.0, size=(320, 240), background="noise")
    out = processor(videos=clip["path"])
    assert out["video_mask"].tolist() == [False] and out["audio_mask"].tolist() == [True]
    assert out.clip_info[0]["video_reason"] == "no face found in any of 3 frames"
    assert out["pixel_values_videos"].abs().sum() == 0


def test_neither_audio_nor_face(processor, tmp_path):
    clip = make_clip(tmp_path / "nothing.mp4", seconds=1.0, size=(320, 240), background="noise", audio="silence")
    with pytest.raises(NoUsableModalityError, match="silent audio track.*no face found"):
        processor(videos=clip["path"])


def test_sliding_windows_with_nothing_usable_leave_the_batch(processor, config):
    """A 9 s clip whose last 6 s are silent and faceless: those windows are listed, not fed to the model."""
    from fer_hf import FERForEmotionClassification

    rng = np.random.default_rng(0)
    fps, sr = 10, 16000
    t = np.arange(9 * sr) / sr
    audio = np.where(t < 3.0, 0.3 * np.sin(2 * np.pi * 220 * t), 0.0).astype(np.float32)
    frames = rng.integers(0, 255, size=(9 * fps, 120, 160, 3), dtype=np.uint8)  # noise: no face anywhere
    out = processor(audio=audio, sampling_rate=sr, video_frames=frames, fps=fps, sliding_window=True,
                    window_seconds=3.0, stride_seconds=3.0)
    assert out["audio_mask"].tolist() == [True] and len(out.clip_info) == 1
    assert [(w["window_start_s"], w["window_end_s"]) for w in out.skipped_windows] == [(3.0, 6.0), (6.0, 9.0)]
    assert all(w["audio_reason"] != "ok" and w["video_reason"] != "ok" for w in out.skipped_windows)
    logits = FERForEmotionClassification(config).eval()(**out).logits
    assert logits.shape == (1, 8) and torch.isfinite(logits).all()


def test_bad_files_raise_typed_errors(processor, face_clip, tmp_path):
    cases = [
        (str(tmp_path / "missing.mp4"), MediaNotFoundError),
        (make_empty_file(tmp_path / "zero.mp4"), EmptyMediaError),
        (make_truncated_copy(face_clip["path"], tmp_path / "cut.mp4", 0.5), MediaDecodeError),
        (make_image_file(tmp_path / "photo.mp4"), MediaDecodeError),
        (make_text_file(tmp_path / "readme.mp4"), MediaDecodeError),
    ]
    for path, error in cases:
        with pytest.raises(error) as info:
            processor(videos=path)
        assert isinstance(info.value, FERInputError) and os.path.basename(path) in str(info.value)
    with pytest.raises(MediaTooLongError):
        FERProcessor.from_model_config(FERConfig.from_preset("tiny"), max_duration_s=1.0)(videos=face_clip["path"])


def test_arrays_match_the_contract_and_check_the_rate(processor):
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32)
    frames = np.zeros((50, 240, 320, 3), np.uint8)  # 2 s at 25 fps, no face
    out = processor(audio=audio, sampling_rate=16000, video_frames=frames, fps=25)
    assert set(out.keys()) == KEYS and out["audio_mask"].item() and not out["video_mask"].item()
    assert out["audio_attention_mask"].sum() == 200 and out["video_frame_mask"].sum() == 5
    assert out.clip_info[0]["source"] == "array"
    as_numpy = processor(audio=audio, sampling_rate=16000, video_frames=frames, fps=25, return_tensors="np")
    assert isinstance(as_numpy["pixel_values_videos"], np.ndarray) and as_numpy.clip_info[0]["audio_used"]
    both = processor(audio=[audio, audio[:8000]], sampling_rate=16000)  # a batch of two, audio only
    assert both["input_features"].shape[0] == 2 and both["audio_attention_mask"].sum(-1).tolist() == [200, 50]
    assert both.clip_info[0]["video_reason"] == "no video frames given"
    with pytest.raises(UnsupportedSampleRateError, match="16000"):
        processor(audio=audio, sampling_rate=44100)
    with pytest.raises(FERInputError, match="fps"):
        processor(video_frames=frames)
    with pytest.raises(FERInputError):
        processor()


def test_array_frames_with_a_face(processor):
    import cv2

    face = cv2.resize(astronaut_face(), (300, 300))
    frame = np.full((360, 640, 3), 90, np.uint8)
    frame[30:330, 170:470] = face
    out = processor(video_frames=np.stack([frame] * 30), fps=30)
    assert out["video_mask"].item() and not out["audio_mask"].item()
    assert out.clip_info[0]["audio_reason"] == "no audio given"


def test_pluggable_detector_with_landmarks(config, tmp_path):
    from fer_hf.faces_fer import FaceBox, FaceDetector, roi_weight_map

    class FixedDetector(FaceDetector):
        def detect(self, frame_rgb):
            return [FaceBox(100, 50, 200, 150, score=1.0,
                            landmarks={"left_eye": (120, 80), "right_eye": (180, 80), "mouth": (150, 135)})]

    proc = FERProcessor.from_model_config(config)
    proc.face_detector = FixedDetector()
    out = proc(video_frames=np.zeros((20, 240, 320, 3), np.uint8), fps=10)
    assert out["video_mask"].item()
    assert out.clip_info[0]["face_boxes"][0] == [100.0, 50.0, 200.0, 150.0]
    canonical = roi_weight_map(32, 8, proc.face_margin)
    assert not np.allclose(out["roi_weights"][0, 0].numpy(), canonical)  # the map follows the landmarks
    proc.save_pretrained(tmp_path / "with_detector")  # the runtime detector is not serialised
    assert "FixedDetector" not in (tmp_path / "with_detector" / "processor_config.json").read_text()
    with pytest.raises(TypeError, match="detect"):
        proc.face_detector = object()


def test_post_process(processor):
    logits = torch.tensor([[0.0, 0, 5, 0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0, 0, 0, 3]])
    results = processor.post_process(logits)
    assert list(results[0])[0] == "happy" and list(results[1])[0] == "surprised"
    assert sum(results[0].values()) == pytest.approx(1.0)
    assert list(results[0].values()) == sorted(results[0].values(), reverse=True)

    class Output:
        pass

    out = Output()
    out.logits = logits
    assert len(processor.post_process(out, top_k=3)[1]) == 3


def test_save_and_load_in_a_fresh_process(processor, face_clip, tmp_path):
    saved = tmp_path / "saved"
    processor.save_pretrained(saved)
    assert {"processing_fer.py", "media_fer.py", "faces_fer.py", "errors_fer.py"} <= set(os.listdir(saved))
    expected = processor(videos=face_clip["path"])
    np.save(tmp_path / "expected_pixels.npy", expected["pixel_values_videos"].numpy())
    np.save(tmp_path / "expected_mel.npy", expected["input_features"].numpy())
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    script = textwrap.dedent(f"""
        import numpy as np
        try:
            import fer_hf
            raise SystemExit("fer_hf must not be importable here")
        except ImportError:
            pass
        from transformers import AutoProcessor
        proc = AutoProcessor.from_pretrained({str(saved)!r}, trust_remote_code=True)
        assert type(proc).__name__ == "FERProcessor", type(proc)
        assert proc.num_frames == 8 and proc.image_size == 32 and proc.id2label[2] == "happy"
        out = proc(videos={face_clip["path"]!r})
        pixels = np.load({str(tmp_path / "expected_pixels.npy")!r})
        mel = np.load({str(tmp_path / "expected_mel.npy")!r})
        np.testing.assert_allclose(out["pixel_values_videos"].numpy(), pixels)
        np.testing.assert_allclose(out["input_features"].numpy(), mel, atol=1e-5)
        print("ROUNDTRIP-OK")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf_modules")
    result = subprocess.run([sys.executable, "-c", script], cwd=workdir, env=env, capture_output=True, text=True,
                            timeout=300)
    assert "ROUNDTRIP-OK" in result.stdout, result.stdout + result.stderr


def test_with_the_model(processor, face_clip, config):
    modeling = pytest.importorskip("fer_hf.modeling_fer")
    model = modeling.FERForEmotionClassification(config).eval()
    inputs = processor(videos=face_clip["path"], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    probs = processor.post_process(out)
    assert len(probs) == 1 and len(probs[0]) == 8
    assert sum(probs[0].values()) == pytest.approx(1.0, abs=1e-5)
