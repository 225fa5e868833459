"""The annotated video's overlay, laid out from the frame's size and kept off the face.

    layout = plan_overlay(width, height, labels, face_boxes, crop_boxes)   # once per clip, output pixels
    draw_panel(img, layout, window)                            # the emotion (headline) and a bar per class
    draw_footer(img, layout, t, no_face=True)                  # the time stamp (and "no face used")

Every size comes from the frame. Class labels are `TEXT_FRACTION` of the frame's short side high (at least
`MIN_TEXT_PX`), so they stay readable when the player shrinks the video to a phone's width. Rows are one text
height plus a gap apart, so labels never overlap; each row is a bar and "label NN%".

The panel has three arrangements: every class in one column, every class in two columns, the three most likely
classes. Each may sit in any corner. The places that fit (inside the frame, at most `MAX_PANEL_HEIGHT` of its
height) are ranked: one covering at most `FACE_COVER_OK` of the face beats one covering more; then all classes
beat the top three; then the one covering less, then the smaller panel wins. Where every place covers the face,
the one covering least wins. "Covering" is the share of the face boxes the panel hides, averaged over the clip's
sampled frames, weighed 3 to 1 against that of the crop boxes (where the heat map is drawn). The choice is made
once per clip, so the panel does not jump. The headline is fitted to the panel (smaller type, then cut with ".."),
never past the frame's edge.
The footer (time, "no face used") takes the top right when the panel is at the bottom, else the bottom right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

# One colour per emotion, in class order (neutral, calm, happy, sad, angry, fearful, disgust, surprised).
EMOTION_COLOURS = ("#9e9e9e", "#80cbc4", "#fdd835", "#42a5f5", "#e53935", "#8e24aa", "#6d8b3a", "#fb8c00")
NO_FACE_RGB = (229, 57, 53)
LEFT_OUT_RGB = (120, 120, 120)
UNCLEAR_RGB = (230, 230, 230)
FONT = cv2.FONT_HERSHEY_SIMPLEX
CAP_HEIGHT = cv2.getTextSize("H", FONT, 1.0, 1)[0][1]  # capital height at scale 1 (22 px)
TEXT_FRACTION = 0.045  # class labels: this share of the frame's short side (12 px on 270, 22 px on 480)
MIN_TEXT_PX = 10
HEADLINE_RATIO = 1.25  # the headline's type against the labels'
MAX_PANEL_HEIGHT = 0.72  # of the frame's height
FACE_COVER_OK = 0.03  # a panel covering at most this share of the face counts as off the face
TOP_CLASSES = 3
NO_CLEAR = "no clear emotion"
LEFT_OUT = "left out: no usable audio or face here"
NO_FACE = "no face used"
CORNERS = ("top left", "top right", "bottom left", "bottom right")


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return tuple(int(colour[i:i + 2], 16) for i in (0, 2, 4))


def emotion_rgb(labels: list[str], label: str) -> tuple[int, int, int]:
    return hex_to_rgb(EMOTION_COLOURS[labels.index(label) % len(EMOTION_COLOURS)])


def text_width(text: str, scale: float, thickness: int) -> int:
    return cv2.getTextSize(text, FONT, scale, thickness)[0][0]


def box_line_px(height: int) -> int:
    """Thickness of the face box's outline on a frame `height` pixels high."""
    return max(1, round(height / 200))


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _intersection(a, b) -> float:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


