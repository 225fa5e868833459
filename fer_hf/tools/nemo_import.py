"""Import an NVIDIA NeMo FastConformer encoder (`.nemo` archive) into transformers' `ParakeetEncoder` (SPEC §1.2).

A `.nemo` file is a tar archive holding `model_config.yaml` (the NeMo model config; the encoder under
`encoder:`, the mel front-end under `preprocessor:`) and `model_weights.ckpt` (a torch state dict). This
module reads both without NeMo:

1. `read_nemo_archive` opens the tar (plain or gzip) and loads the state dict with `torch.load(weights_only=True)`;
2. `check_nemo_encoder` refuses, by name, every variant `ParakeetEncoder` cannot represent exactly
   (subsampling other than `dw_striding`, attention other than `rel_pos`, limited or causal context,
   another conv norm, an output projection, ...) and a front-end the project's feature extractor does not reproduce;
3. `parakeet_config_from_nemo` builds the matching `ParakeetEncoderConfig`;
4. `convert_nemo_state_dict` renames NeMo's `encoder.*` keys to `ParakeetEncoder` keys and sorts every other key into
   "ignored" (a known part that the encoder does not use, counted per reason) or "unexpected".

Loading the converted tensors into a module, with the missing/unexpected/shape checks and the report, is done by
`fer_hf.tools.backbones`. `python -m fer_hf.tools.nemo_import model.nemo --output-dir DIR` writes a standalone
`ParakeetEncoder` checkpoint (safetensors).
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from fer_hf.errors_fer import FERError

from .checkpoint_loading import BackboneReport, load_state_into, sort_checkpoint_keys

if TYPE_CHECKING:  # torch and transformers are imported where used: `fer-nemo-import --help` answers at once
    import torch
    from transformers import ParakeetEncoder, ParakeetEncoderConfig

logger = logging.getLogger(__name__)

NEMO_CONFIG_NAME = "model_config.yaml"
NEMO_WEIGHTS_NAME = "model_weights.ckpt"
SUPPORTED_ENCODER_TARGETS = ("ConformerEncoder", "ConformerEncoderAdapter")

# What the project's feature extractor computes (ParakeetFeatureExtractor defaults, SPEC §1.1).
EXPECTED_FRONT_END = dict(sample_rate=16000, window_size=0.025, window_stride=0.01, n_fft=512, window="hann")

# NeMo encoder settings that change neither the weights nor the eval-mode function.
_IGNORED_ENCODER_KEYS = frozenset(
    {
        "_target_",
        "subsampling_conv_chunking_factor",  # memory-only chunking of the subsampling convs
        "att_context_probs",  # training-time sampling of context sizes
        "att_context_style",  # only matters with a limited context, which is refused
        "stochastic_depth_drop_prob",  # training only (layerdrop is set to 0)
        "stochastic_depth_mode",
        "stochastic_depth_start_layer",
        "dropout_pre_encoder",
        "use_pytorch_sdpa",
        "use_pytorch_sdpa_backends",
        "sync_max_audio_length",
        "untie_biases",  # per-layer biases either way in the state dict (see check_nemo_encoder)
        "pos_emb_max_len",
        "global_tokens_spacing",
        "global_attn_separate",
    }
)
_MAPPED_ENCODER_KEYS = frozenset(
    {
        "feat_in",
        "feat_out",
        "n_layers",
        "d_model",
        "n_heads",
        "ff_expansion_factor",
        "conv_kernel_size",
        "subsampling",
        "subsampling_factor",
        "subsampling_conv_channels",
        "causal_downsampling",
        "self_attention_model",
        "att_context_size",
        "xscaling",
        "conv_norm_type",
        "conv_context_size",
        "use_bias",
        "dropout",
        "dropout_emb",
        "dropout_att",
        "reduction",
        "reduction_position",
        "reduction_factor",
        "global_tokens",
    }
)

# Parts of a NeMo ASR checkpoint outside the encoder: never used here, counted as "ignored".
_IGNORED_PREFIXES = {
    "preprocessor.": "NeMo mel front-end buffers (window, filterbank): the processor computes the features",
    "decoder.": "ASR decoder (CTC head or transducer prediction network)",
    "joint.": "transducer joint network",
    "ctc_decoder.": "auxiliary CTC decoder of a hybrid model",
    "encoder.pos_enc.pe": "relative positional table (recomputed by ParakeetEncoder)",
}

# Sub-module names that differ between NeMo's ConformerLayer and ParakeetEncoderBlock.
_ATTENTION_RENAMES = {
    "linear_q": "q_proj",
    "linear_k": "k_proj",
    "linear_v": "v_proj",
    "linear_out": "o_proj",
    "linear_pos": "relative_k_proj",
    "pos_bias_u": "bias_u",
    "pos_bias_v": "bias_v",
}
_SAME_NAME_BLOCK_PARTS = (
    "norm_feed_forward1",
    "feed_forward1",
    "norm_self_att",
    "norm_conv",
    "norm_feed_forward2",
    "feed_forward2",
    "norm_out",
)
_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")


class NemoImportError(FERError, ValueError):
    """The `.nemo` archive cannot be read (not a tar, no config or weights, a sharded NeMo 2 checkpoint...)."""


class UnsupportedNemoModelError(NemoImportError):
    """The NeMo encoder is a variant that `ParakeetEncoder` cannot represent exactly; the message names the setting."""


@dataclass
class NemoArchive:
    """Contents of a `.nemo` file: the model config (a dict) and the full state dict."""

    path: str
    config: dict
    state_dict: dict[str, torch.Tensor]


@dataclass
class NemoEncoderImport:
    """A NeMo encoder translated to transformers: config, renamed tensors, and what was left out and why."""

    config: ParakeetEncoderConfig
    state_dict: dict[str, torch.Tensor]
    ignored: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Reading the archive
def _resolve_interpolations(node, root: dict):
    """Replace OmegaConf `${a.b}` strings (absolute paths in the model config, `model.` optional) by their values."""
    if isinstance(node, dict):
        return {k: _resolve_interpolations(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_interpolations(v, root) for v in node]
    match = _INTERPOLATION.match(node) if isinstance(node, str) else None
    if match is None:
        return node
    path = match.group(1).split(".")
    if path[0] == "model":
        path = path[1:]
    value = root
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return node  # left as is; a check that needs the value reports it
        value = value[part]
    return _resolve_interpolations(value, root)


def read_nemo_archive(path: str | Path) -> NemoArchive:
    """Read `model_config.yaml` and `model_weights.ckpt` from a `.nemo` tar without extracting it to disk."""
    import torch

    path = str(path)
    try:
        tar = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise NemoImportError(f"{path} is not a readable .nemo archive (a tar file): {exc}") from exc
    with tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        if NEMO_CONFIG_NAME not in members or NEMO_WEIGHTS_NAME not in members:
            sharded = any("model_weights" in Path(m.name).parts[:-1] for m in tar.getmembers())
            hint = " (a sharded/distributed NeMo checkpoint is not supported)" if sharded else ""
            raise NemoImportError(
                f"{path} lacks {NEMO_CONFIG_NAME} or {NEMO_WEIGHTS_NAME}{hint}; found {sorted(members)[:20]}"
            )
        raw = yaml.safe_load(tar.extractfile(members[NEMO_CONFIG_NAME]).read().decode("utf-8"))
        if not isinstance(raw, dict):
            raise NemoImportError(f"{NEMO_CONFIG_NAME} in {path} is not a mapping")
        state = torch.load(tar.extractfile(members[NEMO_WEIGHTS_NAME]), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a Lightning checkpoint
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NemoImportError(f"{NEMO_WEIGHTS_NAME} in {path} is not a state dict of tensors")
    return NemoArchive(path=path, config=_resolve_interpolations(raw, raw), state_dict=state)


# ----------------------------------------------------------------------------------------------
# Checking and translating the config
def _full_context(value) -> bool:
    """True for NeMo's unlimited attention context: None, [-1, -1] or [[-1, -1]]."""
    if value is None:
        return True
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (list, tuple)):
        value = value[0]
    return list(value) == [-1, -1]


