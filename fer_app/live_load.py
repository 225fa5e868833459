"""How much work a live session's updates do when the machine cannot keep up (the Live tab, `fer_app/live.py`).

    policy = LoadPolicy(step_s=0.75, int8_possible=analyzer.int8_possible)
    if policy.observe(update.compute_s, update.latency_s):     # after each update; True when the level changed
        session.frame_stride, session.int8 = policy.frame_stride, policy.int8
    policy.falling_behind, policy.reduction(num_frames)       # what the status says
"""

from __future__ import annotations

from collections import deque

LATENCY_TARGET_S = 1.5  # a result later than this after capture counts as slow


class LoadPolicy:
    """How much work the updates of one session do, from how long its last updates took.

    Level 0 uses every frame; level 1 the frames of every other frame bin (half the new frames go through the face
    front-end and SigLIP); level 2 also runs the int8 copy of the model (`LiveAnalyzer.prepare_int8`; only where it
    can help: float on the CPU, and `FER_LIVE_INT8` not 0). An update is slow when its compute took longer than the
    step or its result came more than `LATENCY_TARGET_S` after capture. Two slow updates among the last three since
    the level last changed raise it; `LOWER_AFTER` quick ones in a row (compute under a third of the step) lower it.
    `falling_behind`: two of the last three updates were slow, whatever the level.
    """

    LOWER_AFTER = 10

    def __init__(self, step_s: float, int8_possible: bool):
        self.step_s = float(step_s)
        self.levels = [(1, False), (2, False)] + ([(2, True)] if int8_possible else [])
        self.level = 0
        self._recent: deque = deque(maxlen=3)  # slow or not, the last three updates
        self._since_change: deque = deque(maxlen=3)
        self._quick = 0
        self.compute_s: deque = deque(maxlen=5)

    @property
    def frame_stride(self) -> int:
        return self.levels[self.level][0]

    @property
    def int8(self) -> bool:
        return self.levels[self.level][1]

    @property
    def falling_behind(self) -> bool:
        return sum(self._recent) >= 2

    def observe(self, compute_s: float, latency_s: float) -> bool:
        """Take one update's compute time and latency; True when the level changed."""
        slow = compute_s > self.step_s or latency_s > LATENCY_TARGET_S
        self.compute_s.append(compute_s)
        self._recent.append(slow)
        self._since_change.append(slow)
        self._quick = self._quick + 1 if compute_s < self.step_s / 3 else 0
        if sum(self._since_change) >= 2 and self.level < len(self.levels) - 1:
            self.level += 1
        elif self._quick >= self.LOWER_AFTER and self.level > 0:
            self.level -= 1
        else:
            return False
        self._since_change.clear()
        self._quick = 0
        return True

    def reduction(self, num_frames: int, int8_ready: bool = True) -> str:
        """What the updates leave out now, in words ("" at level 0)."""
        if self.level == 0:
            return ""
        kept = -(-num_frames // self.frame_stride)
        every = "every other frame" if self.frame_stride == 2 else f"one frame in {self.frame_stride}"
        words = f"each window uses {every} ({kept} of {num_frames})"
        if self.int8:
            words += " and the int8 model" if int8_ready else "; the int8 model is being prepared"
        return words


__all__ = ["LATENCY_TARGET_S", "LoadPolicy"]
