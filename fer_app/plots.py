"""What the app shows, read from the result type (`docs/architecture.md`): headline, captions and figures.

    headline_markdown(result), legend_html(labels)
    timeline_figure(result)                        # emotions over the clip's real time axis, spans shaded
    segment_figure(window, labels), audio_figure(window, audio, sr), faces_figure(window, crops)
    report_csv(result)

Nothing here computes a probability, a label or a time: they come from the result. Figures are
`matplotlib.figure.Figure` objects built without pyplot (no global state, safe across request threads).
"""

from __future__ import annotations

import csv
import io
import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .overlay import EMOTION_COLOURS  # noqa: E402

MAX_FACE_TILES = 4
# The timeline is drawn for a phone first: TIMELINE_INCHES wide at 100 dpi with no text under TIMELINE_FONT_PT, so a
# 390 px screen (the image shrunk to about 350 px) still shows its smallest text about 9 px high.
TIMELINE_INCHES = (5.6, 4.4)
TIMELINE_FONT_PT = 11
FACE_TILE_PX = 160  # face crops are shown at this side, whatever the model's crop size (32 px for `tiny`)
SPAN_STYLES = {  # shaded spans of the timeline: colour and the words of the legend
    "left_out": ("#616161", "left out (no usable audio or face)"),
    "no_face": ("#e53935", "no face used"),
    "no_speech": ("#1e88e5", "no speech used"),
}
CAPTIONS = {
    "timeline": "Each line is one emotion's probability over the clip, from the window centred nearest that "
                "moment (3 s windows, one every second). Shaded: where no face or no speech was used, or nothing.",
    "segments": "How much the classifier relied on each part of the window, relative to an even split "
                "(1 = even). The colour is that part's own most likely emotion.",
    "audio": "The sound of the window (spectrogram) with where the model listened (white line: attention per "
             "80 ms audio frame).",
    "faces": "The face at the moments the classifier relied on most, with the patches the model weighed most "
             "(bright = more important; patches it dropped are dark).",
}


def colour(labels: list[str], label: str) -> str:
    return EMOTION_COLOURS[labels.index(label) % len(EMOTION_COLOURS)]


# ----------------------------------------------------------------------------------------------------------------
# Words
def _pct(p: float) -> str:
    return f"{100 * p:.0f} %"


def headline_markdown(result: dict, done: int | None = None, total: int | None = None) -> str:
    """The answer in words: the emotion, or "no clear emotion" with the top candidates below the margin."""
    probs = result.get("probabilities") or {}
    if not probs:
        return "### Analysing…" + (f" {done} of {total} windows" if total else "")
    ranked = sorted(probs, key=probs.get, reverse=True)
    margin = float(result.get("confidence_margin", 0.0))
    n = len(result.get("windows", []))
    whole = f"over {n} window{'s' if n != 1 else ''} ({result.get('aggregation', 'aggregate')})"
    if result.get("confident") and result.get("top_label"):
        top = result["top_label"]
        lines = [f"## {top} <small>{_pct(probs[top])}</small>",
                 f"Whole-clip answer {whole}; next: {ranked[1]} {_pct(probs[ranked[1]])}."]
    else:
        gap = probs[ranked[0]] - probs[ranked[1]]
        candidates = ", ".join(f"{label} {_pct(probs[label])}" for label in ranked[:3])
        lines = ["## No clear emotion",
                 f"Top candidates: {candidates}. The first two differ by {_pct(gap)}, less than the "
                 f"{_pct(margin)} margin the app asks for before naming one. Whole-clip answer {whole}."]
    if total and done is not None and done < total:
        lines.append(f"*Still analysing: {done} of {total} windows done.*")
    lines.append(modality_summary(result))
    skipped = result.get("skipped_windows") or []
    if skipped:
        spans = ", ".join(f"{w['start_s']:.1f}–{w['end_s']:.1f} s" for w in skipped)
        lines.append(f"Left out (neither usable audio nor a face): {spans}.")
    lines += [f"Note: {note}." for note in result.get("notes") or []]
    return "\n\n".join(lines)


def modality_summary(result: dict) -> str:
    """One sentence a person understands, e.g. "Audio only: no face found in any of 8 frames"."""
    windows = result.get("windows") or []
    if not windows:
        return ""
    n = len(windows)
    audio_n = sum(bool(w["modalities"]["audio"]) for w in windows)
    video_n = sum(bool(w["modalities"]["video"]) for w in windows)
    if audio_n == n and video_n == n:
        return "Voice and face both used" + (" in every window." if n > 1 else ".")
    if video_n == 0:
        return f"Voice only: {windows[0]['modalities']['video_reason']}."
    if audio_n == 0:
        return f"Face only: {windows[0]['modalities']['audio_reason']}."
    return f"Voice used in {audio_n} of {n} windows, face in {video_n} of {n}."


