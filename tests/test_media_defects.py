"""Files that players take in their stride but whose timing is off, through every surface: the processor
(`FERProcessor.prepare`), the timeline engine (`FERAnalyzer`), fer-annotate's worker (`annotate.stream.file_chunks`)
and the app's annotated video (`app_render`). Each gives the answer it gives for a well-formed copy of the clip.

- webm whose video packets are all stamped 0 (as some muxers and re-encoders write it): frames timed by their order
  at the stated rate, and the result says so;
- FLV with MP3 audio (and other container / audio codec pairs): the annotated video lasts as long as the clip.
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

TESTS = Path(__file__).resolve().parent
for path in (str(TESTS), str(TESTS.parent)):
    if path not in sys.path:
        sys.path.insert(0, path)

from media_factory import astronaut_face, frame_index_of, make_clip, restamp_video  # noqa: E402

from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor  # noqa: E402
from fer_hf.analysis_fer import FERAnalyzer  # noqa: E402

NOTE = "the video's timestamps are unusable (constant); frames were timed by their order at 30 fps"
HAS_MUX_STREAM = hasattr(av.container.OutputContainer, "add_mux_stream")
HAS_MP3 = "flv" in av.formats_available and "libmp3lame" in av.codecs_available


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if not HAS_MUX_STREAM:
        pytest.skip("PyAV cannot write a header-only stream (add_mux_stream, PyAV 17): no rate for the broken copy")
    torch.manual_seed(0)
    config = FERConfig.from_preset("tiny")
    model = FERForEmotionClassification(config).eval()
    processor = FERProcessor.from_model_config(config, min_speech_fraction=0.0)  # generated tones are not speech
    folder = tmp_path_factory.mktemp("defects")
    good = make_clip(folder / "good.webm", seconds=2.0, fps=30, size=(320, 240), face_image=astronaut_face(),
                     face_box=(90, 30, 250, 190))["path"]
    broken = restamp_video(good, folder / "pts0.webm", pts=0, rate=30)
    return dict(model=model, processor=processor, good=good, broken=broken, folder=folder)


def test_processor_prepares_the_same_frames(setup):
    proc, model = setup["processor"], setup["model"]
    good_inputs, good_info = proc.prepare(videos=setup["good"], return_tensors="pt")
    inputs, info = proc.prepare(videos=setup["broken"], return_tensors="pt")
    window, good_window = info.windows[0], good_info.windows[0]
    assert window["video_used"] and window["video_reason"] == "ok"
    assert window["face_found"] == good_window["face_found"] == [True] * 5 + [False] * 3  # 5 frames inside 2 s
    assert window["frame_source_times_s"] == pytest.approx(good_window["frame_source_times_s"], abs=1e-3)
    torch.testing.assert_close(inputs["pixel_values_videos"], good_inputs["pixel_values_videos"])
    assert info.clips[0].notes == [NOTE] and good_info.clips[0].notes == []
    with torch.inference_mode():
        result = proc.post_process(model(**inputs), info, model.config)[0]
    assert result.notes == [NOTE] and result.windows[0].modalities["face_frames"] == 5


def test_timeline_engine_uses_the_face(setup):
    analyzer = FERAnalyzer(setup["model"], setup["processor"])
    good, result = analyzer.analyze(setup["good"]), analyzer.analyze(setup["broken"])
    assert result.notes == [NOTE] and good.notes == [] and result.to_dict()["notes"] == [NOTE]
    assert len(result.windows) == len(good.windows) >= 1
    for window, reference in zip(result.windows, good.windows):
        assert window.modalities["video"] and window.modalities["face_frames"] == reference.modalities["face_frames"]
        assert [f.source_time_s for f in window.frames] == pytest.approx(
            [f.source_time_s for f in reference.frames], abs=1e-3)
        assert [f.face_box for f in window.frames] == [f.face_box for f in reference.frames]
    setup["result"] = result.to_dict()


def test_annotate_worker_rows_match(setup):
    from fer_hf.tools.annotate.stream import file_chunks

    def rows(path):
        messages = list(file_chunks(setup["processor"], path))
        end = messages[-1]
        assert end["ok"], end
        return [r for m in messages[:-1] for r in m["rows"]], end

    (broken, end), (good, good_end) = rows(setup["broken"]), rows(setup["good"])
    assert end["notes"] == [NOTE] and good_end["notes"] == []
    fields = ("window_index", "video_used", "video_reason", "face_frames", "frames", "person_id")
    assert [{k: r[k] for k in fields} for r in broken] == [{k: r[k] for k in fields} for r in good]
    assert all(r["video_used"] for r in broken)


def _decode(path) -> tuple[list[np.ndarray], float, float | None]:
    """(RGB frames, container duration, audio stream duration) of a rendered video, in seconds."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_s = float(audio.duration * audio.time_base) if audio is not None and audio.duration else None
        return frames, container.duration / 1e6, audio_s


