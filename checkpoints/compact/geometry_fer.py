"""The one window geometry: the sizes and limits that decide memory, the model's segment rule, and `FERGeometry`
(frame grid, window length, hop, segment bounds, encoder frames) that the processor, the analysis engine, live mode,
`fer-annotate` and the results all read. `FERConfig` is its source (`FERGeometry.from_config`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

# Upper bounds of the sizes that decide memory (a config asking for more is refused before anything is allocated,
# instead of failing with a MemoryError at every request). Far above every preset: the seed model takes 90 frames
# of 224 px, 8 segments, 3 s at 16 kHz.
SIZE_LIMITS: Mapping[str, int] = MappingProxyType({
    "num_frames": 1800,  # 60 s (the longest `clip_seconds`) at 30 fps
    "sampling_rate": 96_000,
    "mel_hop_length": 9600,
    "num_segments": 512,
    "audio_pool_num_heads": 256,
    "roi_top_k": 4096,
    "frame_pool_num_heads": 256,
    "temporal_num_gscb_layers": 64,
    "temporal_num_attention_layers": 64,
    "temporal_conv_kernel_size": 256,
    "temporal_num_heads": 256,
    "temporal_ffn_ratio": 64,
    "fused_dim": 16_384,
    "vision_chunk_size": 4096,
    "classifier_hidden_sizes": 16_384,
    "vision_config.image_size": 2048,
    "vision_config.hidden_size": 16_384,
    "vision_config.num_hidden_layers": 128,
    "audio_config.hidden_size": 16_384,
    "audio_config.num_hidden_layers": 128,
    "audio_config.num_mel_bins": 512,
    "lfm2_config.hidden_size": 16_384,
    "lfm2_config.num_hidden_layers": 128,
})

MAX_WINDOW_SECONDS = 60.0  # as `FERConfig.clip_seconds`


def segment_step_ranges(length: int, num_segments: int) -> list[tuple[int, int]]:
    """The model's segment rule: segment s of `num_segments` covers steps [floor(s*L/S), ceil((s+1)*L/S)) of a
    sequence of `length` steps (neighbours share a step when S does not divide L; every segment has one step
    even when L < S). `modules_fer.segment_membership` builds its mask from these ranges."""
    if length < 1 or num_segments < 1:
        raise ValueError(f"need a positive length and segment count, got {length} and {num_segments}")
    return [(s * length // num_segments, -(-(s + 1) * length // num_segments)) for s in range(num_segments)]


def window_segment_bounds(num_frames: int, clip_seconds: float, num_encoder_frames: int, encoder_frame_s: float,
                          num_segments: int, kind: str = "fused") -> list[tuple[float, float]]:
    """(start_s, end_s) from the window start of each segment, by `segment_step_ranges`: over the `num_frames`
    frame bins (`kind="video"`), the encoder frames (`"audio"`, the last cut at the window end) or their union
    (`"fused"`, what a fused segment sees). Used by `FERConfig` and the processor's geometry alike."""
    if kind not in ("video", "audio", "fused"):
        raise ValueError(f"`kind` must be 'video', 'audio' or 'fused', got {kind!r}")
    bounds = {}
    for name, length, step in (("video", num_frames, clip_seconds / num_frames),
                               ("audio", num_encoder_frames, encoder_frame_s)):
        bounds[name] = [(round(a * step, 6), round(min(b * step, clip_seconds), 6))
                        for a, b in segment_step_ranges(length, num_segments)]
    if kind != "fused":
        return bounds[kind]
    return [(min(v[0], a[0]), max(v[1], a[1])) for v, a in zip(bounds["video"], bounds["audio"])]


@dataclass(frozen=True)
class FERGeometry:
    """Timing and sizes of one model window, taken from `FERConfig` (the one source of truth).

    Frame k of a window starting at t0 is sampled at `t0 + (k + 0.5) * frame_step_s`; segment bounds follow the
    model's own rule (`window_segment_bounds`, as `modules_fer.segment_membership` pools).
    """

    num_frames: int = 90
    clip_seconds: float = 3.0
    sampling_rate: int = 16000
    num_segments: int = 8
    image_size: int = 224
    patch_size: int = 16
    mel_hop_length: int = 160  # samples (10 ms at 16 kHz)
    audio_encoder_stride: int = 8  # mel frames per encoder frame (80 ms)

    def __post_init__(self):
        for name in ("num_frames", "sampling_rate", "num_segments", "image_size", "patch_size", "mel_hop_length",
                     "audio_encoder_stride"):
            value, limit = getattr(self, name), SIZE_LIMITS.get(name, SIZE_LIMITS.get(f"vision_config.{name}"))
            if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (limit and value > limit):
                bound = f" up to {limit}" if limit else ""
                raise ValueError(f"geometry `{name}` must be a positive integer{bound}, got {value!r}")
        if not isinstance(self.clip_seconds, (int, float)) or not 0.1 <= self.clip_seconds <= MAX_WINDOW_SECONDS:
            raise ValueError(f"geometry `clip_seconds` must be between 0.1 and {MAX_WINDOW_SECONDS} seconds, "
                             f"got {self.clip_seconds!r}")

    @classmethod
    def from_config(cls, config) -> FERGeometry:
        stride = getattr(config, "audio_encoder_stride", None) or getattr(config.audio_config, "subsampling_factor", 8)
        return cls(int(config.num_frames), float(config.clip_seconds), int(config.sampling_rate),
                   int(config.num_segments), int(config.vision_config.image_size),
                   int(config.vision_config.patch_size), int(getattr(config, "mel_hop_length", 160)), int(stride))

    @property
    def frame_step_s(self) -> float:
        return self.clip_seconds / self.num_frames

    @property
    def num_samples(self) -> int:
        return int(round(self.clip_seconds * self.sampling_rate))

    @property
    def encoder_frame_seconds(self) -> float:
        return self.mel_hop_length * self.audio_encoder_stride / self.sampling_rate

    @property
    def num_encoder_frames(self) -> int:
        """Encoder frames of a full window: mel frames (n // hop + 1) halved log2(stride) times, rounding up."""
        length = self.num_samples // self.mel_hop_length + 1
        for _ in range(int(round(math.log2(self.audio_encoder_stride)))):
            length = (length + 1) // 2
        return length

    def frame_times_seconds(self) -> list[float]:
        return [round((k + 0.5) * self.frame_step_s, 6) for k in range(self.num_frames)]

    def timeline_hop(self, hop_seconds: float) -> tuple[int, float]:
        """(frame steps, seconds) between timeline windows: `hop_seconds` rounded to a whole number of frame steps,
        at least one, so overlapping windows share their frames (realtime: 1.0 -> 3 steps = 1.125 s)."""
        steps = max(1, round(hop_seconds / self.frame_step_s))
        return steps, steps * self.frame_step_s

    def segment_bounds_seconds(self, kind: str = "fused") -> list[tuple[float, float]]:
        """(start_s, end_s) of each segment from the window start, for "video", "audio" or "fused" (their union)."""
        return window_segment_bounds(self.num_frames, self.clip_seconds, self.num_encoder_frames,
                                     self.encoder_frame_seconds, self.num_segments, kind)


__all__ = ["MAX_WINDOW_SECONDS", "SIZE_LIMITS", "FERGeometry", "segment_step_ranges", "window_segment_bounds"]
