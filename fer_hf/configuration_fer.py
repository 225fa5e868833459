"""Configuration of the audio-visual emotion recognition model (SPEC §1–5, §7).

`FERConfig` is a composite config: three transformers sub-configs for the pretrained
backbones (SigLIP vision tower, Parakeet/FastConformer encoder, LFM2 decoder layers) plus
flat fields for every module this project adds on top of them.
"""

from __future__ import annotations

import copy
import math

from transformers import Lfm2Config, ParakeetEncoderConfig, PretrainedConfig, SiglipVisionConfig

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


def _tiny_backbones() -> dict:
    """Sub-configs with hidden 32-64 and 1-2 layers, for tests."""
    return dict(
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


class FERConfig(PretrainedConfig):
    r"""
    Configuration of [`FERForEmotionClassification`]. Defaults give the `"seed"` architecture of SPEC.md.

    Args:
        vision_config (`dict` or `SiglipVisionConfig`, *optional*):
            SigLIP vision tower; defaults to the `google/siglip2-base-patch16-224` shape without pooling head.
        audio_config (`dict` or `ParakeetEncoderConfig`, *optional*):
            FastConformer encoder; defaults to FastConformer-Large (17 x 512, kernel 9, x8 subsampling, no layerdrop).
        lfm2_config (`dict` or `Lfm2Config`, *optional*):
            LFM2 fusion layers; defaults to the first 6 layers of `LiquidAI/LFM2-700M`
            (conv, conv, full_attention, conv, conv, full_attention; hidden 1536).
            Its `hidden_size` is the fusion width.
        num_frames (`int`, *optional*, defaults to 90):
            Video frames per window, sampled at fixed timestamps over `clip_seconds`.
        clip_seconds (`float`, *optional*, defaults to 3.0):
            Length of one model window in seconds.
        sampling_rate (`int`, *optional*, defaults to 16000):
            Audio sampling rate in Hz expected by the mel extractor.
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
        freeze_vision_encoder (`bool`, *optional*, defaults to `False`):
            Build the model with the SigLIP tower frozen (`requires_grad=False`).
        freeze_audio_encoder (`bool`, *optional*, defaults to `False`):
            Build the model with the FastConformer encoder frozen.
        freeze_fusion_backbone (`bool`, *optional*, defaults to `False`):
            Build the model with the LFM2 layers frozen.
        preset (`str`, *optional*):
            Name of the preset this config came from, for display only.

    Attributes set by the tooling (kept in `config.json`, not constructor arguments):
        backbone_sources (`dict[str, str]`): where `fer_hf.tools.backbones` took each pretrained part from (the model
            card lists them as base models).
        custom_pipelines (`dict`): written by `save_pretrained` so that `pipeline(model=..., trust_remote_code=True)`
            finds `pipeline_fer.FEREmotionRecognitionPipeline`.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the initialisation of the added modules.
    """

    model_type = "fer_av_emotion"
    sub_configs = {
        "vision_config": SiglipVisionConfig,
        "audio_config": ParakeetEncoderConfig,
        "lfm2_config": Lfm2Config,
    }

    def __init__(
        self,
        vision_config=None,
        audio_config=None,
        lfm2_config=None,
        num_frames: int = 90,
        clip_seconds: float = 3.0,
        sampling_rate: int = 16000,
        num_segments: int = 8,
        audio_pool_num_heads: int = 8,
        roi_top_k: int = 64,
        roi_global_stats=ROI_GLOBAL_STATS,
        frame_pool_num_heads: int = 8,
        temporal_num_gscb_layers: int = 4,
        temporal_num_attention_layers: int = 2,
        temporal_conv_kernel_size: int = 4,
        temporal_num_heads: int = 8,
        temporal_ffn_ratio: int = 4,
        fusion_causal: bool = False,
        fused_dim: int = 512,
        fusion_dropout: float = 0.1,
        classifier_hidden_sizes=(512, 256),
        classifier_dropout: float = 0.1,
        modality_dropout: float = 0.1,
        vision_chunk_size: int = 8,
        vision_keep_patches: int | None = None,
        freeze_vision_encoder: bool = False,
        freeze_audio_encoder: bool = False,
        freeze_fusion_backbone: bool = False,
        preset: str | None = None,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.vision_config = self._sub_config(vision_config, SiglipVisionConfig, _SIGLIP2_BASE_224)
        self.audio_config = self._sub_config(audio_config, ParakeetEncoderConfig, _FASTCONFORMER_LARGE)
        self.lfm2_config = self._sub_config(lfm2_config, Lfm2Config, _LFM2_700M_FIRST6)
        self.num_frames = num_frames
        self.clip_seconds = clip_seconds
        self.sampling_rate = sampling_rate
        self.num_segments = num_segments
        self.audio_pool_num_heads = audio_pool_num_heads
        self.roi_top_k = roi_top_k
        self.roi_global_stats = list(roi_global_stats)
        self.frame_pool_num_heads = frame_pool_num_heads
        self.temporal_num_gscb_layers = temporal_num_gscb_layers
        self.temporal_num_attention_layers = temporal_num_attention_layers
        self.temporal_conv_kernel_size = temporal_conv_kernel_size
        self.temporal_num_heads = temporal_num_heads
        self.temporal_ffn_ratio = temporal_ffn_ratio
        self.fusion_causal = fusion_causal
        self.fused_dim = fused_dim
        self.fusion_dropout = fusion_dropout
        self.classifier_hidden_sizes = list(classifier_hidden_sizes)
        self.classifier_dropout = classifier_dropout
        self.modality_dropout = modality_dropout
        self.vision_chunk_size = vision_chunk_size
        self.vision_keep_patches = vision_keep_patches
        self.freeze_vision_encoder = freeze_vision_encoder
        self.freeze_audio_encoder = freeze_audio_encoder
        self.freeze_fusion_backbone = freeze_fusion_backbone
        self.preset = preset
        self.initializer_range = initializer_range
        if kwargs.get("id2label") is None:
            kwargs["id2label"] = dict(enumerate(RAVDESS_LABELS))
        if kwargs.get("label2id") is None:
            kwargs["label2id"] = {label: int(i) for i, label in dict(kwargs["id2label"]).items()}
        super().__init__(**kwargs)
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

    # ----------------------------------------------------------------------------------
    PRESETS = ("seed", "realtime", "tiny")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "FERConfig":
        """Named configurations.

        - `"seed"`: SPEC shapes, 90 frames per 3 s window (~3.2 TFLOPs per clip: a GPU model).
        - `"realtime"`: the same backbones with 8 frames per window and the 96 highest-ROI patches of each frame
          entering SigLIP, for CPU inference (figures: README, `benchmarks/bench_inference.py`).
        - `"tiny"`: hidden 32-64, 1-2 layers, 8 frames of 32x32: for tests and smoke runs; its initialisation is
          scaled up for small widths so it trains from scratch.

        `overrides` are passed to the constructor (sub-config dicts are merged into the preset's).
        """
        if name == "seed":
            kwargs = {}
        elif name == "realtime":
            kwargs = dict(num_frames=8, vision_keep_patches=96)
        elif name == "tiny":
            kwargs = dict(
                _tiny_backbones(),
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
            )
        else:
            raise ValueError(f"unknown preset {name!r}; choose one of {list(cls.PRESETS)}")
        for key, value in overrides.items():
            if key in ("vision_config", "audio_config", "lfm2_config") and isinstance(value, dict):
                kwargs[key] = {**kwargs.get(key, {}), **value}
            else:
                kwargs[key] = value
        kwargs.setdefault("preset", name)
        return cls(**kwargs)

    def to_dict(self):
        output = super().to_dict()
        for key in ("vision_config", "audio_config", "lfm2_config"):
            value = getattr(self, key)
            output[key] = value.to_dict() if hasattr(value, "to_dict") else copy.deepcopy(value)
        return output

    def segment_bounds_seconds(self) -> list[tuple[float, float]]:
        """Start and end time (s) of each segment inside one window."""
        step = self.clip_seconds / self.num_segments
        return [(round(i * step, 6), round((i + 1) * step, 6)) for i in range(self.num_segments)]

    def frame_times_seconds(self) -> list[float]:
        """Timestamps (s, from window start) at which the `num_frames` frames are sampled: bin centres."""
        step = self.clip_seconds / self.num_frames
        return [round((k + 0.5) * step, 6) for k in range(self.num_frames)]

    def num_mel_frames(self) -> int:
        """Mel frames of a full window at a 10 ms hop (300 for 3 s)."""
        return int(math.floor(self.num_audio_samples / 160))


__all__ = ["FERConfig", "RAVDESS_LABELS"]