def legend_html(labels: list[str]) -> str:
    chips = "".join(
        f'<span class="fer-chip"><span class="fer-swatch" style="background:{colour(labels, label)}"></span>'
        f"{label}</span>" for label in labels)
    return f'<div id="emotion-legend" class="fer-legend">Colours: {chips}</div>'


BANNER_TEXT = "#ffffff"
BANNER_BACKGROUNDS = {"untrained": "#b71c1c", "synthetic": "#bf360c"}  # both >= 4.5:1 against the white text


def provenance_banner(summary: str, status: str) -> str:
    """Red for an untrained model, dark orange for a smoke-test (synthetic) one; empty for a trained model.

    The text colour is set on every element: Gradio's `.prose *` rule would paint the bold title dark grey."""
    if status == "trained" and "synthetic" not in summary:
        return ""
    background = BANNER_BACKGROUNDS["untrained" if status != "trained" else "synthetic"]
    return (f'<div id="untrained-banner" class="fer-banner" style="background:{background};color:{BANNER_TEXT}">'
            f'<b style="color:{BANNER_TEXT}">⚠️ {summary[:1].upper()}{summary[1:]}</b></div>')


# ----------------------------------------------------------------------------------------------------------------
# Time spans
def owned_spans(result: dict) -> list[dict]:
    """Each window (classified or left out) with the span of the clip it speaks for: the moments nearer to its
    centre than to any other window's, inside its bounds. Together they cover 0 .. the clip end."""
    items = [dict(w, left_out=False) for w in result.get("windows", [])]
    items += [dict(w, left_out=True) for w in result.get("skipped_windows", [])]
    items.sort(key=lambda w: (w["start_s"] + w["end_s"]) / 2)
    centres = [(w["start_s"] + w["end_s"]) / 2 for w in items]
    end = float(result.get("duration_s") or (items[-1]["end_s"] if items else 0.0))
    spans = []
    for i, w in enumerate(items):
        a = 0.0 if i == 0 else max(w["start_s"], (centres[i - 1] + centres[i]) / 2)
        b = end if i == len(items) - 1 else min(w["end_s"], (centres[i] + centres[i + 1]) / 2)
        spans.append({"window": w, "from_s": a, "to_s": max(a, min(b, end))})
    return spans


def _merged(spans: list[dict], kind: str) -> list[tuple[float, float]]:
    def marked(w):
        if kind == "left_out":
            return w["left_out"]
        key = "video" if kind == "no_face" else "audio"
        return not w["left_out"] and not w["modalities"][key]

    runs: list[list[float]] = []
    for s in spans:
        if marked(s["window"]):
            if runs and abs(runs[-1][1] - s["from_s"]) < 1e-6:
                runs[-1][1] = s["to_s"]
            else:
                runs.append([s["from_s"], s["to_s"]])
    return [tuple(r) for r in runs]


def shaded_spans(result: dict) -> dict[str, list[tuple[float, float]]]:
    spans = owned_spans(result)
    return {kind: _merged(spans, kind) for kind in SPAN_STYLES}


# ----------------------------------------------------------------------------------------------------------------
# Figures
def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def message_figure(text: str, width: float = 7.0, height: float = 1.4) -> Figure:
    """A small figure that says why a plot is empty (e.g. no audio used)."""
    fig = _figure(width, height)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, wrap=True, color="#444444")
    return fig


