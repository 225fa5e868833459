"""Typed errors of the package: every problem with user input surfaces as one of these.

Each message is meant for a person (the Gradio app shows it verbatim), so it says what was
wrong and, where there is one, what to do about it.
"""


class FERError(Exception):
    """Base class of every error this package raises on purpose."""


class FERInputError(FERError, ValueError):
    """The input given to the processor or the model cannot be used."""


class MediaNotFoundError(FERInputError, FileNotFoundError):
    """The media file does not exist."""


class EmptyMediaError(FERInputError):
    """The media file has zero bytes."""


class MediaDecodeError(FERInputError):
    """The file is not a readable audio/video container (corrupt, truncated, an image or a text file)."""


class NoUsableModalityError(FERInputError):
    """Neither a usable audio track nor a detectable face: nothing to classify."""

    @classmethod
    def in_clip(cls, source: str, audio_reason: str, video_reason: str) -> "NoUsableModalityError":
        """The error for a clip none of whose windows can be classified (the reasons of its first window)."""
        return cls(f"nothing to classify in {source!r}: audio: {audio_reason}; video: {video_reason}. "
                   "Give a clip with speech or a visible face.")


class UnsupportedSampleRateError(FERInputError):
    """Decoded audio was given at a sampling rate the feature extractor does not accept."""


class MediaTooLongError(FERInputError):
    """The clip is longer than the configured cap."""


class CorruptCheckpointError(FERError, ValueError):
    """Saved weights that cannot be used: an unreadable or truncated file, a pickle that would run code, or NaN /
    infinite values (a training run that diverged). Refused on load, on `--resume` and on export."""


class MediaTooLargeError(FERInputError):
    """The clip needs more decoding work than the budget allows (frame size, frame count, pixels or audio)."""


class AnalysisCancelledError(FERError):
    """The work was stopped on purpose: its client cancelled or left, or it ran past its time budget."""


class WorkTimeExceededError(AnalysisCancelledError, FERInputError):
    """The analysis ran longer than the time budget of one request (a person is told so)."""


class LiveSessionClosedError(FERError):
    """A live session was asked for work after it was stopped (Stop, the time limit, or the page was closed)."""


__all__ = [
    "FERError",
    "FERInputError",
    "MediaNotFoundError",
    "EmptyMediaError",
    "MediaDecodeError",
    "NoUsableModalityError",
    "UnsupportedSampleRateError",
    "MediaTooLongError",
    "CorruptCheckpointError",
    "MediaTooLargeError",
    "AnalysisCancelledError",
    "WorkTimeExceededError",
    "LiveSessionClosedError",
]
