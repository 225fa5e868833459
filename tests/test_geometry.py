"""The window geometry on FERConfig equals what the model really does (docs/architecture.md "Geometry")."""

import pytest
import torch

from fer_hf import FERConfig, FERForEmotionClassification
from fer_hf.geometry_fer import segment_step_ranges
from fer_hf.modules_fer import segment_membership


@pytest.fixture(scope="module")
def model_90():
    """Tiny backbones with the seed's 90 frames per 3 s window (38 encoder frames, 8 segments)."""
    torch.manual_seed(0)
    return FERForEmotionClassification(FERConfig.from_preset("tiny", num_frames=90)).eval()


def flat(bounds):
    return [x for pair in bounds for x in pair]


def test_seed_geometry_figures():
    cfg = FERConfig.from_preset("seed")
    assert (cfg.sampling_rate, cfg.mel_hop_length, cfg.audio_encoder_stride) == (16000, 160, 8)
    assert cfg.audio_frame_seconds == pytest.approx(0.08)
    assert cfg.num_mel_frames() == 301 and cfg.num_encoder_frames() == 38
    times = cfg.frame_times_seconds()
    assert len(times) == 90
    assert times[0] == pytest.approx(1 / 60, abs=1e-6) and times[-1] == pytest.approx(3 - 1 / 60, abs=1e-6)


def test_segment_rule_is_the_documented_one():
    for length, s in ((38, 8), (90, 8), (8, 8), (3, 8), (301, 8)):
        ranges = segment_step_ranges(length, s)
        assert ranges == [((i * length) // s, -(-((i + 1) * length) // s)) for i in range(s)]
        member = segment_membership(length, s)
        for i, (a, b) in enumerate(ranges):
            assert member[i].nonzero().squeeze(-1).tolist() == list(range(a, b))
    with pytest.raises(ValueError):
        segment_step_ranges(0, 8)


def test_audio_segment_bounds_follow_the_models_audio_pooling(model_90):
    cfg = model_90.config
    g = torch.Generator().manual_seed(0)
    out = model_90(input_features=torch.randn(1, cfg.num_mel_frames(), 80, generator=g))
    weights = out.audio_segment_attention[0]  # (S, L): softmax weights, > 0 exactly on a segment's frames
    assert weights.shape == (8, 38) == (cfg.num_segments, cfg.num_encoder_frames())
    step = cfg.audio_frame_seconds
    from_model = []
    for s in range(cfg.num_segments):
        frames = (weights[s] > 0).nonzero().squeeze(-1)
        from_model.append((frames[0].item() * step, min((frames[-1].item() + 1) * step, cfg.clip_seconds)))
    assert flat(cfg.segment_bounds_seconds("audio")) == pytest.approx(flat(from_model), abs=1e-6)
    # 38 frames into 8 segments do not divide: neighbours share a frame, so the bounds overlap and are not uniform
    bounds = cfg.segment_bounds_seconds("audio")
    assert any(bounds[s][1] > bounds[s + 1][0] for s in range(7))
    assert flat(bounds) != pytest.approx(flat([(s * 0.375, (s + 1) * 0.375) for s in range(8)]), abs=1e-3)


def test_video_segment_bounds_follow_the_models_visual_pooling(model_90):
    """One valid frame per sample: the segments that then hold video are exactly those containing that frame."""
    cfg = model_90.config
    t, size = cfg.num_frames, cfg.vision_config.image_size
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(t, t, 3, size, size, generator=g)
    only_frame_k = torch.eye(t, dtype=torch.bool)  # sample k keeps frame k
    out = model_90(pixel_values_videos=pixels, video_frame_mask=only_frame_k)
    holds = out.segment_mask  # (T samples, S)
    step = cfg.clip_seconds / t
    from_model = []
    for s in range(cfg.num_segments):
        frames = holds[:, s].nonzero().squeeze(-1)
        from_model.append((frames[0].item() * step, (frames[-1].item() + 1) * step))
    assert flat(cfg.segment_bounds_seconds("video")) == pytest.approx(flat(from_model), abs=1e-6)
    # a frame's time lies inside every segment that pools it
    times = cfg.frame_times_seconds()
    for k in range(t):
        for s in holds[k].nonzero().squeeze(-1).tolist():
            a, b = cfg.segment_bounds_seconds("video")[s]
            assert a <= times[k] <= b


def test_fused_bounds_are_the_union_of_both_streams():
    cfg = FERConfig.from_preset("seed")
    video, audio, fused = (cfg.segment_bounds_seconds(k) for k in ("video", "audio", "fused"))
    assert fused == cfg.segment_bounds_seconds()
    for (va, vb), (aa, ab), (fa, fb) in zip(video, audio, fused):
        assert fa == min(va, aa) and fb == max(vb, ab)
    assert fused[0][0] == 0.0 and fused[-1][1] == cfg.clip_seconds
    with pytest.raises(ValueError, match="kind"):
        cfg.segment_bounds_seconds("frames")
