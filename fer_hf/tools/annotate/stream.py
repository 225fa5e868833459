"""One media file, decoded front to back, as chunks of model inputs: the worker side of `fer-annotate`.

    for message in file_chunks(processor, "talk.mp4", people="all", max_windows=None):
        message["kind"] == "chunk": message["seq"]: 0, 1, ... in the file; message["inputs"] {name: array (R, ...)}:
                                    R model rows (`processor.batch_rows`)
                                    message["rows"]: R row dicts (window, person_id, is_speaker, modalities)
                                    message["skipped"]: windows with neither usable audio nor a face
        message["kind"] == "end":   ok, chunks (how many were sent), windows, duration_s, people, seconds,
                                    peak_frames, notes (how the file was read, `MediaInfo.notes`; also logged);
                                    or ok False with error_type and error (the processor's message)

Windows are the processor's sliding windows (`media_fer.plan_windows`: `window_seconds`, `hop_seconds`, the
last one ending at the clip end; `max_windows` only when given) and each goes through `FERProcessor.window_row`
with one face session (one `FaceTrackRegistry`: clip-wide person ids) and one speech session per file: the
processor's own per-window code. Only the decoding differs from `processor.prepare(sliding_window=True)`: the
file is demuxed and decoded once, front to back (`media_stream_fer.stream_file` over the union of the windows'
frame times) instead of one seek per window, and a decoded frame or audio sample is dropped as soon as no later
window needs it. What a worker holds is therefore the frames of a window or two and one chunk of
`chunk_windows` windows, whatever the length of the file (`end["peak_frames"]` reports the most frames held).

`people="speaker"` gives one model row per window: the person the front-end chose (the speaker, else the largest,
most present face; `is_speaker` True). `people="all"` adds a row for every other face track of the window, with
that person's face and the window's shared audio (`is_speaker` False).
"""

from __future__ import annotations

import logging
import sys
import time
import traceback

import numpy as np

from fer_hf.errors_fer import FERError, FERInputError, NoUsableModalityError
from fer_hf.windows_fer import WindowInfo

logger = logging.getLogger(__name__)

CHUNK_WINDOWS = 4  # windows per chunk handed to the model side (each chunk holds their rows' model inputs)
PEOPLE = ("speaker", "all")


class _Clock:
    """Time spent computing in a generator, leaving out the time it waits at its `yield`s (back-pressure)."""

    def __init__(self):
        self.total, self._since = 0.0, time.perf_counter()

    def pause(self) -> None:
        self.total += time.perf_counter() - self._since

    def resume(self) -> None:
        self._since = time.perf_counter()


