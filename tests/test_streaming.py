"""Live mode's streaming layer (`fer_app/streaming.py`): time alignment, bounded state, incremental analysis.

The audio tests stream a signal whose every sample is its own index, so where a sample lands on the session clock
shows whether the aligner put it at its true capture time.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frontend_media import espeak_available, music, speech  # noqa: E402
from media_factory import astronaut_face  # noqa: E402

from fer_app.streaming import AudioChunkAligner, FrameTimeline, LiveAnalyzer  # noqa: E402
from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor  # noqa: E402
from fer_hf.errors_fer import FERInputError, LiveSessionClosedError  # noqa: E402

RATE = 16_000
CHUNK_S = 0.25
CHUNK = int(RATE * CHUNK_S)
T0 = 0.3  # session time at which the first sample was captured
LATENCY_S = 0.04  # the transport delay every chunk has at least


def _chunk(i: int) -> np.ndarray:
    """Chunk `i` of the indexed signal: sample values are their global index (float32 holds them exactly)."""
    return np.arange(i * CHUNK, (i + 1) * CHUNK, dtype=np.float32)


def _true_end(i: int) -> float:
    return T0 + (i + 1) * CHUNK_S


def _assert_in_place(aligner, first_chunk: int, last_chunk: int, tolerance_s: float = 0.03):
    """Samples of chunks first..last sit at their capture time plus the common transport delay (within
    `tolerance_s`). That delay is unknowable from arrivals alone; frames carry it too, so it cancels out."""
    start = T0 + first_chunk * CHUNK_S + 0.05
    end = T0 + (last_chunk + 1) * CHUNK_S - 0.05
    audio, covered = aligner.read(start, end)
    assert covered.all(), f"{(~covered).sum()} samples missing between {start:.2f} and {end:.2f} s"
    true_index = (start - T0 - LATENCY_S) * RATE + np.arange(len(audio))
    error_s = np.abs(audio - true_index) / RATE
    assert error_s.max() <= tolerance_s, f"audio misplaced by up to {error_s.max():.3f} s"


def test_jittered_chunks_are_placed_contiguously_at_their_capture_time():
    rng = np.random.default_rng(0)
    aligner = AudioChunkAligner(RATE, keep_seconds=30)
    for i in range(40):  # 10 s, each chunk 40-190 ms late, in order
        placement = aligner.push(_chunk(i), RATE, _true_end(i) + LATENCY_S + rng.uniform(0, 0.15))
        assert placement.gap_inserted_s == 0
    assert aligner.gaps_inserted == 0
    _assert_in_place(aligner, 0, 39, tolerance_s=0.02)


def test_a_late_chunk_and_a_burst_do_not_open_a_gap():
    aligner = AudioChunkAligner(RATE, keep_seconds=30)
    own = {i: _true_end(i) + LATENCY_S for i in range(40)}
    own[12] += 0.6  # one chunk 600 ms late
    for i in range(20, 25):  # a 1.2 s stall: five chunks arrive together when it ends
        own[i] = own[24]
    arrival = 0.0
    for i in range(40):  # one connection keeps the order: a chunk behind a late one arrives right after it
        arrival = max(arrival, own[i])
        aligner.push(_chunk(i), RATE, arrival)
    assert aligner.gaps_inserted == 0
    _assert_in_place(aligner, 0, 39)


def test_a_dropped_chunk_leaves_a_gap_and_later_audio_stays_in_place():
    rng = np.random.default_rng(1)
    aligner = AudioChunkAligner(RATE, keep_seconds=30)
    for i in range(40):
        if i == 15:
            continue  # the recorder dropped this chunk
        aligner.push(_chunk(i), RATE, _true_end(i) + LATENCY_S + rng.uniform(0, 0.05))
    assert aligner.gaps_inserted == 1
    assert aligner.gap_seconds == pytest.approx(CHUNK_S, abs=0.06)
    _assert_in_place(aligner, 0, 14)
    _assert_in_place(aligner, 16, 39)
    audio, covered = aligner.read(T0 + 15 * CHUNK_S + 0.06, T0 + 16 * CHUNK_S - 0.06)
    assert not covered.any() and not audio.any()  # the lost span is empty, not filled with its neighbours


def test_resampling_keeps_the_duration_and_the_memory_is_bounded():
    aligner = AudioChunkAligner(RATE, keep_seconds=5)
    t = np.arange(12_000) / 48_000
    for i in range(200):  # 50 s of 48 kHz chunks
        aligner.push(np.sin(2 * np.pi * 440 * (t + i * 0.25)).astype(np.float32), 48_000, 0.25 * (i + 1) + 0.05)
    assert aligner.latest_s == pytest.approx(50.05, abs=0.01)
    assert aligner.stored_samples <= (5 + 2 * 0.25) * RATE  # keep_seconds plus one chunk each side
    audio, covered = aligner.read(45.0, 48.0)
    assert covered.all() and np.abs(audio).max() == pytest.approx(1.0, abs=0.02)


def test_bad_chunks_and_frames_are_refused_clearly():
    with pytest.raises(FERInputError, match="sampling rate"):
        AudioChunkAligner(RATE).push(np.zeros(100, np.float32), 0, 0.0)
    with pytest.raises(FERInputError, match="uint8 RGB"):
        FrameTimeline(0.375).push(np.zeros((4, 4), np.float32), 0.0)


def test_frame_timeline_keeps_the_frame_nearest_each_bin_centre():
    frames = FrameTimeline(0.375, keep_seconds=3.0)
    times = 0.1 * np.arange(300) + 0.01  # 30 s at 10 fps
    for k, t in enumerate(times):
        frames.push(np.full((48, 64, 3), k % 256, np.uint8), t)
    assert len(frames) <= 3.0 / 0.375 + 2  # bounded by the kept seconds, not by the camera rate
    centres = (np.arange(80) + 0.5) * 0.375
    recent = centres[(centres > times[-1] - 3.0) & (centres < times[-1])]
    assert len(recent) == 8
    for centre in recent:
        kept = frames.frame_for(centre)
        nearest = times[np.argmin(np.abs(times - centre))]
        assert kept is not None and kept.capture_s == nearest
        assert kept.image[0, 0, 0] == round((nearest - 0.01) / 0.1) % 256  # and its picture is that frame's


# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    """A tiny model and a processor with speech detection off (the generated voice-like tone is not speech)."""
    torch.manual_seed(0)
    config = FERConfig.from_preset("tiny")
    model = FERForEmotionClassification(config).eval()
    return model, FERProcessor.from_model_config(config, min_speech_fraction=0.0)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@functools.lru_cache(maxsize=1)
def _face_picture() -> np.ndarray:
    import cv2

    return cv2.resize(astronaut_face(), (150, 150), interpolation=cv2.INTER_AREA)


def _camera_frame(k: int) -> np.ndarray:
    frame = np.full((240, 320, 3), 90, np.uint8)
    face = _face_picture()
    x = 80 + (k % 5)
    frame[40:190, x:x + 150] = face
    return frame


def _speech_like(seconds: float, rate: int = 48_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _run_session(model, processor, seconds: float, fps: float = 10.0, with_audio: bool = True, step_s: float = 0.75,
                 audio: np.ndarray | None = None, audio_rate: int = 48_000, hook=None):
    """Stream `seconds` of camera + microphone through a session on a fake clock; analyse every 0.25 s (after
    `hook(session, analyzer, time_s)`, when given). Returns the session, its updates, (time, stored bytes) samples
    and the pictures sent by capture time."""
    clock = FakeClock()
    analyzer = LiveAnalyzer(model, processor)
    session = analyzer.new_session(clock=clock, session_seconds=600)
    audio = _speech_like(seconds + 1, audio_rate) if audio is None else audio
    updates, sizes, pictures = [], [], {}
    chunk, next_chunk, next_frame, k = round(0.25 * audio_rate), 0.25, 0.0, 0
    for tick in range(int(seconds / 0.05)):
        clock.t = tick * 0.05
        if with_audio and clock.t >= next_chunk:
            i = round(next_chunk / 0.25) - 1
            session.push_audio((audio[i * chunk:(i + 1) * chunk] * 32767).astype(np.int16), audio_rate)
            next_chunk += 0.25
        if clock.t >= next_frame:
            pictures[round(clock.t, 6)] = _camera_frame(k)
            session.push_frame(pictures[round(clock.t, 6)])
            k, next_frame = k + 1, next_frame + 1 / fps
        if tick % 5 == 0:
            if hook is not None:
                hook(session, analyzer, clock.t)
            window = session.next_window(step_s)
            if window is not None:
                update = analyzer.analyze(session, window)
                if update is not None:
                    updates.append(update)
                sizes.append((clock.t, session.stored_bytes()))
    return session, updates, sizes, pictures


def test_live_session_updates_with_both_modalities_and_embeds_each_frame_once(tiny):
    model, processor = tiny
    session, updates, sizes, _ = _run_session(model, processor, seconds=9.0)
    assert len(updates) >= 8
    ends = [u.end_s for u in updates]
    assert all(b > a for a, b in zip(ends, ends[1:]))  # timestamps advance
    assert all(b - a == pytest.approx(0.75) for a, b in zip(ends, ends[1:]))  # on the frame-bin grid
    assert all(u.modalities["audio"] and u.modalities["video"] for u in updates[1:])
    assert all(abs(sum(u.probabilities.values()) - 1) < 1e-5 for u in updates)
    # A full window holds 8 frames, a step of 0.75 s brings 2 new ones: the other 6 come from the cache.
    full = [u for u in updates if u.start_s > 0]
    assert full and all(u.new_frames == 2 and u.reused_frames == 6 for u in full)
    # Each update is the upload result type, with the face front-end's boxes on the session clock.
    last = updates[-1].window
    assert last.modalities["face_frames"] == 8 and all(f.face_box is not None for f in last.frames)
    assert last.start_s == pytest.approx(updates[-1].end_s - 3.0)
    steady = [size for t, size in sizes if t > session.audio.keep_seconds + 0.5]  # once the buffers are full
    assert len(steady) >= 4 and max(steady) <= 1.1 * min(steady)  # the state stops growing


def test_the_session_downloads_as_the_upload_result_type(tiny):
    from fer_hf import FERClipResult

    model, processor = tiny
    session, updates, _, _ = _run_session(model, processor, seconds=6.0)
    result = session.result()
    assert result.source == "live" and [w.index for w in result.windows] == [u.window.index for u in updates]
    assert result.duration_s == pytest.approx(updates[-1].end_s)
    assert abs(sum(result.probabilities.values()) - 1) < 1e-5
    assert result.tracks and result.person["track_id"] == result.tracks[0].track_id
    assert sum(w.roi is not None for w in result.windows) == 1  # only the newest keeps its patch grid
    again = FERClipResult.from_dict(result.to_dict())
    assert [w.probabilities for w in again.windows] == [w.probabilities for w in result.windows]


def test_cached_frames_give_the_same_answer_as_the_full_model(tiny, monkeypatch):
    """The incremental path (faces and embeddings made once per frame, reused across windows) equals the model run
    from pixels on the crops and ROI maps the face front-end made for the window's frames."""
    model, processor = tiny
    made = {}  # capture time -> (crop, roi) as the front-end produced them
    original = LiveAnalyzer.new_session

    def recording_session(self, **kwargs):
        session = original(self, **kwargs)
        faces = session.engine.faces
        process = faces.process

        def process_and_record(frames, times_s=None, *args, **kw):
            found = process(frames, times_s, *args, **kw)
            for i, t in enumerate(times_s):
                made[round(float(t), 6)] = (found.crops[i].copy(), found.roi[i].copy(), bool(found.found[i]))
            return found

        monkeypatch.setattr(faces, "process", process_and_record)
        return session

    monkeypatch.setattr(LiveAnalyzer, "new_session", recording_session)
    session, updates, _, _ = _run_session(model, processor, seconds=5.0, with_audio=False)
    last = updates[-1]
    assert last.modalities["video"] and not last.modalities["audio"]
    assert "microphone" in last.modalities["audio_reason"]
    assert last.reused_frames == 6 and last.new_frames == 2
    crops, roi, found = zip(*(made[round(f.source_time_s, 6)] for f in last.window.frames))
    assert all(found)
    pixels = processor.batch_rows([{"audio": None, "crops": np.stack(crops), "roi": np.stack(roi),
                                    "frame_mask": np.ones(8, bool), "video_used": True, "info": {}}])
    with torch.inference_mode():
        reference = model(**{k: pixels[k] for k in pixels.keys()})
    expected = processor.post_process(reference)[0].probabilities
    for label, p in expected.items():
        assert last.probabilities[label] == pytest.approx(p, abs=1e-5)


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed (real synthetic speech)")
def test_live_audio_counts_only_when_it_is_speech(tiny):
    """With speech detection on (the default), live windows of spoken sentences use the sound; music does not."""
    model, _ = tiny
    processor = FERProcessor.from_model_config(model.config)  # speech detection on
    voice = speech(7.0)
    _, spoken, _, _ = _run_session(model, processor, seconds=6.0, audio=voice, audio_rate=16_000)
    assert spoken and sum(u.modalities["audio"] for u in spoken[1:]) >= len(spoken[1:]) - 1
    assert all(u.modalities["speech_fraction"] is not None for u in spoken)
    _, played, _, _ = _run_session(model, processor, seconds=6.0, audio=music(7.0), audio_rate=16_000)
    assert played and not any(u.modalities["audio"] for u in played)
    assert all(u.modalities["audio_reason"].startswith("no speech found") for u in played)
    assert all(u.modalities["video"] for u in played)


