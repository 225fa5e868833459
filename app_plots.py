"""What the app shows: the numbers behind each plot (one JSON-able dict) and the matplotlib figures.

    report = build_report(outputs, clip_info, config, model_info, timeline)   # numbers, JSON-able
    segment_figure(window), audio_figure(window), faces_figure(window, faces), timeline_figure(report)
    report_csv(report)                                                         # the same numbers, one row each

Figures are `matplotlib.figure.Figure` objects built without pyplot (no global state, safe across request threads);
the Agg backend renders them to PNG for the browser.
"""

from __future__ import annotations

import csv
import io

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# One colour per emotion, in class order (neutral, calm, happy, sad, angry, fearful, disgust, surprised).
EMOTION_COLOURS = ("#9e9e9e", "#80cbc4", "#fdd835", "#42a5f5", "#e53935", "#8e24aa", "#6d8b3a", "#fb8c00")
MAX_FACE_TILES = 8
FACE_TILE_PX = 160  # face crops are shown at this side, whatever the model's crop size (32 px for `tiny`)
MEL_HOP_SECONDS = 0.01  # the mel features have a 10 ms hop; the audio encoder subsamples them


def _colour(label_index: int) -> str:
    return EMOTION_COLOURS[label_index % len(EMOTION_COLOURS)]


# ----------------------------------------------------------------------------------------------------------------
# Numbers
def build_report(outputs: dict, clip_info: list[dict], config, model_info: dict, timeline: bool) -> dict:
    """Turn the model outputs of all windows of one clip into plain numbers.

    Args:
        outputs: numpy arrays by output name, one row per window (`logits`, `segment_logits`, `segment_attention`,
            `segment_mask`, `audio_segment_attention`, `audio_frame_mask`, `roi_indices`, `roi_patch_scores`,
            `modalities_used`); the optional ones may be None.
        clip_info: the processor's per-window dicts (window bounds, reasons, face boxes, frame times).
        config: the model's `FERConfig` (labels, segment bounds, audio subsampling).
        model_info: where the model came from (`source`, `preset`, `trained`), copied into the report.
        timeline: whether the clip was analysed window by window.
    """
    labels = [config.id2label[i] for i in range(len(config.id2label))]
    logits = outputs["logits"].astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)  # (W, C)
    frame_s = MEL_HOP_SECONDS * getattr(config.audio_config, "subsampling_factor", 8)
    windows = [
        _window_report(w, probs[w], outputs, info, config, labels, frame_s) for w, info in enumerate(clip_info)
    ]
    mean = probs.mean(0)
    order = np.argsort(-mean)
    audio_n = sum(w["audio"]["used"] for w in windows)
    video_n = sum(w["video"]["used"] for w in windows)
    return {
        "model": dict(model_info),
        "clip": {
            "duration_s": float(clip_info[0]["duration_s"]),
            "timeline": bool(timeline),
            "window_seconds": float(config.clip_seconds),
            "num_windows": len(windows),
        },
        "probabilities": {labels[i]: float(mean[i]) for i in order},
        "top_label": labels[int(order[0])],
        "modalities": {"audio_windows": audio_n, "video_windows": video_n, "summary": modality_summary(windows)},
        "windows": windows,
    }


def _window_report(w, probs, outputs, info, config, labels, frame_s) -> dict:
    audio_used, video_used = (bool(v) for v in outputs["modalities_used"][w])
    start = float(info["window_start_s"])
    seg_weights = outputs["segment_attention"][w]
    seg_mask = outputs["segment_mask"][w]
    seg_labels = outputs["segment_logits"][w].argmax(-1)
    segments = [
        {
            "start_s": round(start + a, 4),
            "end_s": round(start + b, 4),
            "weight": float(seg_weights[s]),
            "emotion": labels[int(seg_labels[s])],
            "has_input": bool(seg_mask[s]),
        }
        for s, (a, b) in enumerate(config.segment_bounds_seconds())
    ]
    audio_attention = None
    if audio_used and outputs.get("audio_segment_attention") is not None:
        per_frame = (seg_weights[:, None] * outputs["audio_segment_attention"][w]).sum(0)  # (L,)
        valid = np.asarray(outputs["audio_frame_mask"][w], bool)
        frames = np.nonzero(valid)[0]
        audio_attention = {
            "frame_seconds": frame_s,
            "times_s": [round(start + (int(k) + 0.5) * frame_s, 4) for k in frames],
            "weights": [float(per_frame[k]) for k in frames],
        }
    faces = []
    if video_used and outputs.get("roi_indices") is not None:
        indices, scores = outputs["roi_indices"][w], outputs["roi_patch_scores"][w]
        times = info.get("frame_times_s") or [start + t for t in config.frame_times_seconds()]
        for t in range(indices.shape[0]):
            if indices[t, 0] < 0:
                continue  # frame not encoded (outside the clip or no face)
            faces.append({
                "frame": t,
                "time_s": round(float(times[t]), 4),
                "face_box": info["face_boxes"][t] if info.get("face_boxes") else None,
                "kept_patches": [int(i) for i in indices[t] if i >= 0],
                "kept_scores": [round(float(scores[t, i]), 6) for i in indices[t] if i >= 0],
            })
    return {
        "index": w,
        "start_s": round(start, 4),
        "end_s": round(float(info["window_end_s"]), 4),
        "probabilities": {labels[i]: float(probs[i]) for i in range(len(labels))},
        "top_label": labels[int(np.argmax(probs))],
        "audio": {"used": audio_used, "reason": "ok" if audio_used else _reason(info.get("audio_reason"))},
        "video": {"used": video_used, "reason": "ok" if video_used else _reason(info.get("video_reason"))},
        "segments": segments,
        "audio_attention": audio_attention,
        "faces": faces,
        "patch_grid": config.vision_config.image_size // config.vision_config.patch_size,
    }


