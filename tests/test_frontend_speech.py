"""Speech detection: Silero VAD (ONNX in the silero-vad wheel) gives each window its speech fraction; voices pitched
above its range (shouting, screaming) are scored again lowered, and music and noise stay rejected."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import frontend_media as fm  # noqa: E402

from fer_hf.audio_processing_fer import FERAudioProcessor  # noqa: E402
from fer_hf.speech_fer import (  # noqa: E402
    MIN_SPEECH_FRACTION,
    NO_SPEECH_REASON,
    ClipSpeech,
    SileroSpeechDetector,
    lower_pitch,
    speech_decision,
    voiced_pitch,
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
    assert "speech in 9 % of the window, below the 10 % needed" in speech_decision(0.097)[1]
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


# ---- voices above the VAD's pitch range (shouted, screamed speech) --------------------------------------------------


class _Features:  # the audio sub-processor only needs the rate of its feature extractor for the speech check
    sampling_rate = 16000


def _check(audio, **settings):
    """(usable, reason, fraction) of the processor's speech check on one window starting at 0."""
    audio_processing = FERAudioProcessor(_Features(), len(audio), **settings)
    used, reason = audio_processing.check(audio)
    assert used, reason  # not silent: the speech check decides
    return audio_processing.check_speech(audio, audio_processing.speech_session(), 0.0)


def _high_melody(seconds=3.0, seed=1):
    """A loud, clipped solo melody at 500-800 Hz with vibrato: high and voiced like a scream, but voiced throughout."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    note = np.floor(t * 4).astype(int)
    f0 = 440 * 2 ** ((rng.integers(71, 80, note.max() + 1)[note] - 69) / 12) * (1 + 0.015 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    tone = sum(np.sin(h * phase) / h for h in range(1, 9))
    return np.clip(1.2 * tone / np.abs(tone).max(), -0.99, 0.99).astype(np.float32)


def test_voiced_pitch_finds_the_pitch_of_a_voice_and_nothing_in_noise():
    t = np.arange(16000) / 16000
    tone = (0.3 * sum(np.sin(2 * np.pi * 440 * h * t) / h for h in range(1, 6))).astype(np.float32)
    f0, voiced, sounding = voiced_pitch(tone)
    assert voiced.all() and sounding.all() and np.allclose(f0, 440, rtol=0.03)
    f0, voiced, _ = voiced_pitch(fm.shout(2.0, f0=650.0))
    assert 0.3 < voiced.mean() < 0.85  # vowels voiced, consonant bursts and pauses not
    assert 550 < np.median(f0[voiced]) < 800
    assert not voiced_pitch(fm.noise(1.0, 0.1))[1].any()
    assert not voiced_pitch(fm.noise(1.0, 3e-4))[1].any()  # near-silence is never voiced
    assert voiced_pitch(np.zeros(100, np.float32))[0].shape == (0,)


def test_lower_pitch_slows_the_audio_and_lowers_every_frequency():
    t = np.arange(16000) / 16000
    lowered = lower_pitch(np.sin(2 * np.pi * 600 * t).astype(np.float32), 1.5)
    assert lowered.dtype == np.float32 and len(lowered) == 24000
    spectrum = np.abs(np.fft.rfft(lowered))
    assert np.fft.rfftfreq(24000, 1 / 16000)[spectrum.argmax()] == pytest.approx(400, abs=2)


def test_a_shouted_voice_is_speech_while_the_vad_alone_misses_it(detector):
    """A loud, clipped voice at shouting pitch (~650 Hz, syllable-rate envelope): Silero alone finds almost no
    speech (the 20 rejected RAVDESS clips were pitched at 430-730 Hz); lowered, it is speech."""
    for seed in range(3):
        audio = fm.shout(3.0, f0=650.0, seed=seed)
        assert np.abs(audio).max() >= 0.99  # clipped
        assert _fraction(detector, audio) < MIN_SPEECH_FRACTION
        used, reason, fraction = _check(audio)
        assert (used, reason) == (True, "ok") and fraction >= 0.3
        assert not _check(audio, high_pitch_hz=0.0)[0]  # the rescoring turned off: rejected as before


def test_a_voice_at_speaking_pitch_is_speech_without_rescoring(detector):
    audio = fm.shout(3.0, f0=180.0)
    assert _fraction(detector, audio) > 0.5
    assert ClipSpeech(detector).lowered_speech_fraction(audio) is None  # not a high voice: nothing to rescore


def test_a_shrill_espeak_voice_is_speech():
    """espeak-ng's high female voice at its highest pitch, raised a sixth (played 1.67x as fast: ~570 Hz) and
    clipped. (Twice as fast, its short consonants fall below the 32 ms chunks and it is voiced throughout, like a
    melody: then it is not rescored.)"""
    audio = fm.speech(6.0, voice="en+f5", pitch=99)
    if audio is None:
        pytest.skip("espeak-ng is not installed")
    shrill = lower_pitch(audio, 0.6)[:48000]
    shrill = np.clip(3 * shrill / np.abs(shrill).max(), -1, 1)
    f0, voiced, _ = voiced_pitch(shrill)
    assert np.median(f0[voiced]) > 500
    assert _check(shrill, high_pitch_hz=0.0)[2] < MIN_SPEECH_FRACTION  # Silero alone misses it
    used, reason, fraction = _check(shrill)
    assert (used, reason) == (True, "ok") and fraction >= MIN_SPEECH_FRACTION


@pytest.mark.parametrize("kind", ["music", "noise", "loud noise", "high melody", "near-silence"])
def test_music_and_noise_stay_rejected_with_the_rescoring(detector, kind):
    audio = {"music": fm.music(3.0), "noise": fm.noise(3.0, 0.1), "loud noise": np.clip(fm.noise(3.0, 0.5), -1, 1),
             "high melody": _high_melody(), "near-silence": fm.noise(3.0, 3e-4)}[kind]
    used, reason, fraction = _check(audio)
    assert not used and reason.startswith(NO_SPEECH_REASON) and fraction < MIN_SPEECH_FRACTION
    if kind == "high melody":  # as high as a scream, but voiced throughout: not rescored at all
        f0, voiced, _ = voiced_pitch(audio)
        assert np.median(f0[voiced]) > 450
        assert ClipSpeech(detector).lowered_speech_fraction(audio) is None


def test_high_pitch_setting_is_saved_and_checked():
    audio_processing = FERAudioProcessor(_Features(), 48000, high_pitch_hz=400.0)
    assert audio_processing.to_dict()["high_pitch_hz"] == 400.0
    assert FERAudioProcessor(_Features(), 48000).high_pitch_hz == 350.0
    with pytest.raises(ValueError, match="bad audio settings"):
        FERAudioProcessor(_Features(), 48000, high_pitch_hz=-1.0)
