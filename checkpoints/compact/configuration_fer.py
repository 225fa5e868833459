"""Configuration of the audio-visual emotion recognition model (SPEC §1–5, §7).

`FERConfig` is a composite config: three transformers sub-configs for the pretrained
backbones (SigLIP vision tower, Parakeet/FastConformer encoder, LFM2 decoder layers) plus
flat fields for every module this project adds on top of them. Like transformers' own configs
(a dataclass since v5), each field is declared once, as a typed class attribute with its default;
the presets are data (`FERConfig.PRESETS`: overrides of those defaults). The config is the source of the
window geometry (`geometry_fer`: sample rate, mel hop, encoder stride, frame times, segment bounds, size limits)
and holds the provenance record (`provenance_fer`: how the weights came to be).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from types import MappingProxyType

from transformers import Lfm2Config, ParakeetEncoderConfig, PretrainedConfig, SiglipVisionConfig

from .geometry_fer import SIZE_LIMITS, window_segment_bounds
from .provenance_fer import (
    PROVENANCE_SCHEMA_VERSION,
    PROVENANCE_STATUSES,
    TRAINING_KEYS,
    layout_modalities,
    make_backbones_provenance,
)

# RAVDESS emotion codes 01..08, class index = code - 1 (SPEC §0).
RAVDESS_LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")

LFM2_SEED_LAYER_TYPES = ("conv", "conv", "full_attention", "conv", "conv", "full_attention")
ROI_GLOBAL_STATS = ("mean", "max", "min", "std")

# google/siglip2-base-patch16-224 vision tower (no pooling head: the model never uses it).
_SIGLIP2_BASE_224 = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    image_size=224,
    patch_size=16,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
    vision_use_head=False,
)
# NVIDIA FastConformer-Large encoder (e.g. stt_en_fastconformer_*_large): 17 x 512, kernel 9, x8.
_FASTCONFORMER_LARGE = dict(
    hidden_size=512,
    num_hidden_layers=17,
    num_attention_heads=8,
    intermediate_size=2048,
    conv_kernel_size=9,
    subsampling_factor=8,
    subsampling_conv_channels=256,
    num_mel_bins=80,
    dropout=0.1,
    dropout_positions=0.0,
    layerdrop=0.0,
    activation_dropout=0.1,
    attention_dropout=0.1,
)
# The first six decoder layers of LiquidAI/LFM2-700M.
_LFM2_700M_FIRST6 = dict(
    hidden_size=1536,
    intermediate_size=6656,
    num_hidden_layers=6,
    num_attention_heads=24,
    num_key_value_heads=8,
    max_position_embeddings=128_000,
    norm_eps=1e-5,
    conv_L_cache=3,
    conv_bias=False,
    block_multiple_of=256,
    block_ffn_dim_multiplier=1.0,
    block_auto_adjust_ff_dim=True,
    layer_types=list(LFM2_SEED_LAYER_TYPES),
    use_cache=False,
)


# Sub-configs with hidden 32-64 and 1-2 layers, for tests.
_TINY_BACKBONES = dict(
    vision_config=dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        vision_use_head=False,
    ),
    audio_config=dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,
        conv_kernel_size=9,
        subsampling_factor=8,
        subsampling_conv_channels=8,
        num_mel_bins=80,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        layerdrop=0.0,
        # The subsampling stack is depthwise convs (fan-in 9): at std 0.02 a from-scratch encoder's output
        # all but vanishes (~1e-3), so the tiny model could not learn from audio.
        initializer_range=0.2,
    ),
    lfm2_config=dict(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_types=["conv", "full_attention"],
        norm_eps=1e-5,
        block_multiple_of=32,
        use_cache=False,
    ),
)

# The CPU stand-in for the seed model (issue "a trained model out of the box"): the same architecture, sized so that
# every stage trains from scratch on 2 CPU cores and the timeline runs far under real time. Widths, depths and the
# frame/patch size were chosen by measurement (docs/training.md "The compact preset"): 48x48 grey face crops (the
# resolution of FER2013, its face pretraining data) in 8x8 patches of 6 px, a 6-layer 128-wide SigLIP tower, a
# 4-layer 144-wide FastConformer with x8 subsampling (32 channels: its convolutions were 60 % of a step at 64),
# 4 LFM2 layers of width 256.
_COMPACT = dict(
    vision_config=dict(
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=6,
        num_attention_heads=4,
        image_size=48,
        patch_size=6,
        vision_use_head=False,
    ),
    audio_config=dict(
        hidden_size=144,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=576,
        conv_kernel_size=9,
        subsampling_factor=8,
        subsampling_conv_channels=32,
        num_mel_bins=80,
        dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.1,
        layerdrop=0.0,
    ),
    lfm2_config=dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_types=["conv", "full_attention", "conv", "full_attention"],
        norm_eps=1e-5,
        block_multiple_of=64,
        use_cache=False,
    ),
    num_frames=8,
    num_segments=8,
    audio_pool_num_heads=4,
    roi_top_k=32,
    frame_pool_num_heads=4,
    temporal_num_gscb_layers=2,
    temporal_num_attention_layers=1,
    temporal_num_heads=4,
    temporal_ffn_ratio=2,
    fused_dim=128,
    fusion_dropout=0.2,
    classifier_hidden_sizes=[128, 64],
    classifier_dropout=0.2,
    modality_dropout=0.3,
    vision_chunk_size=64,
    face_crop_margin=0.1,
    face_crop_grayscale=True,
    vision_mirror_average=True,
)

# Named configurations as data: each is a set of overrides of FERConfig's defaults (sub-config dicts are merged
# into the defaults of that sub-config). Read-only; `FERConfig.from_preset` copies what it uses.
PRESETS: Mapping[str, Mapping] = MappingProxyType(
    {
        # SPEC shapes, 90 frames per 3 s window (~3.2 TFLOPs per clip: a GPU model).
        "seed": {},
        # The same backbones with 8 frames per window and the 96 highest-ROI patches of each frame entering SigLIP,
        # for CPU inference (figures: README, `benchmarks/bench_inference.py`).
        "realtime": dict(num_frames=8, vision_keep_patches=96),
        # Hidden 32-64, 1-2 layers, 8 frames of 32x32: for tests and smoke runs; its initialisation is scaled up for
        # small widths so it trains from scratch.
        "tiny": dict(
            _TINY_BACKBONES,
            num_frames=8,
            num_segments=8,
            audio_pool_num_heads=2,
            roi_top_k=8,
            frame_pool_num_heads=2,
            temporal_num_gscb_layers=1,
            temporal_num_attention_layers=1,
            temporal_num_heads=2,
            temporal_ffn_ratio=2,
            fused_dim=32,
            classifier_hidden_sizes=[32, 16],
            vision_chunk_size=4,
            initializer_range=0.1,  # ~1/sqrt(width) for 32-64 wide layers trained from scratch
        ),
        # Trainable from scratch on 2 CPU cores (the shipped default model, checkpoints/compact/): see _COMPACT.
        "compact": _COMPACT,
    }
)


_SUB_CONFIGS = {
    "vision_config": (SiglipVisionConfig, _SIGLIP2_BASE_224),
    "audio_config": (ParakeetEncoderConfig, _FASTCONFORMER_LARGE),
    "lfm2_config": (Lfm2Config, _LFM2_700M_FIRST6),
}

class FERConfig(PretrainedConfig):
    r"""
    Configuration of [`FERForEmotionClassification`]. Defaults give the `"seed"` architecture of SPEC.md.

    Args:
        vision_config (`dict` or `SiglipVisionConfig`, *optional*):
            SigLIP vision tower; defaults to the `google/siglip2-base-patch16-224` shape without pooling head.
            A dict is merged into those defaults.
        audio_config (`dict` or `ParakeetEncoderConfig`, *optional*):
            FastConformer encoder; defaults to FastConformer-Large (17 x 512, kernel 9, x8 subsampling, no layerdrop).
        lfm2_config (`dict` or `Lfm2Config`, *optional*):
            LFM2 fusion layers; defaults to the first 6 layers of `LiquidAI/LFM2-700M`
            (conv, conv, full_attention, conv, conv, full_attention; hidden 1536).
            Its `hidden_size` is the fusion width.
        num_frames (`int`, *optional*, defaults to 90):
            Video frames per window, sampled at fixed timestamps over `clip_seconds` (`frame_times_seconds()`).
        clip_seconds (`float`, *optional*, defaults to 3.0):
            Length of one model window in seconds.
        sampling_rate (`int`, *optional*, defaults to 16000):
            Audio sampling rate in Hz expected by the mel extractor.
        mel_hop_length (`int`, *optional*, defaults to 160):
            Samples between log-mel frames (160 = 10 ms at 16 kHz), the hop of `ParakeetFeatureExtractor`.
        num_segments (`int`, *optional*, defaults to 8):
            Number of time segments both branches are pooled into (and that the fusion interleaves).
        audio_pool_num_heads (`int`, *optional*, defaults to 8):
            Heads of the audio segment attention pooling (one learnable query shared by all segments).
        roi_top_k (`int`, *optional*, defaults to 64):
            Patch tokens kept per frame by the ROI token compressor (must not exceed the number of patches).
        roi_global_stats (`list[str]`, *optional*, defaults to `["mean", "max", "min", "std"]`):
            Global tokens appended per frame, each a statistic over all patch tokens.
        frame_pool_num_heads (`int`, *optional*, defaults to 8):
            Heads of the attention pooling that turns a frame's compressed tokens into one vector.
        temporal_num_gscb_layers (`int`, *optional*, defaults to 4):
            Gated short-conv blocks at the start of the visual temporal encoder.
        temporal_num_attention_layers (`int`, *optional*, defaults to 2):
            Pre-norm transformer layers after the GSCB layers.
        temporal_conv_kernel_size (`int`, *optional*, defaults to 4):
            Kernel of the causal depthwise convolution in each GSCB layer.
        temporal_num_heads (`int`, *optional*, defaults to 8):
            Heads of the temporal attention layers.
        temporal_ffn_ratio (`int`, *optional*, defaults to 4):
            Feed-forward expansion of the temporal attention layers.
        fusion_causal (`bool`, *optional*, defaults to `False`):
            `False` lets the LFM2 attention layers see all 16 interleaved tokens (a classifier needs no causality);
            `True` keeps LFM2's causal mask. The LFM2 short convolutions are causal either way.
        fused_dim (`int`, *optional*, defaults to 512):
            Width of the fused segment features after the output projection and of the classifier input.
        fusion_dropout (`float`, *optional*, defaults to 0.1):
            Dropout of the fusion output projection.
        classifier_hidden_sizes (`list[int]`, *optional*, defaults to `[512, 256]`):
            Hidden widths of the MLP head (each Linear, LayerNorm, GELU, Dropout).
        classifier_dropout (`float`, *optional*, defaults to 0.1):
            Dropout in the MLP head.
        modality_dropout (`float`, *optional*, defaults to 0.1):
            Training only: probability, per sample that has both modalities, of hiding one of them (chosen at random)
            so the learned "missing" tokens are trained. 0 disables it.
        vision_chunk_size (`int`, *optional*, defaults to 8):
            Frames per SigLIP call; all frames of the batch go through in chunks of this size (small chunks keep
            the activations in cache on a CPU; raise it on a GPU).
        vision_keep_patches (`int`, *optional*):
            When set, only this many patches per frame (the highest `roi_weights`, in spatial order) enter the SigLIP
            encoder: attention and MLP cost fall roughly in proportion (a CPU speed lever). `None` encodes all
            patches. Ignored for frames without `roi_weights`. Must lie between `roi_top_k` and the patch count.
        face_crop_margin (`float`, *optional*, defaults to 0.25):
            Margin of the aligned face crop on each side (fraction of the face size) that the vision tower was
            trained on; processors built from this config crop with it (`FERProcessor.from_model_config`).
        face_crop_grayscale (`bool`, *optional*, defaults to `False`):
            The vision tower sees grey crops (luma copied to the 3 channels), e.g. because it was pretrained on a
            grey face corpus; processors built from this config convert the crops.
        vision_mirror_average (`bool`, *optional*, defaults to `False`):
            At inference (the model in eval mode), each frame vector is the mean of the vectors of the crop and of
            its mirror image (the ROI map mirrored with it): a face and its mirror show the same emotion, and the
            mean is steadier than either (+1.5 points on FER2013 PrivateTest for the compact model). Doubles the
            vision tower's cost; explanations (ROI picks, attention) come from the crop as it is. Training (train
            mode) sees single crops.
        freeze_vision_encoder (`bool`, *optional*, defaults to `False`):
            Build the model with the SigLIP tower frozen (`requires_grad=False`, kept in eval mode).
        freeze_audio_encoder (`bool`, *optional*, defaults to `False`):
            Build the model with the FastConformer encoder frozen.
        freeze_fusion_backbone (`bool`, *optional*, defaults to `False`):
            Build the model with the LFM2 layers frozen.
        preset (`str`, *optional*):
            Name of the preset this config came from, for display only.
        provenance (`dict`, *optional*):
            How the weights came to be (`make_backbones_provenance`, `make_training_provenance`; schema in
            docs/architecture.md). `None` means untrained; `provenance_summary()` says it in one sentence.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the initialisation of the added modules.

    `custom_pipelines` is written into `config.json` by the model's `save_pretrained`, so that
    `pipeline(model=folder, trust_remote_code=True)` finds `pipeline_fer.FEREmotionRecognitionPipeline`.
    """

    model_type = "fer_av_emotion"
    sub_configs_defaults = {
        "vision_config": SiglipVisionConfig,
        "audio_config": ParakeetEncoderConfig,
        "lfm2_config": Lfm2Config,
    }
    PRESETS = PRESETS

    vision_config: dict | SiglipVisionConfig | None = None
    audio_config: dict | ParakeetEncoderConfig | None = None
    lfm2_config: dict | Lfm2Config | None = None
    num_frames: int = 90
    clip_seconds: float = 3.0
    sampling_rate: int = 16000
    mel_hop_length: int = 160
    num_segments: int = 8
    audio_pool_num_heads: int = 8
    roi_top_k: int = 64
    roi_global_stats: list[str] | tuple[str, ...] = ROI_GLOBAL_STATS
    frame_pool_num_heads: int = 8
    temporal_num_gscb_layers: int = 4
    temporal_num_attention_layers: int = 2
    temporal_conv_kernel_size: int = 4
    temporal_num_heads: int = 8
    temporal_ffn_ratio: int = 4
    fusion_causal: bool = False
    fused_dim: int = 512
    fusion_dropout: float = 0.1
    classifier_hidden_sizes: list[int] | tuple[int, ...] = (512, 256)
    classifier_dropout: float = 0.1
    modality_dropout: float = 0.1
    vision_chunk_size: int = 8
    vision_keep_patches: int | None = None
    face_crop_margin: float = 0.25
    face_crop_grayscale: bool = False
    vision_mirror_average: bool = False
    freeze_vision_encoder: bool = False
    freeze_audio_encoder: bool = False
    freeze_fusion_backbone: bool = False
    preset: str | None = None
    provenance: dict | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        for key, (config_class, defaults) in _SUB_CONFIGS.items():
            setattr(self, key, self._sub_config(getattr(self, key), config_class, defaults))
        self.roi_global_stats = list(self.roi_global_stats)
        self.classifier_hidden_sizes = list(self.classifier_hidden_sizes)
        # A config.json written before the provenance record named only the backbone sources.
        legacy_sources = kwargs.pop("backbone_sources", None)
        if self.provenance is None and legacy_sources:
            self.provenance = make_backbones_provenance(legacy_sources)
        if self.id2label is None:
            self.id2label = dict(enumerate(RAVDESS_LABELS))
        if self.label2id is None:
            self.label2id = {label: int(i) for i, label in dict(self.id2label).items()}
        super().__post_init__(**kwargs)
        self.validate_fer()

    @staticmethod
    def _sub_config(value, config_class, defaults: dict):
        if value is None:
            return config_class(**defaults)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "model_type"}
            return config_class(**{**defaults, **value})
        if isinstance(value, config_class):
            return value
        raise ValueError(
            f"expected a dict, a {config_class.__name__} or None for a sub-config, got {type(value).__name__}"
        )

    # ----------------------------------------------------------------------------------
    # Derived sizes
    @property
    def num_patches(self) -> int:
        """Patch tokens per frame, e.g. (224 / 16)^2 = 196."""
        return (self.vision_config.image_size // self.vision_config.patch_size) ** 2

    @property
    def fusion_hidden_size(self) -> int:
        """Width of the interleaved tokens the LFM2 layers see (1536 for the seed)."""
        return self.lfm2_config.hidden_size

    @property
    def num_audio_samples(self) -> int:
        """Samples in one window, e.g. 3 s x 16 kHz = 48 000."""
        return int(round(self.clip_seconds * self.sampling_rate))

    # ----------------------------------------------------------------------------------
    def validate_fer(self) -> None:
        """Reject values the model cannot be built with; each message names the value."""

        def positive_int(name):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")

        def probability(name):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be a float in [0, 1), got {value!r}")

        for name in (
            "num_frames",
            "sampling_rate",
            "mel_hop_length",
            "num_segments",
            "audio_pool_num_heads",
            "roi_top_k",
            "frame_pool_num_heads",
            "temporal_conv_kernel_size",
            "temporal_num_heads",
            "temporal_ffn_ratio",
            "fused_dim",
            "vision_chunk_size",
        ):
            positive_int(name)
        for name in ("temporal_num_gscb_layers", "temporal_num_attention_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}")
        for name in ("fusion_dropout", "classifier_dropout", "modality_dropout"):
            probability(name)
        if not isinstance(self.face_crop_margin, (int, float)) or not 0.0 <= self.face_crop_margin <= 2.0:
            raise ValueError(f"`face_crop_margin` must be between 0 and 2, got {self.face_crop_margin!r}")
        for name in ("face_crop_grayscale", "vision_mirror_average"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.clip_seconds, (int, float)) or not 0.1 <= self.clip_seconds <= 60:
            raise ValueError(f"`clip_seconds` must be between 0.1 and 60 seconds, got {self.clip_seconds!r}")
        if self.roi_top_k > self.num_patches:
            raise ValueError(
                f"`roi_top_k`={self.roi_top_k} exceeds the {self.num_patches} patches per frame of the vision config"
            )
        if self.vision_keep_patches is not None and (
            not isinstance(self.vision_keep_patches, int)
            or not self.roi_top_k <= self.vision_keep_patches <= self.num_patches
        ):
            raise ValueError(
                f"`vision_keep_patches` must be None or an int between `roi_top_k`={self.roi_top_k} and the "
                f"{self.num_patches} patches per frame, got {self.vision_keep_patches!r}"
            )
        unknown = [s for s in self.roi_global_stats if s not in ROI_GLOBAL_STATS]
        if unknown or len(set(self.roi_global_stats)) != len(self.roi_global_stats):
            raise ValueError(
                f"`roi_global_stats` must be distinct names from {list(ROI_GLOBAL_STATS)}, "
                f"got {self.roi_global_stats!r}"
            )
        if not self.classifier_hidden_sizes or any(
            not isinstance(h, int) or h < 1 for h in self.classifier_hidden_sizes
        ):
            raise ValueError(
                f"`classifier_hidden_sizes` must be a non-empty list of positive ints, "
                f"got {self.classifier_hidden_sizes!r}"
            )
        self._validate_size_limits()
        checks = (
            (
                "vision_config.hidden_size",
                self.vision_config.hidden_size,
                "frame_pool_num_heads",
                self.frame_pool_num_heads,
            ),
            (
                "vision_config.hidden_size",
                self.vision_config.hidden_size,
                "temporal_num_heads",
                self.temporal_num_heads,
            ),
            (
                "audio_config.hidden_size",
                self.audio_config.hidden_size,
                "audio_pool_num_heads",
                self.audio_pool_num_heads,
            ),
        )
        for dim_name, dim, heads_name, heads in checks:
            if dim % heads:
                raise ValueError(f"`{dim_name}`={dim} is not divisible by `{heads_name}`={heads}")
        if self.vision_config.image_size % self.vision_config.patch_size:
            raise ValueError(
                f"`vision_config.image_size`={self.vision_config.image_size} is not a multiple of "
                f"`vision_config.patch_size`={self.vision_config.patch_size}"
            )
        layer_types = list(self.lfm2_config.layer_types)
        if len(layer_types) != self.lfm2_config.num_hidden_layers or any(
            t not in ("conv", "full_attention") for t in layer_types
        ):
            raise ValueError(
                f"`lfm2_config.layer_types` must list 'conv'/'full_attention' for each of the "
                f"{self.lfm2_config.num_hidden_layers} layers, got {layer_types!r}"
            )
        if self.id2label is not None and len(self.id2label) < 2:
            raise ValueError(f"`id2label` needs at least two labels, got {self.id2label!r}")
        if self.preset is not None and not isinstance(self.preset, str):
            raise ValueError(f"`preset` must be a string or None, got {self.preset!r}")
        self._validate_provenance()

    def _validate_size_limits(self) -> None:
        """Refuse sizes above `SIZE_LIMITS` (they would exhaust memory at the first request)."""
        for name, limit in SIZE_LIMITS.items():
            owner, _, field = name.rpartition(".")
            value = getattr(getattr(self, owner) if owner else self, field, None)
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, (int, float)) and v > limit for v in values):
                raise ValueError(
                    f"`{name}`={value!r} is above the limit of {limit}: a model of that size would not fit in "
                    "memory; use a smaller value"
                )

    def _validate_provenance(self) -> None:
        record = self.provenance
        if record is None:
            return
        if not isinstance(record, Mapping) or record.get("status") not in PROVENANCE_STATUSES:
            raise ValueError(
                f"`provenance` must be None or a record whose `status` is one of {list(PROVENANCE_STATUSES)} "
                f"(see make_training_provenance), got {record!r}"
            )
        version = record.get("schema_version")
        if not isinstance(version, int) or version > PROVENANCE_SCHEMA_VERSION:
            raise ValueError(
                f"`provenance.schema_version` {version!r} is not one this code reads (up to "
                f"{PROVENANCE_SCHEMA_VERSION}): update the model code"
            )
        training = record.get("training")
        if record["status"] == "trained":
            if not isinstance(training, Mapping) or not isinstance(training.get("synthetic"), bool):
                raise ValueError(
                    "a `provenance` with status 'trained' needs a `training` record saying the data set and whether "
                    f"it was synthetic, got {training!r}"
                )
            missing = [key for key in TRAINING_KEYS if key not in training]
            if missing:
                raise ValueError(f"`provenance.training` lacks {missing}")

    # ----------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides) -> "FERConfig":
        """The named configuration `PRESETS[name]` (`"seed"`, `"realtime"`, `"tiny"`: see `PRESETS`).

        `overrides` are passed to the constructor (sub-config dicts are merged into the preset's).
        """
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {list(cls.PRESETS)}")
        kwargs = copy.deepcopy(dict(cls.PRESETS[name]))
        for key, value in overrides.items():
            if key in _SUB_CONFIGS and isinstance(value, dict):
                kwargs[key] = {**kwargs.get(key, {}), **value}
            else:
                kwargs[key] = value
        kwargs.setdefault("preset", name)
        return cls(**kwargs)

    def to_dict(self):
        output = super().to_dict()
        for key in _SUB_CONFIGS:
            value = getattr(self, key)
            output[key] = value.to_dict() if hasattr(value, "to_dict") else copy.deepcopy(value)
        return output

    # ----------------------------------------------------------------------------------
    # Geometry: the one source of truth (docs/architecture.md "Geometry"); processor, model, results and plots read it.
    @property
    def audio_encoder_stride(self) -> int:
        """Mel frames per FastConformer frame (`audio_config.subsampling_factor`, 8)."""
        return int(self.audio_config.subsampling_factor)

    @property
    def audio_frame_seconds(self) -> float:
        """Seconds per encoder frame: stride x hop / rate (8 x 160 / 16 000 = 0.08 s)."""
        return self.audio_encoder_stride * self.mel_hop_length / self.sampling_rate

    def num_mel_frames(self, num_samples: int | None = None) -> int:
        """Log-mel frames of `num_samples` samples (a full window when omitted): `n // hop + 1`, as
        `ParakeetFeatureExtractor` centres its frames (301 for 3 s at 16 kHz)."""
        n = self.num_audio_samples if num_samples is None else int(num_samples)
        return n // self.mel_hop_length + 1

    def num_encoder_frames(self, num_samples: int | None = None) -> int:
        """FastConformer frames of `num_samples` samples (a full window when omitted: 38 for 3 s)."""
        return self.encoder_frames_of_mel(self.num_mel_frames(num_samples))

    def encoder_frames_of_mel(self, num_mel_frames: int) -> int:
        """FastConformer frames of `num_mel_frames` log-mel frames: through the encoder's log2(stride) strided
        convolutions, as `ParakeetEncoder` subsamples (301 -> 151 -> 76 -> 38)."""
        audio = self.audio_config
        kernel, stride = audio.subsampling_conv_kernel_size, audio.subsampling_conv_stride
        length = int(num_mel_frames)
        for _ in range(int(math.log2(self.audio_encoder_stride))):
            length = (length + (kernel - 1) // 2 * 2 - kernel) // stride + 1
        return length

    def frame_times_seconds(self) -> list[float]:
        """Timestamps (s, from window start) at which the `num_frames` frames are sampled: bin centres,
        frame k at `(k + 0.5) * clip_seconds / num_frames`."""
        step = self.clip_seconds / self.num_frames
        return [round((k + 0.5) * step, 6) for k in range(self.num_frames)]

    def segment_bounds_seconds(self, kind: str = "fused") -> list[tuple[float, float]]:
        """Start and end (s, from window start) of each of the `num_segments` segments, by the model's own rule
        (`segment_step_ranges`, so neighbours overlap by one step when the count does not divide evenly).

        `kind="video"`: over the `num_frames` frame bins; `"audio"`: over the encoder frames of a full window
        (80 ms each, the last one cut at the window end); `"fused"` (default): the union of the two, what a fused
        segment sees.
        """
        return window_segment_bounds(self.num_frames, self.clip_seconds, self.num_encoder_frames(),
                                     self.audio_frame_seconds, self.num_segments, kind)

    # ----------------------------------------------------------------------------------
    # Provenance
    @property
    def provenance_status(self) -> str:
        """`"untrained"`, `"backbones"` or `"trained"` (a config without a record is untrained)."""
        return (self.provenance or {}).get("status", "untrained")

    @property
    def is_trained(self) -> bool:
        return self.provenance_status == "trained"

    @property
    def trained_modalities(self) -> tuple[str, ...] | None:
        """The branches training taught (`("audio",)`, `("video",)` or both), or None for a model that was not
        trained (then nothing is withheld: its predictions are meaningless anyway and say so). The model does not
        use a branch that training never taught."""
        if not self.is_trained:
            return None
        training = self.provenance["training"]
        listed = training.get("modalities")
        return tuple(listed) if listed else layout_modalities(training.get("modality_layout"))

    @property
    def trained_on_synthetic_data(self) -> bool:
        return self.is_trained and bool(self.provenance["training"]["synthetic"])

    def provenance_summary(self) -> str:
        """One sentence saying how the weights came to be, for the app banner, the model card and result tables."""
        record = self.provenance or {}
        status = self.provenance_status
        sources = record.get("backbones") or {}
        loaded = ", ".join(f"{name} from {source}" for name, source in sources.items())
        if status == "untrained":
            return "untrained: random weights, predictions are meaningless"
        if status == "backbones":
            return (
                f"pretrained backbones only ({loaded}); the fusion and classifier are untrained, "
                "predictions are meaningless"
            )
        training = record["training"]
        where = training.get("mode")
        scope = "all actors" if where == "release" else f"fold {training.get('fold')}"
        metrics = training.get("metrics")
        figures = ""
        if metrics:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
            figures = f"; {shown} on {training.get('metrics_scope')}"
        date = (training.get("date") or "")[:10]
        when = f", {date}" if date else ""
        if training["synthetic"]:
            return (
                f"trained on synthetic data (not RAVDESS): a smoke-test model ({scope}, {training['epochs']} epochs"
                f"{when}{figures}); its predictions on real clips are meaningless"
            )
        return f"trained on {training['dataset']} ({scope}, {training['epochs']} epochs{when}){figures}"

    def provenance_info(self) -> dict:
        """`{"status", "summary", "synthetic", "preset"}`: what a result or a table says about the model."""
        return {
            "status": self.provenance_status,
            "summary": self.provenance_summary(),
            "synthetic": self.trained_on_synthetic_data,
            "preset": self.preset,
        }


# `save_pretrained` writes `"auto_map": {"AutoConfig": "configuration_fer.FERConfig"}`.
FERConfig.register_for_auto_class()

__all__ = ["FERConfig", "RAVDESS_LABELS", "PRESETS"]