class _FileWindows:
    """The decoded frames and audio of one file that windows still need, and the windows they complete.

    Args:
        windows: `[(start_s, end_s), ...]` in time order.
        num_frames, sampling_rate: the processor geometry (`T` frames per window at the bin centres).
        duration_s, has_audio, has_video: from `probe_media`.
    """

    def __init__(self, windows, num_frames: int, sampling_rate: int, duration_s: float, has_audio: bool,
                 has_video: bool):
        from fer_hf.media_fer import frame_timestamps

        self.windows, self.T, self.sr, self.duration_s = windows, num_frames, sampling_rate, duration_s
        self.has_audio, self.has_video = has_audio, has_video
        self.targets = [frame_timestamps(s, e - s, num_frames) for s, e in windows]  # as decode_window computes them
        self.grid = np.unique(np.concatenate(self.targets))  # every frame time any window needs, increasing
        self.frames: dict = {}  # grid index -> StreamEvent (kept until no later window needs it)
        self.highest = -1  # highest grid index received
        self.any_frame = False
        self.chunks: list = []  # audio samples from `audio_offset` on (clip sample 0 is t = 0)
        self.audio_offset = self.audio_total = 0
        self.any_audio = False
        self.next = 0  # the next window to complete
        self.peak_frames = 0

    def push(self, event) -> None:
        if event.kind == "audio":
            self.chunks.append(event.samples)
            self.audio_total += event.samples.size
            self.any_audio = True
        else:
            self.frames[event.index] = event
            self.highest = max(self.highest, event.index)
            self.any_frame = True
            self.peak_frames = max(self.peak_frames, len(self.frames))

    def _indices(self, w: int) -> np.ndarray:
        return np.searchsorted(self.grid, self.targets[w])

    def ready(self, final: bool) -> bool:
        """Whether window `next` has all its frames and audio (`final`: the stream has ended)."""
        if self.next >= len(self.windows):
            return False
        if final:
            return True
        end = self.windows[self.next][1]
        frames_ok = not self.has_video or self.highest >= self._indices(self.next)[-1]
        audio_ok = not self.has_audio or self.audio_total >= round(min(end, self.duration_s) * self.sr)
        return frames_ok and audio_ok

    def _audio(self) -> np.ndarray:
        if len(self.chunks) != 1:
            self.chunks = [np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)]
        return self.chunks[0]

    def take(self):
        """`WindowMedia` of window `next` (as `media_fer.decode_window` would give it); then drop what only it
        and earlier windows needed."""
        from fer_hf.media_fer import WindowMedia

        w = self.next
        start, end = self.windows[w]
        targets = self.targets[w]
        frames, valid, scale, source_times = None, np.zeros(self.T, bool), 1.0, None
        if self.has_video and self.any_frame:
            entries = [self.frames.get(int(i)) for i in self._indices(w)]
            valid = np.array([e is not None for e in entries]) & (targets < self.duration_s + 1e-6)
            frames = [e.image if ok else None for e, ok in zip(entries, valid)]
            scale = next((e.scale for e in entries if e is not None), 1.0)
            source_times = np.array([e.source_time_s if ok else np.nan for e, ok in zip(entries, valid)])
        audio = None
        if self.has_audio and self.any_audio:
            a0 = round(start * self.sr) - self.audio_offset
            real = max(0, round((min(end, self.duration_s) - start) * self.sr))
            audio = self._audio()[a0: a0 + min(real, round((end - start) * self.sr))].copy()
        self.next += 1
        if self.next < len(self.windows):
            first = int(self._indices(self.next)[0])
            for j in [j for j in self.frames if j < first]:
                del self.frames[j]
            keep_from = round(self.windows[self.next][0] * self.sr)
            buffered = self._audio()
            cut = min(buffered.size, max(0, keep_from - self.audio_offset))
            self.chunks, self.audio_offset = [buffered[cut:]], self.audio_offset + cut
        else:
            self.frames, self.chunks = {}, []
        return WindowMedia(start, end, audio, frames, targets, valid, scale, source_times)


def _row_meta(info: WindowInfo, is_speaker: bool) -> dict:
    """The table fields of one model row (a window, and the person whose face it holds)."""
    return {
        "window_index": info.window_index, "start_s": info.window_start_s, "end_s": info.window_end_s,
        "person_id": info.person["track_id"] if info.video_used else None, "is_speaker": is_speaker,
        "audio_used": info.audio_used, "video_used": info.video_used,
        "audio_reason": info.audio_reason, "video_reason": info.video_reason,
        "speech_fraction": info.speech_fraction,
        "face_frames": sum(b is not None for b in info.face_boxes),
        "frames": sum(t is not None for t in info.frame_source_times_s),
    }


def _window_rows(row: dict, people: str) -> list[tuple[dict, bool]]:
    """(processor row, is_speaker) for the model: the chosen person's row, and with `people="all"` every other
    person's; rows with neither modality are left out (the window is then a skipped row)."""
    out = [(row, True)]
    if people == "all":
        chosen = row["info"].person["track_id"]
        out += [(p, False) for p in row.get("people", []) if p["info"].person["track_id"] != chosen]
    return [(r, s) for r, s in out if r["info"].audio_used or r["info"].video_used]


def _chunk(processor, window_s: float, seq: int, rows: list, metas: list, skipped: list) -> dict:
    inputs = {}
    if rows:
        batch = processor.batch_rows(rows, window_seconds=window_s, return_tensors="np")
        inputs = {name: np.asarray(batch[name]) for name in processor.model_input_names if name in batch}
    return {"kind": "chunk", "seq": seq, "inputs": inputs, "rows": metas, "skipped": skipped}