def test_a_window_with_neither_sound_nor_a_face_gives_no_update(tiny):
    model, processor = tiny
    clock = FakeClock()
    analyzer = LiveAnalyzer(model, processor)
    session = analyzer.new_session(clock=clock)
    for k in range(40):  # 4 s: longer than the first update waits for a microphone that never starts
        clock.t = 0.1 * k
        session.push_frame(np.full((120, 160, 3), 30, np.uint8))  # a dark empty room
    window = session.next_window(0.75)
    assert window is not None and window.audio is None
    assert analyzer.analyze(session, window) is None
    assert session.updates_total == 0


def test_the_first_window_waits_for_a_late_microphone_and_starts_with_the_data(tiny):
    model, processor = tiny
    clock = FakeClock()
    session = LiveAnalyzer(model, processor).new_session(clock=clock)
    audio = (_speech_like(3.0, 16_000) * 32767).astype(np.int16)
    for k in range(25):  # the camera starts at 0.5 s; the microphone's first 0.5 s chunk arrives at 1.5 s
        clock.t = 0.5 + 0.1 * k
        session.push_frame(_camera_frame(k))
        if k % 5 == 0 and clock.t >= 1.5:
            session.push_audio(audio[:8_000], 16_000)
            audio = audio[8_000:]
        if clock.t < 1.5:
            assert session.next_window(0.75) is None  # 1 s of camera, but the first update waits for the sound
    window = session.next_window(0.75)
    assert window is not None and window.audio is not None
    assert window.start_s == pytest.approx(0.375)  # from the frame bin of the first frame, not from 0
    assert window.end_s == pytest.approx(2.25)  # the end of the sound (2.5 s) on the frame-bin grid


