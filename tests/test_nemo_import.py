"""NeMo `.nemo` FastConformer import without NeMo: synthetic archives with NeMo's key names and config layout."""

import inspect
import io
import math
import os
import tarfile

import pytest
import torch
import yaml
from transformers import ParakeetEncoder

import fer_hf.tools.nemo_import as nemo_import
from fer_hf import FERConfig, FERForEmotionClassification
from fer_hf.tools.backbones import BackboneMismatchError, load_audio_backbone, load_nemo_encoder
from fer_hf.tools.nemo_import import NemoImportError, UnsupportedNemoModelError

VOCAB = 6

# NeMo ConformerLayer tensor -> ParakeetEncoderBlock tensor, and its shape for (d_model, ff, heads, kernel).
# Written out from NeMo's module names (conformer_modules.py / multi_head_attention.py), independently of the importer.
LAYER_TABLE = {
    "norm_feed_forward1.weight": ("norm_feed_forward1.weight", lambda d, f, h, k: (d,)),
    "norm_feed_forward1.bias": ("norm_feed_forward1.bias", lambda d, f, h, k: (d,)),
    "feed_forward1.linear1.weight": ("feed_forward1.linear1.weight", lambda d, f, h, k: (f, d)),
    "feed_forward1.linear1.bias": ("feed_forward1.linear1.bias", lambda d, f, h, k: (f,)),
    "feed_forward1.linear2.weight": ("feed_forward1.linear2.weight", lambda d, f, h, k: (d, f)),
    "feed_forward1.linear2.bias": ("feed_forward1.linear2.bias", lambda d, f, h, k: (d,)),
    "norm_self_att.weight": ("norm_self_att.weight", lambda d, f, h, k: (d,)),
    "norm_self_att.bias": ("norm_self_att.bias", lambda d, f, h, k: (d,)),
    "self_attn.pos_bias_u": ("self_attn.bias_u", lambda d, f, h, k: (h, d // h)),
    "self_attn.pos_bias_v": ("self_attn.bias_v", lambda d, f, h, k: (h, d // h)),
    "self_attn.linear_q.weight": ("self_attn.q_proj.weight", lambda d, f, h, k: (d, d)),
    "self_attn.linear_q.bias": ("self_attn.q_proj.bias", lambda d, f, h, k: (d,)),
    "self_attn.linear_k.weight": ("self_attn.k_proj.weight", lambda d, f, h, k: (d, d)),
    "self_attn.linear_k.bias": ("self_attn.k_proj.bias", lambda d, f, h, k: (d,)),
    "self_attn.linear_v.weight": ("self_attn.v_proj.weight", lambda d, f, h, k: (d, d)),
    "self_attn.linear_v.bias": ("self_attn.v_proj.bias", lambda d, f, h, k: (d,)),
    "self_attn.linear_out.weight": ("self_attn.o_proj.weight", lambda d, f, h, k: (d, d)),
    "self_attn.linear_out.bias": ("self_attn.o_proj.bias", lambda d, f, h, k: (d,)),
    "self_attn.linear_pos.weight": ("self_attn.relative_k_proj.weight", lambda d, f, h, k: (d, d)),
    "norm_conv.weight": ("norm_conv.weight", lambda d, f, h, k: (d,)),
    "norm_conv.bias": ("norm_conv.bias", lambda d, f, h, k: (d,)),
    "conv.pointwise_conv1.weight": ("conv.pointwise_conv1.weight", lambda d, f, h, k: (2 * d, d, 1)),
    "conv.pointwise_conv1.bias": ("conv.pointwise_conv1.bias", lambda d, f, h, k: (2 * d,)),
    "conv.depthwise_conv.weight": ("conv.depthwise_conv.weight", lambda d, f, h, k: (d, 1, k)),
    "conv.depthwise_conv.bias": ("conv.depthwise_conv.bias", lambda d, f, h, k: (d,)),
    "conv.batch_norm.weight": ("conv.norm.weight", lambda d, f, h, k: (d,)),
    "conv.batch_norm.bias": ("conv.norm.bias", lambda d, f, h, k: (d,)),
    "conv.batch_norm.running_mean": ("conv.norm.running_mean", lambda d, f, h, k: (d,)),
    "conv.batch_norm.running_var": ("conv.norm.running_var", lambda d, f, h, k: (d,)),
    "conv.batch_norm.num_batches_tracked": ("conv.norm.num_batches_tracked", lambda d, f, h, k: ()),
    "conv.pointwise_conv2.weight": ("conv.pointwise_conv2.weight", lambda d, f, h, k: (d, d, 1)),
    "conv.pointwise_conv2.bias": ("conv.pointwise_conv2.bias", lambda d, f, h, k: (d,)),
    "norm_feed_forward2.weight": ("norm_feed_forward2.weight", lambda d, f, h, k: (d,)),
    "norm_feed_forward2.bias": ("norm_feed_forward2.bias", lambda d, f, h, k: (d,)),
    "feed_forward2.linear1.weight": ("feed_forward2.linear1.weight", lambda d, f, h, k: (f, d)),
    "feed_forward2.linear1.bias": ("feed_forward2.linear1.bias", lambda d, f, h, k: (f,)),
    "feed_forward2.linear2.weight": ("feed_forward2.linear2.weight", lambda d, f, h, k: (d, f)),
    "feed_forward2.linear2.bias": ("feed_forward2.linear2.bias", lambda d, f, h, k: (d,)),
    "norm_out.weight": ("norm_out.weight", lambda d, f, h, k: (d,)),
    "norm_out.bias": ("norm_out.bias", lambda d, f, h, k: (d,)),
}


def nemo_config(n_layers=1, d_model=32, channels=8, heads=2, kernel=9, factor=8, feat_in=80):
    """A model_config.yaml laid out like NVIDIA's stt_en_fastconformer_ctc_large (values shrunk)."""
    return {
        "sample_rate": 16000,
        "labels": [chr(97 + i) for i in range(VOCAB)],
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000,
            "normalize": "per_feature",
            "window_size": 0.025,
            "window_stride": 0.01,
            "window": "hann",
            "features": feat_in,
            "n_fft": 512,
            "log": True,
            "frame_splicing": 1,
            "dither": 1.0e-05,
            "pad_to": 0,
            "pad_value": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": "${model.preprocessor.features}",  # NeMo configs keep OmegaConf interpolations
            "feat_out": -1,
            "n_layers": n_layers,
            "d_model": d_model,
            "subsampling": "dw_striding",
            "subsampling_factor": factor,
            "subsampling_conv_channels": channels,
            "causal_downsampling": False,
            "ff_expansion_factor": 4,
            "self_attention_model": "rel_pos",
            "n_heads": heads,
            "att_context_size": [-1, -1],
            "att_context_style": "regular",
            "xscaling": True,
            "untie_biases": True,
            "pos_emb_max_len": 5000,
            "conv_kernel_size": kernel,
            "conv_norm_type": "batch_norm",
            "conv_context_size": None,
            "dropout": 0.1,
            "dropout_pre_encoder": 0.1,
            "dropout_emb": 0.0,
            "dropout_att": 0.1,
            "stochastic_depth_drop_prob": 0.0,
            "stochastic_depth_mode": "linear",
            "stochastic_depth_start_layer": 1,
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
            "feat_in": None,
            "num_classes": VOCAB,
        },
    }


def nemo_state_dict(n_layers=1, d_model=32, channels=8, heads=2, kernel=9, factor=8, feat_in=80, seed=0):
    """Random tensors under NeMo's key names: {nemo_key: tensor}, plus {nemo_key: expected ParakeetEncoder key}."""
    g = torch.Generator().manual_seed(seed)
    shapes, expected = {}, {}
    stages = int(math.log2(factor))
    conv_indices = [(0, (channels, 1, 3, 3))]
    for stage in range(stages - 1):  # NeMo dw_striding: conv, relu, then (depthwise, pointwise, relu) per stage
        conv_indices += [(2 + 3 * stage, (channels, 1, 3, 3)), (3 + 3 * stage, (channels, channels, 1, 1))]
    for index, shape in conv_indices:
        for part, part_shape in (("weight", shape), ("bias", (channels,))):
            shapes[f"encoder.pre_encode.conv.{index}.{part}"] = part_shape
            expected[f"encoder.pre_encode.conv.{index}.{part}"] = f"subsampling.layers.{index}.{part}"
    out_in = channels * (feat_in // factor)
    for part, shape in (("weight", (d_model, out_in)), ("bias", (d_model,))):
        shapes[f"encoder.pre_encode.out.{part}"] = shape
        expected[f"encoder.pre_encode.out.{part}"] = f"subsampling.linear.{part}"
    for layer in range(n_layers):
        for nemo_name, (hf_name, shape) in LAYER_TABLE.items():
            shapes[f"encoder.layers.{layer}.{nemo_name}"] = shape(d_model, 4 * d_model, heads, kernel)
            expected[f"encoder.layers.{layer}.{nemo_name}"] = f"layers.{layer}.{hf_name}"
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.2
    state["preprocessor.featurizer.window"] = torch.hann_window(400)
    state["preprocessor.featurizer.fb"] = torch.rand(1, feat_in, 257, generator=g)
    state["decoder.decoder_layers.0.weight"] = torch.randn(VOCAB + 1, d_model, 1, generator=g)
    state["decoder.decoder_layers.0.bias"] = torch.randn(VOCAB + 1, generator=g)
    return state, expected


def write_nemo(path, config=None, state=None, compress=False, **shape):
    """Write a `.nemo` tar (model_config.yaml + model_weights.ckpt), as NeMo's `save_to` does."""
    config = config or nemo_config(**shape)
    state = state if state is not None else nemo_state_dict(**shape)[0]
    weights = io.BytesIO()
    torch.save(state, weights)  # the .nemo format itself is a torch pickle; the importer reads it weights_only
    members = {"model_config.yaml": yaml.safe_dump(config).encode(), "model_weights.ckpt": weights.getvalue()}
    with tarfile.open(path, "w:gz" if compress else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def fer_config(**audio):
    return FERConfig.from_preset("tiny", audio_config=dict(num_hidden_layers=2, **audio))


def test_every_nemo_tensor_lands_in_the_right_parakeet_tensor(tmp_path):
    state, expected = nemo_state_dict(n_layers=2)
    path = write_nemo(tmp_path / "m.nemo", nemo_config(n_layers=2), state)
    model = FERForEmotionClassification(fer_config()).eval()
    report = load_audio_backbone(model.audio_encoder, path)
    target = model.audio_encoder.state_dict()
    assert set(expected.values()) == set(target)  # the table covers the whole ParakeetEncoder
    for nemo_key, hf_key in expected.items():
        assert torch.equal(target[hf_key], state[nemo_key]), nemo_key
    assert report.loaded == sorted(target)
    assert report.ignored == {
        "NeMo mel front-end buffers (window, filterbank): the processor computes the features": 2,
        "ASR decoder (CTC head or transducer prediction network)": 2,
    }
    out = model.audio_encoder(input_features=torch.randn(1, 300, 80)).last_hidden_state
    assert out.shape == (1, 38, 32) and torch.isfinite(out).all()  # 300 mel frames -> 38 at x8


def test_config_is_translated_from_the_nemo_config(tmp_path):
    config = nemo_config(n_layers=3, d_model=48, channels=-1, heads=4, kernel=15, factor=4)
    config["encoder"]["xscaling"] = False
    imported = nemo_import.import_nemo_encoder(write_nemo(tmp_path / "m.nemo", config, state={}))
    c = imported.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (48, 3, 4, 192)
    assert (c.conv_kernel_size, c.subsampling_factor, c.subsampling_conv_channels) == (15, 4, 48)  # -1 -> d_model
    assert c.num_mel_bins == 80 and c.scale_input is False and c.layerdrop == 0.0


@pytest.mark.parametrize(
    "section,key,value,match",
    [
        ("encoder", "subsampling", "striding", "`encoder.subsampling` is 'striding'"),
        ("encoder", "self_attention_model", "abs_pos", "`encoder.self_attention_model` is 'abs_pos'"),
        ("encoder", "att_context_size", [70, 13], "att_context_size"),
        ("encoder", "conv_norm_type", "layer_norm", "conv_norm_type"),
        ("encoder", "conv_context_size", "causal", "conv_context_size"),
        ("encoder", "causal_downsampling", True, "causal_downsampling"),
        ("encoder", "feat_out", 64, "feat_out"),
        ("encoder", "subsampling_factor", 6, "subsampling_factor"),
        ("encoder", "reduction", "pooling", "reduction"),
        ("encoder", "_target_", "nemo.collections.asr.modules.SqueezeformerEncoder", "_target_"),
        ("encoder", "time_reduce_idx", 7, r"unknown setting\(s\) \['time_reduce_idx'\]"),
        ("preprocessor", "features", 128, "`preprocessor.features` is 128"),
        ("preprocessor", "normalize", "NA", "normalize"),
        ("preprocessor", "window_stride", 0.02, "window_stride"),
        ("preprocessor", "sample_rate", 8000, "sample_rate"),
    ],
)
def test_unsupported_variants_are_refused_by_name(tmp_path, section, key, value, match):
    config = nemo_config()
    config["encoder"]["feat_in"] = 80  # not the interpolation: a front-end that disagrees with the encoder
    config[section][key] = value
    path = write_nemo(tmp_path / "m.nemo", config)
    with pytest.raises(UnsupportedNemoModelError, match=match):
        nemo_import.import_nemo_encoder(path)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("xscaling", False, "scale_input: model True vs checkpoint False"),
        ("conv_kernel_size", 31, "conv_kernel_size: model 9 vs checkpoint 31"),
        ("n_layers", 3, "num_hidden_layers: model 2 vs checkpoint 3"),
    ],
)
def test_a_nemo_encoder_of_another_shape_than_the_model_is_refused(tmp_path, key, value, match):
    config = nemo_config(n_layers=2)
    config["encoder"][key] = value
    state = nemo_state_dict(n_layers=config["encoder"]["n_layers"], kernel=config["encoder"]["conv_kernel_size"])[0]
    model = FERForEmotionClassification(fer_config())
    with pytest.raises(BackboneMismatchError, match=match):
        load_audio_backbone(model.audio_encoder, write_nemo(tmp_path / "m.nemo", config, state))


@pytest.mark.parametrize("edit,match", [("shape", "wrong shape"), ("unknown", "unexpected"), ("drop", "missing")])
def test_tensor_problems_in_the_archive_are_errors(tmp_path, edit, match):
    state, _ = nemo_state_dict(n_layers=2)
    if edit == "shape":
        state["encoder.layers.1.conv.depthwise_conv.weight"] = torch.zeros(32, 1, 31)
    elif edit == "unknown":
        state["encoder.layers.0.adapter_layer.linear.weight"] = torch.zeros(2)
        state["spk_embedding.weight"] = torch.zeros(2)
    else:
        del state["encoder.layers.0.self_attn.pos_bias_u"]
    model = FERForEmotionClassification(fer_config())
    with pytest.raises(BackboneMismatchError, match=match):
        load_audio_backbone(model.audio_encoder, write_nemo(tmp_path / "m.nemo", nemo_config(n_layers=2), state))


def test_gzip_archives_tied_biases_and_broken_archives(tmp_path):
    config = nemo_config()
    config["encoder"]["untie_biases"] = False
    encoder, report = load_nemo_encoder(write_nemo(tmp_path / "gz.nemo", config, compress=True))
    assert isinstance(encoder, ParakeetEncoder) and "untie_biases=False" in report.notes[0]
    (tmp_path / "text.nemo").write_text("not a tar")
    with pytest.raises(NemoImportError, match="not a readable .nemo archive"):
        nemo_import.read_nemo_archive(tmp_path / "text.nemo")
    with tarfile.open(tmp_path / "empty.nemo", "w") as tar:
        info = tarfile.TarInfo("model_config.yaml")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(NemoImportError, match="lacks model_config.yaml or model_weights.ckpt"):
        nemo_import.read_nemo_archive(tmp_path / "empty.nemo")


def test_cli_writes_a_safetensors_parakeet_encoder(tmp_path, capsys):
    path = write_nemo(tmp_path / "m.nemo")
    nemo_import.main([path, "--output-dir", str(tmp_path / "out")])
    assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "model.safetensors"]
    reloaded = ParakeetEncoder.from_pretrained(tmp_path / "out")
    state, expected = nemo_state_dict()
    for nemo_key, hf_key in expected.items():
        assert torch.equal(reloaded.state_dict()[hf_key], state[nemo_key]), nemo_key
    assert "audio: " in capsys.readouterr().out


def test_parity_with_nemo_conformer_encoder(tmp_path):
    """NeMo's own ConformerEncoder and the imported ParakeetEncoder give the same outputs."""
    pytest.importorskip("nemo.collections.asr", reason="nemo_toolkit is not installed (the parity check needs it)")
    from nemo.collections.asr.modules import ConformerEncoder

    config = nemo_config(n_layers=2)
    accepted = inspect.signature(ConformerEncoder.__init__).parameters  # NeMo versions differ in their kwargs
    enc_cfg = {k: v for k, v in config["encoder"].items() if k in accepted}
    enc_cfg.update(feat_in=80, dropout=0.0, dropout_pre_encoder=0.0, dropout_emb=0.0, dropout_att=0.0)
    torch.manual_seed(0)
    nemo_encoder = ConformerEncoder(**enc_cfg)
    for name, tensor in nemo_encoder.state_dict().items():  # non-trivial norms, biases and BN statistics
        if tensor.is_floating_point():
            tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor) * 0.2)
    nemo_encoder.eval()
    state = {"encoder." + k: v for k, v in nemo_encoder.state_dict().items()}
    encoder, _ = load_nemo_encoder(write_nemo(tmp_path / "m.nemo", config, state))
    features, lengths = torch.randn(2, 80, 300), torch.tensor([300, 201])  # the second row is padded
    features[1, :, 201:] = 0.0
    mask = (torch.arange(300)[None] < lengths[:, None]).long()
    with torch.no_grad():
        expected, out_lengths = nemo_encoder(audio_signal=features, length=lengths)
        ours = encoder(input_features=features.transpose(1, 2), attention_mask=mask)
    expected = expected.transpose(1, 2)  # (B, T', D)
    assert ours.attention_mask.sum(-1).tolist() == out_lengths.tolist()
    diff = max((ours.last_hidden_state[i, :n] - expected[i, :n]).abs().max().item() for i, n in enumerate(out_lengths))
    print(f"max abs diff vs NeMo ConformerEncoder (valid frames): {diff:.3e}")
    assert diff < 1e-4
