"""FERProcessor end to end on clips generated with PyAV (tiny preset: 8 frames of 32x32, 4x4 patches)."""

import logging
import os
import sys
import textwrap

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from hub_user import run_as_hub_user  # noqa: E402
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
from fer_hf.media_fer import FERMedia  # noqa: E402
from fer_hf.processing_fer import FERProcessor  # noqa: E402

KEYS = {"input_features", "audio_attention_mask", "pixel_values_videos", "video_frame_mask", "roi_weights",
        "audio_mask", "video_mask"}
FACE_PASTE = (450, 150, 830, 530)  # where the astronaut's head goes in a 1280x720 frame


@pytest.fixture(scope="module")
def config():
    return FERConfig.from_preset("tiny")


@pytest.fixture(scope="module")
def processor(config):
    # generated tones are not speech; speech detection has its own tests (test_frontend_*)
    return FERProcessor.from_model_config(config, min_speech_fraction=0.0)


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    """H.264 + AAC 48 kHz stereo, 1280x720 at 30 fps, 3 s, the astronaut's face on a gradient."""
    path = tmp_path_factory.mktemp("clips") / "face.mp4"
    return make_clip(path, seconds=3.0, fps=30, size=(1280, 720), audio="tone", sample_rate=48000, channels=2,
                     face_image=astronaut_face(), face_box=FACE_PASTE)


@pytest.fixture(scope="module")
def face_clip_prepared(processor, face_clip):
    return processor.prepare(videos=face_clip["path"], return_tensors="pt", return_face_frames=True)


@pytest.fixture(scope="module")
def face_clip_out(face_clip_prepared):
    return face_clip_prepared[0]


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


def test_clip_info_and_face_box_on_the_real_face(face_clip_prepared, face_clip, config):
    face_clip_out, batch_info = face_clip_prepared
    info = batch_info.windows[0]
    assert batch_info.clips[0].rows == [0] and batch_info.clips[0].skipped == []
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


def test_model_inputs_carry_no_metadata(face_clip_out):
    moved = face_clip_out.to("cpu")
    assert set(dict(**moved).keys()) == KEYS  # model(**inputs) sees only the tensors
    with pytest.raises(AttributeError, match="processor.prepare"):
        moved.clip_info


def test_seed_size_crops(face_clip):
    proc = FERProcessor.from_model_config(FERConfig.from_preset("realtime"), min_speech_fraction=0.0)
    out = proc(videos=face_clip["path"])
    assert out["pixel_values_videos"].shape == (1, 8, 3, 224, 224)
    assert out["roi_weights"].shape == (1, 8, 196)
    assert out["video_mask"].item()


def test_webm_without_duration(processor, tmp_path):
    clip = make_clip(tmp_path / "rec.webm", seconds=2.0, size=(320, 240), live=True)
    out, info = processor.prepare(videos=clip["path"])
    assert info.windows[0]["duration_s"] == pytest.approx(2.0, abs=0.1)
    assert out["audio_mask"].item() and abs(int(out["audio_attention_mask"].sum()) - 200) <= 3
    assert out["video_frame_mask"].sum() == 5  # 2 s of a 3 s window: targets 0.19 ... 1.69 s
    assert not out["video_mask"].item() and info.windows[0]["video_reason"] == "no face found in any of 5 frames"


def test_no_audio_stream(processor, face_clip, tmp_path):
    clip = make_clip(tmp_path / "mute.mp4", seconds=1.0, size=(640, 360), audio=None,
                     face_image=astronaut_face(), face_box=(200, 60, 500, 360))
    out, info = processor.prepare(videos=clip["path"])
    assert out["audio_mask"].tolist() == [False] and out["video_mask"].tolist() == [True]
    assert info.windows[0]["audio_reason"] == "no audio stream"
    assert out["audio_attention_mask"].sum() == 0 and out["input_features"].abs().sum() == 0


def test_phone_video_with_rotation_is_turned_upright(processor, tmp_path):
    sideways = np.ascontiguousarray(np.rot90(astronaut_face(), 1))  # stored turned 90 degrees counter-clockwise
    clip = make_clip(tmp_path / "phone.mp4", seconds=1.0, size=(360, 640), face_image=sideways,
                     face_box=(40, 140, 320, 420))
    set_mp4_rotation(clip["path"], 90)  # players turn it 90 degrees clockwise: upright
    out, info = processor.prepare(videos=clip["path"])
    assert out["video_mask"].item(), info.windows[0]["video_reason"]
    x0, y0, x1, y1 = info.windows[0]["face_boxes"][0]  # in the upright 640x360 picture
    # stored (x, y) -> upright (640 - y, x): the pasted head's centre (180, 280) lands near (360, 180)
    assert 280 <= (x0 + x1) / 2 <= 440 and 120 <= (y0 + y1) / 2 <= 240