def timeline_figure(result: dict) -> Figure:
    """One line per emotion over 0 .. the clip end (each window speaks for the span nearest its centre), with the
    spans without a face, without speech, or left out shaded and named in the legend (below the plot, so the figure
    stays narrow and its text readable on a phone)."""
    labels = result["labels"]
    end = float(result["duration_s"])
    spans = owned_spans(result)
    fig = _figure(*TIMELINE_INCHES)
    ax = fig.add_subplot()
    handles = []
    for kind, runs in shaded_spans(result).items():
        tint, words = SPAN_STYLES[kind]
        short = words.split(" (")[0]
        for a, b in runs:
            ax.axvspan(a, b, color=tint, alpha=0.18 if kind != "left_out" else 0.35, linewidth=0)
            if b - a >= 0.2 * end:
                ax.text((a + b) / 2, 0.985, short, ha="center", va="top", fontsize=TIMELINE_FONT_PT, color=tint,
                        transform=ax.get_xaxis_transform())
        if runs:
            handles.append(Patch(color=tint, alpha=0.35, label=short))
    classified = [s for s in spans if not s["window"]["left_out"]]
    for label in labels:
        xs, ys = [], []
        for s in classified:
            p = s["window"]["probabilities"][label]
            xs += [s["from_s"], s["to_s"], np.nan]
            ys += [p, p, np.nan]
        ax.plot(xs, ys, color=colour(labels, label), linewidth=2, label=label)
    lines = ax.get_lines()
    ax.set_xlim(0, end)
    top = max([s["window"]["probabilities"][lb] for s in classified for lb in labels] + [0.05])
    ax.set_ylim(0, min(1.0, top * 1.25 + 0.02))
    ax.set_xlabel("time in the clip (s)", fontsize=TIMELINE_FONT_PT)
    ax.set_ylabel("probability", fontsize=TIMELINE_FONT_PT)
    ax.tick_params(labelsize=TIMELINE_FONT_PT)
    ax.grid(alpha=0.25)
    ax.set_title(f"Emotions over time ({len(classified)} windows, {end:.1f} s)", fontsize=TIMELINE_FONT_PT + 1)
    fig.legend(handles=list(lines) + handles, loc="outside lower center", ncols=4, fontsize=TIMELINE_FONT_PT,
               frameon=False, handlelength=1.2, columnspacing=1.0)
    return fig


def segment_figure(window: dict, labels: list[str]) -> Figure:
    """The classifier's attention over the window's segments relative to an even split, coloured by each
    segment's own most likely emotion."""
    segments = window["segments"]
    n = len(segments)
    fig = _figure(7.0, 2.8)
    ax = fig.add_subplot()
    relative = [s["attention"] * n for s in segments]
    used = set()
    for s, value in zip(segments, relative):
        best = max(s["probabilities"], key=s["probabilities"].get)
        used.add(best)
        width = s["end_s"] - s["start_s"]
        ax.bar(s["start_s"], value, width=width * 0.92, align="edge", color=colour(labels, best),
               edgecolor="#555555", linewidth=0.6)
    ax.axhline(1.0, color="#333333", linewidth=0.8, linestyle="--")
    low, high = min(relative + [1.0]), max(relative + [1.0])
    pad = max(0.05, 0.25 * (high - low))
    ax.set_ylim(max(0.0, low - pad), high + pad)
    ax.set_xlim(window["start_s"], window["end_s"])
    ax.set_xlabel("time in the clip (s)")
    ax.set_ylabel("attention (1 = even)")
    ax.set_title(f"What the classifier relied on, {window['start_s']:.1f}–{window['end_s']:.1f} s", fontsize=10)
    ax.legend(handles=[Patch(color=colour(labels, lb), label=lb) for lb in labels if lb in used], fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _spectrogram(audio: np.ndarray, sr: int, n_fft: int = 400, hop: int = 160) -> np.ndarray:
    """Log power `(freq, time)` of a Hann-windowed STFT (25 ms windows, 10 ms hop at 16 kHz)."""
    if audio.size < n_fft:
        audio = np.pad(audio, (0, n_fft - audio.size))
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    return 10 * np.log10(power.T + 1e-10)


def audio_figure(window: dict, audio: np.ndarray | None, sampling_rate: int, frame_s: float) -> Figure:
    """The window's spectrogram with the audio attention (per encoder frame) drawn over it."""
    att = window.get("audio_attention")
    if not att or audio is None or audio.size == 0:
        return message_figure(f"No voice used in this window: {window['modalities']['audio_reason']}.")
    start = float(window["start_s"])
    spec = _spectrogram(np.asarray(audio, np.float32), sampling_rate)
    fig = _figure(7.0, 2.8)
    ax = fig.add_subplot()
    seconds = audio.size / sampling_rate
    vmax = float(spec.max())
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=vmax - 70, vmax=vmax,
              extent=(start, start + seconds, 0, sampling_rate / 2000))
    ax.set_ylabel("frequency (kHz)")
    ax.set_xlabel("time in the clip (s)")
    weights = np.asarray(att, np.float32)
    times = start + (np.arange(weights.size) + 0.5) * frame_s
    twin = ax.twinx()
    twin.step(times, weights, where="mid", color="white", linewidth=1.6)
    twin.set_ylim(0, max(float(weights.max()), 1e-6) * 1.15)
    twin.set_ylabel("attention")
    ax.set_xlim(start, window["end_s"])
    ax.set_title("Where the model listened", fontsize=10)
    return fig


