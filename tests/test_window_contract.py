"""The one window contract (`windows_fer.WindowInfo`) and the drivers that fill it: the processor, the timeline
engine, live mode and batch annotation give every field, and on the same clip the same windows, faces, speech
decision, reasons and probabilities. Tiny preset, a generated talking-face clip."""

import dataclasses
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from media_factory import astronaut_face, make_clip  # noqa: E402

from fer_hf import FERConfig, FERForEmotionClassification, analysis_fer, live_analysis_fer  # noqa: E402
from fer_hf.analysis_fer import FERAnalyzer  # noqa: E402
from fer_hf.media_stream_fer import stream_file  # noqa: E402
from fer_hf.processing_fer import FERProcessor  # noqa: E402
from fer_hf.windows_fer import AudioDecision, WindowInfo, window_info  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    config = FERConfig.from_preset("tiny")
    model = FERForEmotionClassification(config).eval()
    processor = FERProcessor.from_model_config(config, min_speech_fraction=0.0)  # the generated tone is not speech
    clip = make_clip(tmp_path_factory.mktemp("contract") / "talk.mp4", seconds=5.0, fps=25, size=(320, 240),
                     face_image=astronaut_face())
    return dict(config=config, model=model, processor=processor, clip=clip["path"])


def _capture(monkeypatch, module) -> list:
    """Record every `WindowInfo` a driver module hands to `build_window_result`."""
    seen = []
    original = module.build_window_result

    def recording(out, row, info, *args, **kwargs):
        seen.append(info)
        return original(out, row, info, *args, **kwargs)

    monkeypatch.setattr(module, "build_window_result", recording)
    return seen


def _timeline(setup, monkeypatch):
    infos = _capture(monkeypatch, analysis_fer)
    analyzer = FERAnalyzer(setup["model"], setup["processor"])
    return analyzer, analyzer.analyze(setup["clip"]), infos


def _live(setup, monkeypatch, analyzer, windows, duration_s):
    """Live mode fed the clip's grid frames at their capture times and its audio, window by window."""
    infos = _capture(monkeypatch, live_analysis_fer)
    g = setup["processor"].geometry
    grid = (np.arange(int(windows[-1].end_s / g.frame_step_s) + g.num_frames) + 0.5) * g.frame_step_s
    audio = []
    session = analyzer.live_session()
    for event in stream_file(setup["clip"], grid, g.sampling_rate):
        if event.kind == "frame":
            session.add_frame(event.source_time_s, event.image)
        else:
            audio.append(event.samples)
    wave = np.concatenate(audio)
    results = []
    for w in windows:
        end = min(w.end_s, duration_s)  # the timeline reads audio up to the clip's duration
        results.append(session.classify(wave[:round(end * g.sampling_rate)], end_s=end, start_s=w.start_s).windows[0])
    return results, infos


def test_every_driver_fills_every_field(setup, monkeypatch):
    analyzer, timeline, timeline_infos = _timeline(setup, monkeypatch)
    live, live_infos = _live(setup, monkeypatch, analyzer, timeline.windows[:2], timeline.duration_s)
    _, batch = setup["processor"].prepare(videos=setup["clip"], sliding_window=True)
    for name, infos in (("timeline", timeline_infos), ("live", live_infos), ("processor", batch.windows)):
        assert infos, name
        for info in infos:
            assert isinstance(info, WindowInfo), name
            assert info.missing() == [], (name, info.missing())
            assert len(info.frame_times_s) == setup["config"].num_frames
    assert timeline.tracks and timeline.person["track_id"] is not None  # real tracks, not a single-face fallback