def check_nemo_encoder(model_config: dict, check_front_end: bool = True) -> list[str]:
    """Refuse encoder (and front-end) settings `ParakeetEncoder` and the processor cannot reproduce.

    Returns notes about accepted settings worth recording (e.g. tied position biases). Raises
    `UnsupportedNemoModelError` naming the first unsupported setting and its value.
    """
    model_config = _resolve_interpolations(model_config, model_config)
    enc = model_config.get("encoder")
    if not isinstance(enc, dict):
        raise NemoImportError("the NeMo config has no `encoder` section")

    def refuse(name, value, supported):
        raise UnsupportedNemoModelError(
            f"unsupported NeMo encoder: `encoder.{name}` is {value!r}; ParakeetEncoder supports {supported}"
        )

    target = str(enc.get("_target_", ""))
    if target.rsplit(".", 1)[-1] not in SUPPORTED_ENCODER_TARGETS:
        refuse("_target_", target, f"a {' or '.join(SUPPORTED_ENCODER_TARGETS)}")
    unknown = sorted(set(enc) - _IGNORED_ENCODER_KEYS - _MAPPED_ENCODER_KEYS)
    if unknown:
        raise UnsupportedNemoModelError(
            f"unsupported NeMo encoder: unknown setting(s) {unknown}; refusing rather than guessing what they change"
        )
    for name in ("feat_in", "n_layers", "d_model", "n_heads"):
        if not isinstance(enc.get(name), int) or enc[name] < 1:
            refuse(name, enc.get(name), "a positive integer")
    if enc["d_model"] % enc["n_heads"]:
        refuse("n_heads", enc["n_heads"], f"a divisor of d_model={enc['d_model']}")
    if enc.get("subsampling", "striding") != "dw_striding":
        refuse("subsampling", enc.get("subsampling", "striding"), "'dw_striding' (FastConformer)")
    factor = enc.get("subsampling_factor", 4)
    if not isinstance(factor, int) or factor < 2 or factor & (factor - 1):
        refuse("subsampling_factor", factor, "a power of two >= 2")
    if enc.get("causal_downsampling", False):
        refuse("causal_downsampling", True, "False")
    if enc.get("self_attention_model", "rel_pos") != "rel_pos":
        refuse("self_attention_model", enc.get("self_attention_model"), "'rel_pos'")
    if not _full_context(enc.get("att_context_size")):
        refuse("att_context_size", enc.get("att_context_size"), "full context [-1, -1] (no streaming variants)")
    if enc.get("conv_norm_type", "batch_norm") != "batch_norm":
        refuse("conv_norm_type", enc.get("conv_norm_type"), "'batch_norm'")
    kernel = enc.get("conv_kernel_size", 31)
    if not isinstance(kernel, int) or kernel % 2 == 0:
        refuse("conv_kernel_size", kernel, "an odd integer")
    context = enc.get("conv_context_size")
    if context is not None and list(context) != [(kernel - 1) // 2, (kernel - 1) // 2]:
        refuse("conv_context_size", context, f"None or symmetric [{(kernel - 1) // 2}, {(kernel - 1) // 2}]")
    feat_out = enc.get("feat_out", -1)
    if feat_out not in (-1, None, 0, enc["d_model"]):
        refuse("feat_out", feat_out, "-1 (no output projection)")
    if enc.get("reduction") not in (None, "null"):
        refuse("reduction", enc.get("reduction"), "None (no time reduction inside the encoder)")
    if enc.get("global_tokens", 0):
        refuse("global_tokens", enc.get("global_tokens"), "0")
    if not isinstance(enc.get("ff_expansion_factor", 4), int) or enc.get("ff_expansion_factor", 4) < 1:
        refuse("ff_expansion_factor", enc.get("ff_expansion_factor"), "a positive integer")
    notes = []
    if enc.get("untie_biases", True) is False:
        notes.append(
            "NeMo shares pos_bias_u/v across layers (untie_biases=False); imported as identical per-layer copies"
        )
    if check_front_end:
        notes += _check_front_end(model_config.get("preprocessor"), enc["feat_in"])
    return notes


def _check_front_end(pre: dict | None, feat_in: int) -> list[str]:
    """The encoder only works with the features it was trained on: compare NeMo's mel front-end with ours."""
    if not isinstance(pre, dict):
        return ["no `preprocessor` section: assuming NeMo's default 80-mel front-end"]

    def refuse(name, value, expected):
        raise UnsupportedNemoModelError(
            f"unsupported NeMo front-end: `preprocessor.{name}` is {value!r}, the project's feature extractor "
            f"computes {expected!r} (SPEC §1.1)"
        )

    features = pre.get("features", 64)
    if features != feat_in:
        refuse("features", features, feat_in)
    for name, expected in EXPECTED_FRONT_END.items():
        value = pre.get(name, expected)
        if value is None and name == "n_fft":
            value = 2 ** math.ceil(math.log2(pre.get("window_size", 0.025) * pre.get("sample_rate", 16000)))
        if isinstance(expected, float) and isinstance(value, (int, float)) and math.isclose(value, expected):
            continue
        if value != expected:
            refuse(name, value, expected)
    if pre.get("normalize", "per_feature") != "per_feature":
        refuse("normalize", pre.get("normalize"), "per_feature")
    if pre.get("frame_splicing", 1) != 1:
        refuse("frame_splicing", pre.get("frame_splicing"), 1)
    if pre.get("log", True) is not True:
        refuse("log", pre.get("log"), True)
    return []


def parakeet_config_from_nemo(model_config: dict) -> ParakeetEncoderConfig:
    """`ParakeetEncoderConfig` with the shape of the NeMo encoder (call `check_nemo_encoder` first)."""
    from transformers import ParakeetEncoderConfig

    enc = _resolve_interpolations(model_config, model_config)["encoder"]
    d_model = enc["d_model"]
    channels = enc.get("subsampling_conv_channels", -1)
    use_bias = bool(enc.get("use_bias", True))
    dropout = float(enc.get("dropout", 0.1))
    return ParakeetEncoderConfig(
        hidden_size=d_model,
        num_hidden_layers=enc["n_layers"],
        num_attention_heads=enc["n_heads"],
        intermediate_size=d_model * enc.get("ff_expansion_factor", 4),
        conv_kernel_size=enc.get("conv_kernel_size", 31),
        subsampling_factor=enc.get("subsampling_factor", 4),
        subsampling_conv_channels=d_model if channels in (-1, None) else channels,
        num_mel_bins=enc["feat_in"],
        scale_input=bool(enc.get("xscaling", True)),
        attention_bias=use_bias,
        convolution_bias=use_bias,
        dropout=dropout,
        activation_dropout=dropout,
        attention_dropout=float(enc.get("dropout_att", 0.0)),
        dropout_positions=float(enc.get("dropout_emb", 0.0)),
        max_position_embeddings=int(enc.get("pos_emb_max_len", 5000)),
        layerdrop=0.0,
    )


# ----------------------------------------------------------------------------------------------
# Translating the weights
def nemo_key_to_parakeet(key: str) -> tuple[str | None, str | None]:
    """`(parakeet_key, None)` for an encoder weight, `(None, reason)` for a known unused one, `(None, None)` otherwise.

    e.g. `encoder.layers.3.self_attn.linear_q.weight` -> `layers.3.self_attn.q_proj.weight`,
    `encoder.layers.3.conv.batch_norm.running_mean` -> `layers.3.conv.norm.running_mean`,
    `encoder.pre_encode.conv.0.weight` -> `subsampling.layers.0.weight`.
    """
    for prefix, reason in _IGNORED_PREFIXES.items():
        if key.startswith(prefix):
            return None, reason
    if key.startswith("encoder.pre_encode.conv."):
        return "subsampling.layers." + key[len("encoder.pre_encode.conv.") :], None
    if key.startswith("encoder.pre_encode.out."):
        return "subsampling.linear." + key[len("encoder.pre_encode.out.") :], None
    match = _LAYER_KEY.match(key)
    if match is None:
        return None, None
    index, rest = match.groups()
    parts = rest.split(".")
    if parts[0] == "self_attn" and len(parts) >= 2 and parts[1] in _ATTENTION_RENAMES:
        parts[1] = _ATTENTION_RENAMES[parts[1]]
    elif parts[0] == "conv" and len(parts) >= 2 and parts[1] == "batch_norm":
        parts[1] = "norm"
    elif parts[0] not in _SAME_NAME_BLOCK_PARTS and parts[0] != "conv":
        return None, None
    return f"layers.{index}." + ".".join(parts), None


def convert_nemo_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict, dict[str, int], list[str]]:
    """Rename NeMo keys to `ParakeetEncoder` keys: returns (tensors, ignored counts per reason, unexpected keys)."""
    wanted, ignored, unexpected = sort_checkpoint_keys(state_dict, nemo_key_to_parakeet)
    return {target: state_dict[key] for key, target in wanted.items()}, ignored, unexpected


