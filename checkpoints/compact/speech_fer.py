"""Speech detection (SPEC §5: audio counts as present only where speech is detected).

`SileroSpeechDetector` runs the Silero VAD model shipped in the `silero-vad==6.2.3` wheel (MIT, `silero_vad.onnx`,
about 2 MB) with onnxruntime: no torch hub, nothing downloaded, and the `silero_vad` package itself is not
imported (its file is located with `importlib.util.find_spec`). The model reads 16 kHz audio in 512-sample
chunks (32 ms) with the last 64 samples of the previous chunk as context and a recurrent state, and gives the
probability that each chunk is speech.

`ClipSpeech` keeps one clip's chunk probabilities on the clip's timeline, so overlapping sliding windows reuse
what was computed (the VAD runs once over each stretch of the clip) and `speech_fraction(start, end)` is the
share of a window's chunks whose probability is at least the threshold.

A window is usable audio when its speech fraction is at least `min_speech_fraction` (`FERProcessor` argument,
default `MIN_SPEECH_FRACTION`); music, noise and near-silence give "no speech found: music or noise".

**High voices.** Silero scores speech whose pitch lies far above the usual speaking range (screamed, shrieked,
shouted speech at 450-750 Hz) as non-speech: on RAVDESS the share of speech chunks collapses once a window's median
voiced pitch passes ~450 Hz, and all 20 of its 1,440 acted clips that fell below 10 % were strong-intensity clips
pitched at 430-730 Hz (`benchmarks/bench_speech_decision.py`, `docs/frontend.md`). So a window that falls short is
scored again when its voiced chunks (`voiced_pitch`, a YIN pitch tracker) have a median pitch of at least
`HIGH_PITCH_HZ` and its voicing is broken as speech's is (at most `MAX_VOICED_SHARE` of its sounding chunks
voiced): lowered by a fifth, then an octave (`lower_pitch`: played slower, which lowers pitch and formants by the
same ratio), by the same model from a fresh state (`ClipSpeech.lowered_speech_fraction`); the best fraction counts.
Music and noise stay rejected: the model is still the judge, and lowered music is still music to it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading

import numpy as np

logger = logging.getLogger(__name__)

VAD_PACKAGE = "silero_vad"  # import name of the silero-vad wheel (its model file only; never imported)
VAD_FILE = "silero_vad.onnx"
VAD_SAMPLING_RATE = 16000
VAD_CHUNK = 512  # samples per decision (32 ms at 16 kHz)
VAD_CONTEXT = 64  # samples of the previous chunk prepended to each chunk
SPEECH_THRESHOLD = 0.5  # a chunk is speech when its probability is at least this (Silero's own default)
MIN_SPEECH_FRACTION = 0.1  # a window is usable audio when at least this share of its chunks is speech
NO_SPEECH_REASON = "no speech found: music or noise"
HIGH_PITCH_HZ = 350.0  # windows whose voiced median pitch reaches this are rescored lower (0: never)
PITCH_LOWERING = (1.5, 2.0)  # slow-down factors tried in turn: a fifth, an octave
PITCH_RANGE_HZ = (70.0, 1000.0)  # the pitch tracker's search range (speech, shouting and screaming)
PITCH_FRAME = 1024  # samples analysed per chunk (64 ms, centred on it): two periods of the lowest pitch
VOICED_APERIODICITY = 0.2  # YIN's normalised difference below this at the period: the chunk is voiced
VOICED_RANGE_DB = 30.0  # voiced chunks lie within this many dB of the window's loudest chunk ...
VOICED_FLOOR_DBFS = -60.0  # ... and above this level (full scale 1.0), so near-silence is never voiced
MIN_VOICED_CHUNKS = 3  # fewer voiced chunks (~0.1 s) give no pitch to go by
MAX_VOICED_SHARE = 0.85  # speech is voiced in at most this share of its sounding chunks (consonants, pauses)


def vad_model_path() -> str:
    """Path of `silero_vad.onnx` inside the installed silero-vad wheel, found without importing the package."""
    spec = importlib.util.find_spec(VAD_PACKAGE)
    for folder in list(spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(folder, "data", VAD_FILE)
        if os.path.isfile(path):
            return path
    raise ImportError(
        f"the speech detector's model {VAD_FILE!r} was not found: install it with `pip install silero-vad==6.2.3` "
        "(only its ONNX file is used, run by onnxruntime)"
    )


class SileroSpeechDetector:
    """Silero VAD (ONNX) through onnxruntime, one session per process, one thread.

    Args:
        threshold: chunk probability from which a chunk counts as speech.
    """

    def __init__(self, threshold: float = SPEECH_THRESHOLD):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` must be between 0 and 1, got {threshold!r}")
        self.threshold = float(threshold)
        self._session = None
        self._pid = None
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"threshold": self.threshold}

    def __setstate__(self, state):
        self.__init__(state["threshold"])

    def _load(self):
        try:
            import onnxruntime as ort
        except ImportError as err:  # pragma: no cover - a pinned dependency
            raise ImportError("speech detection needs onnxruntime: `pip install onnxruntime==1.32.0`") from err
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(vad_model_path(), options, providers=["CPUExecutionProvider"])
        self._pid = os.getpid()

    def probabilities(self, audio: np.ndarray, state: dict | None = None) -> tuple[np.ndarray, dict]:
        """Speech probability of each whole 512-sample chunk of 16 kHz mono `audio` `(n,)`.

        Args:
            state: the value returned by the previous call to continue a stream (recurrent state and context);
                None starts afresh.

        Returns:
            `(probabilities (n // 512,), state)`; samples after the last whole chunk are not scored.
        """
        audio = np.asarray(audio, np.float32).reshape(-1)
        n = len(audio) // VAD_CHUNK
        if state is None:
            state = {"rnn": np.zeros((2, 1, 128), np.float32), "context": np.zeros(VAD_CONTEXT, np.float32)}
        probs = np.zeros(n, np.float32)
        if n == 0:
            return probs, state
        rate = np.array(VAD_SAMPLING_RATE, np.int64)
        rnn, context = state["rnn"], state["context"]
        with self._lock:
            if self._pid != os.getpid():
                self._load()
            for i in range(n):
                chunk = audio[i * VAD_CHUNK:(i + 1) * VAD_CHUNK]
                x = np.concatenate([context, chunk])[None]  # (1, 576)
                out, rnn = self._session.run(None, {"input": x, "state": rnn, "sr": rate})
                probs[i] = float(out.reshape(-1)[0])
                context = chunk[-VAD_CONTEXT:]
        return probs, {"rnn": rnn, "context": context.copy()}


class ClipSpeech:
    """Speech probabilities of one clip on its own timeline, computed once per stretch of audio.

    Feed the audio of each window with `add(audio, start_s)`; chunks already scored are reused (windows that
    overlap share them), a jump forwards or backwards restarts the detector's state at the new position.

    Args:
        detector: the `SileroSpeechDetector`.
        sampling_rate: must be 16 000 (the VAD's rate).
    """

    def __init__(self, detector: SileroSpeechDetector, sampling_rate: int = VAD_SAMPLING_RATE):
        if int(sampling_rate) != VAD_SAMPLING_RATE:
            raise ValueError(f"speech detection works on {VAD_SAMPLING_RATE} Hz audio, got {sampling_rate}")
        self.detector = detector
        self._starts = np.zeros(0, np.int64)  # chunk start samples on the clip timeline, increasing
        self._probs = np.zeros(0, np.float32)
        self._stretch_start = 0  # first sample of the stretch scored last (continuous audio)
        self._end = None  # sample where that stretch's scored chunks end
        self._state = None

    def add(self, audio: np.ndarray, start_s: float) -> None:
        """Score the chunks of `audio` (16 kHz mono, starting at `start_s` on the clip) not scored yet."""
        audio = np.asarray(audio, np.float32).reshape(-1)
        start = int(round(start_s * VAD_SAMPLING_RATE))
        end = start + len(audio)
        if self._end is not None and self._stretch_start <= start and end <= self._end + VAD_CHUNK:
            return  # inside the stretch scored already
        if self._end is not None and self._stretch_start <= start <= self._end < end:
            begin, state = self._end, self._state  # continue the stream where it stopped
        else:
            begin, state, self._stretch_start = start, None, start  # a new stretch: fresh state
        probs, state = self.detector.probabilities(audio[begin - start:], state)
        if len(probs) == 0:
            return
        starts = begin + VAD_CHUNK * np.arange(len(probs), dtype=np.int64)
        keep = ~np.isin(starts, self._starts)
        order = np.argsort(np.concatenate([self._starts, starts[keep]]), kind="stable")
        self._starts = np.concatenate([self._starts, starts[keep]])[order]
        self._probs = np.concatenate([self._probs, probs[keep]])[order]
        self._end, self._state = begin + VAD_CHUNK * len(probs), state

    def drop_before(self, time_s: float) -> None:
        """Forget the scores of chunks starting before `time_s` (a live session keeps only its current window);
        the stream's state is kept, so audio continuing the scored stretch is still scored seamlessly."""
        keep = self._starts >= int(round(time_s * VAD_SAMPLING_RATE))
        self._starts, self._probs = self._starts[keep], self._probs[keep]

    @property
    def scored_chunks(self) -> int:
        return len(self._starts)

    def speech_fraction(self, start_s: float, end_s: float) -> float | None:
        """Share of the scored chunks inside [start_s, end_s) whose probability reaches the threshold; None when
        no chunk lies inside (no audio there)."""
        start, end = start_s * VAD_SAMPLING_RATE, end_s * VAD_SAMPLING_RATE
        inside = (self._starts >= start - VAD_CHUNK / 2) & (self._starts + VAD_CHUNK <= end + VAD_CHUNK / 2)
        if not inside.any():
            return None
        return float(np.mean(self._probs[inside] >= self.detector.threshold))

    def lowered_speech_fraction(self, audio: np.ndarray, high_pitch_hz: float = HIGH_PITCH_HZ,
                                enough: float = 1.0) -> float | None:
        """Speech fraction of a window's `audio` (16 kHz mono) scored again with its pitch lowered, for voices
        above the pitch range the VAD knows; None when the window has no such voice.

        The window qualifies when at least `MIN_VOICED_CHUNKS` chunks are voiced, their median pitch is at least
        `high_pitch_hz` (0 or less: never), and voicing is interrupted as in speech: at most `MAX_VOICED_SHARE` of
        the sounding chunks are voiced (consonants and pauses break a voice several times a second; a melody, a
        siren or a hum is voiced throughout). It is then slowed by each factor of `PITCH_LOWERING` in turn and
        scored from a fresh detector state (nothing is stored on the clip timeline); the best share of speech
        chunks is returned, stopping early once it reaches `enough`.
        """
        if high_pitch_hz <= 0:
            return None
        f0, voiced, sounding = voiced_pitch(audio)
        if voiced.sum() < MIN_VOICED_CHUNKS or float(np.median(f0[voiced])) < high_pitch_hz:
            return None
        if voiced.sum() > MAX_VOICED_SHARE * sounding.sum():
            return None
        best = 0.0
        for factor in PITCH_LOWERING:
            probs, _ = self.detector.probabilities(lower_pitch(audio, factor))
            if len(probs):
                best = max(best, float(np.mean(probs >= self.detector.threshold)))
            if best >= enough:
                break
        logger.debug("high voice (median pitch %.0f Hz): speech in %.0f %% of the window once lowered",
                     float(np.median(f0[voiced])), 100 * best)
        return best

    def probabilities_between(self, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(chunk start times in s, probabilities) of the scored chunks inside [start_s, end_s)."""
        start, end = start_s * VAD_SAMPLING_RATE, end_s * VAD_SAMPLING_RATE
        inside = (self._starts >= start) & (self._starts < end)
        return self._starts[inside] / VAD_SAMPLING_RATE, self._probs[inside].copy()


def voiced_pitch(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pitch (Hz) and voicing of each whole 512-sample chunk of 16 kHz mono `audio`, by YIN (de Cheveigné and
    Kawahara, 2002): on `PITCH_FRAME` samples centred on the chunk, the cumulative-mean-normalised difference
    function over the periods of `PITCH_RANGE_HZ`; the period is its first dip below `VOICED_APERIODICITY` (else its
    minimum). A chunk is sounding when its level is within `VOICED_RANGE_DB` of the loudest chunk and above
    `VOICED_FLOOR_DBFS`, and voiced when it is sounding and that dip is below `VOICED_APERIODICITY`.

    Returns:
        `(f0 float64 (n,), voiced bool (n,), sounding bool (n,))`, `n = len(audio) // 512`.
    """
    audio = np.asarray(audio, np.float64).reshape(-1)
    n = len(audio) // VAD_CHUNK
    if n == 0:
        return np.zeros(0), np.zeros(0, bool), np.zeros(0, bool)
    lo, hi = int(VAD_SAMPLING_RATE / PITCH_RANGE_HZ[1]), int(VAD_SAMPLING_RATE / PITCH_RANGE_HZ[0])
    width = PITCH_FRAME - hi  # samples compared at every lag
    padded = np.pad(audio, (PITCH_FRAME // 2, PITCH_FRAME // 2))
    centres = VAD_CHUNK * np.arange(n) + VAD_CHUNK // 2  # frame k starts at centre k in `padded`
    frames = padded[centres[:, None] + np.arange(PITCH_FRAME)]
    frames = frames - frames.mean(axis=1, keepdims=True)
    size = 2 * PITCH_FRAME
    lags = np.arange(1, hi + 1)
    cross = np.fft.irfft(np.fft.rfft(frames, size) * np.conj(np.fft.rfft(frames[:, :width], size)), size)[:, 1:hi + 1]
    energy = np.concatenate([np.zeros((n, 1)), np.cumsum(frames**2, axis=1)], axis=1)
    diff = energy[:, [width]] + energy[:, lags + width] - energy[:, lags] - 2 * cross  # sum (x_j - x_j+lag)^2
    cmnd = diff * lags / np.maximum(np.cumsum(diff, axis=1), 1e-20)
    search = cmnd[:, lo - 1:]  # periods lo..hi samples
    dips = search < VOICED_APERIODICITY
    first = np.where(dips.any(axis=1), dips.argmax(axis=1), search.argmin(axis=1))
    for k in range(n):  # walk down to the bottom of the first dip
        while first[k] + 1 < search.shape[1] and search[k, first[k] + 1] < search[k, first[k]]:
            first[k] += 1
    aperiodicity = search[np.arange(n), first]
    f0 = VAD_SAMPLING_RATE / (first + lo)
    chunks = audio[:n * VAD_CHUNK].reshape(n, VAD_CHUNK)
    level = 10 * np.log10(np.mean(chunks**2, axis=1) + 1e-12)
    sounding = (level > level.max() - VOICED_RANGE_DB) & (level > VOICED_FLOOR_DBFS)
    return f0, sounding & (aperiodicity < VOICED_APERIODICITY), sounding


def lower_pitch(audio: np.ndarray, factor: float) -> np.ndarray:
    """`audio` played `factor` times slower (band-limited resampling by FFT): every frequency, pitch and formants
    alike, divided by `factor`, the length multiplied by it. float32."""
    audio = np.asarray(audio, np.float64).reshape(-1)
    n, m = len(audio), int(round(len(audio) * factor))
    spectrum = np.zeros(m // 2 + 1, np.complex128)
    source = np.fft.rfft(audio)
    keep = min(len(source), len(spectrum))
    spectrum[:keep] = source[:keep]
    return (np.fft.irfft(spectrum, m) * (m / max(n, 1))).astype(np.float32)


def speech_decision(fraction: float | None, min_speech_fraction: float = MIN_SPEECH_FRACTION) -> tuple[bool, str]:
    """(usable, reason) for a window's speech fraction: usable when it reaches `min_speech_fraction`."""
    if fraction is None:
        return False, "audio too short for speech detection"
    if fraction < min_speech_fraction:
        shown = math.floor(100 * fraction)  # rounded down: 9.7 % is not "10 %, below the 10 % needed"
        return False, (f"{NO_SPEECH_REASON} (speech in {shown} % of the window, below the "
                       f"{100 * min_speech_fraction:.0f} % needed)")
    return True, "ok"


__all__ = [
    "HIGH_PITCH_HZ",
    "MIN_SPEECH_FRACTION",
    "NO_SPEECH_REASON",
    "SPEECH_THRESHOLD",
    "ClipSpeech",
    "SileroSpeechDetector",
    "lower_pitch",
    "speech_decision",
    "vad_model_path",
    "voiced_pitch",
]
