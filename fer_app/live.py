"""The app's Live tab: webcam + microphone in the browser, emotions from a rolling 3 s window as the person speaks.

    from fer_app import live
    live.add_live_tab(demo, model, processor, model_info)     # inside `with gr.Blocks() as demo:`

Streaming uses Gradio's own streaming inputs (no WebRTC component): `gr.Image(sources=["webcam"], streaming=True)`
sends a camera snapshot every `FRAME_EVERY_S` (only once the previous one was received), `gr.Audio(sources=
["microphone"], streaming=True)` sends WAV chunks every `AUDIO_EVERY_S`. Their handlers only buffer the data
(`fer_app.streaming.LiveSession`: time alignment, one frame per frame bin, bounded). A `gr.Timer` runs the
model: each tick classifies the newest window that has arrived, if it is at least `STEP_S` newer than the last
one (a tick with no window due puts the frames whose bins are final through the face front-end and SigLIP
ahead, so the next update only runs the audio and the fusion), with every event of that kind sharing one
worker (`concurrency_limit=1`), so two sessions take turns and a slow machine updates less often instead of
queueing work; when updates take longer than the step, the session's `LoadPolicy` (`fer_app/live_load.py`) uses every
other frame, then the int8 copy of the model, and the page says it is falling behind. Leaving the page (the Blocks
`unload` event) or pressing Stop frees the session; the session's results can be downloaded as the upload result
type (`FERClipResult` JSON, the same CSV as uploads) with a timing table.

Settings (environment): FER_LIVE_SECONDS (session limit, default 300), FER_LIVE_MAX_SESSIONS (default 2),
FER_LIVE_MAX_PER_CLIENT (sessions one client address may hold, default 1), FER_LIVE_IDLE_S (a session that has
sent nothing and asked for nothing for this long is ended, default 20 s), FER_LIVE_STEP_S (least time between two
updates, default 0.75 s), FER_LIVE_INT8 (0: never switch a session that falls behind to the int8 copy of the
model; default: switch, on the CPU). Every chunk is checked before it is stored (`fer_app.streaming.check_audio_chunk`:
a sampling rate from 8 to 192 kHz, at most 5 s, numbers; frames up to 4096 pixels a side; 256 MB per session).
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from fer_hf.errors_fer import FERInputError, LiveSessionClosedError

from . import plots
from .live_load import LoadPolicy
from .streaming import LiveAnalyzer, LiveSession, LiveUpdate


def live_unavailable_reason(environ=os.environ) -> str | None:
    """Why live mode cannot run on this host (None when it can).

    ZeroGPU attaches a GPU only inside a `spaces.GPU` call, which it runs in a forked worker process: whatever that
    call changes (a live session's frame cache, its results) stays in the worker and is lost, so a live session
    could never build on the previous update. CPU Spaces, dedicated GPUs and local machines run it in-process.
    """
    if str(environ.get("SPACES_ZERO_GPU", "")).lower() in ("1", "true", "yes"):
        return ("Live mode is not available on this ZeroGPU Space: ZeroGPU runs each GPU call in a separate "
                "process, which cannot keep a live session's frames and results between updates. Upload or record "
                "a clip instead, or run the app on a CPU Space, a dedicated GPU or your own machine.")
    return None


logger = logging.getLogger("fer_app.live")

SESSION_SECONDS = float(os.environ.get("FER_LIVE_SECONDS", "300"))
MAX_SESSIONS = int(os.environ.get("FER_LIVE_MAX_SESSIONS", "2"))
MAX_PER_CLIENT = int(os.environ.get("FER_LIVE_MAX_PER_CLIENT", "1"))
IDLE_S = float(os.environ.get("FER_LIVE_IDLE_S", "20"))
REAP_EVERY_S = 5.0
STEP_S = float(os.environ.get("FER_LIVE_STEP_S", "0.75"))
TICK_S = 0.25  # how often the page asks for a new result
FRAME_EVERY_S = 0.125  # camera snapshots: 8 per second, about three per frame bin of the realtime preset
AUDIO_EVERY_S = 0.25  # microphone chunk length
CHART_SECONDS = 60.0
SLOW_FACTOR = 1.5  # updates this much further apart than STEP_S: the page says the session is falling behind
LIVE_INT8 = os.environ.get("FER_LIVE_INT8", "auto").lower() not in ("0", "off", "no", "false")


# ----------------------------------------------------------------------------------------------------------------
class LiveRegistry:
    """Live sessions by Gradio session hash, each with its `LoadPolicy`: at most `max_sessions` at a time and
    `max_per_client` per client address. A session whose page has sent nothing (frames, sound, timer ticks) for
    `idle_s`, or that is `idle_s` past its time limit, is ended (`reap`: on every Start and every `REAP_EVERY_S` in
    a background thread), so abandoned sessions (a closed laptop, a script that only pressed Start) free their
    place."""

    def __init__(self, max_sessions: int, max_per_client: int = MAX_PER_CLIENT, idle_s: float = IDLE_S,
                 clock=time.monotonic):
        self.max_sessions, self.max_per_client, self.idle_s, self.clock = max_sessions, max_per_client, idle_s, clock
        self._sessions: dict[str, LiveSession] = {}
        self._loads: dict[str, LoadPolicy] = {}
        self._seen: dict[str, float] = {}
        self._clients: dict[str, str] = {}
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None

    def start(self, key: str, analyzer: LiveAnalyzer, client: str = "unknown") -> LiveSession:
        self.end(key)
        self.reap()
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise gr.Error(f"Live mode is busy: {len(self._sessions)} people are using it on this server, the "
                               "most it serves at once. Try again in a few minutes.", title="Live mode is busy",
                               print_exception=False)
            if sum(c == client for c in self._clients.values()) >= self.max_per_client:
                raise gr.Error("A live session is already open from your address (in another tab or window?). "
                               "Stop it or close its page, then press Start again.",
                               title="A live session is already open", print_exception=False)
            session = analyzer.new_session(session_seconds=SESSION_SECONDS)
            self._sessions[key] = session
            self._loads[key] = LoadPolicy(STEP_S, LIVE_INT8 and analyzer.int8_possible)
            self._seen[key], self._clients[key] = self.clock(), client
            if self._reaper is None or not self._reaper.is_alive():
                self._reaper = threading.Thread(target=self._reap_forever, name="fer-live-reaper", daemon=True)
                self._reaper.start()
            return session

    def touch(self, key: str | None) -> None:
        """The page of session `key` sent something: it is still there."""
        with self._lock:
            if key in self._seen:
                self._seen[key] = self.clock()

    def reap(self) -> list[str]:
        """End the sessions that are idle for `idle_s` or `idle_s` past their limit; returns their keys."""
        now = self.clock()
        with self._lock:
            gone = [k for k, s in self._sessions.items()
                    if now - self._seen.get(k, now) > self.idle_s or s.now_s() > s.session_seconds + self.idle_s]
        for key in gone:
            if self.end(key) is not None:
                logger.info("live session ended: its page went quiet (%d running)", len(self))
        return gone

    def _reap_forever(self) -> None:
        while len(self):
            time.sleep(REAP_EVERY_S)
            try:
                self.reap()
            except Exception:  # the next round tries again
                logger.exception("live: ending idle sessions failed")

    def get(self, key: str | None) -> LiveSession | None:
        with self._lock:
            return self._sessions.get(key) if key else None

    def load(self, key: str | None) -> LoadPolicy | None:
        with self._lock:
            return self._loads.get(key) if key else None

    def end(self, key: str | None) -> LiveSession | None:
        """Remove the session and close it (waiting for an update in progress, which then goes to the download)."""
        with self._lock:
            session = self._sessions.pop(key, None) if key else None
            self._loads.pop(key, None)
            self._seen.pop(key, None)
            self._clients.pop(key, None)
        if session is not None:
            session.close()
        return session

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._sessions)


REGISTRY = LiveRegistry(MAX_SESSIONS)


def client_address(request) -> str:
    """The client's address as the server sees it (behind a proxy: the proxy's, unless it forwards it)."""
    client = getattr(request, "client", None)
    return str(getattr(client, "host", None) or "unknown")
_TEMP = Path(tempfile.mkdtemp(prefix=f"fer_live_{os.getpid()}_"))
atexit.register(shutil.rmtree, _TEMP, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# What the page shows
def modalities_markdown(update: LiveUpdate | None) -> str:
    """Whether the face and the voice were used, in words (emoji marks render as boxes without an emoji font)."""
    if update is None:
        return "Face: – · Speech: –"
    m = update.modalities
    face = f"used ({m['face_frames']} of {m['frames']} frames)" if m["video"] else f"not used: {m['video_reason']}"
    fraction = m.get("speech_fraction")
    heard = "" if fraction is None else f"speech in {100 * fraction:.0f} % of the window"
    speech = (f"used ({heard})" if heard else "used") if m["audio"] else f"not used: {m['audio_reason']}"
    return f"**Face:** {face}  ·  **Speech:** {speech}"


def _label_path(key: str) -> Path:
    return _TEMP / f"label_{abs(hash(key))}.json"


def label_output(update: LiveUpdate, key: str):
    """The probabilities panel's value: its heading names the top emotion only when the window's answer is clear
    (the confidence margin), otherwise "No clear emotion" (one file per session, overwritten)."""
    return plots.label_value(update.probabilities, update.top_label, _label_path(key))


def status_markdown(session: LiveSession, note: str = "", load: LoadPolicy | None = None,
                    int8_ready: bool = True) -> str:
    """The status panel: time, updates, rate and latency, the falling-behind state and what is left out."""
    s = session.stats()
    lines = [f"**Live** · {s['elapsed_s']:.0f} s of {session.session_seconds:.0f} s "
             f"({s['time_left_s']:.0f} s left) · {s['updates']} updates"]
    recent = session.recent_updates(10.0)
    if recent:
        lines[0] += f" · results until {recent[-1].end_s:.2f} s"
    reduction = load.reduction(session.num_frames, int8_ready) if load is not None else ""
    if len(recent) >= 2:
        every = (recent[-1].produced_s - recent[0].produced_s) / (len(recent) - 1)
        lines.append(f"Updating every {every:.2f} s; capture → result {s['latency_p50_s']:.2f} s "
                     f"(p95 {s['latency_p95_s']:.2f} s)")
        behind = every > SLOW_FACTOR * STEP_S or (load is not None and load.falling_behind)
        if behind and not session.stopped:
            lines[0] = lines[0].replace("**Live**", "**Live · falling behind**", 1)
            work = sorted(u.compute_s for u in recent[-5:])[len(recent[-5:]) // 2]
            lines.append(f"⚠️ **Falling behind**: this machine is busy; an update takes {work:.1f} s of work and "
                         f"results come every {every:.1f} s instead of every {STEP_S:.2f} s. "
                         + (f"To catch up, {reduction}. " if reduction else "")
                         + "The windows in between are skipped (nothing is queued), so what you see is still the "
                         "latest 3 s.")
            reduction = ""
    if reduction and not session.stopped:
        lines.append(f"Keeping up with less work: {reduction} (the machine was busy).")
    lines.append(f"Camera: {s['frames_received']} frames received, {s['frames_kept']} kept (one per "
                 f"{session.bin_s * 1000:.0f} ms) · Microphone: {s['audio_chunks']} chunks"
                 + (f", {s['audio_gaps']} gap(s) of lost sound ({s['audio_gap_s']:.1f} s)" if s["audio_gaps"] else ""))
    if note:
        lines.append(note)
    return "\n\n".join(lines)


CHART_TYPES = {"time_s": "float64", "emotion": "str", "probability": "float64"}


def chart_frame(session: LiveSession | None, labels: list[str]) -> pd.DataFrame:
    """Long table for the line plot: one row per (update, emotion) over the last minute.

    The page builds the chart's encoding once, from the first value it gets (later values only swap the data): the
    colour's type from the `emotion` column's type and its domain from the emotions present. So a table without
    updates still has text `emotion`s, one row per emotion with no probability (not drawn): an empty float column
    made the colour a number scale (legend "-Infinity") and an empty domain drew no line at all."""
    rows = [] if session is None else [(u.end_s, label, float(u.probabilities[label]))
                                       for u in session.recent_updates(CHART_SECONDS) for label in labels]
    rows = rows or [(0.0, label, float("nan")) for label in labels]
    return pd.DataFrame(rows, columns=list(CHART_TYPES)).astype(CHART_TYPES)


def chart_update(session: LiveSession, labels: list[str]):
    frame = chart_frame(session, labels)
    last = float(frame["time_s"].max()) if len(frame) else 0.0
    return gr.LinePlot(value=frame, x_lim=[max(0.0, last - CHART_SECONDS), max(CHART_SECONDS, last)])


def timing_csv(session: LiveSession) -> str:
    """One row per update: window bounds on the session clock, capture -> result latency, compute, cache use."""
    out = io.StringIO()
    writer = csv.writer(out)
    fields = ["index", "start_s", "end_s", "latency_s", "compute_s", "new_frames", "reused_frames", "produced_s",
              "frame_stride", "precision"]
    writer.writerow(fields)
    for update in session.updates:
        row = update.timing()
        writer.writerow([row[f] for f in fields])
    return out.getvalue()


def write_downloads(session: LiveSession) -> list[str] | None:
    """The session as the upload result type: `live_session.json` (a `FERClipResult`, source "live", window
    bounds on the session clock; per-patch grids left out), `live_session.csv` (the same long table as uploads)
    and `live_session_timing.csv` (latency and compute per update)."""
    result = session.result()
    if result is None:
        return None
    folder = Path(tempfile.mkdtemp(dir=_TEMP))
    data = result.to_dict(compact=True)
    paths = [folder / "live_session.json", folder / "live_session.csv", folder / "live_session_timing.csv"]
    paths[0].write_text(json.dumps(data, indent=1))
    paths[1].write_text(plots.report_csv(data))
    paths[2].write_text(timing_csv(session))
    return [str(p) for p in paths]


# ----------------------------------------------------------------------------------------------------------------
# The tab
# The streams are started by clicking the components' own buttons, so the person presses one Start button.
_START_JS = """
async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const cam = document.querySelector('#live-camera');
  const access = [...cam.querySelectorAll('button')].find((b) =>
      !b.classList.contains('upload-container') && !b.classList.contains('capture-button') &&
      !b.getAttribute('aria-label'));
  if (access) access.click();
  const mic = document.querySelector('#live-microphone button.record-button');
  if (mic) mic.click();
  for (let i = 0; i < 100; i++) {
    const rec = cam.querySelector('button.capture-button');
    if (rec && !rec.querySelector("[title='stop recording']")) { rec.click(); break; }
    if (rec) break;
    await sleep(100);
  }
}
"""
_STOP_JS = """
() => {
  const cam = document.querySelector('#live-camera button.capture-button');
  if (cam && cam.querySelector("[title='stop recording']")) cam.click();
  const mic = document.querySelector('#live-microphone button.stop-button');
  if (mic) mic.click();
}
"""


def add_live_tab(demo: gr.Blocks, model, processor, model_info: dict | None = None) -> dict:
    """Build the Live tab inside `demo` (call it within `with gr.Blocks() as demo:`). Returns its components."""
    analyzer = LiveAnalyzer(model, processor)
    labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    trained = bool((model_info or {}).get("trained", False))

    unavailable = live_unavailable_reason()

    def analyse(session: LiveSession, window):
        return analyzer.analyze(session, window)

    def prefetch(session: LiveSession):
        return analyzer.prefetch(session)

    def on_start(request: gr.Request):
        if unavailable:
            raise gr.Error(unavailable, title="Live mode is not available here", print_exception=False)
        REGISTRY.start(request.session_hash, analyzer, client_address(request))
        logger.info("live session started (%d running)", len(REGISTRY))
        return (gr.Timer(active=True), gr.Button(interactive=False), gr.Button(interactive=True),
                "Starting the camera and the microphone…", None, None, modalities_markdown(None),
                gr.LinePlot(value=chart_frame(None, labels), x_lim=[0, CHART_SECONDS]))

    def on_frame(image, request: gr.Request):
        session = REGISTRY.get(request.session_hash)
        if session is None or image is None:
            return
        REGISTRY.touch(request.session_hash)
        try:
            session.push_frame(image)
        except FERInputError as exc:
            logger.warning("live: camera frame refused: %s", exc)

    def on_audio(chunk, request: gr.Request):
        session = REGISTRY.get(request.session_hash)
        if session is None or chunk is None:
            return
        REGISTRY.touch(request.session_hash)
        try:
            rate, samples = chunk
            session.push_audio(samples, rate)
        except (FERInputError, TypeError, ValueError) as exc:
            session.audio_errors += 1
            logger.warning("live: microphone chunk refused: %s", exc)

    def finish(request: gr.Request, note: str):
        session = REGISTRY.end(request.session_hash)
        _label_path(str(request.session_hash)).unlink(missing_ok=True)
        files = write_downloads(session) if session is not None else None
        status = status_markdown(session, note) if session is not None else note
        return gr.Timer(active=False), gr.Button(interactive=True), gr.Button(interactive=False), status, files

    def on_tick(request: gr.Request):
        skip = gr.skip()
        session = REGISTRY.get(request.session_hash)
        if session is None:
            return (skip,) * 3 + (skip, gr.Timer(active=False), skip, skip, skip)
        REGISTRY.touch(request.session_hash)
        if session.expired:
            timer, start, stop, status, files = finish(
                request, f"The session reached its {SESSION_SECONDS:.0f} s limit and stopped. Press Start for a "
                         "new one; download this one below.")
            return skip, skip, skip, status, timer, start, stop, files
        window = session.next_window(STEP_S)
        load = REGISTRY.load(request.session_hash)
        status = lambda note="": status_markdown(session, note, load, analyzer.int8_ready)  # noqa: E731
        if window is None:  # nothing due: prepare the frames that are final, so the next update is quicker
            try:
                prefetch(session)
            except LiveSessionClosedError:  # Stop came meanwhile: its own message stands
                return (skip,) * 8
            except Exception:  # keep the session alive; the update itself will prepare what is missing
                logger.exception("live: preparing frames ahead failed")
            if session.updates_total == 0:
                waiting = "Waiting for the camera and the microphone (the first result needs 1 s of both)…"
                return skip, skip, skip, status(waiting), skip, skip, skip, skip
            return (skip,) * 8
        started = time.perf_counter()
        try:
            update = analyse(session, window)
        except LiveSessionClosedError:
            return (skip,) * 8
        except Exception:  # keep the session alive; the server log has the details
            if session.stopped:
                return (skip,) * 8
            logger.exception("live analysis failed")
            return skip, skip, skip, status("⚠️ The last analysis failed; retrying."), skip, skip, skip, skip
        if session.stopped:  # Stop came while this update ran: it is in the download; the page says "Stopped"
            return (skip,) * 8
        if update is None:
            skipped = session.engine.skipped[-1]  # the reasons the engine gave for leaving the window out
            note = (f"Nothing to analyse in the last 3 s: face: {skipped.video_reason}; "
                    f"speech: {skipped.audio_reason}.")
            return skip, skip, skip, status(note), skip, skip, skip, skip
        logger.debug("live update %d in %.2f s", update.index, time.perf_counter() - started)
        if load is not None and load.observe(update.compute_s, update.latency_s):
            session.frame_stride, session.int8 = load.frame_stride, load.int8
            if load.int8:
                analyzer.prepare_int8()  # built in the background; used from the first update after it is ready
            logger.info("live: session now at load level %d (%s)", load.level,
                        load.reduction(session.num_frames) or "every frame")
        return (label_output(update, str(request.session_hash)), modalities_markdown(update),
                chart_update(session, labels), status(), skip, skip, skip, skip)

    def on_stop(request: gr.Request):
        return finish(request, "Stopped. Download the session below, or press Start again.")

    def on_unload(request: gr.Request):
        _label_path(str(request.session_hash)).unlink(missing_ok=True)
        if REGISTRY.end(request.session_hash) is not None:
            logger.info("live session closed with its page (%d running)", len(REGISTRY))

    with gr.Tab("Live", id="live-tab", elem_id="live-tab"):
        gr.Markdown(
            "Press **Start** and allow the camera and the microphone: while you talk, the model looks at the last "
            f"{model.config.clip_seconds:.0f} s of your face and voice and updates the emotions about every "
            f"{STEP_S:.2f} s. A session lasts at most **{SESSION_SECONDS:.0f} s**; leaving the page ends it. "
            "Browsers give camera access only on https:// pages or on localhost. "
            "Nothing is recorded: frames and sound are kept only for the current window."
            + ("" if trained else "\n\n⚠️ **Untrained model: the live probabilities are meaningless.**")
            + (f"\n\n⛔ **{unavailable}**" if unavailable else "")
        )
        with gr.Row():
            with gr.Column(scale=2):
                camera = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera",
                                  elem_id="live-camera", webcam_options=gr.WebcamOptions(mirror=False))
                microphone = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone",
                                      elem_id="live-microphone")
                with gr.Row():
                    start = gr.Button("Start", variant="primary", elem_id="live-start", interactive=not unavailable)
                    stop = gr.Button("Stop", interactive=False, elem_id="live-stop")
                status = gr.Markdown("Press Start, then allow the camera and the microphone.", elem_id="live-status")
            with gr.Column(scale=3):
                probabilities = gr.Label(num_top_classes=len(labels), label="Emotions in the last 3 s",
                                         elem_id="live-probabilities")
                modalities = gr.Markdown(modalities_markdown(None), elem_id="live-modalities")
                chart = gr.LinePlot(value=chart_frame(None, labels), x="time_s", y="probability", color="emotion",
                                    color_map={label: plots.colour(labels, label) for label in labels},
                                    y_lim=[0, 1], x_lim=[0, CHART_SECONDS], x_title="seconds since Start",
                                    y_title="probability", label="The last minute", elem_id="live-chart")
                files = gr.File(label="This session (result JSON / CSV, timing CSV)", file_count="multiple",
                                interactive=False, elem_id="live-downloads")
        timer = gr.Timer(TICK_S, active=False)

    ingest = dict(outputs=None, time_limit=int(SESSION_SECONDS), concurrency_limit=None,
                  concurrency_id="live-ingest", show_progress="hidden", api_name=False)
    camera.stream(on_frame, inputs=[camera], stream_every=FRAME_EVERY_S, **ingest)
    microphone.stream(on_audio, inputs=[microphone], stream_every=AUDIO_EVERY_S, **ingest)
    # Start and Stop share the model's worker: a tick in progress is finished and sent before Stop runs, so nothing a
    # tick says can land after "Stopped" (and neither ever waits behind an upload's analysis)
    control = dict(api_name=False, concurrency_limit=1, concurrency_id="live-model")
    start.click(on_start, None, [timer, start, stop, status, files, probabilities, modalities, chart],
                **control).success(None, js=_START_JS)
    stop.click(on_stop, None, [timer, start, stop, status, files], **control).then(None, js=_STOP_JS)
    timer.tick(on_tick, None, [probabilities, modalities, chart, status, timer, start, stop, files],
               concurrency_limit=1, concurrency_id="live-model", show_progress="hidden", api_name=False)
    demo.unload(on_unload)
    return {"camera": camera, "microphone": microphone, "start": start, "stop": stop, "status": status,
            "probabilities": probabilities, "modalities": modalities, "chart": chart, "files": files,
            "timer": timer}


__all__ = ["REGISTRY", "LiveRegistry", "LoadPolicy", "add_live_tab", "live_unavailable_reason", "timing_csv",
           "write_downloads"]


if __name__ == "__main__":  # a quick look at the tab alone: python -m fer_app.live [--preset tiny]
    import argparse

    import torch

    from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor

    parser = argparse.ArgumentParser(description="The Live tab on its own, with an untrained model.")
    parser.add_argument("--preset", default="realtime")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.manual_seed(0)
    config = FERConfig.from_preset(args.preset)
    with gr.Blocks(title="Live emotions") as live_demo:
        add_live_tab(live_demo, FERForEmotionClassification(config).eval(), FERProcessor.from_model_config(config),
                     {"trained": False})
    live_demo.queue().launch()
