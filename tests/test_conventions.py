"""transformers' conventions a user (and generic tooling) relies on: hidden states / attentions, main input name,
init by module class (including the SigLIP load-time quirk), frozen backbones in eval mode, presets as data."""

import dataclasses
import inspect
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_modeling import make_inputs
from torch import nn
from transformers import ParakeetFeatureExtractor

from fer_hf import FERConfig, FERForEmotionClassification
from fer_hf.configuration_fer import PRESETS


@pytest.fixture(scope="module")
def eager_model():
    torch.manual_seed(0)
    model = FERForEmotionClassification(FERConfig.from_preset("tiny")).eval()
    model.set_attn_implementation("eager")
    return model


def test_main_input_name_is_the_first_forward_parameter():
    params = list(inspect.signature(FERForEmotionClassification.forward).parameters)
    assert params[0] == "self" and FERForEmotionClassification.main_input_name == params[1] == "input_features"


def test_hidden_states_are_the_backbones_own(eager_model):
    model, cfg = eager_model, eager_model.config
    inputs = make_inputs(cfg, batch=3, audio_mask=[1, 0, 1], video_mask=[1, 1, 0])
    inputs["video_frame_mask"][1, 6:] = False
    out = model(**inputs, output_hidden_states=True)
    # audio: the FastConformer's own hidden states for the rows with audio, zeros for the row without
    with torch.no_grad():
        own = model.audio_encoder(
            input_features=inputs["input_features"][[0, 2]],
            attention_mask=inputs["audio_attention_mask"][[0, 2]],
            output_hidden_states=True,
        ).hidden_states
    assert len(out.audio_hidden_states) == cfg.audio_config.num_hidden_layers + 1 == len(own)
    for ours, theirs in zip(out.audio_hidden_states, own):
        assert torch.allclose(ours[[0, 2]], theirs, atol=1e-5) and (ours[1] == 0).all()
    # vision: SigLIP's own hidden states for every encoded frame, zeros for padding frames and the video-less row
    with torch.no_grad():
        own = model.vision_encoder(pixel_values=inputs["pixel_values_videos"][1], output_hidden_states=True)
    assert len(out.vision_hidden_states) == cfg.vision_config.num_hidden_layers + 1
    for ours, theirs in zip(out.vision_hidden_states, own.hidden_states):
        assert ours.shape == (3, cfg.num_frames, cfg.num_patches, cfg.vision_config.hidden_size)
        assert torch.allclose(ours[1, :6], theirs[:6], atol=1e-5)
        assert (ours[1, 6:] == 0).all() and (ours[2] == 0).all()
    # fusion: the 2S tokens, then each LFM2 layer (the last after the final norm)
    assert len(out.fusion_hidden_states) == cfg.lfm2_config.num_hidden_layers + 1
    assert out.fusion_hidden_states[0].shape == (3, 2 * cfg.num_segments, cfg.lfm2_config.hidden_size)
    # same logits as without the flag; not returned unless asked
    plain = model(**inputs)
    assert torch.allclose(plain.logits, out.logits) and plain.audio_hidden_states is None
    # a cached-embeddings batch has no SigLIP states to give
    b, t = inputs["video_frame_mask"].shape
    vectors = model.embed_frames(inputs["pixel_values_videos"].flatten(0, 1)).frame_embeddings.view(b, t, -1)
    rest = {k: v for k, v in inputs.items() if k not in ("pixel_values_videos", "roi_weights")}
    assert model(**rest, frame_embeddings=vectors, output_hidden_states=True).vision_hidden_states is None


def test_attentions_under_eager_attention(eager_model):
    model, cfg = eager_model, eager_model.config
    inputs = make_inputs(cfg, batch=2)
    out = model(**inputs, output_attentions=True)
    s2 = 2 * cfg.num_segments
    assert len(out.fusion_attentions) == cfg.lfm2_config.layer_types.count("full_attention")
    assert out.fusion_attentions[0].shape == (2, cfg.lfm2_config.num_attention_heads, s2, s2)
    assert len(out.vision_attentions) == cfg.vision_config.num_hidden_layers
    heads, n = cfg.vision_config.num_attention_heads, cfg.num_patches
    assert out.vision_attentions[0].shape == (2, cfg.num_frames, heads, n, n)
    assert len(out.audio_attentions) == cfg.audio_config.num_hidden_layers
    for weights in (out.fusion_attentions[0], out.vision_attentions[0]):
        assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
    # the bidirectional fusion: the first token attends to later ones
    assert (out.fusion_attentions[0][:, :, 0, 1:] > 0).any()


def test_attentions_under_sdpa_are_empty_not_an_error():
    torch.manual_seed(0)
    cfg = FERConfig.from_preset("tiny")
    model = FERForEmotionClassification(cfg).eval()
    out = model(**make_inputs(cfg, batch=2), output_attentions=True, output_hidden_states=True)
    assert out.fusion_attentions == () and out.vision_attentions == ()
    assert len(out.fusion_hidden_states) == cfg.lfm2_config.num_hidden_layers + 1