def test_silent_audio(processor, tmp_path):
    clip = make_clip(tmp_path / "silent.mp4", seconds=1.0, size=(640, 360), audio="silence",
                     face_image=astronaut_face(), face_box=(200, 60, 500, 360))
    out, info = processor.prepare(videos=clip["path"])
    assert out["audio_mask"].tolist() == [False]
    assert info.windows[0]["audio_reason"] == "silent audio track"


def test_half_second_clip_is_padded_with_masks(processor, tmp_path):
    clip = make_clip(tmp_path / "short.mp4", seconds=0.5, fps=30, size=(640, 360),
                     face_image=astronaut_face(), face_box=(200, 60, 500, 360))
    out, info = processor.prepare(videos=clip["path"])
    assert abs(int(out["audio_attention_mask"].sum()) - 50) <= 2  # ~50 frames of real audio
    mask = out["video_frame_mask"][0]
    assert mask.tolist() == [True] + [False] * 7  # only t = 0.1875 s lies inside the clip
    assert out["pixel_values_videos"][0, 1:].abs().sum() == 0 and out["roi_weights"][0, 1:].sum() == 0
    assert info.windows[0]["face_boxes"][1] is None
    assert info.windows[0]["frame_source_times_s"][0] == pytest.approx(0.2, abs=0.02)  # frame 6 of 30 fps
    assert info.windows[0]["frame_source_times_s"][1:] == [None] * 7
    assert out["audio_mask"].item() and out["video_mask"].item()


def test_sliding_windows_on_a_20_s_clip(processor, config, tmp_path, caplog):
    clip = make_clip(tmp_path / "long.mp4", seconds=20.0, fps=15, size=(160, 120), audio="tone")
    out, info = processor.prepare(videos=clip["path"], sliding_window=True)
    starts = [i["window_start_s"] for i in info.windows]
    assert out["input_features"].shape[0] == len(info.windows) == 13
    np.testing.assert_allclose(starts, [*(np.arange(12) * 1.5), 17.0])
    assert all(i["window_end_s"] - i["window_start_s"] == pytest.approx(3.0) for i in info.windows)
    assert [i["window_index"] for i in info.windows] == list(range(13))
    assert out["audio_mask"].all() and out["video_frame_mask"].all()
    assert info.windows[5]["frame_times_s"][0] == pytest.approx(7.5 + 0.1875)
    with caplog.at_level(logging.WARNING):
        capped, capped_info = processor.prepare(videos=clip["path"], sliding_window=True, hop_seconds=0.5)
    assert len(capped_info.windows) == 20 == processor.max_windows  # 35 windows needed: capped, stride widened
    assert capped_info.windows[-1]["window_end_s"] == pytest.approx(20.0)
    assert capped["input_features"].shape[1] == 301  # 3 s windows: 48 000 samples
    assert "max_windows=20" in caplog.text
    # a window length other than the model's is refused, never silently given a wrong timeline
    with pytest.raises(FERInputError, match="windows of 3 s"):
        processor.prepare(videos=clip["path"], sliding_window=True, window_seconds=6.0)
    with pytest.raises(FERInputError, match="window_seconds=2"):
        FERProcessor.from_model_config(config, window_seconds=2.0)


