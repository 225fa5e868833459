"""Behaviour of the model a user relies on: shapes, loss, gradients, missing modalities, save/load, Hub loading."""

import json
import os
import textwrap

import pytest
import torch
from hub_user import run_as_hub_user

from fer_hf import RAVDESS_LABELS, FERConfig, FERForEmotionClassification
from fer_hf.errors_fer import FERInputError, NoUsableModalityError


def make_inputs(config, batch=3, frames=None, seed=0, audio_mask=None, video_mask=None):
    g = torch.Generator().manual_seed(seed)
    t = frames or config.num_frames
    size = config.vision_config.image_size
    inputs = dict(
        input_features=torch.randn(batch, 300, 80, generator=g),
        audio_attention_mask=torch.ones(batch, 300, dtype=torch.long),
        pixel_values_videos=torch.randn(batch, t, 3, size, size, generator=g),
        video_frame_mask=torch.ones(batch, t, dtype=torch.bool),
        roi_weights=torch.rand(batch, t, config.num_patches, generator=g),
    )
    if audio_mask is not None:
        inputs["audio_mask"] = torch.tensor(audio_mask, dtype=torch.bool)
    if video_mask is not None:
        inputs["video_mask"] = torch.tensor(video_mask, dtype=torch.bool)
    return inputs


@pytest.fixture
def config():
    return FERConfig.from_preset("tiny")  # fresh per test: some tests change fields of a model's config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FERForEmotionClassification(FERConfig.from_preset("tiny")).eval()


def test_output_shapes_and_probabilities(model, config):
    out = model(**make_inputs(config), labels=torch.tensor([0, 3, 7]))
    b, s, c, t = 3, config.num_segments, len(RAVDESS_LABELS), config.num_frames
    assert out.logits.shape == (b, c)
    assert out.segment_logits.shape == (b, s, c)
    assert out.segment_attention.shape == (b, s)
    assert torch.allclose(out.segment_attention.sum(-1), torch.ones(b))
    assert out.audio_segment_attention.shape[:2] == (b, s)
    assert torch.allclose(out.audio_segment_attention.sum(-1), torch.ones(b, s), atol=1e-5)
    assert out.roi_indices.shape == (b, t, config.roi_top_k)
    assert out.roi_patch_scores.shape == (b, t, config.num_patches)
    assert bool((out.roi_indices[..., 1:] > out.roi_indices[..., :-1]).all()), "kept tokens stay in spatial order"
    assert out.modalities_used.all()
    probs = out.probabilities()
    assert torch.allclose(probs.sum(-1), torch.ones(b))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert model.config.id2label[4] == "angry" and model.config.label2id["surprised"] == 7


def test_every_trainable_parameter_gets_a_gradient(config):
    torch.manual_seed(0)
    model = FERForEmotionClassification(config).train()
    # a mixed batch exercises both "missing" tokens as well as both branches
    inputs = make_inputs(config, batch=4, audio_mask=[1, 0, 1, 1], video_mask=[1, 1, 0, 1])
    out = model(**inputs, labels=torch.tensor([0, 1, 2, 3]))
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []


def test_one_optimizer_step_lowers_the_loss(config):
    torch.manual_seed(0)
    model = FERForEmotionClassification(FERConfig.from_preset("tiny", modality_dropout=0.0)).train()
    inputs, labels = make_inputs(config, batch=4), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss = model(**inputs, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "audio_mask,video_mask,expected",
    [([1, 1, 1], [0, 0, 0], "audio-only"), ([0, 0, 0], [1, 1, 1], "video-only"), ([1, 0, 1], [0, 1, 1], "mixed")],
)
def test_missing_modalities(model, config, audio_mask, video_mask, expected):
    out = model(**make_inputs(config, audio_mask=audio_mask, video_mask=video_mask))
    assert torch.isfinite(out.logits).all(), expected
    assert out.modalities_used[:, 0].tolist() == [bool(x) for x in audio_mask]
    assert out.modalities_used[:, 1].tolist() == [bool(x) for x in video_mask]


