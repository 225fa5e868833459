"""Speech detection: Silero VAD (ONNX in the silero-vad wheel) gives each window its speech fraction."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import frontend_media as fm  # noqa: E402

from fer_hf.speech_fer import (  # noqa: E402
    MIN_SPEECH_FRACTION,
    NO_SPEECH_REASON,
    ClipSpeech,
    SileroSpeechDetector,
    speech_decision,
)


@pytest.fixture(scope="module")
def detector():
    return SileroSpeechDetector()


def _fraction(detector, audio):
    clip = ClipSpeech(detector)
    clip.add(audio, 0.0)
    return clip.speech_fraction(0.0, len(audio) / 16000)


def test_real_speech_is_speech(detector):
    audio = fm.speech(3.0)
    if audio is None:
        pytest.skip("espeak-ng is not installed")
    fraction = _fraction(detector, audio)
    assert fraction > 0.5
    assert speech_decision(fraction) == (True, "ok")


@pytest.mark.parametrize("kind", ["music", "noise", "near-silence"])
def test_music_noise_and_near_silence_are_not_speech(detector, kind):
    audio = {"music": fm.music(3.0), "noise": fm.noise(3.0, 0.1), "near-silence": fm.noise(3.0, 3e-4)}[kind]
    assert np.abs(audio).max() > 1e-4  # not digital silence: that keeps its own reason in the processor
    fraction = _fraction(detector, audio)
    assert fraction < MIN_SPEECH_FRACTION
    usable, reason = speech_decision(fraction)
    assert not usable and reason.startswith(NO_SPEECH_REASON)


def test_threshold_is_configurable():
    assert speech_decision(0.3, min_speech_fraction=0.5)[0] is False
    assert speech_decision(0.3, min_speech_fraction=0.2) == (True, "ok")
    assert speech_decision(None)[0] is False
    with pytest.raises(ValueError, match="threshold"):
        SileroSpeechDetector(threshold=1.5)


class CountingDetector(SileroSpeechDetector):
    def __init__(self):
        super().__init__()
        self.samples = 0

    def probabilities(self, audio, state=None):
        self.samples += len(audio)
        return super().probabilities(audio, state)


def test_overlapping_windows_reuse_the_clip_scores():
    audio = fm.speech(6.0)
    if audio is None:
        audio = fm.music(6.0)
    counting = CountingDetector()
    clip = ClipSpeech(counting)
    for start in (0.0, 1.5, 3.0):  # sliding windows of 3 s, stride 1.5 s
        clip.add(audio[int(start * 16000): int((start + 3.0) * 16000)], start)
    assert counting.samples <= len(audio) + 3 * 512  # each stretch scored once (a partial chunk per window again)
    whole, _ = SileroSpeechDetector().probabilities(audio)
    assert clip.speech_fraction(0.0, 6.0) == pytest.approx(float(np.mean(whole >= 0.5)), abs=0.02)
    assert clip.speech_fraction(10.0, 13.0) is None  # nothing scored there
