"""Decoding and windowing (fer_hf/media_fer.py) on media generated with PyAV."""

import logging
import os
import sys

import av
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from media_factory import (  # noqa: E402
    frame_index_of,
    make_clip,
    make_empty_file,
    make_image_file,
    make_text_file,
    make_truncated_copy,
    restamp_video,
)

from fer_hf import media_fer  # noqa: E402
from fer_hf.errors_fer import (  # noqa: E402
    EmptyMediaError,
    FERInputError,
    MediaDecodeError,
    MediaNotFoundError,
    MediaTooLongError,
)
from fer_hf.media_fer import decode_window, frame_timestamps, plan_windows, probe_media  # noqa: E402
from fer_hf.media_stream_fer import stream_file  # noqa: E402
from fer_hf.media_timing_fer import timestamp_problem  # noqa: E402

SR = 16000
HAS_MUX_STREAM = hasattr(av.container.OutputContainer, "add_mux_stream")  # PyAV >= 17: a header that states a rate
HAS_FLV_MP3 = "flv" in av.formats_available and "libmp3lame" in av.codecs_available


# ------------------------------------------------------------------------------------------
# windows
def test_frame_timestamps_are_bin_centres():
    t = frame_timestamps(1.0, 3.0, 8)
    np.testing.assert_allclose(t, 1.0 + (np.arange(8) + 0.5) * 0.375)


def test_single_window_is_centred_and_short_clips_start_at_zero():
    assert plan_windows(10.0, 3.0) == [(3.5, 6.5)]
    assert plan_windows(3.0, 3.0) == [(0.0, 3.0)]
    assert plan_windows(0.5, 3.0) == [(0.0, 3.0)]
    assert plan_windows(0.5, 3.0, sliding=True) == [(0.0, 3.0)]


def test_sliding_windows_cover_the_clip():
    windows = plan_windows(20.0, 3.0, sliding=True)  # stride 1.5 s
    assert len(windows) == 13  # ceil((20 - 3) / 1.5) + 1
    starts = [s for s, _ in windows]
    np.testing.assert_allclose(starts[:-1], np.arange(12) * 1.5)
    assert windows[-1] == (17.0, 20.0)  # the last one is aligned to the clip end
    assert all(round(e - s, 6) == 3.0 for s, e in windows)
    assert len(plan_windows(20.0, 3.0, sliding=True, hop_s=3.0)) == 7


def test_sliding_windows_are_capped_by_widening_the_stride(caplog):
    with caplog.at_level(logging.WARNING, logger="fer_hf.media_fer"):
        windows = plan_windows(100.0, 3.0, sliding=True, max_windows=20)
    assert len(windows) == 20
    assert windows[0][0] == 0.0 and windows[-1][1] == 100.0
    np.testing.assert_allclose(np.diff([s for s, _ in windows]), 97.0 / 19, atol=1e-5)
    assert "max_windows=20" in caplog.text


# ------------------------------------------------------------------------------------------
# decoding
@pytest.fixture(scope="module")
def clip720(tmp_path_factory):
    """H.264 + AAC 48 kHz stereo, 1280x720, 30 fps, 1.5 s."""
    path = tmp_path_factory.mktemp("media") / "hd.mp4"
    return make_clip(path, seconds=1.5, fps=30, size=(1280, 720), audio="tone", sample_rate=48000, channels=2)


def test_mp4_h264_aac_720p(clip720):
    info = probe_media(clip720["path"])
    assert info.has_audio and info.has_video
    assert (info.width, info.height) == (1280, 720)
    assert info.duration_s == pytest.approx(1.5, abs=0.05)
    win = decode_window(clip720["path"], 0.0, 1.5, 8, info.duration_s, SR, max_side=640)
    assert win.audio.dtype == np.float32 and win.audio.ndim == 1  # mono 16 kHz
    assert abs(win.audio.size - 24000) <= 200
    assert 0.05 < np.abs(win.audio).max() < 1.0  # the tone survived downmix + resampling
    assert win.frame_valid.all()
    assert win.frames[0].shape == (360, 640, 3) and win.frames[0].dtype == np.uint8  # downscaled while decoding
    assert win.scale == pytest.approx(2.0)
    # each target gets the frame nearest to it: frame i is shown at i / 30 s
    expected = np.rint(win.frame_times_s * 30 - 1e-9).astype(int)
    got = [frame_index_of(f) for f in win.frames]
    np.testing.assert_array_equal(got, np.minimum(expected, 44))