def test_absent_modality_input_is_never_read(model, config):
    """An audio-only sample's pixels (and a video-only sample's audio) cannot change its prediction."""
    base = make_inputs(config, audio_mask=[1, 1, 0], video_mask=[0, 1, 1])
    changed = {k: v.clone() for k, v in base.items()}
    changed["pixel_values_videos"][0] = 5.0
    changed["input_features"][2] = -3.0
    a, b = model(**base).logits, model(**changed).logits
    assert torch.allclose(a, b, atol=1e-6)


def test_audio_only_and_video_only_without_the_other_tensor(model, config):
    """Every output field is there for every batch: zeros / -1 / False where a modality is absent."""
    inputs = make_inputs(config)
    full = model(**inputs)
    audio_only = model(input_features=inputs["input_features"], audio_attention_mask=inputs["audio_attention_mask"])
    assert audio_only.modalities_used[:, 1].any().item() is False
    assert audio_only.roi_indices.shape == full.roi_indices.shape and (audio_only.roi_indices == -1).all()
    assert (audio_only.roi_patch_scores == 0).all() and (audio_only.roi_scores == 0).all()
    video_only = model(pixel_values_videos=inputs["pixel_values_videos"], roi_weights=inputs["roi_weights"])
    assert video_only.modalities_used[:, 0].any().item() is False
    assert video_only.audio_segment_attention.shape == full.audio_segment_attention.shape
    assert (video_only.audio_segment_attention == 0).all() and not video_only.audio_frame_mask.any()
    # so the tuple positions never change with the batch content
    assert [k for k in audio_only.keys()] == [k for k in video_only.keys()] == [k for k in full.keys()]
    assert len(audio_only.to_tuple()) == len(video_only.to_tuple()) == len(full.to_tuple())


def test_sample_with_neither_modality_is_a_clear_error(model, config):
    with pytest.raises(NoUsableModalityError, match="sample"):
        model(**make_inputs(config, audio_mask=[1, 0, 1], video_mask=[1, 0, 1]))
    with pytest.raises(FERInputError):
        model()
    with pytest.raises(FERInputError, match="pixel_values_videos"):
        model(pixel_values_videos=torch.zeros(2, 3, 32, 32))
    with pytest.raises(FERInputError, match="batch"):
        model(input_features=torch.zeros(2, 300, 80), pixel_values_videos=torch.zeros(3, 8, 3, 32, 32))


def test_padding_frames_and_padded_audio_are_ignored(model, config):
    inputs = make_inputs(config)
    inputs["video_frame_mask"][:, 5:] = False
    inputs["audio_attention_mask"][:, 120:] = 0
    changed = {k: v.clone() for k, v in inputs.items()}
    changed["pixel_values_videos"][:, 5:] = 9.0
    changed["input_features"][:, 120:] = 7.0
    a, b = model(**inputs), model(**changed)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert (a.roi_indices[:, 5:] == -1).all()
    # segments past the end of a short clip get no classifier attention
    assert not a.segment_mask[:, -1].any() and (a.segment_attention[:, -1] == 0).all()


def test_vision_chunk_size_does_not_change_outputs(config):
    torch.manual_seed(0)
    model = FERForEmotionClassification(config).eval()
    inputs = make_inputs(config)
    reference = model(**inputs).logits
    model.config.vision_chunk_size = 5  # uneven chunks across samples
    assert torch.allclose(model(**inputs).logits, reference, atol=1e-5)


