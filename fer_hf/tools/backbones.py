"""Initialise the model's pretrained parts from real checkpoints, by Hub id or local path (SPEC §1.2, §2.1, §3.3, §7).

- vision: the SigLIP vision tower of a `SiglipModel` (e.g. `google/siglip2-base-patch16-224`: keys `vision_model.*`,
  `text_model.*`) or of a `SiglipVisionModel` checkpoint;
- fusion: the first `lfm2_config.num_hidden_layers` decoder layers and the final norm (`model.embedding_norm` ->
  `norm`) of an `Lfm2ForCausalLM` checkpoint (e.g. `LiquidAI/LFM2-700M`), whose layer pattern must match;
- audio: a FastConformer encoder from a transformers `ParakeetEncoder` / `ParakeetForCTC` / `ParakeetFor{TDT,RNNT}`
  checkpoint or from an NVIDIA `.nemo` archive (see `nemo_import.py`).

Only safetensors are read, and only the tensors that are used: config.json and the safetensors index come first,
then the shards holding the wanted keys (`hf_hub_download` for Hub ids, which caches them), read with `safe_open`;
the 700M LFM2 model is never instantiated. Each backbone yields a `BackboneReport`: every key loaded, every key
ignored (known-unused parts, counted per reason), and nothing else: any missing, unexpected or wrongly shaped tensor,
and any config or layer-pattern mismatch, raises `BackboneMismatchError` before a single weight is copied.

    python -m fer_hf.tools.backbones --preset seed --vision google/siglip2-base-patch16-224 \
        --fusion LiquidAI/LFM2-700M --audio nvidia/stt_en_fastconformer_ctc_large --output-dir checkpoints/seed-init
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import hf_hub_download, list_repo_files
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError
from safetensors import safe_open

from .checkpoint_loading import (
    BackboneLoadError,
    BackboneMismatchError,
    BackboneReport,
    CheckpointNotFoundError,
    load_state_into,
    sort_checkpoint_keys,
)
from .cli import PRESET_NAMES
from .nemo_import import import_nemo_encoder, load_nemo_encoder

if TYPE_CHECKING:  # torch, transformers and the model are imported where used: `fer-backbones --help` answers at once
    import torch
    from torch import nn

    from fer_hf.configuration_fer import FERConfig
    from fer_hf.modeling_fer import FERForEmotionClassification

logger = logging.getLogger(__name__)

REPORT_NAME = "backbone_report.json"
VISION_CONFIG_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
)
AUDIO_CONFIG_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "attention_bias",
    "convolution_bias",
    "conv_kernel_size",
    "subsampling_factor",
    "subsampling_conv_channels",
    "subsampling_conv_kernel_size",
    "subsampling_conv_stride",
    "num_mel_bins",
    "scale_input",
)
FUSION_CONFIG_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "norm_eps",
    "conv_L_cache",
    "conv_bias",
    "block_multiple_of",
    "block_ffn_dim_multiplier",
    "block_auto_adjust_ff_dim",
    "rope_parameters",
)
_PARAKEET_MODEL_TYPES = ("parakeet_encoder", "parakeet_ctc", "parakeet_tdt", "parakeet_rnnt")
_LFM2_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


# ----------------------------------------------------------------------------------------------
# Reading checkpoints (local folder or Hub repo)
class CheckpointSource:
    """A transformers checkpoint folder, local or on the Hub, read file by file and tensor by tensor."""

    def __init__(self, source: str | Path, token: str | bool | None = None):
        self.source = str(source)
        self.token = token
        self.local = Path(self.source).is_dir()
        if not self.local and (Path(self.source).exists() or not _REPO_ID.match(self.source)):
            raise CheckpointNotFoundError(f"{self.source!r} is neither a checkpoint folder nor a Hub repo id")
        self._weight_map: dict[str, str] | None = None

    def fetch(self, filename: str) -> Path | None:
        """Local path of `filename` (downloaded and cached for a Hub repo), or None when the repo has no such file."""
        if self.local:
            path = Path(self.source) / filename
            return path if path.is_file() else None
        try:
            return Path(hf_hub_download(self.source, filename, token=self.token))
        except EntryNotFoundError:  # not in the repo, or offline and not cached
            return None
        except (OSError, HfHubHTTPError) as exc:
            raise CheckpointNotFoundError(f"cannot fetch {filename} from Hub repo {self.source!r}: {exc}") from exc

    def config_dict(self) -> dict:
        path = self.fetch("config.json")
        if path is None:
            raise CheckpointNotFoundError(
                f"{self.source}: no config.json (no such local folder; on the Hub the repo lacks it, or the Hub is "
                "offline and it is not cached)"
            )
        return json.loads(path.read_text())

    def weight_map(self) -> dict[str, str]:
        """Every tensor key of the checkpoint -> the safetensors file that holds it."""
        if self._weight_map is None:
            index = self.fetch("model.safetensors.index.json")
            if index is not None:
                self._weight_map = dict(json.loads(index.read_text())["weight_map"])
            else:
                single = self.fetch("model.safetensors")
                if single is None:
                    raise CheckpointNotFoundError(
                        f"{self.source} has no model.safetensors(.index.json): only safetensors checkpoints are read"
                    )
                with safe_open(str(single), framework="pt") as f:
                    self._weight_map = {key: "model.safetensors" for key in f.keys()}
        return self._weight_map

    def read(self, keys) -> dict[str, torch.Tensor]:
        """The tensors `keys`, opening only the shards that hold them."""
        by_file: dict[str, list[str]] = {}
        for key in keys:
            by_file.setdefault(self.weight_map()[key], []).append(key)
        tensors = {}
        for filename, names in by_file.items():
            path = self.fetch(filename)
            if path is None:
                raise CheckpointNotFoundError(f"{self.source}: shard {filename} listed in the index is not available")
            with safe_open(str(path), framework="pt") as f:
                tensors.update({name: f.get_tensor(name) for name in names})
        return tensors


def _select(source: CheckpointSource, report: BackboneReport, target_of: Callable) -> dict[str, torch.Tensor]:
    """Map every checkpoint key with `target_of(key) -> (target | None, ignore reason | None)` and read the used ones.

    Keys with neither a target nor a reason are recorded as unexpected.
    """
    wanted, ignored, unexpected = sort_checkpoint_keys(source.weight_map(), target_of)
    report.unexpected.extend(unexpected)
    report.ignored = ignored
    return {wanted[key]: tensor for key, tensor in source.read(sorted(wanted)).items()}


def _check_config(backbone: str, source: str, expected, found, fields) -> None:
    diffs = [
        f"{name}: model {getattr(expected, name, None)!r} vs checkpoint {getattr(found, name, None)!r}"
        for name in fields
        if getattr(expected, name, None) != getattr(found, name, None)
    ]
    if diffs:
        raise BackboneMismatchError(
            f"{backbone} checkpoint {source} has another shape than the model: {'; '.join(diffs)}"
        )


# ----------------------------------------------------------------------------------------------
# Vision: SigLIP
def _siglip_target(has_head: bool):
    def target_of(key):
        if key.startswith("text_model."):
            return None, "SigLIP text tower"
        if key in ("logit_scale", "logit_bias"):
            return None, "SigLIP contrastive logit scale/bias"
        key = key.removeprefix("vision_model.")
        if key == "embeddings.position_ids":  # persistent in some old checkpoints
            return None, "SigLIP position id buffer (recomputed)"
        if key.startswith("head.") and not has_head:
            return None, "SigLIP vision pooling head (the model uses the patch tokens)"
        return key, None

    return target_of


def load_vision_backbone(encoder: nn.Module, source: str | Path, token=None) -> BackboneReport:
    """Load a SigLIP vision tower (from a `SiglipModel` or `SiglipVisionModel` checkpoint) into `encoder`."""
    from transformers import SiglipConfig, SiglipVisionConfig

    ckpt = CheckpointSource(source, token=token)
    raw = ckpt.config_dict()
    model_type = raw.get("model_type")
    if model_type == "siglip":
        found = SiglipConfig.from_dict(raw).vision_config
    elif model_type == "siglip_vision_model":
        found = SiglipVisionConfig.from_dict(raw)
    else:
        raise BackboneMismatchError(
            f"vision checkpoint {source} has model_type {model_type!r}; expected a SigLIP checkpoint "
            "('siglip' or 'siglip_vision_model', e.g. google/siglip2-base-patch16-224; NaFlex 'siglip2' is unsupported)"
        )
    _check_config("vision", str(source), encoder.config, found, VISION_CONFIG_FIELDS)
    report = BackboneReport("vision", str(source), f"transformers {model_type} (safetensors)")
    has_head = getattr(encoder, "head", None) is not None
    return load_state_into(encoder, _select(ckpt, report, _siglip_target(has_head)), report)


# ----------------------------------------------------------------------------------------------
# Fusion: the first layers of LFM2
def _lfm2_target(num_layers: int):
    def target_of(key):
        if not key.startswith(("model.", "lm_head.")):  # an Lfm2Model checkpoint has no "model." prefix
            key = "model." + key
        if key == "model.embedding_norm.weight":
            return "norm.weight", None
        match = _LFM2_LAYER_KEY.match(key)
        if match is not None:
            index = int(match.group(1))
            if index < num_layers:
                return f"layers.{index}.{match.group(2)}", None
            return None, f"LFM2 decoder layers {num_layers} and above"
        if key.startswith("model.embed_tokens."):
            return None, "LFM2 token embedding"
        if key.startswith("lm_head."):
            return None, "LFM2 LM head"
        return None, None

    return target_of


def load_fusion_backbone(backbone: nn.Module, source: str | Path, token=None) -> BackboneReport:
    """Load the first LFM2 decoder layers and the final norm of an `Lfm2ForCausalLM` checkpoint into `backbone`."""
    from transformers import Lfm2Config

    ckpt = CheckpointSource(source, token=token)
    raw = ckpt.config_dict()
    if raw.get("model_type") != "lfm2":
        raise BackboneMismatchError(f"fusion checkpoint {source} has model_type {raw.get('model_type')!r}, not 'lfm2'")
    found = Lfm2Config.from_dict(raw)
    expected = backbone.config
    n = expected.num_hidden_layers
    if found.num_hidden_layers < n or list(found.layer_types[:n]) != list(expected.layer_types):
        raise BackboneMismatchError(
            f"fusion checkpoint {source}: its first {n} layers are {list(found.layer_types[:n])} "
            f"(of {found.num_hidden_layers}); the fusion needs exactly {list(expected.layer_types)}"
        )
    _check_config("fusion", str(source), expected, found, FUSION_CONFIG_FIELDS)
    report = BackboneReport("fusion", str(source), f"transformers lfm2, first {n} of {found.num_hidden_layers} layers")
    return load_state_into(backbone, _select(ckpt, report, _lfm2_target(n)), report)


# ----------------------------------------------------------------------------------------------
# Audio: FastConformer (transformers Parakeet checkpoint or NeMo archive)
def _parakeet_target(model_type: str):
    def target_of(key):
        if model_type == "parakeet_encoder":
            return key, None
        if key.startswith("encoder."):
            return key[len("encoder.") :], None
        if key.startswith("ctc_head."):
            return None, "Parakeet CTC head"
        if key.startswith(("decoder.", "joint.", "encoder_projector.")):
            return None, "Parakeet transducer decoder and joint network"
        return None, None

    return target_of


def resolve_audio_source(source: str | Path, token=None) -> tuple[str, str]:
    """`("nemo", path to the .nemo file)` or `("transformers", folder or repo id)` for an audio checkpoint.

    Accepts a `.nemo` file, a folder holding a transformers checkpoint or one `.nemo` file, a Hub repo id (a
    transformers checkpoint, or a NeMo repo such as `nvidia/stt_en_fastconformer_ctc_large` with one `.nemo` file),
    or `owner/repo/file.nemo`.
    """
    text = str(source)
    path = Path(text)
    if path.is_file():
        if path.suffix != ".nemo":
            raise CheckpointNotFoundError(f"audio checkpoint {text} is a file but not a .nemo archive")
        return "nemo", text
    if path.is_dir():
        if (path / "config.json").is_file():
            return "transformers", text
        nemo_files = sorted(path.glob("*.nemo"))
        if len(nemo_files) == 1:
            return "nemo", str(nemo_files[0])
        raise CheckpointNotFoundError(f"{text} holds neither config.json nor exactly one .nemo file")
    parts = text.split("/")
    if text.endswith(".nemo") and len(parts) >= 3:
        return "nemo", _download("/".join(parts[:2]), "/".join(parts[2:]), token)
    ckpt = CheckpointSource(text, token=token)
    if ckpt.fetch("config.json") is not None:
        return "transformers", text
    try:
        nemo_files = [f for f in list_repo_files(text, token=token) if f.endswith(".nemo")]
    except (OSError, HfHubHTTPError) as exc:
        raise CheckpointNotFoundError(f"cannot list Hub repo {text!r}: {exc}") from exc
    if len(nemo_files) != 1:
        raise CheckpointNotFoundError(f"Hub repo {text} has no config.json and {len(nemo_files)} .nemo files")
    return "nemo", _download(text, nemo_files[0], token)


def _download(repo_id: str, filename: str, token) -> str:
    try:
        return hf_hub_download(repo_id, filename, token=token)
    except (OSError, HfHubHTTPError, EntryNotFoundError) as exc:
        raise CheckpointNotFoundError(f"cannot fetch {filename} from Hub repo {repo_id!r}: {exc}") from exc


def load_audio_backbone(
    encoder: nn.Module, source: str | Path, token=None, check_front_end: bool = True
) -> BackboneReport:
    """Load a FastConformer encoder (transformers Parakeet checkpoint or `.nemo` archive) into `encoder`."""
    kind, where = resolve_audio_source(source, token=token)
    if kind == "nemo":
        imported = import_nemo_encoder(where, check_front_end=check_front_end)
        _check_config("audio", str(source), encoder.config, imported.config, AUDIO_CONFIG_FIELDS)
        report = BackboneReport("audio", str(source), "NeMo .nemo archive (ConformerEncoder)")
        report.ignored, report.unexpected, report.notes = imported.ignored, list(imported.unexpected), imported.notes
        return load_state_into(encoder, imported.state_dict, report)
    ckpt = CheckpointSource(where, token=token)
    raw = ckpt.config_dict()
    model_type = raw.get("model_type")
    if model_type not in _PARAKEET_MODEL_TYPES:
        raise BackboneMismatchError(
            f"audio checkpoint {source} has model_type {model_type!r}; expected one of {list(_PARAKEET_MODEL_TYPES)}"
        )
    found_dict = raw if model_type == "parakeet_encoder" else raw.get("encoder_config") or {}
    from transformers import ParakeetEncoderConfig

    found = ParakeetEncoderConfig.from_dict(found_dict)
    _check_config("audio", str(source), encoder.config, found, AUDIO_CONFIG_FIELDS)
    report = BackboneReport("audio", str(source), f"transformers {model_type} (safetensors)")
    return load_state_into(encoder, _select(ckpt, report, _parakeet_target(model_type)), report)


# ----------------------------------------------------------------------------------------------
# The whole model
def _as_config(config_or_preset) -> FERConfig:
    from fer_hf.configuration_fer import FERConfig

    if isinstance(config_or_preset, FERConfig):
        return FERConfig.from_dict(config_or_preset.to_dict())
    if isinstance(config_or_preset, str) and config_or_preset in FERConfig.PRESETS:
        return FERConfig.from_preset(config_or_preset)
    if isinstance(config_or_preset, (str, Path)) and Path(config_or_preset).exists():
        return FERConfig.from_pretrained(config_or_preset)
    raise ValueError(
        f"expected a FERConfig, a preset in {list(FERConfig.PRESETS)} or a config path, got {config_or_preset!r}"
    )


def build_model_from_backbones(
    config_or_preset: FERConfig | str = "seed",
    vision: str | Path | None = None,
    audio: str | Path | None = None,
    fusion: str | Path | None = None,
    token: str | bool | None = None,
    check_audio_front_end: bool = True,
) -> tuple[FERForEmotionClassification, dict[str, BackboneReport]]:
    """A `FERForEmotionClassification` whose backbones are loaded from checkpoints; the rest is freshly initialised.

    Each of `vision`, `audio`, `fusion` is a Hub id or a local path (`audio` may be a `.nemo` file), or None to keep
    that backbone random. Returns the model (in eval mode) and one `BackboneReport` per loaded backbone. The sources
    are recorded in `model.config.provenance` (status "backbones", or "untrained" when none was loaded); the model
    card lists them as base models and says the head is untrained.
    """
    from fer_hf.modeling_fer import FERForEmotionClassification
    from fer_hf.provenance_fer import make_backbones_provenance

    config = _as_config(config_or_preset)
    model = FERForEmotionClassification(config).eval()
    reports = {}
    if vision is not None:
        reports["vision"] = load_vision_backbone(model.vision_encoder, vision, token=token)
    if audio is not None:
        reports["audio"] = load_audio_backbone(
            model.audio_encoder, audio, token=token, check_front_end=check_audio_front_end
        )
    if fusion is not None:
        reports["fusion"] = load_fusion_backbone(model.fusion.backbone, fusion, token=token)
    model.config.provenance = make_backbones_provenance({name: report.source for name, report in reports.items()})
    return model, reports


def save_model_with_report(model, reports: dict[str, BackboneReport], output_dir: str | Path) -> Path:
    """`save_pretrained` (safetensors + code), the processor when it is available, and `backbone_report.json`."""
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    try:
        from fer_hf.processing_fer import FERProcessor
    except ImportError:  # pragma: no cover - media stack missing
        logger.warning("processor unavailable (media dependencies missing); saved the model only")
    else:
        FERProcessor.from_model_config(model.config).save_pretrained(output_dir)
    report = {name: r.to_dict() for name, r in reports.items()}
    (output_dir / REPORT_NAME).write_text(json.dumps(report, indent=2))
    return output_dir


def main(argv: list[str] | None = None) -> int:
    """CLI: build a model from pretrained backbones and write it with a per-backbone key report."""
    parser = argparse.ArgumentParser(prog="fer-backbones", description=main.__doc__)
    parser.add_argument("--preset", default="seed", help=f"one of {list(PRESET_NAMES)} or a config.json folder")
    parser.add_argument("--vision", help="SigLIP checkpoint: Hub id or folder (google/siglip2-base-patch16-224)")
    parser.add_argument("--audio", help="FastConformer: .nemo file, NeMo Hub repo, or Parakeet checkpoint")
    parser.add_argument("--fusion", help="LFM2 checkpoint: Hub id or folder (LiquidAI/LFM2-700M)")
    parser.add_argument("--output-dir", required=True, help="folder for the model, processor and backbone_report.json")
    parser.add_argument("--skip-audio-front-end-check", action="store_true", help="accept another NeMo mel front-end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model, reports = build_model_from_backbones(
        args.preset,
        vision=args.vision,
        audio=args.audio,
        fusion=args.fusion,
        check_audio_front_end=not args.skip_audio_front_end_check,
    )
    save_model_with_report(model, reports, args.output_dir)
    summary = "\n".join(r.summary() for r in reports.values()) or "no backbone loaded (all random)"
    sys.stdout.write(f"{summary}\nwrote {args.output_dir}\n")
    return 0


__all__ = [
    "BackboneLoadError",
    "BackboneMismatchError",
    "BackboneReport",
    "CheckpointNotFoundError",
    "CheckpointSource",
    "build_model_from_backbones",
    "load_audio_backbone",
    "load_fusion_backbone",
    "load_nemo_encoder",
    "load_state_into",
    "load_vision_backbone",
    "resolve_audio_source",
    "save_model_with_report",
]


if __name__ == "__main__":
    raise SystemExit(main())