def test_session_time_limit_and_close_free_the_buffers(tiny):
    model, processor = tiny
    clock = FakeClock()
    session = LiveAnalyzer(model, processor).new_session(clock=clock, session_seconds=2.0)
    session.push_frame(_camera_frame(0))
    clock.t = 2.5
    assert session.expired and not session.push_frame(_camera_frame(1))
    assert session.push_audio(np.zeros(4000, np.int16), 16_000) is None
    session.close()
    assert session.stored_bytes() == 0 and len(session.frames) == 0


def test_frames_prepared_ahead_leave_only_audio_and_fusion_to_the_update(tiny):
    """The Live tab's idle ticks put the final frames through the face front-end and SigLIP ahead (`prefetch`):
    each frame is still embedded once, and a full window's update then embeds nothing new."""
    model, processor = tiny
    clock = FakeClock()
    analyzer = LiveAnalyzer(model, processor)
    session = analyzer.new_session(clock=clock, session_seconds=600)
    audio = _speech_like(8.0)
    updates, prepared, next_frame, k = [], 0, 0.0, 0
    for tick in range(int(7.0 / 0.05)):
        clock.t = tick * 0.05
        if tick % 5 == 0 and tick:
            i = tick // 5 - 1
            session.push_audio((audio[i * 12_000:(i + 1) * 12_000] * 32767).astype(np.int16), 48_000)
        if clock.t >= next_frame:
            session.push_frame(_camera_frame(k))
            k, next_frame = k + 1, next_frame + 0.1
        if tick % 5 == 0:
            window = session.next_window(0.75)
            if window is None:
                prepared += analyzer.prefetch(session)
            else:
                update = analyzer.analyze(session, window)
                if update is not None:
                    updates.append(update)
    assert prepared > 0 and len(updates) >= 5
    full = [u for u in updates if u.start_s > 0]
    # at most the newest bin's frame is left to an update (without prefetch: 2 of 8 at this step, tested above)
    assert full and all(u.new_frames <= 1 and u.new_frames + u.reused_frames == 8 for u in full)
    assert sum(u.new_frames for u in full) < len(full)
    assert all(u.modalities["audio"] and u.modalities["video"] for u in full)
    # every kept frame went through the front-end exactly once, ahead or in an update
    assert session.engine.frames_embedded == prepared + sum(u.new_frames for u in updates)
    assert session.engine.frames_embedded <= session.frames.frames_kept