def test_a_driver_that_leaves_a_field_unset_fails():
    """Every field is a constructor argument of `window_info` or checked by `missing()`: a builder that skips one
    cannot make a `WindowInfo`, and one that fills it with None is reported."""
    t = 2
    info = window_info(0, 0.0, 3.0, [0.5, 1.5], [0.5, None], AudioDecision(True, "ok", 0.8), np.array([True, False]),
                       [(0, 0, 1, 1), None], [(0, 0, 2, 2), None], "ok", {"track_id": 1, "reason": "only face"}, [])
    assert info.missing() == [] and info["audio_used"] and dict(info)["video_reason"] == "ok"
    assert info.face_boxes == [(0, 0, 1, 1), None] and len(info.face_found) == t
    broken = dataclasses.replace(info, audio_reason=None, face_boxes=[None])
    assert set(broken.missing()) == {"audio_reason", "face_boxes"}
    required = [f.name for f in dataclasses.fields(WindowInfo) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    with pytest.raises(TypeError):
        WindowInfo(**{name: None for name in required[:-1]})


def test_processor_timeline_and_live_agree_on_every_window(setup, monkeypatch):
    """The same clip through the processor (seek-decoding each window), the timeline engine (one decode, frame cache)
    and live mode (frames and audio at their capture times): the same frames with a face, speech decision, reasons,
    person and probabilities."""
    analyzer, timeline, timeline_infos = _timeline(setup, monkeypatch)
    live, live_infos = _live(setup, monkeypatch, analyzer, timeline.windows, timeline.duration_s)
    for k, window in enumerate(timeline.windows):
        t_info, l_info = timeline_infos[k], live_infos[k]
        assert (l_info.window_start_s, l_info.window_end_s) == (t_info.window_start_s, t_info.window_end_s)
        assert l_info.face_found == t_info.face_found
        assert (l_info.audio_used, l_info.audio_reason) == (t_info.audio_used, t_info.audio_reason)
        assert l_info.video_reason == t_info.video_reason
        assert l_info.person["track_id"] == t_info.person["track_id"]
        assert l_info.frame_source_times_s == t_info.frame_source_times_s
    proc = setup["processor"]
    inputs, batch = proc.prepare(videos=setup["clip"], sliding_window=True, hop_seconds=analyzer.hop_s)
    with torch.no_grad():
        processed = proc.post_process(setup["model"](**inputs), batch)[0].windows
    by_span = {(w.start_s, w.end_s): (w, i) for w, i in zip(timeline.windows, timeline_infos)}
    compared = 0
    for window, info in zip(processed, batch.windows):
        if (window.start_s, window.end_s) not in by_span:
            continue
        t_window, t_info = by_span[(window.start_s, window.end_s)]
        assert info.face_found == t_info.face_found
        assert (info.audio_used, info.audio_reason) == (t_info.audio_used, t_info.audio_reason)
        assert info.video_reason == t_info.video_reason and info.frame_source_times_s == t_info.frame_source_times_s
        compared += 1
    assert compared >= 2


def test_probabilities_agree_across_drivers(setup, monkeypatch):
    """The timeline engine (frames through the face front-end in chunks of the clip) and live mode (the new frames
    of each window): the same probabilities, because tracking carries its state between calls (`TrackCarry`)."""
    analyzer, timeline, _ = _timeline(setup, monkeypatch)
    live, _ = _live(setup, monkeypatch, analyzer, timeline.windows, timeline.duration_s)
    worst = max(abs(a.probabilities[c] - b.probabilities[c]) for a, b in zip(timeline.windows, live)
                for c in a.probabilities)
    assert worst <= 1e-5


def _stage_clip(path) -> str:
    """8 s at 10 fps with music: two people (0-3 s), a cut to one person on a busy wall who walks out of the frame
    (3-6 s, gone from 5 s), a cut back to the two people (6-8 s)."""
    import frontend_media as fm

    from fer_hf.tools.synthetic import encode_clip

    face = astronaut_face()
    size = (480, 270)
    two = fm.scene(size, [(face, (20, 60, 150)), (face, (300, 50, 160))], "plain")

    def frames():
        for k in range(80):
            t = k / 10
            if t < 3.0 or t >= 6.0:
                yield two.copy()
            elif t < 5.0:
                yield fm.scene(size, [(face, (60 + int(120 * (t - 3.0)), 70, 140))], "busy", seed=1)
            else:
                yield fm.scene(size, [], "busy", seed=1)

    music = fm.music(8.0)
    encode_clip(path, frames(), 10.0, music, fm.RATE)
    return str(path)


@pytest.fixture(scope="module")
def stage(setup, tmp_path_factory):
    return dict(setup, clip=_stage_clip(tmp_path_factory.mktemp("stage") / "stage.mp4"))


def test_timeline_and_live_agree_on_a_stage_clip(stage, monkeypatch):
    """Two people, cuts, a face leaving the frame and music instead of speech: for every window the timeline engine
    and live mode give the same frames, speech decision and reasons; a cut ends every track."""
    analyzer, timeline, timeline_infos = _timeline(stage, monkeypatch)
    live, live_infos = _live(stage, monkeypatch, analyzer, timeline.windows, timeline.duration_s)
    assert len(live) == len(timeline.windows) >= 6
    assert len({t.track_id for t in timeline.tracks}) >= 3  # a cut ends every track: new ids after each cut
    for k, (t_info, l_info) in enumerate(zip(timeline_infos, live_infos)):
        assert l_info.frame_source_times_s == t_info.frame_source_times_s, k
        assert (l_info.audio_used, l_info.audio_reason) == (t_info.audio_used, t_info.audio_reason), k
        assert l_info.video_reason == t_info.video_reason, k


def test_timeline_and_live_pick_the_same_person_on_a_stage_clip(stage, monkeypatch):
    """The person is chosen per window from the window's own cached frames (`windows_fer.choose_window_person`), so
    the two drivers pick the same face and give the same probabilities."""
    analyzer, timeline, timeline_infos = _timeline(stage, monkeypatch)
    live, live_infos = _live(stage, monkeypatch, analyzer, timeline.windows, timeline.duration_s)
    assert len({i.person["track_id"] for i in timeline_infos}) >= 2  # more than one person is chosen over the clip
    for k, (t_info, l_info) in enumerate(zip(timeline_infos, live_infos)):
        assert l_info.person["track_id"] == t_info.person["track_id"], k
        assert l_info.face_found == t_info.face_found, k
        worst = max(abs(live[k].probabilities[c] - timeline.windows[k].probabilities[c])
                    for c in live[k].probabilities)
        assert worst <= 1e-5, (k, worst)


def test_processor_annotate_and_training_cache_agree_with_the_timeline_on_a_stage_clip(stage, monkeypatch,
                                                                                       tmp_path):
    """The processor's sliding windows, `fer-annotate --people all` and the training cache's rows
    (`decode_windows` + `batch_rows`, what `fer_hf.tools.data` caches) on the stage clip: on every window they share
    with the timeline engine, the same face frames, person, speech decision, reasons and probabilities. (The
    processor seek-decodes each window: its audio equals the stream's here, a 16 kHz track; so does a 48 kHz AAC
    track's, to 1e-5 (test_media), except where AAC codes noise as noise and the decoder's generator restarts at the
    seek, and in webm, whose millisecond timestamps place a seek's first sample to within 1 ms only.)"""
    import pyarrow.parquet as pq

    from fer_hf.tools.annotate import main

    analyzer, timeline, infos = _timeline(stage, monkeypatch)
    by_span = {(w.start_s, w.end_s): (w, i) for w, i in zip(timeline.windows, infos)}
    proc, model = stage["processor"], stage["model"]
    inputs, batch = proc.prepare(videos=stage["clip"], sliding_window=True, hop_seconds=analyzer.hop_s)
    with torch.no_grad():
        processed = proc.post_process(model(**inputs), batch)[0].windows
    rows_cached = proc.decode_windows(stage["clip"], sliding_window=True, hop_seconds=analyzer.hop_s)
    with torch.no_grad():
        cached = torch.softmax(model(**proc.batch_rows(rows_cached)).logits, -1).numpy()
    model.save_pretrained(tmp_path / "model")
    proc.save_pretrained(tmp_path / "model")
    out = tmp_path / "rows.parquet"
    assert main([stage["clip"], "--model", str(tmp_path / "model"), "--output", str(out), "--people", "all",
                 "--workers", "0", "--hop-seconds", str(analyzer.hop_s)]) == 0
    rows = [r for r in pq.read_table(out).to_pylist() if r["is_speaker"]]
    compared = 0
    assert len(rows_cached) == len(processed)
    for window, info, cached_probs in zip(processed, batch.windows, cached):
        if (window.start_s, window.end_s) not in by_span:
            continue  # the processor's last window ends at the clip end, off the timeline's grid
        t_window, t_info = by_span[(window.start_s, window.end_s)]
        row = next(r for r in rows if (r["start_s"], r["end_s"]) == (window.start_s, window.end_s))
        assert info.face_found == t_info.face_found and info.person["track_id"] == t_info.person["track_id"]
        assert (info.audio_used, info.audio_reason, info.video_reason) == \
            (t_info.audio_used, t_info.audio_reason, t_info.video_reason)
        assert row["person_id"] == t_info.person["track_id"] and row["face_frames"] == sum(t_info.face_found)
        for k, (c, p) in enumerate(t_window.probabilities.items()):
            assert abs(window.probabilities[c] - p) <= 1e-5 and abs(row[f"prob_{c}"] - p) <= 1e-5, (window.start_s, c)
            assert abs(float(cached_probs[k]) - p) <= 1e-5, (window.start_s, c)
        compared += 1
    assert compared >= 4