def import_nemo_encoder(path: str | Path, check_front_end: bool = True) -> NemoEncoderImport:
    """Read a `.nemo` archive, refuse unsupported variants, and translate config and weights."""
    archive = read_nemo_archive(path)
    notes = check_nemo_encoder(archive.config, check_front_end=check_front_end)
    config = parakeet_config_from_nemo(archive.config)
    tensors, ignored, unexpected = convert_nemo_state_dict(archive.state_dict)
    logger.info(
        "read %s: %d encoder tensors, %d ignored, %d unexpected",
        archive.path,
        len(tensors),
        sum(ignored.values()),
        len(unexpected),
    )
    return NemoEncoderImport(config=config, state_dict=tensors, ignored=ignored, unexpected=unexpected, notes=notes)


def load_nemo_encoder(path: str | Path, check_front_end: bool = True) -> tuple[ParakeetEncoder, BackboneReport]:
    """A standalone `ParakeetEncoder` with the shape and weights of a `.nemo` FastConformer encoder."""
    from transformers import ParakeetEncoder

    imported = import_nemo_encoder(path, check_front_end=check_front_end)
    encoder = ParakeetEncoder(imported.config).eval()
    report = BackboneReport("audio", str(path), "NeMo .nemo archive (ConformerEncoder)")
    report.ignored, report.unexpected, report.notes = imported.ignored, list(imported.unexpected), imported.notes
    load_state_into(encoder, imported.state_dict, report)
    return encoder, report


