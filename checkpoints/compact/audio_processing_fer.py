"""Audio sub-processor: a window's waveform -> whether it is usable, and log-mel features (SPEC §1, §5).

    audio = FERAudioProcessor(feature_extractor, num_samples=48000, silence_threshold=1e-4)
    used, reason = audio.check(wave)                       # (bool, "ok" | "silent audio track" | ...)
    speech = audio.speech_session()                        # one per clip: the VAD runs once per stretch of audio
    used, reason, fraction = audio.check_speech(wave, speech, start_s)   # "no speech found: music or noise ..."
    features, mask = audio.features([wave or None, ...])   # (B, n_mel, 80) float32, (B, n_mel) int64

The log-mel recipe is transformers' `ParakeetFeatureExtractor` (80 mels, n_fft 512, window 400, hop 160,
per-feature normalisation); rows without usable audio get zero features and an all-zero mask.
"""

from __future__ import annotations

import numpy as np

from .speech_fer import (
    HIGH_PITCH_HZ,
    MIN_SPEECH_FRACTION,
    SPEECH_THRESHOLD,
    ClipSpeech,
    SileroSpeechDetector,
    speech_decision,
)

MIN_AUDIO_SAMPLES = 400  # one 25 ms analysis window at 16 kHz; shorter audio cannot be normalised


class FERAudioProcessor:
    r"""Audio checks and features. Settings are declarative and saved in the processor JSON (`audio_settings`);
    the window length and sampling rate come from the model geometry.

    Args:
        feature_extractor (`ParakeetFeatureExtractor`): the log-mel extractor.
        num_samples (`int`): samples in one window (`clip_seconds * sampling_rate`).
        silence_threshold (`float`, defaults to 1e-4): audio whose peak |amplitude| (full scale 1.0) is below this
            is digital silence and not used.
        min_audio_samples (`int`, defaults to 400): shorter audio (25 ms at 16 kHz) is not used.
        min_speech_fraction (`float`, defaults to 0.1): a window is usable audio only when at least this share of
            its 32 ms chunks is speech (Silero VAD, `speech_fer`); music, noise and near-silence are not. 0 turns
            speech detection off (any non-silent audio is used).
        speech_threshold (`float`, defaults to 0.5): VAD probability from which a chunk is speech.
        high_pitch_hz (`float`, defaults to 350): a window that falls short of `min_speech_fraction` and whose
            voiced chunks have a median pitch of at least this is scored again with its pitch lowered (shouted and
            screamed speech lies above the VAD's range; `speech_fer`). 0 turns this off.
    """

    defaults = dict(silence_threshold=1e-4, min_audio_samples=MIN_AUDIO_SAMPLES,
                    min_speech_fraction=MIN_SPEECH_FRACTION, speech_threshold=SPEECH_THRESHOLD,
                    high_pitch_hz=HIGH_PITCH_HZ)

    def __init__(self, feature_extractor, num_samples: int, **settings):
        unknown = sorted(set(settings) - set(self.defaults))
        if unknown:
            raise ValueError(f"unknown audio setting(s) {unknown}; known: {sorted(self.defaults)}")
        values = {**self.defaults, **settings}
        self.feature_extractor = feature_extractor
        self.sampling_rate = int(feature_extractor.sampling_rate)
        self.num_samples = int(num_samples)
        self.silence_threshold = float(values["silence_threshold"])
        self.min_audio_samples = int(values["min_audio_samples"])
        self.min_speech_fraction = float(values["min_speech_fraction"])
        self.speech_threshold = float(values["speech_threshold"])
        self.high_pitch_hz = float(values["high_pitch_hz"])
        if self.silence_threshold < 0 or self.min_audio_samples < 1 or self.high_pitch_hz < 0:
            raise ValueError(f"bad audio settings: {values}")
        if not 0.0 <= self.min_speech_fraction <= 1.0 or not 0.0 < self.speech_threshold < 1.0:
            raise ValueError(f"`min_speech_fraction` must be in [0, 1] and `speech_threshold` in (0, 1), got "
                             f"{self.min_speech_fraction!r}, {self.speech_threshold!r}")
        self._speech_detector = None

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.defaults}

    def check(self, audio: np.ndarray | None, missing: str = "no audio stream") -> tuple[bool, str]:
        """(usable, reason) for one window's samples (float32 `(n,)`, or None when the clip has no audio)."""
        if audio is None:
            return False, missing
        if audio.size < self.min_audio_samples:
            return False, "no audio inside the window" if audio.size == 0 else "audio too short"
        if float(np.abs(audio).max()) < self.silence_threshold:
            return False, "silent audio track"
        return True, "ok"

    def speech_session(self) -> ClipSpeech | None:
        """Speech probabilities of one clip (None when speech detection is off)."""
        if self.min_speech_fraction <= 0:
            return None
        if self._speech_detector is None:
            self._speech_detector = SileroSpeechDetector(self.speech_threshold)
        return ClipSpeech(self._speech_detector, self.sampling_rate)

    def check_speech(self, audio: np.ndarray, speech: ClipSpeech | None, start_s: float) -> tuple:
        """(usable, reason, speech_fraction) for a window's non-silent samples starting at `start_s` (clip s).

        Without a session (speech detection off) the audio is usable and the fraction is None. A window short of
        speech whose voice is pitched at least `high_pitch_hz` gets the fraction found with its pitch lowered
        when that is higher (`ClipSpeech.lowered_speech_fraction`).
        """
        if speech is None:
            return True, "ok", None
        speech.add(audio, start_s)
        fraction = speech.speech_fraction(start_s, start_s + len(audio) / self.sampling_rate)
        if fraction is not None and fraction < self.min_speech_fraction:
            lowered = speech.lowered_speech_fraction(audio, self.high_pitch_hz, enough=self.min_speech_fraction)
            if lowered is not None and lowered > fraction:
                fraction = lowered
        used, reason = speech_decision(fraction, self.min_speech_fraction)
        return used, reason, None if fraction is None else round(fraction, 4)

    def __getstate__(self):  # the ONNX session is rebuilt in another process
        state = dict(self.__dict__)
        state["_speech_detector"] = None
        return state

    def features(self, waves: list, num_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Log-mel features of one window per row (`None` rows: zeros), padded to `num_samples` (default: the
        model window).

        Returns input_features float32 `(B, n_mel, mel_bins)`, audio_attention_mask int64 `(B, n_mel)`.
        """
        n = int(num_samples or self.num_samples)
        # Rows without usable audio get a placeholder so the batch call works; their features/mask are zeroed.
        present = np.array([w is not None for w in waves])
        padded = [w[:n] if w is not None else np.zeros(n, np.float32) for w in waves]
        mel = self.feature_extractor(
            padded, sampling_rate=self.sampling_rate, padding="max_length", max_length=n, truncation=True,
            return_attention_mask=True, return_tensors="np",
        )
        features = np.asarray(mel["input_features"], np.float32)  # (B, n_mel, 80)
        mask = np.asarray(mel["attention_mask"]).astype(np.int64)  # (B, n_mel): 1 = frame of real audio
        features[~present] = 0.0
        mask[~present] = 0
        return features, mask


__all__ = ["MIN_AUDIO_SAMPLES", "FERAudioProcessor"]
