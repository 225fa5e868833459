"""The front-end inside the processor: masked face-less frames, clip-wide tracks, the speaker, speech detection."""

import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import frontend_media as fm  # noqa: E402
from media_factory import astronaut_face  # noqa: E402

from fer_hf.configuration_fer import FERConfig  # noqa: E402
from fer_hf.processing_fer import FERProcessor  # noqa: E402

FACE = astronaut_face()


@pytest.fixture(scope="module")
def config():
    return FERConfig.from_preset("tiny")


@pytest.fixture(scope="module")
def processor(config):
    return FERProcessor.from_model_config(config)


def _results(processor, inputs, info):
    logits = torch.zeros(inputs["audio_mask"].shape[0], 8)
    return processor.post_process(logits, info)


def test_a_face_that_leaves_for_two_seconds_is_masked_and_counted_truthfully(processor):
    fps = 8
    times = np.arange(6 * fps) / fps
    with_face = fm.scene((320, 240), [(FACE, (90, 30, 170))], "busy")
    without = fm.scene((320, 240), [], "busy")
    frames = np.stack([without if 2.0 <= t < 4.0 else with_face for t in times])
    inputs, info = processor.prepare(videos={"frames": frames, "fps": fps}, sliding_window=True)
    for row, window in enumerate(info.windows):
        gone = [(2.0 - 0.1 <= t < 4.0 + 0.1) for t in window["frame_times_s"]]  # sampled at bin centres
        mask = inputs["video_frame_mask"][row].tolist()
        for k, t in enumerate(window["frame_times_s"]):
            if 2.0 + 0.15 <= t < 4.0 - 0.15:
                assert not mask[k] and window["face_boxes"][k] is None and not window["face_found"][k], (row, t)
                assert (inputs["pixel_values_videos"][row, k] == 0).all()
            elif not gone[k]:
                assert mask[k] and window["face_found"][k], (row, t)
    result = _results(processor, inputs, info)[0]
    assert [t.track_id for t in result.tracks] == [0], "the same person before and after the gap"
    found = sum(w.modalities["face_frames"] for w in result.windows)
    assert found == sum(sum(w["face_found"]) for w in info.windows)
    assert result.person["track_id"] == 0


@pytest.mark.parametrize("kind", ["music", "noise", "silence"])
def test_music_noise_and_silence_are_not_usable_audio(processor, kind):
    audio = {"music": fm.music(3.0), "noise": fm.noise(3.0, 0.1), "silence": np.zeros(48000, np.float32)}[kind]
    frames = np.stack([fm.scene((320, 240), [(FACE, (90, 30, 170))], "plain")] * 24)
    inputs, info = processor.prepare(videos={"audio": audio, "sampling_rate": 16000, "frames": frames, "fps": 8})
    window = info.windows[0]
    assert not inputs["audio_mask"].item() and inputs["video_mask"].item()
    if kind == "silence":
        assert window["audio_reason"] == "silent audio track" and window["speech_fraction"] is None
    else:
        assert window["audio_reason"].startswith("no speech found: music or noise")
        assert window["speech_fraction"] < 0.1
    result = _results(processor, inputs, info)[0]
    assert not result.windows[0].modalities["audio"]
    assert result.windows[0].modalities["speech_fraction"] == window["speech_fraction"]


def test_speech_is_usable_audio_with_its_fraction(processor):
    audio = fm.speech(3.0)
    if audio is None:
        pytest.skip("espeak-ng is not installed")
    inputs, info = processor.prepare(videos={"audio": audio, "sampling_rate": 16000})
    assert inputs["audio_mask"].item() and info.windows[0]["audio_reason"] == "ok"
    assert info.windows[0]["speech_fraction"] > 0.5
    off = FERProcessor.from_model_config(FERConfig.from_preset("tiny"), min_speech_fraction=0.0)
    inputs, info = off.prepare(videos={"audio": fm.music(3.0), "sampling_rate": 16000})
    assert inputs["audio_mask"].item() and info.windows[0]["speech_fraction"] is None  # detection turned off


