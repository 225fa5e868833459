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
"""

from __future__ import annotations

import importlib.util
import logging
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

    def probabilities_between(self, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(chunk start times in s, probabilities) of the scored chunks inside [start_s, end_s)."""
        start, end = start_s * VAD_SAMPLING_RATE, end_s * VAD_SAMPLING_RATE
        inside = (self._starts >= start) & (self._starts < end)
        return self._starts[inside] / VAD_SAMPLING_RATE, self._probs[inside].copy()


def speech_decision(fraction: float | None, min_speech_fraction: float = MIN_SPEECH_FRACTION) -> tuple[bool, str]:
    """(usable, reason) for a window's speech fraction: usable when it reaches `min_speech_fraction`."""
    if fraction is None:
        return False, "audio too short for speech detection"
    if fraction < min_speech_fraction:
        return False, (f"{NO_SPEECH_REASON} (speech in {100 * fraction:.0f} % of the window, below the "
                       f"{100 * min_speech_fraction:.0f} % needed)")
    return True, "ok"


__all__ = [
    "MIN_SPEECH_FRACTION",
    "NO_SPEECH_REASON",
    "SPEECH_THRESHOLD",
    "ClipSpeech",
    "SileroSpeechDetector",
    "speech_decision",
    "vad_model_path",
]
