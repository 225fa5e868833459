"""Backbone initialisation from real checkpoint formats, saved locally as tiny models (no network)."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import load_file, save_file
from transformers import (
    Lfm2Config,
    Lfm2ForCausalLM,
    ParakeetCTCConfig,
    ParakeetEncoder,
    ParakeetEncoderConfig,
    ParakeetForCTC,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

import fer_hf.tools.backbones as backbones
from fer_hf import FERConfig, FERForEmotionClassification
from fer_hf.tools.backbones import BackboneMismatchError, CheckpointNotFoundError, build_model_from_backbones

SEED_PATTERN = ["conv", "conv", "full_attention", "conv", "conv", "full_attention"]
TINY = FERConfig.from_preset("tiny")
VISION = {k: TINY.vision_config.to_dict()[k] for k in backbones.VISION_CONFIG_FIELDS}
AUDIO = {k: TINY.audio_config.to_dict()[k] for k in backbones.AUDIO_CONFIG_FIELDS}
LFM2 = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, block_multiple_of=32)


def fer_config():
    """The tiny preset with six LFM2 fusion layers in the seed pattern."""
    return FERConfig.from_preset("tiny", lfm2_config=dict(num_hidden_layers=6, layer_types=SEED_PATTERN))


def save_lfm2(path, layer_types, dtype=torch.bfloat16, **overrides):
    torch.manual_seed(1)
    config = Lfm2Config(**{**LFM2, **overrides}, num_hidden_layers=len(layer_types), layer_types=layer_types)
    model = Lfm2ForCausalLM(config)
    for param in model.parameters():  # RMSNorm weights are ones at init: make every tensor distinctive
        param.data.normal_()
    model.to(dtype).save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99)
    siglip = SiglipModel(SiglipConfig(vision_config=VISION, text_config=text)).eval()
    siglip.save_pretrained(root / "siglip")
    ctc = ParakeetForCTC(ParakeetCTCConfig(vocab_size=11, pad_token_id=10, encoder_config=AUDIO))
    for module in ctc.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    ctc.save_pretrained(root / "parakeet_ctc")
    lfm2 = save_lfm2(root / "lfm2", SEED_PATTERN + ["conv", "full_attention"])
    return dict(root=root, siglip=siglip, ctc=ctc, lfm2=lfm2)


def assert_same(module, expected: dict, prefix=""):
    for key, value in module.state_dict().items():
        assert torch.equal(value, expected[prefix + key].to(value.dtype)), key


def test_all_three_backbones_land_and_the_report_accounts_for_every_key(ckpts):
    root = ckpts["root"]
    model, reports = build_model_from_backbones(
        fer_config(), vision=root / "siglip", audio=root / "parakeet_ctc", fusion=root / "lfm2"
    )
    assert_same(model.vision_encoder, ckpts["siglip"].state_dict(), "vision_model.")
    assert_same(model.audio_encoder, ckpts["ctc"].state_dict(), "encoder.")
    lfm2 = ckpts["lfm2"].state_dict()
    for key, value in model.fusion.backbone.state_dict().items():
        source = "model.embedding_norm.weight" if key == "norm.weight" else "model." + key
        assert torch.equal(value, lfm2[source].float()), key
    for name, module in model.backbone_modules().items():
        assert reports[name].loaded == sorted(module.state_dict()), name
        assert reports[name].missing == [] and reports[name].unexpected == []
    n_text = sum(k.startswith("text_model.") for k in ckpts["siglip"].state_dict())
    assert reports["vision"].ignored["SigLIP text tower"] == n_text
    assert reports["vision"].ignored["SigLIP contrastive logit scale/bias"] == 2
    assert reports["vision"].ignored["SigLIP vision pooling head (the model uses the patch tokens)"] > 0
    assert reports["audio"].ignored == {"Parakeet CTC head": 2}
    assert reports["fusion"].ignored["LFM2 token embedding"] == 1
    assert reports["fusion"].ignored["LFM2 decoder layers 6 and above"] == sum(
        k.startswith(("model.layers.6.", "model.layers.7.")) for k in lfm2
    )
    assert reports["fusion"].casts == {"torch.bfloat16->torch.float32": len(reports["fusion"].loaded)}
    assert model.config.provenance["status"] == "backbones"
    assert model.config.provenance["backbones"]["fusion"] == str(root / "lfm2")
    assert model.config.provenance_summary().startswith("pretrained backbones only")
    for name, folder in (("vision", "siglip"), ("audio", "parakeet_ctc"), ("fusion", "lfm2")):
        # every checkpoint key is either loaded or counted as ignored
        stored = load_file(root / folder / "model.safetensors")
        assert len(reports[name].loaded) + sum(reports[name].ignored.values()) == len(stored), name


def test_siglip_vision_model_checkpoints_of_both_layouts(tmp_path):
    torch.manual_seed(3)
    tower = SiglipVisionModel(SiglipVisionConfig(**VISION, vision_use_head=False))
    tower.save_pretrained(tmp_path / "new")  # transformers 5 layout: embeddings.*, encoder.*
    weights = load_file(tmp_path / "new" / "model.safetensors")
    (tmp_path / "old").mkdir()  # transformers 4 layout: vision_model.embeddings.*
    shutil.copy(tmp_path / "new" / "config.json", tmp_path / "old" / "config.json")
    save_file({"vision_model." + k: v for k, v in weights.items()}, tmp_path / "old" / "model.safetensors")
    for layout in ("new", "old"):
        model = FERForEmotionClassification(TINY)
        report = backbones.load_vision_backbone(model.vision_encoder, tmp_path / layout)
        assert_same(model.vision_encoder, tower.state_dict())
        assert report.ignored == {}


def test_vision_checkpoint_of_another_shape_or_kind_is_refused(tmp_path, ckpts):
    SiglipVisionModel(SiglipVisionConfig(**{**VISION, "hidden_size": 48})).save_pretrained(tmp_path / "wide")
    model = FERForEmotionClassification(TINY)
    before = {k: v.clone() for k, v in model.vision_encoder.state_dict().items()}
    with pytest.raises(BackboneMismatchError, match="hidden_size: model 32 vs checkpoint 48"):
        backbones.load_vision_backbone(model.vision_encoder, tmp_path / "wide")
    with pytest.raises(BackboneMismatchError, match="model_type 'lfm2'"):
        backbones.load_vision_backbone(model.vision_encoder, ckpts["root"] / "lfm2")
    assert_same(model.vision_encoder, before)  # nothing was copied


@pytest.mark.parametrize(
    "layer_types,match",
    [
        (["conv", "full_attention", "conv", "conv", "conv", "full_attention", "conv"], "first 6 layers are"),
        (["conv", "conv", "full_attention", "conv"], r"first 6 layers are .* \(of 4\)"),
    ],
)
def test_lfm2_checkpoint_with_another_layer_pattern_is_refused(tmp_path, layer_types, match):
    save_lfm2(tmp_path, layer_types)
    model = FERForEmotionClassification(fer_config())
    with pytest.raises(BackboneMismatchError, match=match):
        backbones.load_fusion_backbone(model.fusion.backbone, tmp_path)


def test_lfm2_checkpoint_with_another_width_is_refused(tmp_path):
    save_lfm2(tmp_path, SEED_PATTERN, num_key_value_heads=4)
    model = FERForEmotionClassification(fer_config())
    with pytest.raises(BackboneMismatchError, match="num_key_value_heads: model 2 vs checkpoint 4"):
        backbones.load_fusion_backbone(model.fusion.backbone, tmp_path)


@pytest.mark.parametrize("edit", ["wrong_shape", "missing", "unexpected"])
def test_tensor_level_mismatches_are_errors_listing_the_keys(tmp_path, ckpts, edit):
    shutil.copytree(ckpts["root"] / "lfm2", tmp_path, dirs_exist_ok=True)
    weights = load_file(tmp_path / "model.safetensors")
    key = "model.layers.2.self_attn.q_proj.weight"
    if edit == "wrong_shape":
        weights[key] = weights[key][:-1]
    elif edit == "missing":
        del weights[key]
    else:
        weights["model.layers.1.conv.extra_gate.weight"] = torch.zeros(3)
    save_file(weights, tmp_path / "model.safetensors")
    model = FERForEmotionClassification(fer_config())
    match = {
        "wrong_shape": r"1 wrong shape: \['layers.2.self_attn.q_proj.weight: checkpoint \(63, 64\)",
        "missing": r"1 missing: \['layers.2.self_attn.q_proj.weight'\]",
        "unexpected": r"1 unexpected: \['layers.1.conv.extra_gate.weight'\]",
    }[edit]
    with pytest.raises(BackboneMismatchError, match=match) as info:
        backbones.load_fusion_backbone(model.fusion.backbone, tmp_path)
    assert info.value.report.backbone == "fusion"


def test_parakeet_encoder_checkpoint_and_audio_shape_mismatch(tmp_path):
    torch.manual_seed(4)
    encoder = ParakeetEncoder(ParakeetEncoderConfig(**AUDIO))
    encoder.save_pretrained(tmp_path / "enc")
    model = FERForEmotionClassification(TINY)
    report = backbones.load_audio_backbone(model.audio_encoder, tmp_path / "enc")
    assert_same(model.audio_encoder, encoder.state_dict())
    assert report.checkpoint_format.startswith("transformers parakeet_encoder")
    ParakeetEncoder(ParakeetEncoderConfig(**{**AUDIO, "conv_kernel_size": 31})).save_pretrained(tmp_path / "k31")
    with pytest.raises(BackboneMismatchError, match="conv_kernel_size: model 9 vs checkpoint 31"):
        backbones.load_audio_backbone(model.audio_encoder, tmp_path / "k31")


def test_sharded_checkpoint_opens_only_the_shards_it_needs(tmp_path, monkeypatch):
    save_lfm2(tmp_path, SEED_PATTERN + ["conv", "conv", "full_attention"], dtype=torch.float32)
    Lfm2ForCausalLM.from_pretrained(tmp_path).save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())["weight_map"]
    needed = {f for k, f in index.items() if k == "model.embedding_norm.weight" or k.split(".")[2] in "012345"}
    assert len(set(index.values())) > len(needed)
    opened = []
    real_open = backbones.safe_open
    monkeypatch.setattr(
        backbones, "safe_open", lambda path, **kw: opened.append(Path(path).name) or real_open(path, **kw)
    )
    model = FERForEmotionClassification(fer_config())
    backbones.load_fusion_backbone(model.fusion.backbone, tmp_path / "sharded")
    assert set(opened) == needed


def test_hub_ids_go_through_hf_hub_download(ckpts, tmp_path, monkeypatch):
    """Hub ids resolve through huggingface_hub (faked here by a local mirror): only the needed files are fetched."""
    sys.path.insert(0, os.path.dirname(__file__))
    from test_nemo_import import write_nemo

    nemo_repo = tmp_path / "nemo_repo"
    nemo_repo.mkdir()
    write_nemo(nemo_repo / "stt_en_fastconformer_ctc_large.nemo", n_layers=1, d_model=32, channels=8)
    mirror = {
        "google/siglip2-base-patch16-224": ckpts["root"] / "siglip",
        "LiquidAI/LFM2-700M": ckpts["root"] / "lfm2",
        "nvidia/stt_en_fastconformer_ctc_large": nemo_repo,
    }
    fetched = []

    def fake_download(repo_id, filename, **kwargs):
        path = mirror.get(repo_id, tmp_path / "absent") / filename
        if not path.is_file():
            raise LocalEntryNotFoundError(f"{filename} not in {repo_id}")
        fetched.append((repo_id, filename))
        return str(path)

    monkeypatch.setattr(backbones, "hf_hub_download", fake_download)
    monkeypatch.setattr(backbones, "list_repo_files", lambda repo_id, **kw: sorted(os.listdir(mirror[repo_id])))
    _, reports = build_model_from_backbones(
        fer_config(),
        vision="google/siglip2-base-patch16-224",
        audio="nvidia/stt_en_fastconformer_ctc_large",
        fusion="LiquidAI/LFM2-700M",
    )
    assert ("LiquidAI/LFM2-700M", "model.safetensors") in fetched
    assert ("nvidia/stt_en_fastconformer_ctc_large", "stt_en_fastconformer_ctc_large.nemo") in fetched
    assert reports["audio"].checkpoint_format.startswith("NeMo")
    with pytest.raises(CheckpointNotFoundError, match="no config.json"):
        backbones.load_fusion_backbone(FERForEmotionClassification(fer_config()).fusion.backbone, "nobody/nothing")


def test_bad_sources_are_clear_errors(tmp_path):
    model = FERForEmotionClassification(TINY)
    with pytest.raises(CheckpointNotFoundError, match="neither a checkpoint folder nor a Hub repo id"):
        backbones.load_vision_backbone(model.vision_encoder, str(tmp_path / "no such" / "dir"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip_vision_model", **VISION}))
    with pytest.raises(CheckpointNotFoundError, match="only safetensors"):
        backbones.load_vision_backbone(model.vision_encoder, tmp_path)
    with pytest.raises(ValueError, match="preset"):
        build_model_from_backbones("huge")


def test_cli_writes_a_loadable_model_and_the_report(ckpts, tmp_path, capsys):
    fer_config().save_pretrained(tmp_path / "cfg")
    out = tmp_path / "init"
    backbones.main(
        ["--preset", str(tmp_path / "cfg"), "--fusion", str(ckpts["root"] / "lfm2"), "--output-dir", str(out)]
    )
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "backbone_report.json", "modeling_fer.py"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".ckpt")) for f in files)
    report = json.loads((out / "backbone_report.json").read_text())
    assert list(report) == ["fusion"] and report["fusion"]["missing"] == []
    reloaded = FERForEmotionClassification.from_pretrained(out)
    lfm2 = ckpts["lfm2"].state_dict()
    assert torch.equal(
        reloaded.fusion.backbone.layers[5].feed_forward.w2.weight, lfm2["model.layers.5.feed_forward.w2.weight"].float()
    )
    assert reloaded.config.provenance["backbones"] == {"fusion": str(ckpts["root"] / "lfm2")}
    assert reloaded.config.provenance_status == "backbones" and reloaded.config.provenance["training"] is None
    assert "fusion: 55 tensors loaded from" in capsys.readouterr().out


# Shape-relevant parts of the Hub configs of the real backbones (config.json / model_config.yaml).
SIGLIP2_BASE_224 = {
    "model_type": "siglip",
    "architectures": ["SiglipModel"],
    "text_config": {
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 768,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-06,
        "max_position_embeddings": 64,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "projection_size": 768,
        "vocab_size": 256000,
    },
    "vision_config": {
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 768,
        "image_size": 224,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-06,
        "num_attention_heads": 12,
        "num_channels": 3,
        "num_hidden_layers": 12,
        "patch_size": 16,
    },
}
LFM2_700M = {
    "model_type": "lfm2",
    "architectures": ["Lfm2ForCausalLM"],
    "block_auto_adjust_ff_dim": True,
    "block_ff_dim": 6656,
    "block_ffn_dim_multiplier": 1.0,
    "block_multiple_of": 256,
    "conv_L_cache": 3,
    "conv_bias": False,
    "hidden_size": 1536,
    "intermediate_size": 6656,
    "full_attn_idxs": [2, 5, 8, 10, 12, 14],
    "max_position_embeddings": 128000,
    "norm_eps": 1e-05,
    "num_attention_heads": 24,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "rope_theta": 1000000.0,
    "vocab_size": 65536,
    "tie_word_embeddings": True,
}


def test_seed_preset_fits_the_real_checkpoints_key_by_key():
    """On the meta device (no memory): the real checkpoints' configs pass the checks and every key/shape maps."""
    from test_nemo_import import nemo_config

    from fer_hf.tools.nemo_import import check_nemo_encoder, parakeet_config_from_nemo

    seed = FERConfig.from_preset("seed")
    with torch.device("meta"):
        model = FERForEmotionClassification(seed)
        siglip = SiglipModel(SiglipConfig.from_dict(SIGLIP2_BASE_224))
        lfm2 = Lfm2ForCausalLM(Lfm2Config.from_dict(LFM2_700M))
    found = SiglipConfig.from_dict(SIGLIP2_BASE_224).vision_config
    backbones._check_config("vision", "siglip2", model.vision_encoder.config, found, backbones.VISION_CONFIG_FIELDS)
    lfm2_config = Lfm2Config.from_dict(LFM2_700M)
    assert lfm2_config.layer_types[:6] == SEED_PATTERN
    backbones._check_config("fusion", "lfm2", model.fusion.backbone.config, lfm2_config, backbones.FUSION_CONFIG_FIELDS)
    for module, checkpoint, target_of in (
        (model.vision_encoder, siglip, backbones._siglip_target(False)),
        (model.fusion.backbone, lfm2, backbones._lfm2_target(6)),
    ):
        mapped = {}
        for key, tensor in checkpoint.state_dict().items():
            target, reason = target_of(key)
            assert target is not None or reason is not None, key
            if target is not None:
                mapped[target] = tuple(tensor.shape)
        assert mapped == {k: tuple(v.shape) for k, v in module.state_dict().items()}
    large = nemo_config(n_layers=17, d_model=512, channels=256, heads=8, kernel=9, factor=8)  # FastConformer-Large
    check_nemo_encoder(large)
    audio = parakeet_config_from_nemo(large)
    backbones._check_config("audio", "nemo", model.audio_encoder.config, audio, backbones.AUDIO_CONFIG_FIELDS)