def test_annotated_video_plays_every_frame(setup):
    from fer_app.render import render_annotated_video

    result = setup.get("result") or FERAnalyzer(setup["model"], setup["processor"]).analyze(
        setup["broken"]).to_dict()
    folder = setup["folder"]
    info = render_annotated_video(setup["broken"], result, folder / "broken.mp4", max_side=320, max_fps=10)
    reference = render_annotated_video(setup["good"], result, folder / "good.mp4", max_side=320, max_fps=10)
    frames, duration, _ = _decode(info.path)
    good_frames, good_duration, _ = _decode(reference.path)
    assert info.frames == reference.frames == len(frames) == pytest.approx(20, abs=1)  # 2 s at 10 fps
    assert duration == pytest.approx(good_duration, abs=0.05)
    # the render shows the source frames the well-formed copy's does, one after the other: not one frozen frame
    shown = [frame_index_of(f) for f in frames]
    assert shown == [frame_index_of(f) for f in good_frames]
    assert shown[:10] == [3 * k for k in range(10)]  # frame k: the 30 fps source frame at k / 10 s


# ----------------------------------------------------------------------------------------------------------------
# Containers and audio codecs: the annotated video lasts as long as the clip
CLIPS = [  # suffix, container, video codec, audio codec, sample rate, channels
    pytest.param(".flv", "flv", "libx264", "libmp3lame", 44100, 1, id="flv-mp3-mono-44k",
                 marks=pytest.mark.skipif(not HAS_MP3, reason="no FLV muxer or MP3 encoder (libmp3lame)")),
    pytest.param(".flv", "flv", "libx264", "libmp3lame", 22050, 2, id="flv-mp3-stereo-22k",
                 marks=pytest.mark.skipif(not HAS_MP3, reason="no FLV muxer or MP3 encoder (libmp3lame)")),
    pytest.param(".mkv", "matroska", "libx264", "aac", 44100, 1, id="mkv-aac-mono-44k"),
    pytest.param(".webm", "webm", "libvpx", "libopus", 48000, 1, id="webm-opus"),
    pytest.param(".mp4", "mp4", "libx264", "aac", 44100, 1, id="mp4-aac-mono-44k"),
]


@pytest.mark.parametrize("suffix, container, vcodec, acodec, rate, channels", CLIPS)
def test_annotated_video_lasts_as_long_as_the_clip(tmp_path, suffix, container, vcodec, acodec, rate, channels):
    from fer_app.render import render_annotated_video
    from fer_hf.media_fer import probe_media

    clip = make_clip(tmp_path / f"clip{suffix}", seconds=1.9, fps=25, size=(160, 120), container=container,
                     video_codec=vcodec, audio_codec=acodec, sample_rate=rate, channels=channels)
    clip_s = probe_media(clip["path"]).duration_s
    assert clip_s == pytest.approx(1.9, abs=0.1)
    result = {"labels": ["neutral", "happy"], "windows": []}  # nothing to draw but the "left out" marker
    info = render_annotated_video(clip["path"], result, tmp_path / "annotated.mp4", max_side=160)
    frames, duration, audio_s = _decode(info.path)
    assert info.has_audio and audio_s is not None
    assert duration == pytest.approx(clip_s, abs=0.1) and audio_s <= clip_s + 0.03
    assert len(frames) == info.frames == pytest.approx(clip_s * 12, abs=1)  # 12 fps (MAX_FPS)


@pytest.mark.skipif(not HAS_MP3, reason="no FLV muxer or MP3 encoder (libmp3lame)")
def test_flv_with_mp3_is_analysed_with_voice_and_face(tmp_path):
    torch.manual_seed(0)
    config = FERConfig.from_preset("tiny")
    model = FERForEmotionClassification(config).eval()
    processor = FERProcessor.from_model_config(config, min_speech_fraction=0.0)
    clip = make_clip(tmp_path / "clip.flv", seconds=1.9, fps=25, size=(320, 240), container="flv",
                     video_codec="libx264", audio_codec="libmp3lame", sample_rate=44100, channels=1,
                     face_image=astronaut_face(), face_box=(90, 30, 250, 190))
    result = FERAnalyzer(model, processor).analyze(clip["path"])
    assert result.duration_s == pytest.approx(1.9, abs=0.08) and result.notes == []
    assert all(w.modalities["audio"] and w.modalities["video"] for w in result.windows)
    inputs, info = processor.prepare(videos=clip["path"])
    assert info.windows[0]["audio_used"] and info.windows[0]["video_used"]
