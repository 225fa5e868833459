"""Media chores of the app, all with PyAV (no ffmpeg binary): fixing browser recordings, cutting a clip's first
part, the sound and face crops of one window for the detail plots, and the note the upload box shows when the
browser cannot preview a clip.

    has_duration(path)                         # False for a browser's MediaRecorder webm
    remux(path, out_path, max_seconds=None)    # copy the streams into a file that states its duration
    window_media(path, window, config, duration_s)  # (audio float32 (n,) at 16 kHz or None, face crops by frame)
    gr.HTML(PREVIEW_NOTE, html_template=PREVIEW_NOTE_TEMPLATE, js_on_load=PREVIEW_NOTE_JS)   # under the upload box
"""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger("fer_app.media")
AV_TIME_BASE = 1_000_000


def has_duration(path) -> bool:
    """Whether the container header states a duration (players need it to show the length and seek)."""
    try:
        with av.open(str(path)) as container:
            return container.duration is not None and container.duration > 0
    except av.error.FFmpegError:
        return False


def remux(path, out_path, max_seconds: float | None = None) -> str:
    """Copy the first video and audio streams of `path` into `out_path` without re-encoding.

    The muxer writes the duration (and cues) that a live browser recording lacks. With `max_seconds`, packets
    that start at or after that time are left out (the clip's first part; the cut falls on a packet boundary).
    Returns `out_path`.
    """
    out_path = str(out_path)
    fmt = "webm" if Path(out_path).suffix.lower() == ".webm" else "mp4"
    with av.open(str(path)) as source, av.open(out_path, mode="w", format=fmt) as out:
        origin = source.start_time / AV_TIME_BASE if source.start_time and source.start_time > 0 else 0.0
        streams, mapping = [], {}
        for stream in list(source.streams.video[:1]) + list(source.streams.audio[:1]):
            mapping[stream.index] = out.add_stream_from_template(stream)
            streams.append(stream)
        for packet in source.demux(*streams):
            if packet.dts is None and packet.pts is None:
                continue  # the flush packet at the end of each stream
            if max_seconds is not None and packet.pts is not None and packet.time_base is not None:
                if float(packet.pts * packet.time_base) - origin >= max_seconds:
                    continue
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)
    return out_path


def window_media(path, window: dict, config, duration_s: float) -> tuple[np.ndarray | None, list[np.ndarray | None]]:
    """The sound of `window` (float32 `(n,)` at `config.sampling_rate`, None without audio) and, for each of its
    sampled frames, the face crop the model saw (uint8 `(h, w, 3)`, None where no face was used)."""
    from fer_hf.media_fer import decode_window

    start, end = float(window["start_s"]), float(window["end_s"])
    media = decode_window(str(path), start, end, len(window["frames"]) or config.num_frames, duration_s,
                          config.sampling_rate, 640)
    crops: list[np.ndarray | None] = []
    for k, frame in enumerate(window["frames"]):
        box, image = frame.get("crop_box"), media.frames[k] if media.frames is not None else None
        if not frame.get("face_found") or box is None or image is None:
            crops.append(None)
            continue
        x0, y0, x1, y1 = (int(round(v / media.scale)) for v in box)
        h, w = image.shape[:2]
        crop = image[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
        crops.append(np.ascontiguousarray(crop) if crop.size else None)
    return media.audio, crops


# The upload box plays the clip in the browser, which reads only some formats (e.g. not FLV, AVI or HEVC); the
# analysis decodes many more with PyAV. For a clip the browser cannot play, its <video> fires "error", which Gradio
# turns into a red "Error" status and an error toast. This listener (capture phase, on the document) sees the event
# before the element's own listener and stops it there, and the note says what is true instead; a clip that loads,
# or a cleared box (`PREVIEW_NOTE_HIDE_JS` on the upload's `clear`), hides the note again.
PREVIEW_NOTE = ("Your browser cannot preview this video format. The clip will still be analysed: press "
                "“Analyse emotions”.")
PREVIEW_NOTE_TEMPLATE = '<div class="fer-message fer-info fer-preview-note" hidden>${value}</div>'
PREVIEW_NOTE_JS = """
const note = element.querySelector('.fer-preview-note');
const inUploadBox = (event) => event.target instanceof HTMLMediaElement && event.target.closest('#video-input');
document.addEventListener('error', (event) => {
  if (!inUploadBox(event)) return;
  event.stopImmediatePropagation();
  note.hidden = false;
}, true);
for (const name of ['loadeddata', 'emptied']) {
  document.addEventListener(name, (event) => { if (inUploadBox(event)) note.hidden = true; }, true);
}
"""
PREVIEW_NOTE_HIDE_JS = "() => { document.querySelectorAll('.fer-preview-note').forEach(n => { n.hidden = true; }); }"


__all__ = ["PREVIEW_NOTE", "PREVIEW_NOTE_HIDE_JS", "PREVIEW_NOTE_JS", "PREVIEW_NOTE_TEMPLATE", "has_duration",
           "remux", "window_media"]
