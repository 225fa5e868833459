"""The Live tab's server side without a browser: the chart's table, the load policy and the falling-behind state.

The browser tests (tests/test_live_browser.py) check the same on the page; these pin the rules.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fer_app import live as app_live  # noqa: E402


def _updates(n: int, compute_s: float, every_s: float, latency_s: float = 0.5):
    probs = {"neutral": 0.6, "happy": 0.4}
    return [SimpleNamespace(end_s=0.75 * k, produced_s=every_s * k, latency_s=latency_s, compute_s=compute_s,
                            probabilities=probs) for k in range(1, n + 1)]


class _Session:
    """What `status_markdown` and `chart_frame` read from a `LiveSession`."""

    num_frames, session_seconds, bin_s, stopped = 8, 300.0, 0.375, False

    def __init__(self, updates):
        self.updates = updates

    def recent_updates(self, seconds):
        return [u for u in self.updates if u.end_s >= self.updates[-1].end_s - seconds] if self.updates else []

    def stats(self):
        latencies = sorted(u.latency_s for u in self.updates)
        return {"elapsed_s": 20.0, "time_left_s": 280.0, "updates": len(self.updates),
                "latency_p50_s": latencies[len(latencies) // 2], "latency_p95_s": latencies[-1],
                "frames_received": 100, "frames_kept": 50, "audio_chunks": 80, "audio_gaps": 0, "audio_gap_s": 0.0}


def test_the_chart_table_names_every_emotion_before_the_first_update():
    """The page fixes the chart's encoding from the first value it gets: colour type and domain. Before any update
    the table must already hold every emotion as text (no probability, so nothing is drawn): an empty float column
    gave a number colour scale (legend "-Infinity") and an empty domain drew no line ever."""
    labels = ["neutral", "happy"]
    empty = app_live.chart_frame(None, labels)
    full = app_live.chart_frame(_Session(_updates(3, 0.2, 0.75)), labels)
    assert list(empty["emotion"]) == labels and empty["probability"].isna().all()
    assert len(full) == 6 and not full["probability"].isna().any()
    for frame in (empty, full):
        plot = app_live.gr.LinePlot(x="time_s", y="probability", color="emotion").postprocess(frame)
        assert plot.datatypes == {"time_s": "quantitative", "emotion": "nominal", "probability": "quantitative"}
        assert {row[1] for row in plot.data} == set(labels)


def test_the_load_policy_drops_frames_then_uses_int8_and_comes_back():
    policy = app_live.LoadPolicy(step_s=0.75, int8_possible=True)
    assert (policy.level, policy.frame_stride, policy.int8) == (0, 1, False)
    assert not policy.observe(0.3, 0.6) and not policy.observe(1.2, 0.6)  # one slow update: nothing changes
    assert policy.observe(2.0, 2.5)  # two of three slow: every other frame
    assert (policy.frame_stride, policy.int8, policy.falling_behind) == (2, False, True)
    assert policy.reduction(8) == "each window uses every other frame (4 of 8)"
    assert not policy.observe(1.1, 1.0) and policy.observe(1.0, 1.0)  # still slow: the int8 copy as well
    assert (policy.frame_stride, policy.int8) == (2, True)
    assert policy.reduction(8, int8_ready=False).endswith("the int8 model is being prepared")
    for _ in range(3):
        assert not policy.observe(3.0, 4.0)  # the last level: it stays, and says it is falling behind
    assert policy.level == 2 and policy.falling_behind
    changes = [policy.observe(0.1, 0.4) for _ in range(app_live.LoadPolicy.LOWER_AFTER)]
    assert changes[-1] and policy.level == 1 and not policy.falling_behind  # quick again: one level back
    no_int8 = app_live.LoadPolicy(step_s=0.75, int8_possible=False)  # GPU, an int8 model, or FER_LIVE_INT8=0
    for _ in range(8):
        no_int8.observe(2.0, 3.0)
    assert (no_int8.level, no_int8.frame_stride, no_int8.int8) == (1, 2, False)


def test_the_status_says_when_it_falls_behind_and_what_it_leaves_out():
    policy = app_live.LoadPolicy(step_s=app_live.STEP_S, int8_possible=True)
    for _ in range(4):
        policy.observe(2.4, 3.0)
    slow = app_live.status_markdown(_Session(_updates(4, 2.4, 3.1)), load=policy, int8_ready=True)
    assert slow.startswith("**Live · falling behind**")
    assert "an update takes 2.4 s of work and results come every 3.1 s" in slow
    assert "each window uses every other frame (4 of 8) and the int8 model" in slow
    assert "nothing is queued" in slow
    calm = app_live.status_markdown(_Session(_updates(4, 0.2, 0.75)), load=app_live.LoadPolicy(0.75, True))
    assert "falling behind" not in calm.lower() and "less work" not in calm
    stopped = _Session(_updates(4, 2.4, 3.1))
    stopped.stopped = True
    assert "falling behind" not in app_live.status_markdown(stopped, "Stopped.", load=policy).lower()