@dataclass
class OverlayLayout:
    """Where everything goes on a `width` x `height` frame (pixels; boxes are `(x0, y0, x1, y1)`, end exclusive)."""

    width: int
    height: int
    labels: list[str]
    text_px: int  # capital height of the class labels
    scale: float  # their cv2 font scale
    thickness: int
    head_scale: float  # the headline's font scale (fitted to the panel)
    head_px: int
    arrangement: str  # "one column", "two columns" or "top 3"
    corner: str
    panel: tuple  # the panel's box
    pad: int
    gap: int
    margin: int  # the footer's distance from the frame's edges
    row_h: int
    col_w: int
    bar_w: int
    bar_h: int
    rows: int
    columns: int
    footer_y: int  # baseline of the footer line (right-aligned, on the edge the panel is not on)
    face_cover: float  # mean share of the face boxes the panel covers
    candidates: list = field(default_factory=list)  # (arrangement, corner, cover) of every fitting place

    @property
    def classes_shown(self) -> int:
        return TOP_CLASSES if self.arrangement == "top 3" else len(self.labels)

    def headline_origin(self) -> tuple[int, int]:
        return self.panel[0] + self.pad, self.panel[1] + self.pad + self.head_px

    def row_boxes(self) -> list[tuple]:
        """The box of each class row (bar and label), in drawing order."""
        x0, y0 = self.panel[0] + self.pad, self.panel[1] + self.pad + self.head_px + self.gap
        boxes = []
        for slot in range(self.classes_shown):
            column, row = divmod(slot, self.rows)
            x = x0 + column * (self.col_w + self.gap)
            y = y0 + row * self.row_h
            boxes.append((x, y, x + self.col_w, y + self.text_px + max(2, self.text_px // 3)))
        return boxes


def plan_overlay(width: int, height: int, labels: list[str], face_boxes: list[tuple] = (),
                 crop_boxes: list[tuple] = (), text_px: int | None = None) -> OverlayLayout:
    """The overlay's layout for a `width` x `height` frame: type size from the frame, the panel's arrangement and
    corner chosen to stay off the face (`face_boxes`, `crop_boxes`: every sampled frame's, in output pixels). A
    frame too small for any arrangement at `MIN_TEXT_PX` gets smaller type (down to 6 px) before the top 3 are
    squeezed into the top left corner."""
    w, h = int(width), int(height)
    text_px = int(text_px) if text_px else max(MIN_TEXT_PX, round(TEXT_FRACTION * min(w, h)))
    scale = text_px / CAP_HEIGHT
    thickness = 1 if text_px < 20 else 2
    gap = max(3, round(0.4 * text_px))
    pad = max(3, round(0.4 * text_px))
    margin = max(3, round(0.25 * text_px))  # panel to frame edge (the panel may lie over the no-face border)
    edge = max(5, round(0.45 * text_px))  # footer text to frame edge: clear of that border
    bar_w, bar_h = 3 * text_px, max(3, round(0.6 * text_px))
    label_w = max(text_width(f"{label} 100%", scale, thickness) for label in labels)
    col_w = bar_w + gap + label_w
    row_h = text_px + gap
    head_px = round(HEADLINE_RATIO * text_px)
    headlines = [NO_CLEAR] + [f"{label} 100%" for label in labels]
    head_scale = head_px / CAP_HEIGHT
    head_w = max(text_width(t, head_scale, thickness) for t in headlines)
    grow = box_line_px(h) + 1  # the face box's outline is drawn on its edge, this thick
    faces = [(b[0] - grow, b[1] - grow, b[2] + grow, b[3] + grow) for b in face_boxes if _area(b) > 0]
    crops = [tuple(float(v) for v in b) for b in crop_boxes if _area(b) > 0]

    def share(panel, boxes) -> float:
        return float(np.mean([_intersection(panel, b) / _area(b) for b in boxes])) if boxes else 0.0

    def cover(panel) -> float:
        return (3 * share(panel, faces) + share(panel, crops)) / 4 if crops else share(panel, faces)

    arrangements = {"one column": (len(labels), 1), "two columns": (-(-len(labels) // 2), 2),
                    "top 3": (TOP_CLASSES, 1)}
    ranked = []
    for rank, (name, (rows, columns)) in enumerate(arrangements.items()):
        inner_w = columns * col_w + (columns - 1) * gap
        pw = 2 * pad + max(inner_w, min(head_w, w - 2 * margin - 2 * pad))
        ph = 2 * pad + head_px + gap + rows * row_h
        if pw > w - 2 * margin or ph > MAX_PANEL_HEIGHT * h:
            continue
        for corner_rank, corner in enumerate(CORNERS):
            x0 = margin if corner.endswith("left") else w - margin - pw
            y0 = margin if corner.startswith("top") else h - margin - ph
            panel = (x0, y0, x0 + pw, y0 + ph)
            c = cover(panel)
            full = 0 if name != "top 3" else 1
            key = (0, full, round(c, 3), pw * ph, corner_rank) if c <= FACE_COVER_OK else (1, c, full, pw * ph,
                                                                                     corner_rank)
            ranked.append((key, name, rows, columns, corner, panel, c))
    if not ranked and text_px > 6:
        return plan_overlay(w, h, labels, face_boxes, crop_boxes, text_px - 1)
    if not ranked:  # a frame too small for any arrangement: the top 3 at the top left, as large as it gets
        pw, ph = w - 2 * margin, min(h - 2 * margin, 2 * pad + head_px + gap + TOP_CLASSES * row_h)
        ranked.append(((2,), "top 3", TOP_CLASSES, 1, "top left", (margin, margin, margin + pw, margin + ph),
                       cover((margin, margin, margin + pw, margin + ph))))
    ranked.sort(key=lambda r: r[0])
    _, name, rows, columns, corner, panel, c = ranked[0]
    inner = panel[2] - panel[0] - 2 * pad
    widest = max(text_width(t, head_scale, thickness) for t in headlines)
    if widest > inner:  # a narrow frame: smaller headline type, down to the labels' size
        head_scale = max(scale, head_scale * inner / widest)
    footer_y = edge + text_px if corner.startswith("bottom") else h - edge - max(2, text_px // 3)
    return OverlayLayout(
        width=w, height=h, labels=list(labels), text_px=text_px, scale=scale, thickness=thickness,
        head_scale=head_scale, head_px=round(head_scale * CAP_HEIGHT), arrangement=name, corner=corner,
        panel=tuple(int(v) for v in panel), pad=pad, gap=gap, margin=edge, row_h=row_h, col_w=col_w, bar_w=bar_w,
        bar_h=bar_h, rows=rows, columns=columns, footer_y=footer_y,
        face_cover=c, candidates=[(r[1], r[4], round(r[6], 4)) for r in ranked],
    )


# ----------------------------------------------------------------------------------------------------------------
# Drawing (RGB uint8 frames of the layout's size)
def outlined_text(img: np.ndarray, text: str, origin: tuple[int, int], scale: float, colour, thickness: int = 1):
    """Text with a dark outline, readable on any picture."""
    cv2.putText(img, text, origin, FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, origin, FONT, scale, colour, thickness, cv2.LINE_AA)


def fit_text(text: str, max_w: int, scale: float, thickness: int) -> str:
    """`text`, cut with ".." when it is wider than `max_w` at `scale`."""
    if text_width(text, scale, thickness) <= max_w:
        return text
    while len(text) > 1 and text_width(text + "..", scale, thickness) > max_w:
        text = text[:-1]
    return text.rstrip() + ".."


def wrap_text(text: str, max_w: int, scale: float, thickness: int) -> list[str]:
    """`text` broken at spaces into lines no wider than `max_w` (a single word too wide is cut)."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_width(f"{lines[-1]} {word}", scale, thickness) <= max_w:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(fit_text(word, max_w, scale, thickness))
    return lines


def headline(window: dict, labels: list[str]) -> tuple[str, tuple]:
    """The window's answer in a few words and its colour: the emotion and its probability, or "no clear emotion"
    (the bars show the candidates)."""
    if window.get("confident") and window.get("top_label") in labels:
        top = window["top_label"]
        return f"{top} {window['probabilities'][top]:.0%}", emotion_rgb(labels, top)
    return NO_CLEAR, UNCLEAR_RGB


def _shade(img: np.ndarray, box: tuple, alpha: float = 0.5) -> None:
    x0, y0, x1, y1 = (max(0, v) for v in box)
    region = img[y0:y1, x0:x1]
    region[:] = (region.astype(np.float32) * (1 - alpha)).astype(np.uint8)


def draw_panel(img: np.ndarray, layout: OverlayLayout, window: dict | None) -> None:
    """The headline and the class bars (all classes in label order, or the three most likely) in the panel."""
    _shade(img, layout.panel)
    inner = layout.panel[2] - layout.panel[0] - 2 * layout.pad
    if window is None:
        x, y = layout.headline_origin()
        for line in wrap_text(LEFT_OUT, inner, layout.scale, layout.thickness):
            outlined_text(img, line, (x, y), layout.scale, LEFT_OUT_RGB, layout.thickness)
            y += layout.row_h
            if y > layout.panel[3]:
                break
        return
    text, colour = headline(window, layout.labels)
    outlined_text(img, fit_text(text, inner, layout.head_scale, layout.thickness), layout.headline_origin(),
                  layout.head_scale, colour, layout.thickness)
    probs = window["probabilities"]
    order = list(layout.labels)
    if layout.arrangement == "top 3":
        order = sorted(order, key=lambda label: probs.get(label, 0.0), reverse=True)[:TOP_CLASSES]
    for label, (x0, y0, _, _) in zip(order, layout.row_boxes()):
        p = float(probs.get(label, 0.0))
        bar_y = y0 + (layout.text_px - layout.bar_h) // 2
        cv2.rectangle(img, (x0, bar_y), (x0 + layout.bar_w, bar_y + layout.bar_h), (70, 70, 70), -1)
        cv2.rectangle(img, (x0, bar_y), (x0 + max(1, round(layout.bar_w * p)), bar_y + layout.bar_h),
                      emotion_rgb(layout.labels, label), -1)
        outlined_text(img, f"{label} {p:.0%}", (x0 + layout.bar_w + layout.gap, y0 + layout.text_px), layout.scale,
                      (255, 255, 255), layout.thickness)


def draw_footer(img: np.ndarray, layout: OverlayLayout, t: float, no_face: bool = False) -> None:
    """The time stamp, with "no face used" (red) before it where no face went to the model; on a frame too narrow
    for both, smaller type, then the stamp alone (the red border still says it)."""
    scale, thick = layout.scale, layout.thickness
    room = layout.width - 2 * layout.margin
    parts = ([(NO_FACE, NO_FACE_RGB)] if no_face else []) + [(f"{t:.1f} s", (255, 255, 255))]
    width = lambda items, sc: (sum(text_width(p, sc, thick) for p, _ in items)  # noqa: E731
                               + text_width("  ", sc, thick) * (len(items) - 1))
    if width(parts, scale) > room:
        scale = max(0.7 * scale, scale * room / width(parts, scale))
        if width(parts, scale) > room:
            parts, scale = parts[-1:], layout.scale
    x = layout.width - layout.margin - width(parts, scale)
    for part, colour in parts:
        outlined_text(img, part, (x, layout.footer_y), scale, colour, thick)
        x += text_width(part + "  ", scale, thick)


def draw_border(img: np.ndarray, layout: OverlayLayout, colour) -> None:
    """A frame round the picture (red: no face used; grey: left out)."""
    cv2.rectangle(img, (0, 0), (layout.width - 1, layout.height - 1), colour, max(2, round(layout.text_px / 4)))


__all__ = ["EMOTION_COLOURS", "LEFT_OUT_RGB", "NO_FACE_RGB", "OverlayLayout", "draw_border", "draw_footer",
           "draw_panel", "emotion_rgb", "fit_text", "headline", "hex_to_rgb", "outlined_text", "plan_overlay",
           "wrap_text"]