def test_sdpa_and_eager_agree(config):
    torch.manual_seed(0)
    sdpa = FERForEmotionClassification(config).eval()
    inputs = make_inputs(config)
    a = sdpa(**inputs).logits
    sdpa.set_attn_implementation("eager")
    assert sdpa.config.lfm2_config._attn_implementation == "eager"
    assert sdpa.config.vision_config._attn_implementation == "eager"
    assert torch.allclose(a, sdpa(**inputs).logits, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(config):
    cfg = FERConfig.from_preset("tiny", modality_dropout=0.0, fusion_dropout=0.0, classifier_dropout=0.0)
    torch.manual_seed(0)
    model = FERForEmotionClassification(cfg).train()
    inputs, labels = make_inputs(cfg), torch.tensor([1, 2, 3])
    model(**inputs, labels=labels).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.fusion.backbone.layers[0].gradient_checkpointing
    model(**inputs, labels=labels).loss.backward()
    for name, param in model.named_parameters():
        assert torch.allclose(param.grad, plain[name], atol=1e-5), name


def test_return_dict_false_returns_a_tuple(model, config):
    out = model(**make_inputs(config), labels=torch.tensor([0, 1, 2]), return_dict=False)
    assert isinstance(out, tuple)
    assert out[1].shape == (3, 8)  # (loss, logits, ...)


def test_freeze_flags(config):
    cfg = FERConfig.from_preset("tiny", freeze_vision_encoder=True, freeze_audio_encoder=True)
    model = FERForEmotionClassification(cfg)
    assert not any(p.requires_grad for p in model.vision_encoder.parameters())
    assert not any(p.requires_grad for p in model.audio_encoder.parameters())
    assert all(p.requires_grad for p in model.fusion.backbone.parameters())
    model.freeze_backbones(vision=False, fusion=True)
    assert all(p.requires_grad for p in model.vision_encoder.parameters())
    assert not any(p.requires_grad for p in model.fusion.backbone.parameters())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_frames=0), "num_frames"),
        (dict(roi_top_k=17), "roi_top_k"),
        (dict(modality_dropout=1.5), "modality_dropout"),
        (dict(roi_global_stats=["mean", "median"]), "roi_global_stats"),
        (dict(clip_seconds=-1), "clip_seconds"),
        (dict(classifier_hidden_sizes=[]), "classifier_hidden_sizes"),
        (dict(lfm2_config=dict(layer_types=["conv", "mamba"])), "layer_types"),
        (dict(temporal_num_heads=3), "temporal_num_heads"),
    ],
)
def test_bad_config_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FERConfig.from_preset("tiny", **kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        FERConfig.from_preset("huge")


def test_seed_preset_builds_on_meta_device_with_spec_shapes():
    config = FERConfig.from_preset("seed")
    assert config.lfm2_config.layer_types == ["conv", "conv", "full_attention", "conv", "conv", "full_attention"]
    assert config.num_patches == 196 and config.num_frames == 90
    with torch.device("meta"):
        model = FERForEmotionClassification(config)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert 85e6 < count(model.vision_encoder) < 87e6  # SigLIP-base vision tower without its pooling head
    assert 100e6 < count(model.audio_encoder) < 115e6  # FastConformer-Large (SPEC §6: ~109 M)
    assert 170e6 < count(model.fusion.backbone) < 185e6  # six LFM2-700M layers (SPEC §6: ~178 M)
    assert model.fusion.backbone.layers[0].feed_forward.w1.out_features == 4608
    assert not hasattr(model.fusion.backbone, "embed_tokens")
    assert FERConfig.from_preset("realtime").num_frames == 8


def test_save_and_reload_with_safetensors(model, config, tmp_path):
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"model.safetensors", "config.json", "modeling_fer.py", "configuration_fer.py", "modules_fer.py"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_fer.FERForEmotionClassification"
    reloaded = FERForEmotionClassification.from_pretrained(tmp_path).eval()
    inputs = make_inputs(config)
    assert torch.allclose(model(**inputs).logits, reloaded(**inputs).logits, atol=1e-6)


def test_saved_weights_are_as_readable_as_the_config(model, tmp_path):
    """safetensors writes through a private temporary file (0600); the weights get the umask's mode like the rest."""
    for umask, expected in ((0o022, 0o644), (0o077, 0o600)):
        old = os.umask(umask)
        try:
            model.save_pretrained(tmp_path / oct(umask))
        finally:
            os.umask(old)
        modes = {name: os.stat(tmp_path / oct(umask) / name).st_mode & 0o777
                 for name in ("model.safetensors", "config.json")}
        assert modes == {"model.safetensors": expected, "config.json": expected}


def test_no_cuda_kernel_hint_on_cpu_runs(model, config):
    """transformers asks for `causal_conv1d` (a CUDA kernel) on LFM2's convolutions: not on a CPU run."""
    import logging

    from transformers.utils import logging as hf_logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    hints = logging.getLogger("transformers.integrations.hub_kernels")
    hints.addHandler(handler)
    try:
        hf_logging.warning_once.cache_clear()  # it logs once per process: make this run the first
        with torch.no_grad():
            model(**make_inputs(config))
        assert not [r for r in records if "causal_conv1d" in r.getMessage()]
        hints.warning("`causal_conv1d` is not installed")  # outside a CPU forward the hint goes through
        assert [r.getMessage() for r in records] == ["`causal_conv1d` is not installed"]
    finally:
        hints.removeHandler(handler)
        hf_logging.warning_once.cache_clear()


def test_hub_code_has_only_relative_imports():
    import fer_hf

    folder = os.path.dirname(fer_hf.__file__)
    hub_files = ("configuration_fer.py", "modeling_fer.py", "modules_fer.py", "errors_fer.py", "pipeline_fer.py")
    hub_files += ("processing_fer.py", "media_fer.py", "faces_fer.py")
    for name in hub_files:
        text = open(os.path.join(folder, name)).read()
        assert "import fer_hf" not in text and "from fer_hf" not in text, name


def test_trust_remote_code_load_in_a_fresh_process_elsewhere(model, config, tmp_path):
    saved = tmp_path / "model"
    model.save_pretrained(saved)
    inputs = make_inputs(config)
    torch.save(inputs, tmp_path / "inputs.pt")
    expected = model(**inputs).logits
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(saved)!r}, trust_remote_code=True).eval()
        inputs = torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)
        with torch.no_grad():
            torch.save(model(**inputs).logits, {str(tmp_path / "logits.pt")!r})
        """
    )
    result = run_as_hub_user(script, elsewhere, tmp_path / "modules")
    assert result.returncode == 0, result.stderr[-3000:]
    logits = torch.load(tmp_path / "logits.pt", weights_only=True)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_vision_keep_patches_encodes_only_the_roi_patches(config):
    torch.manual_seed(0)
    model = FERForEmotionClassification(config).eval()
    inputs = make_inputs(config, batch=2)
    pixels, roi = inputs["pixel_values_videos"][0], inputs["roi_weights"][0]
    # keeping every patch through the ROI path equals the plain SigLIP path
    tokens, ids = model.encode_roi_patches(pixels, roi, config.num_patches)
    assert torch.allclose(tokens, model.vision_encoder(pixel_values=pixels).last_hidden_state, atol=1e-5)
    model.config.vision_keep_patches = 10
    out = model(**inputs)
    kept = roi.topk(10, dim=-1).indices
    for frame in range(config.num_frames):  # the ROI tokens come from the patches that entered SigLIP
        assert set(out.roi_indices[0, frame].tolist()) <= set(kept[frame].tolist())
    assert ((out.roi_patch_scores[0] > 0).sum(-1) <= 10).all()
    with pytest.raises(ValueError, match="vision_keep_patches"):
        FERConfig.from_preset("tiny", vision_keep_patches=4)


def test_int8_quantisation_for_cpu_inference(config, tmp_path):
    torch.manual_seed(0)
    model = FERForEmotionClassification(config).eval()
    inputs = make_inputs(config, batch=4)
    reference = model(**inputs).probabilities()
    model.quantize_int8_()
    quantized = model(**inputs).probabilities()
    difference = (reference - quantized).abs().max()
    assert difference < 0.02
    top2 = reference.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * difference  # the top-1 cannot flip where the margin is wider
    assert (reference.argmax(-1) == quantized.argmax(-1))[clear].all()
    with pytest.raises(RuntimeError, match="inference only"):
        model.save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="eval"):
        FERForEmotionClassification(config).train().quantize_int8_()


def test_forward_from_cached_frame_embeddings_equals_forward_from_pixels(model, config):
    """The frame-feature cache: embed each frame once, then run windows from the vectors."""
    inputs = make_inputs(config, audio_mask=[1, 0, 1], video_mask=[1, 1, 0])
    inputs["video_frame_mask"][1, 5:] = False  # a short clip: padding frames
    reference = model(**inputs)
    b, t = inputs["video_frame_mask"].shape
    embedded = model.embed_frames(inputs["pixel_values_videos"].flatten(0, 1), inputs["roi_weights"].flatten(0, 1))
    assert embedded.frame_embeddings.shape == (b * t, config.vision_config.hidden_size)
    assert embedded.roi_indices.shape == (b * t, config.roi_top_k)
    assert embedded.roi_patch_scores.shape == (b * t, config.num_patches)
    vectors = embedded.frame_embeddings.view(b, t, -1).clone()
    vectors[1, 5:] = 123.0  # masked frames are never read
    cached = {k: v for k, v in inputs.items() if k not in ("pixel_values_videos", "roi_weights")}
    out = model(**cached, frame_embeddings=vectors)
    assert torch.allclose(out.logits, reference.logits, atol=1e-5)
    assert torch.allclose(out.segment_logits, reference.segment_logits, atol=1e-5)
    assert torch.equal(out.modalities_used, reference.modalities_used)
    # the frames' own ROI outputs are in the cache; the window's forward gives the documented placeholders
    valid = inputs["video_frame_mask"].reshape(-1) & torch.tensor([1, 1, 0]).bool().repeat_interleave(t)
    assert torch.equal(embedded.roi_indices[valid], reference.roi_indices.flatten(0, 1)[valid])
    assert (out.roi_indices == -1).all() and (out.roi_patch_scores == 0).all()


def test_frame_embeddings_bad_inputs_are_clear_errors(model, config):
    inputs = make_inputs(config, batch=2)
    vectors = torch.zeros(2, config.num_frames, config.vision_config.hidden_size)
    with pytest.raises(FERInputError, match="not both"):
        model(pixel_values_videos=inputs["pixel_values_videos"], frame_embeddings=vectors)
    with pytest.raises(FERInputError, match="frame_embeddings"):
        model(frame_embeddings=vectors[..., :5])
    with pytest.raises(FERInputError, match="pixel_values"):
        model.embed_frames(torch.zeros(4, 3, 16, 16))
    with pytest.raises(FERInputError, match="roi_weights"):
        model.embed_frames(inputs["pixel_values_videos"][0], torch.ones(3, config.num_patches))
    assert model.embed_frames(inputs["pixel_values_videos"][0, :0]).frame_embeddings.shape == (0, 32)


def test_mirror_averaged_frame_vectors_are_the_same_for_a_face_and_its_mirror(config):
    """`vision_mirror_average`: in eval mode a frame's vector is the mean over the crop and its mirror (the ROI map
    mirrored with it), so a face and its mirror image get one vector; ROI outputs come from the crop as it is;
    training sees single crops; the seed preset keeps it off."""
    torch.manual_seed(0)
    config.vision_mirror_average = True
    model = FERForEmotionClassification(config).eval()
    plain = FERForEmotionClassification(FERConfig.from_preset("tiny")).eval()
    plain.load_state_dict(model.state_dict())
    inputs = make_inputs(config, batch=1)
    pixels, roi = inputs["pixel_values_videos"][0], inputs["roi_weights"][0]
    grid = config.vision_config.image_size // config.vision_config.patch_size
    mirrored_roi = roi.view(-1, grid, grid).flip(-1).reshape(roi.shape)
    with torch.no_grad():
        both = model.embed_frames(pixels, roi)
        mirror = model.embed_frames(pixels.flip(-1), mirrored_roi)
        single, single_mirror = plain.embed_frames(pixels, roi), plain.embed_frames(pixels.flip(-1), mirrored_roi)
        # a wrongly mirrored ROI map breaks the symmetry
        skewed = model.embed_frames(pixels.flip(-1), roi)
    assert torch.allclose(both.frame_embeddings, mirror.frame_embeddings, atol=1e-5)
    assert not torch.allclose(both.frame_embeddings, skewed.frame_embeddings, atol=1e-3)
    assert torch.allclose(both.frame_embeddings, (single.frame_embeddings + single_mirror.frame_embeddings) / 2,
                          atol=1e-5)
    assert torch.equal(both.roi_indices, single.roi_indices)
    model.train()
    with torch.no_grad():
        trained_view = model.embed_frames(pixels, roi).frame_embeddings
    plain.train()
    with torch.no_grad():
        assert torch.allclose(trained_view, plain.embed_frames(pixels, roi).frame_embeddings, atol=1e-5)
    assert FERConfig.from_preset("compact").vision_mirror_average
    assert not FERConfig.from_preset("seed").vision_mirror_average
    with pytest.raises(ValueError, match="vision_mirror_average"):
        FERConfig.from_preset("tiny", vision_mirror_average="yes")