def test_stop_during_an_update_waits_for_it_then_frees_everything(tiny):
    """Stop (`close`) while an update runs in another thread: the update finishes with its frames (no KeyError from
    frames freed under it) and is part of the session's result; then the buffers are empty and later work is
    refused with a typed error."""
    import threading
    import time

    model, processor = tiny
    session, updates, _, _ = _run_session(model, processor, seconds=3.0)
    analyzer = LiveAnalyzer(model, processor)
    analyzer.engine = session.engine.analyzer  # the same engine; only the session's own state matters here
    session.clock.t += 0.75
    session.push_frame(_camera_frame(99))
    session.push_audio((_speech_like(1.0) * 32767).astype(np.int16), 48_000)
    window = session.next_window(0.0)
    assert window is not None and any(f is not None and not f.sent for f in window.frames)
    inside, release = threading.Event(), threading.Event()
    process = session.engine.faces.process

    def slow_process(*args, **kwargs):  # the face front-end of the update, held until the test has pressed Stop
        inside.set()
        release.wait(10)
        return process(*args, **kwargs)

    session.engine.faces.process = slow_process
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(update=analyzer.analyze(session, window)))
    worker.start()
    assert inside.wait(10)
    closer = threading.Thread(target=session.close)
    closer.start()
    time.sleep(0.2)
    assert closer.is_alive()  # Stop waits for the update in progress
    release.set()
    worker.join(10)
    closer.join(10)
    assert not closer.is_alive() and outcome["update"] is not None
    assert session.stopped and session.stored_bytes() == 0
    assert session.result().windows[-1].index == outcome["update"].window.index  # the last update is downloaded
    with pytest.raises(LiveSessionClosedError):
        analyzer.analyze(session, window)
    with pytest.raises(LiveSessionClosedError):
        analyzer.prefetch(session)