def test_every_added_learned_vector_is_initialised_by_its_module_class():
    """A parameter owned directly by one of our modules (not by a Linear / norm / conv) must not start at zero: the
    init dispatches on module class, so a new or renamed one fails here instead of silently staying 0."""
    torch.manual_seed(0)
    model = FERForEmotionClassification(FERConfig.from_preset("tiny"))
    standard = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.LayerNorm, nn.Embedding)
    checked = []
    for module_name, module in model.named_modules():
        if isinstance(module, standard) or not type(module).__module__.startswith("fer_hf"):
            continue
        for name, param in module.named_parameters(recurse=False):
            checked.append(f"{module_name}.{name}")
            assert param.abs().sum() > 0, f"{module_name}.{name} kept a zero start"
    assert len(checked) >= 6 and any(n.endswith("audio_missing") for n in checked)


def test_siglip_projections_missing_at_load_time_get_siglips_own_init(tmp_path):
    torch.manual_seed(0)
    cfg = FERConfig.from_preset("tiny", vision_config=dict(hidden_size=64, intermediate_size=256))
    FERForEmotionClassification(cfg).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.startswith("vision_encoder.")}
    save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = FERForEmotionClassification.from_pretrained(tmp_path)
    layer = model.vision_encoder.encoder.layers[0]
    for linear in (layer.self_attn.q_proj, layer.self_attn.out_proj, layer.mlp.fc1, layer.mlp.fc2):
        fan_out, fan_in = linear.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5  # xavier_uniform, SigLIP's init for these projections
        w = linear.weight.detach()
        assert w.abs().max() <= bound + 1e-6, "not SigLIP's xavier init (a generic normal init overshoots it)"
        assert abs(w.std().item() - bound / 3**0.5) < 0.1 * bound / 3**0.5
    assert (layer.mlp.fc1.bias != 0).any() and layer.mlp.fc1.bias.abs().max() < 1e-4  # normal(std=1e-6)
    assert (layer.self_attn.q_proj.bias == 0).all()
    # what was in the checkpoint is untouched
    for name, value in kept.items():
        assert torch.equal(model.state_dict()[name], value), name


def test_frozen_backbones_stay_in_eval_mode_under_train():
    cfg = FERConfig.from_preset("tiny", freeze_audio_encoder=True)
    torch.manual_seed(0)
    model = FERForEmotionClassification(cfg).train()
    assert not model.audio_encoder.training and model.vision_encoder.training and model.fusion.training
    assert all(not m.training for m in model.audio_encoder.modules())
    norms = [m for m in model.audio_encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms, "the FastConformer conv module has BatchNorm"
    before = [m.running_mean.clone() for m in norms]
    inputs = make_inputs(cfg, batch=2)
    model(**inputs, labels=torch.tensor([0, 1])).loss.backward()
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before)), "frozen BatchNorm statistics moved"
    model.freeze_backbones(audio=False, vision=True)  # unfreezing while training puts the part back in train mode
    assert model.audio_encoder.training and not model.vision_encoder.training
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert model.frozen_backbones() == ["vision"] and not model.vision_encoder.training


def test_presets_are_data_and_fields_are_declared_once():
    assert set(FERConfig.PRESETS) == {"seed", "realtime", "tiny", "compact"}
    with pytest.raises(TypeError):
        PRESETS["tiny"] = {}  # read-only
    tiny = FERConfig.from_preset("tiny", vision_config=dict(num_hidden_layers=2))
    assert tiny.vision_config.num_hidden_layers == 2 and PRESETS["tiny"]["vision_config"]["num_hidden_layers"] == 1
    for name, overrides in PRESETS.items():
        config = FERConfig.from_preset(name)
        for key, value in overrides.items():
            if not key.endswith("_config"):
                assert getattr(config, key) == value, (name, key)
    # every documented argument is one declared field (with its default), and every field is documented
    fields = {f.name for f in dataclasses.fields(FERConfig)}
    own = set(FERConfig.__annotations__)
    documented = set(re.findall(r"^        (\w+) \(`", FERConfig.__doc__, re.M))
    assert documented == own and own <= fields
    assert "def __init__" not in inspect.getsource(FERConfig), "fields are declared once; the dataclass writes __init__"


def test_config_round_trips_and_reads_the_legacy_backbone_sources(tmp_path):
    cfg = FERConfig.from_preset("tiny", num_frames=6)
    cfg.save_pretrained(tmp_path)
    again = FERConfig.from_pretrained(tmp_path)
    assert again.num_frames == 6 and again.vision_config.hidden_size == 32 and again.preset == "tiny"
    legacy = FERConfig.from_preset("tiny", backbone_sources={"fusion": "/ckpt/lfm2"})
    assert legacy.provenance_status == "backbones" and legacy.provenance["backbones"] == {"fusion": "/ckpt/lfm2"}
    assert not hasattr(legacy, "backbone_sources")


def test_mel_geometry_matches_the_feature_extractor():
    cfg = FERConfig.from_preset("tiny")
    extractor = ParakeetFeatureExtractor(sampling_rate=cfg.sampling_rate)
    assert extractor.hop_length == cfg.mel_hop_length
    for samples in (1000, 16000, 47999, cfg.num_audio_samples):
        got = extractor(torch.zeros(samples).numpy(), sampling_rate=16000, return_tensors="pt")["input_features"]
        assert got.shape[1] == cfg.num_mel_frames(samples), samples