def test_resampled_audio_has_the_right_pitch(clip720):
    info = probe_media(clip720["path"])
    audio = decode_window(clip720["path"], 0.0, 1.5, 8, info.duration_s, SR).audio
    spectrum = np.abs(np.fft.rfft(audio[: SR]))
    assert np.fft.rfftfreq(SR, 1 / SR)[spectrum.argmax()] == pytest.approx(220, abs=2)


def test_window_in_the_middle_seeks_and_stays_aligned(tmp_path):
    # silence with a 100 ms burst at 3.0 s; video frame i at i / 25 s
    sr_in = 48000
    signal = np.zeros(int(6 * sr_in), np.float32)
    signal[3 * sr_in: int(3.1 * sr_in)] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(int(0.1 * sr_in)) / sr_in)
    clip = make_clip(tmp_path / "long.mp4", seconds=6, fps=25, size=(160, 120), audio=signal, sample_rate=sr_in)
    win = decode_window(clip["path"], 2.5, 5.5, 12, 6.0, SR)
    assert win.audio.size == 48000
    onset = np.argmax(np.abs(win.audio) > 0.05) / SR
    assert onset == pytest.approx(0.5, abs=0.03)  # burst at 3.0 s is 0.5 s into the window
    got = [frame_index_of(f) for f in win.frames]
    expected = np.rint(win.frame_times_s * 25 - 1e-9).astype(int) % 256
    np.testing.assert_array_equal(got, expected)


def _short_gop_clip(path, rate: int, seconds: int = 8) -> str:
    """H.264 with a keyframe every second (so seeks land mid-file) and AAC at `rate` of a noise-free chirp."""
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=25)
    video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
    video.codec_context.gop_size = 25
    audio = out.add_stream("aac", rate=rate)
    audio.layout = "mono"
    t = np.arange(seconds * rate) / rate
    chirp = 0.2 * np.sin(2 * np.pi * (300 * t + 40 * t ** 2))
    signal = (chirp + 0.1 * np.sin(2 * np.pi * 1234.5 * t)).astype(np.float32)
    for k in range(seconds * 25):
        frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 3 * k % 255, np.uint8), format="rgb24")
        out.mux(video.encode(frame))
        s0, s1 = k * rate // 25, (k + 1) * rate // 25
        chunk = av.AudioFrame.from_ndarray(signal[None, s0:s1], format="flt", layout="mono")
        chunk.sample_rate, chunk.pts = rate, s0
        out.mux(audio.encode(chunk))
    out.mux(video.encode())
    out.mux(audio.encode())
    out.close()
    return str(path)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_a_seek_decodes_the_samples_of_a_front_to_back_pass(tmp_path, rate):
    """A window decoded after a seek (the processor) has the audio a front-to-back pass (the timeline engine,
    fer-annotate, live) has: the seek starts 0.1 s early, so the AAC decoder has settled, and the resampler
    starts on the front-to-back decode's output sample grid (was up to 0.056 off: a fraction of a sample)."""
    path = _short_gop_clip(tmp_path / f"gop_{rate}.mp4", rate)
    info = probe_media(path)
    whole = np.concatenate([e.samples for e in stream_file(path, np.array([0.0]), SR) if e.kind == "audio"])
    for start in (2.0, 3.7, 4.04):
        window = decode_window(path, start, start + 3.0, 8, info.duration_s, SR, timing=info.timing)
        expected = whole[round(start * SR):round(start * SR) + window.audio.size]
        assert window.audio.size == 3 * SR
        np.testing.assert_allclose(window.audio, expected, atol=5e-5)


