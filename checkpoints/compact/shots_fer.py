"""Shot cuts: where a clip's picture changes to another shot, so that no face track continues across it.

    cuts = ShotCuts()                          # one per clip (the face session's registry holds it)
    shots = cuts.shots(frames, times_s)        # int (T,): shot number of each frame, -1 where the frame is None
    cuts.cut_times                             # clip times (s) of the first frame seen of every new shot

`ShotCuts` compares each frame with the frame it saw just before it in clip time, whatever the calls: a window of
frames at once (the processor), consecutive chunks (the timeline engine) or one frame at a time (live) give the same
verdicts for the same frames. A frame earlier than the newest one seen (overlapping windows) is placed between
its two seen neighbours in time: the shot of both when they agree, else the shot of the one it resembles more.
A flat frame (black, an empty plain wall: grey deviation under `FLAT_STD`) has nothing to compare: it stays in the
shot of the frame before it, and the next frame is compared with the last frame that has structure.

Two frames are compared on 64 x 36 thumbnails (`signature`):

- structure: 1 - the normalised cross-correlation of the grey thumbnails after the whole-picture shift that best
  aligns them (phase correlation; a pan or a shake aligns, a change of brightness or contrast cancels out);
- colour: the total-variation distance of their 4 x 4 x 4 RGB histograms (0 same colours, 1 none shared).

A cut is `structure >= CUT_STRUCTURE and colour >= CUT_COLOUR`, or `structure >= CUT_STRUCTURE_ALONE` (a cut
between two shots of one set). The thresholds were measured on generated cuts and camera motion
(`tests/test_face_cuts.py` holds the clips; the figures are in that file's docstring).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass

import numpy as np

from .faces_fer import require_cv2

logger = logging.getLogger(__name__)

THUMB_SIZE = (64, 36)  # (w, h) of the thumbnails compared
HIST_BINS = 4  # per RGB channel
CUT_STRUCTURE = 0.45  # changed share of a cut with a colour change (motion alone: <= 0.35)
CUT_COLOUR = 0.15  # colour distance of a cut with a structure change (motion alone: <= 0.13)
CUT_STRUCTURE_ALONE = 0.6  # changed share that is a cut whatever the colours
CHANGE_BLOCK = 4  # px of the thumbnail: blocks whose change is counted
CHANGE_LEVEL = 0.5  # mean absolute difference (in standard deviations of the picture) of a changed block
FLAT_STD = 6.0  # grey levels: a thumbnail this flat has no structure to compare
HISTORY_FRAMES = 512  # thumbnails kept to place frames that arrive out of time order (overlapping windows)


@dataclass
class FrameSignature:
    """What a frame is compared by: grey float32 `(36, 64)` thumbnail and float32 `(64,)` colour histogram."""

    grey: np.ndarray
    hist: np.ndarray

    @property
    def flat(self) -> bool:
        """No structure to compare (a black frame, an empty plain wall): such a frame never starts a shot."""
        return float(self.grey.std()) < FLAT_STD


def signature(frame: np.ndarray) -> FrameSignature:
    """The `FrameSignature` of a uint8 RGB frame `(h, w, 3)` (any size: it is reduced to `THUMB_SIZE`)."""
    cv2 = require_cv2()
    thumb = cv2.resize(np.ascontiguousarray(frame), THUMB_SIZE, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    q = (thumb.reshape(-1, 3) // (256 // HIST_BINS)).astype(np.int64)
    idx = (q[:, 0] * HIST_BINS + q[:, 1]) * HIST_BINS + q[:, 2]
    hist = np.bincount(idx, minlength=HIST_BINS ** 3).astype(np.float32)
    return FrameSignature(grey, hist / hist.sum())


def distances(a: FrameSignature, b: FrameSignature) -> tuple[float, float]:
    """(structure, colour) distances of two frames, `a` the earlier, each in [0, 1] (see the module docstring); the
    structure depends a little on the order (the phase-correlation shift), so `ShotCuts` always gives time order."""
    return _structure(a.grey, b.grey), float(0.5 * np.abs(a.hist - b.hist).sum())


def is_cut(structure: float, colour: float) -> bool:
    """The cut rule on `distances`."""
    return structure >= CUT_STRUCTURE_ALONE or (structure >= CUT_STRUCTURE and colour >= CUT_COLOUR)


def _standard(x: np.ndarray) -> np.ndarray | None:
    sd = float(x.std())
    return None if sd < FLAT_STD else (x - x.mean()) / sd


def _structure(a: np.ndarray, b: np.ndarray) -> float:
    """The share of `CHANGE_BLOCK`-pixel blocks of grey thumbnails `(h, w)` that changed: after the best of no shift
    and the phase-correlation shift, both standardised (zero mean, unit deviation), a block changed when its mean
    absolute difference is at least `CHANGE_LEVEL`. Two flat pictures are alike (0), flat and structured unlike (1).
    """
    cv2 = require_cv2()
    h, w = a.shape
    if float(a.std()) < FLAT_STD or float(b.std()) < FLAT_STD:
        alike = float(a.std()) < FLAT_STD and float(b.std()) < FLAT_STD and abs(float(a.mean() - b.mean())) < 16
        return 0.0 if alike else 1.0  # (`ShotCuts` does not compare flat frames)
    (dx, dy), _ = cv2.phaseCorrelate(a.copy(), b.copy(), _window(w, h))  # it writes into its inputs
    best = 1.0
    for sx, sy in {(0, 0), (int(round(dx)), int(round(dy))), (-int(round(dx)), -int(round(dy)))}:
        if abs(sx) > w // 3 or abs(sy) > h // 3:
            continue
        part_a = _standard(a[max(0, -sy): h - max(0, sy), max(0, -sx): w - max(0, sx)])  # a(x) against b(x + s)
        part_b = _standard(b[max(0, sy): h - max(0, -sy), max(0, sx): w - max(0, -sx)])
        if part_a is None or part_b is None:
            continue
        diff = np.abs(part_a - part_b)
        k = CHANGE_BLOCK
        bh, bw = diff.shape[0] // k, diff.shape[1] // k
        blocks = diff[: bh * k, : bw * k].reshape(bh, k, bw, k).mean(axis=(1, 3))
        best = min(best, float((blocks >= CHANGE_LEVEL).mean()))
    return best


_WINDOWS: dict = {}


def _window(w: int, h: int) -> np.ndarray:
    if (w, h) not in _WINDOWS:
        _WINDOWS[(w, h)] = require_cv2().createHanningWindow((w, h), 5)  # 5 = cv2.CV_32F
    return _WINDOWS[(w, h)]


@dataclass
class _Seen:
    time_s: float
    sig: FrameSignature
    shot: int


class ShotCuts:
    """Shot numbers of a clip's frames, kept across calls (one per clip; see the module docstring).

    Args:
        history: frames remembered to place frames that arrive out of time order.
    """

    def __init__(self, history: int = HISTORY_FRAMES):
        self.history = int(history)
        self._seen: list[_Seen] = []  # by time
        self._next_shot = 0
        self.cut_times: list[float] = []

    def shots(self, frames: list, times_s) -> np.ndarray:
        """int `(T,)` shot number of each of `T` frames (uint8 RGB `(h, w, 3)` or None: -1) at `times_s` (clip s).

        A frame object repeated in `frames` is compared once (the same shot)."""
        times = np.asarray(times_s, np.float64).reshape(-1)
        if len(times) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(times)} times")
        out = np.full(len(frames), -1, np.int64)
        done: dict[int, int] = {}
        for k in np.argsort(times, kind="stable"):
            frame = frames[k]
            if frame is None:
                continue
            if id(frame) not in done:
                done[id(frame)] = self._place(signature(frame), float(times[k]))
            out[k] = done[id(frame)]
        return out

    def _new_shot(self) -> int:
        self._next_shot += 1
        return self._next_shot - 1

    def _place(self, sig: FrameSignature, t: float) -> int:
        keys = [s.time_s for s in self._seen]
        i = bisect.bisect_left(keys, t - 1e-6)
        if i < len(keys) and abs(keys[i] - t) <= 1e-6:
            return self._seen[i].shot  # this time was seen already
        if sig.flat:  # nothing to compare: the shot of its neighbour, and later frames compare with non-flat ones
            near = self._seen[i - 1] if i > 0 else self._seen[i] if i < len(keys) else None
            shot = near.shot if near is not None else self._new_shot()
            self._remember(i, _Seen(t, sig, shot))
            return shot
        # the nearest frames with structure on either side
        before = next((self._seen[j] for j in range(i - 1, -1, -1) if not self._seen[j].sig.flat), None)
        after = next((self._seen[j] for j in range(i, len(keys)) if not self._seen[j].sig.flat), None)
        if before is None and after is None:
            shot = self._new_shot()
        elif after is None or before is None:
            near = before if after is None else after
            structure, colour = distances(near.sig, sig) if after is None else distances(sig, near.sig)  # in time order
            shot = near.shot
            if is_cut(structure, colour):
                shot = self._new_shot()
                self.cut_times.append(t if after is None else near.time_s)
                logger.debug("shot cut at %.3f s (structure %.2f, colour %.2f)", t, structure, colour)
        elif before.shot == after.shot:
            shot = before.shot
        else:  # between two seen frames of different shots: the shot it resembles more
            shot = before.shot if distances(before.sig, sig)[0] <= distances(sig, after.sig)[0] else after.shot
        self._remember(i, _Seen(t, sig, shot))
        return shot

    def _remember(self, i: int, seen: _Seen) -> None:
        self._seen.insert(i, seen)
        if len(self._seen) > self.history:
            del self._seen[0]


__all__ = ["CUT_COLOUR", "CUT_STRUCTURE", "CUT_STRUCTURE_ALONE", "FrameSignature", "ShotCuts", "distances",
           "is_cut", "signature"]