def _reason(text) -> str:
    return "not usable" if not text or text == "ok" else str(text)


def modality_summary(windows: list[dict]) -> str:
    """One sentence a person understands, e.g. "Audio only: no face found in any of 16 frames"."""
    n = len(windows)
    audio_n = sum(w["audio"]["used"] for w in windows)
    video_n = sum(w["video"]["used"] for w in windows)
    if n == 1:
        w = windows[0]
        if audio_n and video_n:
            return "Audio and face both used."
        if audio_n:
            return f"Audio only: {w['video']['reason']}."
        return f"Face only: {w['audio']['reason']}."
    parts = [f"audio used in {audio_n} of {n} windows", f"face used in {video_n} of {n} windows"]
    reasons = sorted({w["video"]["reason"] for w in windows if not w["video"]["used"]}
                     | {w["audio"]["reason"] for w in windows if not w["audio"]["used"]})
    text = "; ".join(parts).capitalize()
    return text + (f" (not used where: {'; '.join(reasons)})." if reasons else ".")


def focus_window(report: dict) -> int:
    """The window the detail plots show: the only one, or the most confident one of a timeline."""
    windows = report["windows"]
    return max(range(len(windows)), key=lambda i: max(windows[i]["probabilities"].values()))


def report_csv(report: dict) -> str:
    """The numbers of `report` in long format: one row per (window, quantity, time, name)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["table", "window", "window_start_s", "window_end_s", "time_s", "name", "value"])
    for name, p in report["probabilities"].items():
        writer.writerow(["clip_probability", "", "", "", "", name, f"{p:.6f}"])
    for w in report["windows"]:
        base = [w["index"], w["start_s"], w["end_s"]]
        centre = round((w["start_s"] + w["end_s"]) / 2, 4)
        for name, p in w["probabilities"].items():
            writer.writerow(["window_probability", *base, centre, name, f"{p:.6f}"])
        for s in w["segments"]:
            mid = round((s["start_s"] + s["end_s"]) / 2, 4)
            writer.writerow(["segment_attention", *base, mid, s["emotion"], f"{s['weight']:.6f}"])
        if w["audio_attention"]:
            for t, v in zip(w["audio_attention"]["times_s"], w["audio_attention"]["weights"]):
                writer.writerow(["audio_attention", *base, t, "", f"{v:.6f}"])
        for f in w["faces"]:
            for patch, score in zip(f["kept_patches"], f["kept_scores"]):
                writer.writerow(["roi_kept_patch", *base, f["time_s"], patch, f"{score:.6f}"])
    return out.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# Figures
def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def message_figure(text: str, width: float = 7.0, height: float = 1.6) -> Figure:
    """A small figure that says why a plot is empty (e.g. no audio used)."""
    fig = _figure(width, height)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, wrap=True, color="#444444")
    return fig


def segment_figure(window: dict, labels: list[str]) -> Figure:
    """The classifier's attention over the window's segments, on the clip's time axis, labelled with each
    segment's own prediction (argmax of its logits)."""
    fig = _figure(7.0, 3.0)
    ax = fig.add_subplot()
    for s in window["segments"]:
        width = s["end_s"] - s["start_s"]
        colour = _colour(labels.index(s["emotion"])) if s["has_input"] else "#eeeeee"
        ax.bar(s["start_s"], s["weight"], width=width * 0.94, align="edge", color=colour, edgecolor="#555555",
               linewidth=0.6)
        text = s["emotion"] if s["has_input"] else "no input"
        ax.text(s["start_s"] + width / 2, s["weight"], text, ha="center", va="bottom", rotation=60, fontsize=8)
    top = max([s["weight"] for s in window["segments"]] + [1e-6])
    ax.set_ylim(0, top * 1.6)
    ax.set_xlim(window["start_s"], window["end_s"])
    ax.set_xlabel("time in the clip (s)")
    ax.set_ylabel("attention weight")
    ax.set_title(f"Which parts of {window['start_s']:.1f}–{window['end_s']:.1f} s the classifier relied on "
                 "(label = that segment's own prediction)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


def audio_figure(window: dict) -> Figure:
    """Audio attention per 80 ms encoder frame (segment attention x within-segment audio attention)."""
    att = window["audio_attention"]
    if not att:
        return message_figure(f"No audio used in this window: {window['audio']['reason']}.")
    fig = _figure(7.0, 2.6)
    ax = fig.add_subplot()
    times, weights = np.asarray(att["times_s"]), np.asarray(att["weights"])
    ax.fill_between(times, weights, step="mid", alpha=0.35, color="#1e88e5")
    ax.step(times, weights, where="mid", color="#1565c0", linewidth=1.2)
    for s in window["segments"][1:]:
        ax.axvline(s["start_s"], color="#bbbbbb", linewidth=0.6, linestyle="--")
    ax.set_xlim(window["start_s"], window["end_s"])
    ax.set_ylim(0, max(float(weights.max()), 1e-6) * 1.15)
    ax.set_xlabel("time in the clip (s)")
    ax.set_ylabel("weight")
    ax.set_title(f"Where the model listened ({att['frame_seconds'] * 1000:.0f} ms audio frames; dashed lines = "
                 "segment borders)", fontsize=10)
    return fig


def faces_figure(window: dict, face_frames: np.ndarray | None) -> Figure:
    """Up to 8 face crops with the importance of the patches the model kept (ROI tokens) as a heat map.

    `face_frames` is the processor's uint8 `(T, S, S, 3)`; crops of any size (also 32 px) are shown at 160 px.
    """
    faces = window["faces"]
    if face_frames is None or not faces:
        return message_figure(f"No face used in this window: {window['video']['reason']}.")
    import cv2

    picks = np.linspace(0, len(faces) - 1, min(MAX_FACE_TILES, len(faces))).round().astype(int)
    grid = window["patch_grid"]
    cols = min(4, len(picks))
    rows = int(np.ceil(len(picks) / cols))
    fig = _figure(1.9 * cols + 0.8, 2.1 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    image = None
    for ax, i in zip(axes.flat, picks):
        face = faces[int(i)]
        crop = cv2.resize(face_frames[face["frame"]], (FACE_TILE_PX, FACE_TILE_PX), interpolation=cv2.INTER_CUBIC)
        kept = np.zeros(grid * grid, bool)
        kept[face["kept_patches"]] = True
        values = np.asarray(face["kept_scores"], np.float32)
        span = float(values.max() - values.min()) if values.size else 0.0
        scores = np.zeros(grid * grid, np.float32)
        scores[face["kept_patches"]] = (values - (values.min() if values.size else 0.0)) / (span if span > 0 else 1.0)
        heat = np.ma.masked_where(~kept, scores).reshape(grid, grid)  # dropped patches: no colour
        dim = np.where(kept, 0.0, 0.45).reshape(grid, grid)  # and a grey veil over them
        ax.imshow(crop, extent=(0, 1, 1, 0))
        ax.imshow(np.zeros((grid, grid)), cmap="gray", alpha=dim, extent=(0, 1, 1, 0), interpolation="nearest")
        image = ax.imshow(heat, cmap="inferno", alpha=0.5, vmin=0, vmax=1, extent=(0, 1, 1, 0),
                          interpolation="nearest")
        ax.set_title(f"{face['time_s']:.2f} s", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.7, label="patch importance (kept patches)")
    fig.suptitle(f"Face patches the model kept ({len(faces[0]['kept_patches'])} of {grid * grid} per frame); "
                 "greyed = dropped", fontsize=10)
    return fig


def timeline_figure(report: dict) -> Figure:
    """Stacked probabilities of each emotion against the centre time of each window."""
    windows = report["windows"]
    labels = list(windows[0]["probabilities"])
    centres = np.array([(w["start_s"] + w["end_s"]) / 2 for w in windows])
    probs = np.array([[w["probabilities"][label] for label in labels] for w in windows]).T  # (C, W)
    fig = _figure(7.0, 3.2)
    ax = fig.add_subplot()
    ax.stackplot(centres, probs, labels=labels, colors=[_colour(i) for i in range(len(labels))], alpha=0.9)
    ax.set_xlim(centres.min(), centres.max())
    ax.set_ylim(0, 1)
    ax.set_xlabel("time in the clip (s), centre of each window")
    ax.set_ylabel("probability")
    ax.set_title(f"Emotions over time ({len(windows)} windows of {report['clip']['window_seconds']:.0f} s)",
                 fontsize=10)
    handles, names = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], names[::-1], loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8,
              frameon=False)  # top-to-bottom in the order of the stack
    return fig


__all__ = [
    "build_report",
    "modality_summary",
    "focus_window",
    "report_csv",
    "message_figure",
    "segment_figure",
    "audio_figure",
    "faces_figure",
    "timeline_figure",
]