def main(argv: list[str] | None = None) -> int:
    """CLI: convert a `.nemo` FastConformer encoder into a transformers `ParakeetEncoder` folder (safetensors)."""
    parser = argparse.ArgumentParser(prog="fer-nemo-import", description=main.__doc__)
    parser.add_argument("nemo_file", help="path to a .nemo archive (e.g. stt_en_fastconformer_ctc_large.nemo)")
    parser.add_argument("--output-dir", required=True, help="folder to write config.json + model.safetensors")
    parser.add_argument("--skip-front-end-check", action="store_true", help="accept a different mel front-end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    encoder, report = load_nemo_encoder(args.nemo_file, check_front_end=not args.skip_front_end_check)
    encoder.save_pretrained(args.output_dir)
    sys.stdout.write(report.summary() + f"\nwrote {args.output_dir}\n")
    return 0


__all__ = [
    "NemoArchive",
    "NemoEncoderImport",
    "NemoImportError",
    "UnsupportedNemoModelError",
    "check_nemo_encoder",
    "convert_nemo_state_dict",
    "sort_checkpoint_keys",
    "import_nemo_encoder",
    "load_nemo_encoder",
    "nemo_key_to_parakeet",
    "parakeet_config_from_nemo",
    "read_nemo_archive",
]


if __name__ == "__main__":
    raise SystemExit(main())