def _frame_attention(window: dict) -> list[float]:
    """For each sampled frame, the classifier attention of the segment it lies in."""
    out = []
    for frame in window["frames"]:
        t = frame["time_s"]
        inside = [s["attention"] for s in window["segments"] if s["start_s"] <= t < s["end_s"]]
        out.append(max(inside) if inside else 0.0)
    return out


def faces_figure(window: dict, crops: list, labels: list[str] | None = None) -> Figure:
    """Up to 4 face crops where the classifier's attention is highest, with the ROI patch scores as a heat map."""
    import cv2

    roi = window.get("roi") or {}
    scores = roi.get("patch_scores") or []
    attention = _frame_attention(window)
    candidates = [k for k, c in enumerate(crops) if c is not None and k < len(scores)]
    if not candidates:
        return message_figure(f"No face used in this window: {window['modalities']['video_reason']}.")
    picks = sorted(sorted(candidates, key=lambda k: -attention[k])[:MAX_FACE_TILES])
    fig = _figure(1.8 * len(picks) + 0.9, 2.4)
    axes = fig.subplots(1, len(picks), squeeze=False)[0]
    image = None
    for ax, k in zip(axes, picks):
        ax.axis("off")
        crop = cv2.resize(crops[k], (FACE_TILE_PX, FACE_TILE_PX), interpolation=cv2.INTER_CUBIC)
        values = np.asarray(scores[k], np.float32)
        grid = int(round(values.size ** 0.5))
        kept = np.zeros(values.size, bool)
        kept[[i for i in (roi.get("top_patches") or [[]] * len(scores))[k] if 0 <= i < values.size]] = True
        kept = kept if kept.any() else np.ones(values.size, bool)
        lo, hi = float(values[kept].min()), float(values[kept].max())
        heat = np.ma.masked_where(~kept, (values - lo) / (hi - lo if hi > lo else 1.0)).reshape(grid, grid)
        ax.imshow(crop, extent=(0, 1, 1, 0))
        ax.imshow(np.zeros((grid, grid)), cmap="gray", alpha=np.where(kept, 0.0, 0.5).reshape(grid, grid),
                  extent=(0, 1, 1, 0), interpolation="nearest")
        image = ax.imshow(heat, cmap="inferno", alpha=0.5, vmin=0, vmax=1, extent=(0, 1, 1, 0),
                          interpolation="nearest")
        ax.set_title(f"{window['frames'][k]['time_s']:.2f} s · ×{attention[k] * len(window['segments']):.2f}",
                     fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="patch importance")
    kept_n = len((roi.get("top_patches") or [[]])[picks[0]])
    fig.suptitle(f"Face at the most relied-on moments ({kept_n} of {grid * grid} patches kept per frame)",
                 fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------------------------
def label_value(probabilities: dict, top_label, path):
    """The value of a `gr.Label` for an answer: the probabilities when `top_label` names the emotion; below the
    confidence margin (`top_label` None) a JSON file at `path` whose heading reads "No clear emotion" (gr.Label
    takes any other heading than its top class only from such a file). Returns what to give the Label."""
    if top_label is not None:
        return probabilities
    ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])
    path.write_text(json.dumps({"label": "No clear emotion",
                                "confidences": [{"label": k, "confidence": v} for k, v in ranked]}))
    return str(path)


def report_csv(result: dict) -> str:
    """The numbers of `result` in long format: one row per (window, quantity, time, name)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["table", "window", "window_start_s", "window_end_s", "time_s", "name", "value"])
    for name, p in (result.get("probabilities") or {}).items():
        writer.writerow(["clip_probability", "", "", "", "", name, f"{p:.6f}"])
    for w in result.get("windows", []):
        base = [w["index"], w["start_s"], w["end_s"]]
        centre = round((w["start_s"] + w["end_s"]) / 2, 4)
        for name, p in w["probabilities"].items():
            writer.writerow(["window_probability", *base, centre, name, f"{p:.6f}"])
        for s in w["segments"]:
            mid = round((s["start_s"] + s["end_s"]) / 2, 4)
            writer.writerow(["segment_attention", *base, mid, "", f"{s['attention']:.6f}"])
        for f in w["frames"]:
            writer.writerow(["face_found", *base, f["time_s"], "", int(bool(f["face_found"]))])
    for w in result.get("skipped_windows", []):
        writer.writerow(["left_out", w["index"], w["start_s"], w["end_s"], "", w.get("video_reason", ""), ""])
    return out.getvalue()


__all__ = ["CAPTIONS", "audio_figure", "faces_figure", "headline_markdown", "label_value", "legend_html",
           "modality_summary", "owned_spans", "provenance_banner", "report_csv", "segment_figure", "shaded_spans",
           "timeline_figure"]