def test_falling_behind_uses_every_other_frame_then_the_int8_copy(tiny):
    """The two ways an update gets cheaper: every other frame bin (the kept frames stay cached as the window
    slides, the others never reach the front-end) and the int8 copy of the model (built once, the float model
    untouched)."""
    model, processor = tiny

    def degrade(session, analyzer, time_s):
        if time_s >= 4.0:
            session.frame_stride = 2
        if time_s >= 6.5 and not session.int8:
            assert analyzer.int8_possible and analyzer.prepare_int8(wait=True)
            session.int8 = True

    session, updates, _, _ = _run_session(model, processor, seconds=9.0, hook=degrade)
    half = [u for u in updates if u.frame_stride == 2]
    assert len(half) >= 4 and all(u.precision == "float32" for u in updates if u.frame_stride == 1)
    for u in half:
        used = [f for f in u.window.frames if f.source_time_s is not None]
        assert u.window.modalities["face_frames"] == len(used) == 4 and u.window.modalities["video"]
        assert all(session.uses_bin_of(f.time_s) for f in used)  # the same bins in every window
        assert u.new_frames <= 1 and abs(sum(u.probabilities.values()) - 1) < 1e-5
    quantised = [u for u in updates if u.precision == "int8"]
    assert len(quantised) >= 2 and all(u.frame_stride == 2 for u in quantised)
    assert not getattr(model, "is_int8_quantized", False)  # the float model is left as it was
    assert [u.timing()["precision"] for u in updates[-2:]] == ["int8", "int8"]