def test_webm_vp8_opus_without_duration(tmp_path):
    clip = make_clip(tmp_path / "live.webm", seconds=2.0, fps=30, size=(320, 240), live=True)
    with av.open(clip["path"]) as container:
        assert container.duration is None  # nothing in the header: it must come from the packets
        assert container.streams.video[0].codec_context.name == "vp8"
        assert container.streams.audio[0].codec_context.name == "opus"
    info = probe_media(clip["path"])
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    win = decode_window(clip["path"], 0.0, 3.0, 8, info.duration_s, SR)
    assert abs(win.audio.size - int(info.duration_s * SR)) <= 320
    np.testing.assert_array_equal(win.frame_valid, win.frame_times_s < info.duration_s)
    # a window in the middle of a file without cues: the seek fallback still gives the right frames
    win = decode_window(clip["path"], 0.5, 1.5, 4, info.duration_s, SR)
    expected = np.rint(win.frame_times_s * 30 - 1e-9).astype(int)
    np.testing.assert_array_equal([frame_index_of(f) for f in win.frames], expected)


def test_mpegts_without_keyframe_index_falls_back_to_an_earlier_seek(tmp_path):
    clip = make_clip(tmp_path / "a.ts", seconds=4.0, fps=25, size=(160, 120), container="mpegts",
                     video_codec="libx264", audio_codec="aac")
    info = probe_media(clip["path"])
    win = decode_window(clip["path"], 0.5, 3.5, 8, info.duration_s, SR)
    assert win.frame_valid.all() and win.audio.size == 48000
    first = min(clip["frame_times_s"])  # 0; MPEG-TS shifts all streams equally, the container start is subtracted
    expected = np.rint((win.frame_times_s - first) * 25 - 1e-9).astype(int)
    got = np.array([frame_index_of(f) for f in win.frames])
    assert np.abs(got - expected).max() <= 1


def test_duration_from_packets_matches_header(tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "a.mp4", seconds=1.2, fps=30, size=(160, 120))
    with_header = probe_media(clip["path"]).duration_s
    monkeypatch.setattr(media_fer, "_duration_from_header", lambda container: None)
    assert probe_media(clip["path"]).duration_s == pytest.approx(with_header, abs=0.05)


def test_vp9_webm(tmp_path):
    clip = make_clip(tmp_path / "a.webm", seconds=1.0, fps=30, size=(160, 120), video_codec="libvpx-vp9")
    info = probe_media(clip["path"])
    win = decode_window(clip["path"], 0.0, 1.0, 4, info.duration_s, SR)
    assert win.frame_valid.all() and win.audio.size > 15000


def test_vfr_picks_the_frame_nearest_each_timestamp(tmp_path):
    clip = make_clip(tmp_path / "vfr.mp4", seconds=2.0, fps=30, size=(160, 120), vfr=True)
    times = np.asarray(clip["frame_times_s"])
    assert np.ptp(np.diff(times)) > 0.02  # really irregular
    info = probe_media(clip["path"])
    win = decode_window(clip["path"], 0.0, 2.0, 16, info.duration_s, SR)
    nearest = [int(np.argmin(np.abs(times - t))) for t in win.frame_times_s]
    assert [frame_index_of(f) for f in win.frames] == nearest
    np.testing.assert_allclose(win.source_times_s, times[nearest], atol=1e-3)


def test_audio_only_and_video_only_files(tmp_path):
    audio_only = make_clip(tmp_path / "a.mp4", seconds=1.0, video=False)
    win = decode_window(audio_only["path"], 0.0, 3.0, 8, probe_media(audio_only["path"]).duration_s, SR)
    assert win.frames is None and win.audio.size > 15000
    silent_film = make_clip(tmp_path / "v.mp4", seconds=1.0, size=(160, 120), audio=None)
    info = probe_media(silent_film["path"])
    assert not info.has_audio
    win = decode_window(silent_film["path"], 0.0, 3.0, 8, info.duration_s, SR)
    assert win.audio is None and win.frame_valid.sum() == 3  # targets 0.1875, 0.5625, 0.9375 s