def _two_people_clip(num_frames=8):
    rng = np.random.default_rng(3)
    times = (np.arange(num_frames) + 0.5) * 3.0 / num_frames
    loudness = rng.uniform(0, 1, num_frames)
    speech = fm.speech(3.0)
    carrier = speech / (np.abs(speech).max() + 1e-9) if speech is not None else np.sin(np.arange(48000) * 0.2)
    audio = np.zeros(48000, np.float32)
    for t, a in zip(times, loudness):
        c = int(t * 16000)
        audio[c - 2400: c + 2400] = (0.05 + a) * 0.3 * carrier[c - 2400: c + 2400]
    frames = np.stack([fm.scene((480, 270), [(fm.open_mouth(FACE, 0.0), (20, 60, 150)),
                                             (fm.open_mouth(FACE, a), (300, 50, 160))], "plain")
                       for a in loudness])
    return {"audio": audio, "sampling_rate": 16000, "frames": frames, "frame_times_s": times}


def test_the_speaking_person_goes_to_the_model_and_person_overrides(config):
    media = _two_people_clip()
    proc = FERProcessor.from_model_config(config, min_speech_fraction=0.0)  # the carrier may be a tone
    inputs, info = proc.prepare(videos=media)
    result = _results(proc, inputs, info)[0]
    assert len(result.tracks) == 2
    right = max(result.tracks, key=lambda t: t.mean_box[0]).track_id
    assert result.person["track_id"] == right and "speaking" in result.person["reason"]
    assert info.windows[0]["face_boxes"][0][0] > 240  # the crops are the right-hand person's
    left = min(result.tracks, key=lambda t: t.mean_box[0]).track_id
    forced = FERProcessor.from_model_config(config, min_speech_fraction=0.0, person=left)
    inputs, info = forced.prepare(videos=media)
    assert info.windows[0]["person"] == {"track_id": left, "reason": f"person {left} was asked for"}
    assert info.windows[0]["face_boxes"][0][0] < 240


def test_all_people_gives_a_row_per_tracked_person_with_their_own_face(config):
    from fer_hf.media_fer import window_from_arrays

    media = _two_people_clip()
    proc = FERProcessor.from_model_config(config, min_speech_fraction=0.0)
    window = window_from_arrays(media["audio"], media["frames"], None, 0.0, 3.0, proc.num_frames, 3.0, 16000, 640,
                                frame_times_s=media["frame_times_s"])
    plain = proc.window_row(window, faces=proc.video_processing.face_session())
    row = proc.window_row(window, faces=proc.video_processing.face_session(), all_people=True)
    assert "people" not in plain and len(row["people"]) == 2
    ids = [p["info"]["person"]["track_id"] for p in row["people"]]
    assert sorted(ids) == [0, 1]
    chosen = row["people"][ids.index(row["info"]["person"]["track_id"])]
    assert (chosen["crops"] == row["crops"]).all() and (chosen["crops"] == plain["crops"]).all()
    assert chosen["info"]["face_boxes"] == row["info"]["face_boxes"] == plain["info"]["face_boxes"]
    other = row["people"][1 - ids.index(row["info"]["person"]["track_id"])]
    assert other["info"]["video_used"] and other["audio"] is row["audio"]
    assert "every tracked person" in other["info"]["person"]["reason"]
    # the other person's crops are their own face: their boxes lie on the other side of the frame
    sides = {p["info"]["person"]["track_id"]: p["info"]["face_boxes"][0][0] > 240 for p in row["people"]}
    assert set(sides.values()) == {True, False} and not (other["crops"] == chosen["crops"]).all()


def test_a_small_face_in_a_1080p_frame_is_found_through_the_processor(processor):
    side = int(0.05 * 1920 * 185 / 93)
    frame = fm.scene((1920, 1080), [(FACE, (1300, 600, side))], "busy")
    inputs, info = processor.prepare(videos={"frames": np.stack([frame] * 4), "fps": 4})
    assert inputs["video_mask"].item()
    x0, y0, x1, y1 = info.windows[0]["face_boxes"][0]  # source pixels
    ex0, ey0, ex1, ey1 = fm.face_box_in_scene(1300, 600, side)
    assert abs((x0 + x1) / 2 - (ex0 + ex1) / 2) < 0.2 * side and abs((y0 + y1) / 2 - (ey0 + ey1) / 2) < 0.2 * side