def test_noise_video_has_no_face(processor, tmp_path):
    clip = make_clip(tmp_path / "noise.mp4", seconds=1.0, size=(320, 240), background="noise")
    out, info = processor.prepare(videos=clip["path"])
    assert out["video_mask"].tolist() == [False] and out["audio_mask"].tolist() == [True]
    assert info.windows[0]["video_reason"] == "no face found in any of 3 frames"
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
    media = {"audio": audio, "sampling_rate": sr, "frames": frames, "fps": fps}
    out, info = processor.prepare(videos=media, sliding_window=True, window_seconds=3.0, hop_seconds=3.0)
    assert out["audio_mask"].tolist() == [True] and len(info.windows) == 1
    skipped = info.clips[0].skipped
    assert [(w.start_s, w.end_s) for w in skipped] == [(3.0, 6.0), (6.0, 9.0)] and [w.index for w in skipped] == [1, 2]
    assert all(w.audio_reason != "ok" and w.video_reason != "ok" for w in skipped)
    outputs = FERForEmotionClassification(config).eval()(**out)
    assert outputs.logits.shape == (1, 8) and torch.isfinite(outputs.logits).all()
    result = processor.post_process(outputs, info)[0]
    assert [w.index for w in result.windows] == [0] and result.skipped_windows == skipped


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
    media = {"audio": audio, "sampling_rate": 16000, "frames": frames, "fps": 25}
    out, info = processor.prepare(videos=media)
    assert set(out.keys()) == KEYS and out["audio_mask"].item() and not out["video_mask"].item()
    assert out["audio_attention_mask"].sum() == 200 and out["video_frame_mask"].sum() == 5
    assert info.windows[0]["source"] == "array"
    as_numpy, info_np = processor.prepare(videos=FERMedia(**media), return_tensors="np")
    assert isinstance(as_numpy["pixel_values_videos"], np.ndarray) and info_np.windows[0]["audio_used"]
    np.testing.assert_array_equal(as_numpy["input_features"], out["input_features"].numpy())
    both, both_info = processor.prepare(videos=[{"audio": audio, "sampling_rate": 16000},
                                                {"audio": audio[:8000], "sampling_rate": 16000}])  # audio only
    assert both["input_features"].shape[0] == 2 and both["audio_attention_mask"].sum(-1).tolist() == [200, 50]
    assert both_info.windows[0]["video_reason"] == "no video frames given"
    assert [c.rows for c in both_info.clips] == [[0], [1]]
    # frames with their own timestamps (e.g. a webcam): the same picks as a steady 25 fps
    timed, _ = processor.prepare(videos={**media, "fps": None, "frame_times_s": np.arange(50) / 25})
    np.testing.assert_array_equal(timed["video_frame_mask"].numpy(), out["video_frame_mask"].numpy())
    with pytest.raises(UnsupportedSampleRateError, match="16000"):
        processor(videos={"audio": audio, "sampling_rate": 44100})
    with pytest.raises(FERInputError, match="fps"):
        processor(videos={"frames": frames})
    with pytest.raises(FERInputError, match="videos="):  # the old keyword arguments name the new form
        processor(audio=audio, sampling_rate=16000)
    with pytest.raises(FERInputError, match="unknown media key"):
        processor(videos={"wave": audio})
    with pytest.raises(FERInputError):
        processor()


def test_array_frames_with_a_face(processor):
    import cv2

    face = cv2.resize(astronaut_face(), (300, 300))
    frame = np.full((360, 640, 3), 90, np.uint8)
    frame[30:330, 170:470] = face
    out, info = processor.prepare(videos={"frames": np.stack([frame] * 30), "fps": 30})
    assert out["video_mask"].item() and not out["audio_mask"].item()
    assert info.windows[0]["audio_reason"] == "no audio given"


def test_pluggable_detector_with_landmarks(config, tmp_path):
    from fer_hf.faces_fer import FaceBox, FaceDetector, roi_weight_map

    class FixedDetector(FaceDetector):
        def detect(self, frame_rgb):
            return [FaceBox(100, 50, 200, 150, score=1.0,
                            landmarks={"left_eye": (120, 80), "right_eye": (180, 80), "mouth": (150, 135)})]

    proc = FERProcessor.from_model_config(config)
    proc.face_detector = FixedDetector()
    out, info = proc.prepare(videos={"frames": np.zeros((20, 240, 320, 3), np.uint8), "fps": 10})
    assert out["video_mask"].item()
    assert info.windows[0]["face_boxes"][0] == [100.0, 50.0, 200.0, 150.0]
    # the crop is aligned on the key points (centred between the eyes), so they sit at their canonical places and
    # the map painted from them is close to the canonical one
    x0, _, x1, _ = info.windows[0]["crop_boxes"][0]
    assert (x0 + x1) / 2 == pytest.approx(150, abs=1)
    canonical = roi_weight_map(32, 8, proc.video_processing.face_margin)
    assert np.abs(out["roi_weights"][0, 0].numpy() - canonical).max() < 0.2
    proc.save_pretrained(tmp_path / "with_detector")  # the runtime detector is not serialised
    assert "FixedDetector" not in (tmp_path / "with_detector" / "processor_config.json").read_text()
    with pytest.raises(TypeError, match="detect"):
        proc.face_detector = object()