def file_chunks(processor, path: str, people: str = "speaker", max_windows: int | None = None,
                chunk_windows: int = CHUNK_WINDOWS):
    """Yield the chunks of `path`, then one end message (see the module docstring). Never raises for a bad file:
    its problem is the end message (`ok` False), after which the chunks already yielded are void."""
    from fer_hf.media_fer import plan_windows, probe_media
    from fer_hf.media_stream_fer import stream_file

    if people not in PEOPLE:
        raise FERInputError(f"--people must be one of {list(PEOPLE)}, got {people!r}")
    clock = _Clock()
    sent = 0
    try:
        info = probe_media(path, processor.max_duration_s)
        g = processor.geometry
        window_s = processor.window_length(processor.window_seconds)
        windows = plan_windows(info.duration_s, window_s, True, processor.hop_seconds,
                               max_windows if max_windows is not None else sys.maxsize)
        state = _FileWindows(windows, g.num_frames, g.sampling_rate, info.duration_s, info.has_audio,
                             info.has_video)
        faces = processor.video_processing.face_session()  # one per file: clip-wide person ids
        speech = processor.audio_processing.speech_session()  # one per file, as the processor's
        rows, metas, skipped, in_chunk, first_skip, usable = [], [], [], 0, None, False
        for note in info.notes:
            logger.warning("%s: %s", path, note)
        events = stream_file(path, state.grid, g.sampling_rate, processor.video_processing.decode_max_side,
                             info.duration_s, info.timing)
        final = False
        while True:
            if not state.ready(final):
                if final:
                    break
                event = next(events, None)
                if event is None:
                    final = True
                else:
                    state.push(event)
                continue
            w = state.next
            row = processor.window_row(state.take(), faces=faces, speech=speech, all_people=people == "all")
            for r in (row, *row.get("people", [])):
                r["info"].source, r["info"].clip_index, r["info"].window_index = path, 0, w
                r["info"].duration_s = round(info.duration_s, 6)
            picked = _window_rows(row, people)
            if not picked or not picked[0][1]:  # the chosen person's row has neither modality: a skipped window
                i = row["info"]
                skip = {"window_index": w, "start_s": i.window_start_s, "end_s": i.window_end_s,
                        "audio_reason": i.audio_reason, "video_reason": i.video_reason,
                        "speech_fraction": i.speech_fraction}
                skipped.append(skip)
                first_skip = first_skip or skip
            usable = usable or bool(picked and picked[0][1])
            rows += [r for r, _ in picked]
            metas += [_row_meta(r["info"], s) for r, s in picked]
            in_chunk += 1
            if in_chunk >= chunk_windows:
                message = _chunk(processor, window_s, sent, rows, metas, skipped)
                rows, metas, skipped, in_chunk = [], [], [], 0
                sent += 1
                clock.pause()
                yield message
                clock.resume()
        if in_chunk:
            message = _chunk(processor, window_s, sent, rows, metas, skipped)
            sent += 1
            clock.pause()
            yield message
            clock.resume()
        if not usable:
            raise NoUsableModalityError.in_clip(path, first_skip["audio_reason"], first_skip["video_reason"])
        clock.pause()
        yield {"kind": "end", "ok": True, "chunks": sent, "windows": len(windows), "duration_s": info.duration_s,
               "people": len(faces.track_summaries()), "seconds": clock.total, "peak_frames": state.peak_frames,
               "notes": info.notes}
    except FERError as exc:
        clock.pause()
        yield {"kind": "end", "ok": False, "error_type": type(exc).__name__, "error": str(exc), "chunks": sent,
               "seconds": clock.total}
    except Exception as exc:  # a bug or a library error on a strange file: still one error row, never a stop
        logger.debug("unexpected error on %s:\n%s", path, traceback.format_exc())
        clock.pause()
        yield {"kind": "end", "ok": False, "error_type": type(exc).__name__, "error": f"{type(exc).__name__}: {exc}",
               "chunks": sent, "seconds": clock.total}


__all__ = ["CHUNK_WINDOWS", "PEOPLE", "file_chunks"]
