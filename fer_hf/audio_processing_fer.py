"""Audio sub-processor: a window's waveform -> whether it is usable, and log-mel features (SPEC §1, §5).

    audio = FERAudioProcessor(feature_extractor, num_samples=48000, silence_threshold=1e-4)
    used, reason = audio.check(wave)                       # (bool, "ok" | "silent audio track" | ...)
    features, mask = audio.features([wave or None, ...])   # (B, n_mel, 80) float32, (B, n_mel) int64

The log-mel recipe is transformers' `ParakeetFeatureExtractor` (80 mels, n_fft 512, window 400, hop 160,
per-feature normalisation); rows without usable audio get zero features and an all-zero mask.
"""

from __future__ import annotations

import numpy as np

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
    """

    defaults = dict(silence_threshold=1e-4, min_audio_samples=MIN_AUDIO_SAMPLES)

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
        if self.silence_threshold < 0 or self.min_audio_samples < 1:
            raise ValueError(f"bad audio settings: {values}")

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