def test_post_process_gives_one_result_per_row_without_info(processor):
    logits = torch.tensor([[0.0, 0, 5, 0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0, 0, 0, 1.02]])
    results = processor.post_process(logits)
    assert [r.source for r in results] == ["unknown", "unknown"]
    assert results[0].top_label == "happy" and results[0].confident
    assert sum(results[0].probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert results[0].ranked(3)[0][0] == "happy" and len(results[0].ranked(3)) == 3
    # top two within the margin: no clear emotion
    assert results[1].top_label is None and not results[1].confident
    assert results[1].ranked(1)[0][0] == "surprised"
    with pytest.raises(FERInputError, match="classes"):
        processor.post_process(torch.zeros(1, 5))


def test_old_flat_processor_json_still_loads(config, tmp_path):
    """A processor_config.json written before the sub-processors (flat keys) loads with the same settings."""
    import json

    FERProcessor.from_model_config(config).save_pretrained(tmp_path)
    path = tmp_path / "processor_config.json"
    data = json.loads(path.read_text())
    flat = {**data.pop("geometry"), **data.pop("video_settings"), **data.pop("audio_settings")}
    flat["face_margin"] = 0.3
    path.write_text(json.dumps({**data, **flat}))
    loaded = FERProcessor.from_pretrained(tmp_path)
    assert loaded.num_frames == config.num_frames and loaded.image_size == 32
    assert loaded.video_processing.face_margin == 0.3
    with pytest.raises(TypeError, match="face_margn"):
        FERProcessor.from_model_config(config, face_margn=0.2)


def test_geometry_comes_from_the_model_config(config):
    proc = FERProcessor.from_model_config(config)
    assert proc.num_frames == config.num_frames and proc.sampling_rate == config.sampling_rate
    from fer_hf.modules_fer import segment_membership

    # 8 frames and 38 encoder frames into 8 segments, by the model's own rule
    member = segment_membership(proc.geometry.num_encoder_frames, config.num_segments)
    audio = proc.geometry.segment_bounds_seconds("audio")
    for s, (start, end) in enumerate(audio):
        steps = member[s].nonzero().squeeze(-1)
        assert start == pytest.approx(steps[0].item() * 0.08)
        assert end == pytest.approx(min(3.0, (steps[-1].item() + 1) * 0.08))  # the last frame ends at the window end
    assert proc.geometry.num_encoder_frames == 38 and audio[1][0] < audio[0][1]  # overlapping by one frame
    fused = proc.geometry.segment_bounds_seconds()
    assert fused[0] == (0.0, 0.4) and fused[-1][1] == 3.0
    with pytest.raises(FERInputError, match="geometry"):
        proc.check_model(FERConfig.from_preset("tiny", num_frames=4))
    proc.check_model(config)


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
    result = run_as_hub_user(script, workdir, tmp_path / "hf_modules", timeout=300)
    assert "ROUNDTRIP-OK" in result.stdout, result.stdout + result.stderr


def test_with_the_model_gives_a_documented_result(processor, face_clip, config):
    import json

    from fer_hf.modeling_fer import FERForEmotionClassification
    from fer_hf.results_fer import RESULT_SCHEMA_VERSION, FERClipResult

    model = FERForEmotionClassification(config).eval()
    inputs, info = processor.prepare(videos=[face_clip["path"], face_clip["path"]], sliding_window=True,
                                     hop_seconds=1.0)
    with torch.no_grad():
        out = model(**inputs)
    results = processor.post_process(out, info, model.config)
    assert len(results) == 2 and [c.rows for c in info.clips] == [[0], [1]]
    result = results[0]
    assert result.schema_version == RESULT_SCHEMA_VERSION and result.source == face_clip["path"]
    assert result.labels == list(config.id2label.values()) and result.duration_s == pytest.approx(3.0, abs=0.05)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    window = result.windows[0]
    expected = out.logits[0].softmax(-1)
    assert [window.probabilities[label] for label in result.labels] == pytest.approx(expected.tolist(), abs=1e-6)
    assert window.modalities["audio"] and window.modalities["video"] and window.modalities["face_frames"] == 8
    bounds = processor.geometry.segment_bounds_seconds("fused")
    assert [(s.start_s, s.end_s) for s in window.segments] == bounds
    assert sum(s.attention for s in window.segments) == pytest.approx(1.0, abs=1e-5)
    assert len(window.frames) == 8 and all(f.face_found for f in window.frames)
    assert len(window.audio_attention) == processor.geometry.num_encoder_frames
    assert len(window.roi["patch_scores"]) == 8 and len(window.roi["patch_scores"][0]) == config.num_patches
    assert result.tracks[0].frames_found == 8 and result.person["track_id"] == 0
    full, compact = json.loads(result.to_json()), json.loads(result.to_json(compact=True))
    assert "roi" in full["windows"][0] and "roi" not in compact["windows"][0]
    assert FERClipResult.from_dict(full) == result
    with pytest.raises(ValueError, match="schema version"):
        FERClipResult.from_dict({**full, "schema_version": 0})