# ------------------------------------------------------------------------------------------
# video timestamps players ignore: frames timed by their order
def test_timestamp_problem_rules():
    assert timestamp_problem(list(range(0, 6400, 100))) is None
    b_frames = [0, 2048, 1024, 512, 1536, 4096, 3072, 2560, 3584, 6144, 5120, 4608, 5632]  # x264 --bf 3, mp4
    assert timestamp_problem([t + k * 8192 for k in range(5) for t in b_frames]) is None
    assert timestamp_problem([None] * 10) == "missing"
    assert timestamp_problem([0] * 64) == timestamp_problem([500] * 5) == "constant"
    assert timestamp_problem(list(range(6400, 0, -100))) == "not increasing"
    assert timestamp_problem([t // 3 * 3 for t in range(64)]) == "not increasing"  # each stamp three times
    assert timestamp_problem([0, 33, 33, 67, 100] + list(range(133, 2000, 33))) is None  # one repeat is noise
    assert timestamp_problem([]) is None and timestamp_problem([7]) is None


@pytest.fixture(scope="module")
def webm30(tmp_path_factory):
    """VP8 + Opus, 320x240, 30 fps, 2 s: the well-formed original of the restamped copies."""
    return make_clip(tmp_path_factory.mktemp("stamps") / "good.webm", seconds=2.0, fps=30, size=(320, 240))


def _frame_indices(frames) -> list:
    return [None if f is None else frame_index_of(f) for f in frames]


@pytest.mark.skipif(not HAS_MUX_STREAM, reason="PyAV cannot write a header-only stream (add_mux_stream, PyAV 17)")
def test_video_packets_all_at_pts_0_are_timed_by_frame_order(webm30, tmp_path):
    """All video packets at pts 0, the header states 30 fps: the frames are those of the well-formed file."""
    broken = restamp_video(webm30["path"], tmp_path / "pts0.webm", pts=0, rate=30)
    with av.open(broken) as container:
        assert {p.pts for p in container.demux(video=0) if p.size} == {0}
    info, good = probe_media(broken), probe_media(webm30["path"])
    assert info.timing.by_order and info.timing.problem == "constant" and info.fps == 30.0
    assert info.notes == ["the video's timestamps are unusable (constant); frames were timed by their order at 30 fps"]
    assert not good.timing.by_order and good.notes == []
    assert info.duration_s == pytest.approx(2.0, abs=0.03) and info.has_video and info.has_audio
    for start, end in ((0.0, 3.0), (0.5, 1.5)):  # from the start, and a window a seek would have missed
        win = decode_window(broken, start, end, 8, info.duration_s, SR)
        ref = decode_window(webm30["path"], start, end, 8, good.duration_s, SR)
        np.testing.assert_array_equal(win.frame_valid, ref.frame_valid)
        assert _frame_indices(win.frames) == _frame_indices(ref.frames)
        expected = np.rint(win.frame_times_s * 30 - 1e-9).astype(int)
        assert _frame_indices(win.frames) == [int(e) if ok else None for e, ok in zip(expected, win.frame_valid)]
        np.testing.assert_allclose(win.source_times_s, ref.source_times_s, atol=1e-3)
        assert abs(win.audio.size - ref.audio.size) <= 160
    grid = (np.arange(16) + 0.5) * 0.125
    frames = [(e.index, frame_index_of(e.image)) for e in stream_file(broken, grid, SR, 640, info.duration_s)
              if e.kind == "frame"]
    assert frames == [(k, int(np.rint(t * 30 - 1e-9))) for k, t in enumerate(grid)]


def test_constant_timestamps_without_a_stated_rate_use_the_frame_count(webm30, tmp_path):
    """Every video packet at 0.5 s, no rate in the header: 60 frames over the audio's 2 s make about 30 fps."""
    broken = restamp_video(webm30["path"], tmp_path / "pts500.webm", pts=500)
    info = probe_media(broken)
    assert info.timing.by_order and info.timing.problem == "constant"
    assert info.fps == pytest.approx(30.0, rel=0.01) and info.duration_s == pytest.approx(2.0, abs=0.03)
    win = decode_window(broken, 0.0, 2.0, 8, info.duration_s, SR)
    assert win.frame_valid.all()
    got, expected = np.array(_frame_indices(win.frames)), np.rint(win.frame_times_s * 30 - 1e-9)
    assert np.abs(got - expected).max() <= 1


@pytest.mark.skipif(not HAS_FLV_MP3, reason="PyAV has no FLV muxer or no MP3 encoder (libmp3lame)")
@pytest.mark.parametrize("channels, sample_rate", [(1, 44100), (2, 22050)])
def test_flv_with_mp3_audio(tmp_path, channels, sample_rate):
    clip = make_clip(tmp_path / "clip.flv", seconds=1.9, fps=25, size=(320, 240), container="flv",
                     video_codec="libx264", audio_codec="libmp3lame", sample_rate=sample_rate, channels=channels)
    info = probe_media(clip["path"])
    assert info.duration_s == pytest.approx(1.9, abs=0.08) and not info.timing.by_order
    win = decode_window(clip["path"], 0.0, 3.0, 8, info.duration_s, SR)
    assert win.audio.size == pytest.approx(1.9 * SR, abs=0.08 * SR)
    spectrum = np.abs(np.fft.rfft(win.audio[: SR]))
    assert np.fft.rfftfreq(SR, 1 / SR)[spectrum.argmax()] == pytest.approx(220, abs=2)
    assert win.frame_valid.sum() == 5  # targets 0.1875 ... 1.6875 s lie inside the 1.9 s clip
    with av.open(clip["path"]) as container:  # FLV may start the video a little after the audio (25 ms here)
        first = float(next(container.decode(video=0)).time)
    expected = np.rint((win.frame_times_s - first) * 25 - 1e-9).astype(int)
    assert _frame_indices(win.frames) == [int(e) if ok else None for e, ok in zip(expected, win.frame_valid)]


# ------------------------------------------------------------------------------------------
# bad files
def test_missing_and_empty_files(tmp_path):
    with pytest.raises(MediaNotFoundError, match="not found"):
        probe_media(tmp_path / "nope.mp4")
    with pytest.raises(EmptyMediaError, match="0 bytes"):
        probe_media(make_empty_file(tmp_path / "zero.mp4"))


def test_truncated_png_and_text_files_raise_decode_errors(tmp_path, clip720):
    bad = [
        make_truncated_copy(clip720["path"], tmp_path / "cut.mp4", 0.5),  # index (moov) at the end is lost
        make_image_file(tmp_path / "image.mp4"),
        make_text_file(tmp_path / "notes.mp4"),
    ]
    for path in bad:
        with pytest.raises(MediaDecodeError) as err:
            probe_media(path)
        assert os.path.basename(path) in str(err.value)
        assert isinstance(err.value, FERInputError)


def test_truncated_faststart_mp4_decodes_the_part_that_is_there(tmp_path):
    clip = make_clip(tmp_path / "fs.mp4", seconds=2.0, fps=30, size=(320, 240), faststart=True)
    cut = make_truncated_copy(clip["path"], tmp_path / "fs_cut.mp4", 0.6)
    try:
        info = probe_media(cut)
        win = decode_window(cut, 0.0, 3.0, 8, info.duration_s, SR)
    except MediaDecodeError:
        return  # refusing it with our error is fine too; any other exception is not
    assert win.frame_valid.any() or win.audio is not None


def test_too_long(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", seconds=2.0, size=(160, 120))
    with pytest.raises(MediaTooLongError, match="max_duration_s"):
        probe_media(clip["path"], max_duration_s=1.0)


def test_a_nominal_ten_minute_file_is_accepted():
    """Containers report a 10-minute recording as e.g. 600.02 s: within one frame of a 600 s cap, accepted."""
    media_fer.check_duration(600.02, 600.0, 29.97, "'talk.mp4'")
    media_fer.check_duration(600.03, 600.0, None, "'talk.m4a'")  # no frame rate: one 25 fps frame (40 ms)
    with pytest.raises(MediaTooLongError) as info:
        media_fer.check_duration(600.05, 600.0, 30.0, "'talk.mp4'")
    assert "600.05 s, more than the 600.00 s" in str(info.value)  # the two figures never read as equal


def test_duration_cap_tolerates_one_frame_of_a_real_file(tmp_path):
    import re

    clip = make_clip(tmp_path / "a.mp4", seconds=2.0, fps=25, size=(160, 120))
    duration = probe_media(clip["path"]).duration_s
    assert probe_media(clip["path"], max_duration_s=duration - 0.5 / 25).duration_s == duration
    with pytest.raises(MediaTooLongError) as info:
        probe_media(clip["path"], max_duration_s=duration - 1.5 / 25)
    lasts, cap = (float(v) for v in re.findall(r"([0-9.]+) s", str(info.value))[:2])
    assert lasts > cap
