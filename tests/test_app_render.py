"""The annotated video and the timeline, on a real analysis of a clip whose person leaves the frame (tiny model),
and the overlay's layout on a landscape (1280x720), a vertical (720x1280) and a small (320x240) clip.

No server: the app's analysis bridge, renderer and figures are called directly. With FER_OVERLAY_SCREENSHOTS=<folder>
the overlay test also writes a frame of each clip there (overlay_<kind>.png, and overlay_<kind>_noface.png from the
span without the face), to look at.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
for path in (str(TESTS), str(TESTS.parent)):
    if path not in sys.path:
        sys.path.insert(0, path)

from media_factory import astronaut_face, frame_index_of, make_clip  # noqa: E402

FACE_BOX = (90, 30, 250, 190)  # where the face is pasted in the 320 x 240 clip
FACE_SPANS = [(0.0, 3.0), (8.5, 10.0)]  # the person is away from 3 s to 8.5 s


@pytest.fixture(scope="module")
def tiny():
    import torch

    from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor

    torch.manual_seed(0)
    config = FERConfig.from_preset("tiny")
    model = FERForEmotionClassification(config).eval()
    return model, FERProcessor.from_model_config(config, min_speech_fraction=0.0)  # generated tones are not speech


@pytest.fixture(scope="module")
def analysed(tiny, tmp_path_factory):
    from fer_app.analysis import ClipAnalysis

    model, processor = tiny
    folder = tmp_path_factory.mktemp("render")
    clip = make_clip(folder / "leaves.mp4", seconds=10, fps=15, size=(320, 240), face_image=astronaut_face(),
                     face_box=FACE_BOX, face_spans=FACE_SPANS)
    steps, counts = [], []
    for step in ClipAnalysis(model, processor, "cpu", batch_windows=4, hop_s=1.0).run(clip["path"]):
        steps.append(step)
        counts.append(len(step.result["windows"]))  # the result fills in as the batches finish
    return clip, steps, folder, counts


def _decode(path) -> tuple[list[np.ndarray], list[float], object]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
        return frames, times, (stream.codec_context.name, [s.codec_context.name for s in container.streams.audio],
                               container.duration / 1e6)


def test_results_stream_window_by_window(analysed):
    _, steps, _, counts = analysed
    done = [s.done for s in steps]
    assert done == sorted(done) and done[-1] == steps[-1].total == 8 and len(steps) >= 3
    assert counts == [0, 4, 8]  # partial results after each batch of 4 windows (the tone keeps every window)
    final = steps[-1].result
    assert final["schema_version"] == 1 and len(final["windows"]) + len(final["skipped_windows"]) == 8
    assert abs(sum(final["probabilities"].values()) - 1.0) < 1e-4


def test_annotated_video_plays_with_box_and_no_face_marker(analysed):
    from fer_app.render import NO_FACE_RGB, render_annotated_video

    clip, steps, folder, _ = analysed
    result = steps[-1].result
    info = render_annotated_video(clip["path"], result, folder / "annotated.mp4", max_side=320, max_fps=10)
    frames, times, (vcodec, acodecs, duration) = _decode(info.path)
    assert vcodec == "h264" and acodecs == ["aac"] and duration == pytest.approx(10.0, abs=0.2)
    assert info.fps == 10 and len(frames) == info.frames == pytest.approx(100, abs=2)
    assert frames[0].shape == (240, 320, 3)
    # The source frame under each rendered one (frame index written by the clip writer): 15 fps -> 10 fps.
    for k, frame in enumerate(frames):
        if 3.0 <= k / 10 <= 8.7:
            continue  # the red no-face border covers the index blocks there
        # the source frame nearest k / 10 s; one frame of slack: the index blocks pass two lossy encodes (the test
        # clip's and the render's), and the red border's residue lingers a few frames after it ends
        assert abs(frame_index_of(frame) / 15 - k / 10) <= 1.5 / 15 + 1e-6, k
    with_face = frames[int(np.argmin(np.abs(np.array(times) - 1.5)))]
    without_face = frames[int(np.argmin(np.abs(np.array(times) - 5.0)))]
    red = np.array(NO_FACE_RGB)
    border = lambda f: f[[1, -2], :, :].reshape(-1, 3).astype(int)  # top and bottom rows
    assert np.abs(border(without_face) - red).sum(-1).mean() < 90  # red frame round the picture
    assert np.abs(border(with_face) - red).sum(-1).mean() > 150
    # Inside the face box: the heat map tints the face, so the rendered face differs from the face-less frame
    # only where the face is; the box outline is drawn on the face box edge.
    x0, y0, x1, y1 = (int(v) for v in clip["face_box"])
    edge = with_face[y0 - 3:y0 + 4, (x0 + x1) // 2 - 5:(x0 + x1) // 2 + 5].astype(int)
    assert (edge.max(axis=(0, 1)) > 200).all()  # a bright (white or emotion-coloured) box line


def test_timeline_covers_the_clip_and_shades_the_faceless_span(analysed):
    from fer_app import plots as app_plots
    clip, steps, _, _ = analysed
    result = steps[-1].result
    spans = app_plots.owned_spans(result)
    assert spans[0]["from_s"] == 0.0 and spans[-1]["to_s"] == pytest.approx(10.0)
    assert all(abs(a["to_s"] - b["from_s"]) < 1e-6 for a, b in zip(spans, spans[1:]))  # no gaps, no overlaps
    no_face = app_plots.shaded_spans(result)["no_face"]
    assert no_face, "the span without the person must be shaded"
    assert all(3.0 <= a and b <= 8.5 for a, b in no_face) and any(a <= 5.0 <= b for a, b in no_face)
    fig = app_plots.timeline_figure(result)
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((0.0, 10.0))
    shaded = [p for p in ax.patches if p.get_facecolor()[0] > 0.8 and p.get_facecolor()[2] < 0.3]
    assert shaded  # the red "no face used" span is drawn
    assert "no face used" in [t.get_text() for t in fig.legends[0].get_texts()]
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text")) if t.get_text()]
    # readable on a 390 px screen: the image (560 px wide) shrinks to about 350 px, its smallest text stays ~9 px
    assert min(t.get_fontsize() for t in texts) >= app_plots.TIMELINE_FONT_PT
    assert app_plots.TIMELINE_FONT_PT * 100 / 72 * 350 / (100 * app_plots.TIMELINE_INCHES[0]) >= 9.0


def test_headline_names_an_emotion_only_above_the_margin():
    from fer_app import plots as app_plots
    base = {"labels": ["a", "b", "c"], "aggregation": "mean", "confidence_margin": 0.1, "skipped_windows": [],
            "windows": [{"modalities": {"audio": True, "video": True, "audio_reason": "ok", "video_reason": "ok"}}]}
    unclear = dict(base, probabilities={"a": 0.36, "b": 0.33, "c": 0.31}, confident=False, top_label=None)
    text = app_plots.headline_markdown(unclear)
    assert text.startswith("## No clear emotion") and "a 36 %, b 33 %, c 31 %" in text and "10 %" in text
    clear = dict(base, probabilities={"a": 0.6, "b": 0.3, "c": 0.1}, confident=True, top_label="a")
    assert app_plots.headline_markdown(clear).startswith("## a ")


def _contrast(foreground: str, background: str) -> float:
    """WCAG contrast ratio of two `#rrggbb` colours."""
    def luminance(colour):
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * r + 0.7152 * g + 0.0722 * b
    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_provenance_banner_text_is_white_on_every_element_and_readable():
    import re

    from fer_app import plots as app_plots
    for summary, status in (("untrained model: its outputs are meaningless", "untrained"),
                            ("trained on a synthetic set", "trained")):
        banner = app_plots.provenance_banner(summary, status)
        (background,) = re.findall(r"background:(#[0-9a-f]{6})", banner)
        # inline colours: Gradio's `.prose *` rule would otherwise paint the bold title dark grey
        assert f'style="background:{background};color:{app_plots.BANNER_TEXT}"' in banner
        assert f'<b style="color:{app_plots.BANNER_TEXT}">' in banner
        assert _contrast(app_plots.BANNER_TEXT, background) >= 4.5, (status, background)
    assert app_plots.provenance_banner("trained weights from x", "trained") == ""


def test_live_modality_marks_are_words_not_emoji():
    """Emoji marks render as empty boxes without an emoji font: the live status says used / not used."""
    from types import SimpleNamespace

    from fer_app import live as app_live
    used = dict(video=True, audio=True, face_frames=8, frames=8, speech_fraction=0.5, audio_reason="ok",
                video_reason="ok")
    unused = dict(used, video=False, audio=False, video_reason="no face found", audio_reason="silent audio track")
    texts = [app_live.modalities_markdown(SimpleNamespace(modalities=m)) for m in (used, unused)]
    assert texts[0] == "**Face:** used (8 of 8 frames)  ·  **Speech:** used (speech in 50 % of the window)"
    assert "Face:** not used: no face found" in texts[1] and "Speech:** not used: silent audio track" in texts[1]
    assert all(ord(ch) < 0x2190 for text in texts for ch in text)  # no symbol, dingbat or emoji code points


# ----------------------------------------------------------------------------------------------------------------
OVERLAY_CLIPS = {  # (width, height) and where the face is pasted
    "landscape": ((1280, 720), (500, 110, 780, 390)),
    "vertical": ((720, 1280), (190, 250, 530, 590)),
    "small": ((320, 240), (90, 30, 250, 190)),
}
PHONE_PLAYER_PX = 360  # about how wide the player is on a 390 px screen


@pytest.mark.parametrize("kind", list(OVERLAY_CLIPS))
def test_overlay_is_laid_out_from_the_frame_and_keeps_off_the_face(tiny, tmp_path, kind):
    """Headline inside the frame, class rows that do not overlap, type readable at a phone's width, and the panel
    off the face box and heat map (on the small clip, whose face fills most of the frame: the three most likely
    classes, covering least)."""
    import cv2

    from fer_app import overlay as app_overlay
    from fer_app.analysis import ClipAnalysis
    from fer_app.render import _Timeline, render_annotated_video

    model, processor = tiny
    size, paste = OVERLAY_CLIPS[kind]
    clip = make_clip(tmp_path / f"{kind}.mp4", seconds=4, fps=10, size=size, face_image=astronaut_face(),
                     face_box=paste, face_spans=[(0.0, 2.5)])
    *_, last = ClipAnalysis(model, processor, "cpu").run(clip["path"])
    result = last.result
    info = render_annotated_video(clip["path"], result, tmp_path / f"{kind}_annotated.mp4", max_fps=5)
    w, h = info.size
    scale = w / size[0]
    layout = _Timeline(result).layout(w, h, scale)

    x0, y0, x1, y1 = layout.panel
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    rows = layout.row_boxes()
    assert len(rows) == layout.classes_shown and all(x0 <= a and b <= y1 and c <= x1 for a, b, c, _ in
                                                     [(r[0], r[3], r[2], r[1]) for r in rows])
    for i, a in enumerate(rows):  # no two class rows share a pixel
        assert all(a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1] for b in rows[i + 1:]), (a, rows)
    inner = x1 - x0 - 2 * layout.pad
    for text in [app_overlay.NO_CLEAR] + [f"{label} 100%" for label in layout.labels]:
        assert app_overlay.text_width(text, layout.head_scale, layout.thickness) <= inner, text  # never cut
    assert layout.text_px >= app_overlay.MIN_TEXT_PX
    assert layout.text_px * min(1.0, PHONE_PLAYER_PX / w) >= 8.5  # readable on a 390 px screen

    faces = [tuple(v * scale for v in f["face_box"]) for win in result["windows"] for f in win["frames"]
             if f["face_found"]]
    assert faces
    if kind == "small":
        assert layout.arrangement == "top 3" and layout.face_cover <= 0.05, layout.candidates
    else:
        assert layout.classes_shown == len(layout.labels) and layout.face_cover == 0.0, layout.candidates
    assert all(app_overlay._intersection(layout.panel, f) == 0 for f in faces), (layout.panel, faces[:2])

    frames, times, _ = _decode(info.path)
    with_face = frames[int(np.argmin(np.abs(np.array(times) - 1.5)))]
    without_face = frames[int(np.argmin(np.abs(np.array(times) - 3.6)))]
    folder = os.environ.get("FER_OVERLAY_SCREENSHOTS")
    if folder:
        cv2.imwrite(str(Path(folder) / f"overlay_{kind}.png"), with_face[..., ::-1])
        cv2.imwrite(str(Path(folder) / f"overlay_{kind}_noface.png"), without_face[..., ::-1])
    t = float(times[int(np.argmin(np.abs(np.array(times) - 1.5)))])
    fx0, fy0, fx1, fy1 = (int(round(v * scale)) for v in _Timeline(result).face_at(t)[0])  # the box drawn at t
    for y in (fy0, fy1):  # the face box's top and bottom lines are drawn and visible
        line = with_face[max(0, y - 3):y + 4, (fx0 + fx1) // 2 - 4:(fx0 + fx1) // 2 + 5].astype(int)
        assert (line.max(axis=(0, 1)) > 200).all(), (kind, y, layout.panel, (fx0, fy0, fx1, fy1))


@pytest.mark.parametrize("size", [(120, 90), (160, 120), (320, 240), (480, 270), (270, 480), (1080, 1920)])
def test_overlay_fits_any_frame_size(size):
    """Drawn on a plain frame with the widest headline and the footer: nothing crosses the frame's edge, every
    class row holds its label, and no two rows overlap."""
    from fer_app import overlay as app_overlay
    labels = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    w, h = size
    face = (w * 3 // 8, h // 4, w * 5 // 8, h // 4 + w // 4)
    layout = app_overlay.plan_overlay(w, h, labels, [face])
    rows = layout.row_boxes()
    label_w = max(app_overlay.text_width(f"{label} 100%", layout.scale, layout.thickness) for label in labels)
    assert all(r[2] - r[0] >= layout.bar_w + layout.gap + label_w for r in rows)
    assert all(layout.panel[0] <= r[0] and r[2] <= layout.panel[2] and r[3] <= layout.panel[3] for r in rows)
    for i, a in enumerate(rows):
        assert all(a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1] for b in rows[i + 1:])
    probs = dict.fromkeys(labels, 0.02) | {"surprised": 0.86}
    for window in ({"probabilities": probs, "confident": True, "top_label": "surprised"}, None):
        img = np.full((h, w, 3), 128, np.uint8)
        app_overlay.draw_panel(img, layout, window)
        app_overlay.draw_footer(img, layout, 123.4, no_face=True)
        edges = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        assert (edges == 128).all(), size  # no text or bar runs off the frame
