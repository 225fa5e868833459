"""The analysis engine (fer_hf/analysis_fer.py): timeline windows on one frame grid, the frame-feature cache,
streaming, bounded buffers, and the live-mode entry point. Tiny preset, generated clips."""

import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from media_factory import astronaut_face, make_clip  # noqa: E402

from fer_hf import (  # noqa: E402
    FERConfig,
    FERForEmotionClassification,
    analysis_fer,  # noqa: E402
)
from fer_hf.analysis_fer import FERAnalyzer  # noqa: E402
from fer_hf.errors_fer import FERInputError, NoUsableModalityError  # noqa: E402
from fer_hf.processing_fer import FERProcessor  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    config = FERConfig.from_preset("tiny")
    model = FERForEmotionClassification(config).eval()
    processor = FERProcessor.from_model_config(config, min_speech_fraction=0.0)  # the generated tone is not speech
    clip = make_clip(tmp_path_factory.mktemp("analysis") / "talk.mp4", seconds=7.0, fps=25, size=(320, 240),
                     face_image=astronaut_face())
    return dict(config=config, model=model, processor=processor, clip=clip["path"])


class CountingModel(torch.nn.Module):
    """Counts the frames that go through `embed_frames` (the cache's promise: once per grid frame)."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.embedded, self.config = model, 0, model.config

    def embed_frames(self, pixels, roi):
        self.embedded += pixels.shape[0]
        return self.inner.embed_frames(pixels, roi)

    def forward(self, **kwargs):
        return self.inner(**kwargs)


def test_timeline_windows_share_one_frame_grid_and_each_frame_is_embedded_once(setup):
    model = CountingModel(setup["model"])
    analyzer = FERAnalyzer(model, setup["processor"], batch_size=2)
    assert analyzer.hop_frames == 3 and analyzer.hop_s == pytest.approx(1.125)  # 8 frames / 3 s: 0.375 s steps
    result = analyzer.analyze(setup["clip"])
    starts = [w.start_s for w in result.windows]
    assert starts == pytest.approx([0.0, 1.125, 2.25, 3.375, 4.5])  # the last window covers the end (7 s)
    assert result.windows[-1].end_s >= 7.0 and result.duration_s == pytest.approx(7.0, abs=0.05)
    # frame k+3 of window w is frame k of window w+1: the same time, the same decoded frame
    for a, b in zip(result.windows, result.windows[1:]):
        assert [f.time_s for f in a.frames[3:]] == [f.time_s for f in b.frames[:5]]
        assert [f.source_time_s for f in a.frames[3:]] == [f.source_time_s for f in b.frames[:5]]
    grid_frames = len({f.time_s for w in result.windows for f in w.frames if f.source_time_s is not None})
    assert grid_frames == 19  # targets 0.1875 ... 6.9375 s; those past 7 s are padding
    assert model.embedded == grid_frames < sum(w.modalities["face_frames"] for w in result.windows)
    assert all(w.modalities["audio"] and w.modalities["video"] for w in result.windows)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_timeline_agrees_with_the_processor_window_path(setup):
    """Same window, same model: the cached-vector path gives what the pixel path gives (faces tracked per chunk
    instead of per window, so crops may differ by a pixel: a loose tolerance)."""
    proc, model = setup["processor"], setup["model"]
    analyzer = FERAnalyzer(model, proc)
    timeline = analyzer.analyze(setup["clip"])
    inputs, info = proc.prepare(videos=setup["clip"], sliding_window=True, hop_seconds=analyzer.hop_s)
    with torch.no_grad():
        windowed = proc.post_process(model(**inputs), info)[0]
    for a, b in zip(timeline.windows[:4], windowed.windows[:4]):
        assert a.start_s == b.start_s
        assert [a.probabilities[k] for k in proc.labels] == pytest.approx([b.probabilities[k] for k in proc.labels],
                                                                           abs=0.02)
    single = analyzer.analyze(setup["clip"], timeline=False)
    with torch.no_grad():
        expected = proc.post_process(model(**proc(videos=setup["clip"])), proc.prepare(videos=setup["clip"])[1])[0]
    assert single.probabilities == expected.probabilities


def test_stream_yields_windows_as_they_finish_and_reports_progress(setup):
    analyzer = FERAnalyzer(setup["model"], setup["processor"], batch_size=2)
    events = list(analyzer.stream(setup["clip"]))
    assert [e.done for e in events[:-1]] == [1, 2, 3, 4, 5] and all(e.total == 5 for e in events)
    assert all(e.window is not None for e in events[:-1]) and events[-1].result is not None
    assert [w.index for w in events[-1].result.windows] == [0, 1, 2, 3, 4]
    calls = []
    analyzer.analyze(setup["clip"], progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (1, 5) and calls[-1] == (5, 5)


def test_buffers_stay_bounded_on_a_long_clip(setup, tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "long.mp4", seconds=24.0, fps=10, size=(160, 120), face_image=astronaut_face())
    sizes = []
    add = analysis_fer._FrameStore.add

    def spy(self, index, entry):
        add(self, index, entry)
        sizes.append(len(self.entries))

    monkeypatch.setattr(analysis_fer._FrameStore, "add", spy)
    result = FERAnalyzer(setup["model"], setup["processor"], batch_size=2).analyze(clip["path"])
    assert len(result.windows) == 20 and len(sizes) == 64  # ceil(21 / 1.125) + 1 windows; 24 s / 0.375 s frames
    # at most the frames of the pending windows plus one face chunk, never the whole clip
    assert max(sizes) <= 2 * 3 + 8 + analysis_fer.FACE_CHUNK_FRAMES < len(sizes), max(sizes)


def test_arrays_with_a_faceless_silent_tail_skip_those_windows(setup):
    rng = np.random.default_rng(0)
    sr, fps = 16000, 10
    t = np.arange(9 * sr) / sr
    audio = np.where(t < 3.0, 0.3 * np.sin(2 * np.pi * 220 * t), 0.0).astype(np.float32)
    frames = rng.integers(0, 255, size=(9 * fps, 120, 160, 3), dtype=np.uint8)  # noise: no face anywhere
    analyzer = FERAnalyzer(setup["model"], setup["processor"], hop_seconds=3.0)
    result = analyzer.analyze({"audio": audio, "sampling_rate": sr, "frames": frames, "fps": fps})
    assert [w.start_s for w in result.windows] == [0.0]
    assert [(s.start_s, s.end_s) for s in result.skipped_windows] == [(3.0, 6.0), (6.0, 9.0)]
    assert result.windows[0].modalities["video_reason"] == "no face found in any of 8 frames"
    assert result.skipped_windows[0].audio_reason == "silent audio track"
    with pytest.raises(NoUsableModalityError, match="silent audio track"):
        analyzer.analyze({"audio": np.zeros(3 * sr, np.float32), "sampling_rate": sr})
    with pytest.raises(FERInputError, match="one clip"):
        list(analyzer.stream([setup["clip"], setup["clip"]]))


def test_live_session_reuses_cached_frames(setup):
    import cv2

    face = cv2.resize(astronaut_face(), (300, 300))
    frame = np.full((360, 640, 3), 90, np.uint8)
    frame[30:330, 170:470] = face
    rng = np.random.default_rng(1)
    session = FERAnalyzer(setup["model"], setup["processor"]).live_session()
    wave = (0.2 * np.sin(2 * np.pi * 200 * np.arange(16000 * 5) / 16000)).astype(np.float32)
    for i in range(50):  # 5 s of a 10 fps webcam with a little jitter
        session.add_frame(i / 10 + rng.uniform(-0.01, 0.01), frame)
    first = session.classify(wave[: 16000 * 3], end_s=3.0)
    w = first.windows[0]
    assert (w.start_s, w.end_s) == (0.0, 3.0) and first.source == "live"
    assert w.modalities["audio"] and w.modalities["video"] and w.modalities["face_frames"] == 8
    assert session.frames_embedded == 8
    second = session.classify(wave[16000 * 1: 16000 * 4], end_s=3.75)  # two frame steps later
    assert (second.windows[0].start_s, second.windows[0].end_s) == (0.75, 3.75)
    assert session.frames_embedded == 10  # six frames came from the cache, two are new
    assert min(f.source_time_s for f in session.frames.values()) >= 0.75 - 0.375  # old frames are gone
    silent = session.classify(None, end_s=20.0)  # no audio and the camera stopped long ago
    assert silent.windows == [] and silent.skipped_windows[0].video_reason == "no camera frames in the window"
    assert silent.probabilities == {} and silent.top_label is None


def test_timeline_applies_the_processors_speech_decision(setup):
    """With speech detection on (the default), the tone of the generated clip is not speech: the timeline's windows
    use no audio and say why, exactly as the processor's window path does."""
    proc = FERProcessor.from_model_config(setup["config"])
    result = FERAnalyzer(setup["model"], proc).analyze(setup["clip"])
    inputs, info = proc.prepare(videos=setup["clip"], sliding_window=True)
    assert not inputs["audio_mask"].any()
    for window in result.windows:
        assert not window.modalities["audio"] and window.modalities["video"]
        assert window.modalities["audio_reason"].startswith("no speech found")
        assert window.modalities["speech_fraction"] is not None
