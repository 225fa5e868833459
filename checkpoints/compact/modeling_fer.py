"""Audio-visual emotion recognition: FastConformer + SigLIP + LFM2 fusion (SPEC §1–5).

Reading order: `FERForEmotionClassification.forward` runs the audio branch, the visual branch,
the LFM2 fusion and the classifier, each a method named after its SPEC section. The pretrained
parts are transformers' own `ParakeetEncoder`, `SiglipVisionModel` and `Lfm2DecoderLayer`;
the modules this project adds live in `modules_fer.py`.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import stat
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ParakeetEncoder, PreTrainedModel, SiglipVisionModel
from transformers import initialization as hf_init
from transformers.models.parakeet.modeling_parakeet import ParakeetEncoderSubsamplingConv2D
from transformers.models.siglip.modeling_siglip import SiglipAttention, SiglipMLP
from transformers.utils import ModelOutput

from .configuration_fer import FERConfig
from .errors_fer import CorruptCheckpointError, FERInputError, NoUsableModalityError
from .fusion_fer import FERLfm2Fusion
from .modules_fer import (
    FERAudioSegmentAttentionPool,
    FERFrameTokenPool,
    FERGatedProjection,
    FERLayerRecorder,
    FERMLPHead,
    FERQueryAttentionPool,
    FERRoiTokenCompressor,
    FERTemporalAttentionPool,
    FERVisualSegmentPool,
    FERVisualTemporalEncoder,
)

logger = logging.getLogger(__name__)


@dataclass
class FEREmotionClassifierOutput(ModelOutput):
    """Output of [`FERForEmotionClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): cross-entropy, returned when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): clip-level logits; `probabilities()`
            gives their softmax.
        segment_logits (`torch.FloatTensor` of shape `(batch_size, num_segments, num_labels)`): the classifier
            head applied to each fused segment (a timeline inside the window).
        segment_attention (`torch.FloatTensor` of shape `(batch_size, num_segments)`): the classifier's temporal
            attention weights over segments (0 for empty segments).
        segment_mask (`torch.LongTensor` of shape `(batch_size, num_segments)`): 1 for segments holding any used
            input, else 0. The three masks are 0/1 integers, as transformers' attention masks (`.bool()` for
            boolean indexing), so that every tensor of `to_tuple()` compares like the others.
        audio_segment_attention (`torch.FloatTensor` of shape `(batch_size, num_segments, audio_frames)`): audio
            pooling weights over FastConformer frames (80 ms each), averaged over heads; zeros for a sample without
            audio. `audio_frames` is the encoder length of `input_features`, or `config.num_encoder_frames()` when
            the batch has no audio input.
        audio_frame_mask (`torch.LongTensor` of shape `(batch_size, audio_frames)`): 1 for valid encoder frames (all
            0 for a sample without audio).
        roi_indices (`torch.LongTensor` of shape `(batch_size, num_frames, roi_top_k)`): patch indices kept per
            frame (row-major over the patch grid); -1 where a frame was not encoded (padding, a sample without
            video, or a batch given as `frame_embeddings`). `num_frames` is `config.num_frames` without video input.
        roi_scores (`torch.FloatTensor` of shape `(batch_size, num_frames, roi_top_k)`): their scores (0 likewise).
        roi_patch_scores (`torch.FloatTensor` of shape `(batch_size, num_frames, num_patches)`): the importance
            score of every patch (after the ROI weight map), 0 where a frame was not encoded.
        modalities_used (`torch.LongTensor` of shape `(batch_size, 2)`): 1 where used; `[:, 0]` audio, `[:, 1]`
            video.
        audio_hidden_states (`tuple(torch.FloatTensor)`, *optional*, with `output_hidden_states=True`): the
            FastConformer's input (after subsampling) and each block's output, `(batch_size, audio_frames,
            audio_hidden)` each; zeros for samples without audio.
        vision_hidden_states (`tuple(torch.FloatTensor)`, *optional*, with `output_hidden_states=True`): SigLIP's
            patch embeddings and each layer's output (before the post-layernorm), `(batch_size, num_frames,
            tokens, vision_hidden)` each, `tokens` = `num_patches` (or `vision_keep_patches` when that lever is on);
            zeros for frames not encoded; `None` for a batch given as `frame_embeddings`.
        fusion_hidden_states (`tuple(torch.FloatTensor)`, *optional*, with `output_hidden_states=True`): the 2S
            interleaved tokens entering LFM2 and each layer's output, the last one after LFM2's final norm (as
            `Lfm2Model` returns them), `(batch_size, 2 * num_segments, fusion_hidden)` each.
        audio_attentions, vision_attentions, fusion_attentions (`tuple(torch.FloatTensor)`, *optional*, with
            `output_attentions=True`): each attention layer's weights, `(batch_size, heads, audio_frames,
            audio_frames)`, `(batch_size, num_frames, heads, tokens, tokens)` and `(batch_size, heads, 2 *
            num_segments, 2 * num_segments)`. Only eager attention computes them: load the model with
            `attn_implementation="eager"` (under SDPA they are empty tuples, with a warning).

    Every field above `audio_hidden_states` is present for every batch (zeros and masks where a modality is absent),
    so `to_tuple()` positions depend only on `labels`, `output_hidden_states` and `output_attentions`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    segment_logits: torch.FloatTensor | None = None
    segment_attention: torch.FloatTensor | None = None
    segment_mask: torch.LongTensor | None = None
    audio_segment_attention: torch.FloatTensor | None = None
    audio_frame_mask: torch.LongTensor | None = None
    roi_indices: torch.LongTensor | None = None
    roi_scores: torch.FloatTensor | None = None
    roi_patch_scores: torch.FloatTensor | None = None
    modalities_used: torch.LongTensor | None = None
    audio_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    vision_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    fusion_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    audio_attentions: tuple[torch.FloatTensor, ...] | None = None
    vision_attentions: tuple[torch.FloatTensor, ...] | None = None
    fusion_attentions: tuple[torch.FloatTensor, ...] | None = None

    def probabilities(self) -> torch.FloatTensor:
        """Softmax of `logits`, shape `(batch_size, num_labels)`."""
        return self.logits.softmax(-1)


@dataclass
class FERFrameEmbeddings(ModelOutput):
    """Output of [`FERForEmotionClassification.embed_frames`]: the per-frame part of the visual branch.

    Each frame's vector depends on that frame alone (SigLIP, ROI token compression, frame token pooling), so a
    frame sampled once can be reused by every window that contains it: pass the vectors of a window's frames to
    `forward(frame_embeddings=...)` instead of `pixel_values_videos`.

    Args:
        frame_embeddings (`torch.FloatTensor` of shape `(num_frames, vision_hidden_size)`): one vector per frame.
        roi_indices (`torch.LongTensor` of shape `(num_frames, roi_top_k)`): patch indices kept per frame
            (row-major over the patch grid, in spatial order).
        roi_scores (`torch.FloatTensor` of shape `(num_frames, roi_top_k)`): the kept patches' scores.
        roi_patch_scores (`torch.FloatTensor` of shape `(num_frames, num_patches)`): every patch's score
            (0 for patches that did not enter SigLIP when `config.vision_keep_patches` is set).
    """

    frame_embeddings: torch.FloatTensor | None = None
    roi_indices: torch.LongTensor | None = None
    roi_scores: torch.FloatTensor | None = None
    roi_patch_scores: torch.FloatTensor | None = None


# Every top-level `*_fer.py` file of the package: the Hub payload. `save_pretrained` copies all of them (a folder
# then also loads the processor and the pipeline), and tests/test_layout.py checks this list against the files.
PAYLOAD_MODULES = (
    "analysis_fer.py",
    "audio_processing_fer.py",
    "configuration_fer.py",
    "errors_fer.py",
    "face_landmarks_fer.py",
    "face_tracking_fer.py",
    "faces_fer.py",
    "frontend_fer.py",
    "fusion_fer.py",
    "geometry_fer.py",
    "live_analysis_fer.py",
    "media_fer.py",
    "media_stream_fer.py",
    "media_timing_fer.py",
    "modeling_fer.py",
    "modules_fer.py",
    "pipeline_fer.py",
    "processing_fer.py",
    "provenance_fer.py",
    "results_fer.py",
    "shots_fer.py",
    "speech_fer.py",
    "video_processing_fer.py",
    "windows_fer.py",
)
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
PIPELINE_TASK = "audio-visual-emotion-recognition"  # the same string as pipeline_fer.FER_PIPELINE_TASK
PIPELINE_REGISTRATION = {
    PIPELINE_TASK: {"impl": "pipeline_fer.FEREmotionRecognitionPipeline", "pt": ["AutoModel"], "type": "multimodal"}
}


def _weights_like_config(folder) -> None:
    """Give the `*.safetensors` files of `folder` the mode `config.json` got from the umask (readable as the rest)."""
    config = os.path.join(folder, "config.json")
    if not os.path.isfile(config):
        return
    mode = stat.S_IMODE(os.stat(config).st_mode)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.endswith(".safetensors") and os.path.isfile(path) and stat.S_IMODE(os.stat(path).st_mode) != mode:
            os.chmod(path, mode)


def refuse_nonfinite_weights(named_tensors, source, advice: str | None = None) -> None:
    """Raise `CorruptCheckpointError` when a floating-point tensor of `named_tensors` (name, tensor pairs) holds NaN
    or an infinity: such weights come from a training run that diverged and would make every probability NaN."""
    bad = [name for name, tensor in named_tensors
           if torch.is_floating_point(tensor) and tensor.device.type != "meta" and not torch.isfinite(tensor).all()]
    if bad:
        raise CorruptCheckpointError(
            f"the weights in {str(source)!r} hold NaN or infinite values ({len(bad)} tensor(s), first {bad[0]!r}): "
            "the training run that wrote them diverged, and the model would answer NaN. "
            + (advice or "Use an earlier checkpoint, or train again (a lower learning rate usually helps).")
        )


def load_checked_safetensors(path, advice: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file `path`, refused with `CorruptCheckpointError` when the file cannot be
    read (truncated, not safetensors) or holds NaN / infinite values."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise CorruptCheckpointError(_unreadable_weights(path, err, advice)) from None
    refuse_nonfinite_weights(tensors.items(), path, advice)
    return tensors


def _unreadable_weights(source, err: Exception, advice: str | None = None) -> str:
    if isinstance(err, pickle.UnpicklingError):
        return (f"the weights in {str(source)!r} are a pickle file (pytorch_model.bin) holding more than tensors, "
                "which cannot be loaded without running its code; convert it to safetensors (save_pretrained) with "
                "code you trust, or use a folder with model.safetensors")
    detail = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
    return (f"the weights in {str(source)!r} cannot be read ({detail}): the file is truncated or is not a weights "
            "file. " + (advice or "Copy or download it again, or use another checkpoint."))


class FERPreTrainedModel(PreTrainedModel):
    config_class = FERConfig
    config: FERConfig
    base_model_prefix = "fer"
    main_input_name = "input_features"  # forward's first parameter
    input_modalities = ("audio", "video")
    supports_gradient_checkpointing = True
    _no_split_modules = ["SiglipEncoderLayer", "ParakeetEncoderBlock", "Lfm2DecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False

    @torch.no_grad()
    def _init_weights(self, module):
        """By module class: transformers' defaults (Linear/Conv normal(0, initializer_range), norms 1/0), then the
        learned vectors of the added modules, and He init of the FastConformer's subsampling convs (see
        `initialize_weights`). The backbones' own modules keep their own init (`SiglipVisionModel._init_weights`,
        `ParakeetEncoder._init_weights`)."""
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, (FERQueryAttentionPool, FERTemporalAttentionPool)):
            hf_init.normal_(module.query, std=std)
        elif isinstance(module, FERAudioSegmentAttentionPool):
            hf_init.normal_(module.segment_embed, std=std)
        elif isinstance(module, FERGatedProjection):
            hf_init.normal_(module.type_embed, std=std)
        elif isinstance(module, FERLfm2Fusion):
            hf_init.normal_(module.audio_missing, std=std)
            hf_init.normal_(module.visual_missing, std=std)
        elif isinstance(module, ParakeetEncoderSubsamplingConv2D):
            # at transformers' normal(0, 0.02) the depthwise convs (fan-in 9) shrink the mel input to ~1e-6 of its
            # size, so an encoder trained from scratch hears almost nothing (the loss then sits at ln 8)
            for layer in module.layers:
                if isinstance(layer, nn.Conv2d):
                    hf_init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    hf_init.zeros_(layer.bias)

    def initialize_weights(self):
        """transformers' recursive init, then two modules it would leave with the wrong init:

        - SigLIP's attention / MLP where their weights are missing: transformers 5.23 hands the nested
          `SiglipVisionModel` the outer model's remote-code flag, under which a module without parameters of its own
          counts as initialised, so its Linears would keep the generic init. They go through SigLIP's own
          `_initialize_weights` (its `_init_weights`, the same random draws as a model built from scratch).
        - the FastConformer's subsampling convs (He init, `_init_weights`): nested in `ParakeetEncoder`, they are
          otherwise initialised by Parakeet's init only.
        Both use `transformers.initialization`, which leaves every loaded weight as it is.
        """
        pending = [
            m for m in self.modules()
            if isinstance(m, (SiglipAttention, SiglipMLP)) and not getattr(m, "_is_hf_initialized", False)
        ]
        super().initialize_weights()
        with torch.no_grad():
            for module in pending:
                module._is_hf_initialized = False
                self.vision_encoder._initialize_weights(module)
            subsampling = self.audio_encoder.subsampling
            if not getattr(subsampling, "_fer_he_init", False):
                subsampling._is_hf_initialized = False
                self._initialize_weights(subsampling)
                subsampling._fer_he_init = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, refusing unusable weights with `CorruptCheckpointError`: a truncated
        or foreign weights file, a pickle that would have to run code, or NaN / infinite values."""
        from safetensors import SafetensorError

        source = pretrained_model_name_or_path
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except (SafetensorError, pickle.UnpicklingError, EOFError) as err:
            raise CorruptCheckpointError(_unreadable_weights(source, err)) from None
        loaded = model[0] if isinstance(model, tuple) else model  # (model, loading_info) with output_loading_info
        refuse_nonfinite_weights(loaded.state_dict().items(), source)
        return model

    def backbone_modules(self) -> dict[str, nn.Module]:
        """The pretrained parts, by name: `vision`, `audio`, `fusion` (the LFM2 layers)."""
        return {"vision": self.vision_encoder, "audio": self.audio_encoder, "fusion": self.fusion.backbone}

    def frozen_backbones(self) -> list[str]:
        """Names of the backbones whose parameters all have `requires_grad=False`."""
        return [
            name for name, module in self.backbone_modules().items()
            if not any(p.requires_grad for p in module.parameters())
        ]

    def freeze_backbones(self, vision: bool | None = None, audio: bool | None = None, fusion: bool | None = None):
        """Freeze (`True`) or unfreeze (`False`) each pretrained part; `None` leaves it as it is. A frozen part stays
        in eval mode (BatchNorm statistics and dropout fixed) even under `model.train()`."""
        for name, flag in (("vision", vision), ("audio", audio), ("fusion", fusion)):
            if flag is not None:
                self.backbone_modules()[name].requires_grad_(not flag)
        return self.train(self.training)

    def train(self, mode: bool = True):
        """As `nn.Module.train`, except that frozen backbones stay in eval mode: a frozen FastConformer must not
        update its BatchNorm statistics, nor a frozen part drop activations, while the rest trains."""
        super().train(mode)
        if mode:
            for name in self.frozen_backbones():
                self.backbone_modules()[name].eval()
        return self

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus what makes any saved folder a complete remote-code model:
        `custom_pipelines` in `config.json` (so `pipeline(model=folder, trust_remote_code=True)` finds the task),
        every payload module (`PAYLOAD_MODULES`), not only those the model's imports reach, and, when the folder has
        no processor yet, `FERProcessor.from_model_config(config)` (a processor saved there later replaces it).
        The weights get the file mode of `config.json` (safetensors writes them through a private temporary file,
        mode 0600, whatever the umask)."""
        if getattr(self, "is_int8_quantized", False):
            raise RuntimeError("an int8-quantised model is for inference only; save the fp32 model instead")
        self.config.custom_pipelines = {task: dict(info) for task, info in PIPELINE_REGISTRATION.items()}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            _weights_like_config(save_directory)
            source = os.path.dirname(os.path.abspath(__file__))
            missing = [name for name in PAYLOAD_MODULES if not os.path.isfile(os.path.join(source, name))]
            if missing:  # only in a partial download of a Hub copy
                logger.warning("%s not found next to %s: the saved folder lacks them", missing, source)
            for name in PAYLOAD_MODULES:
                origin, target = os.path.join(source, name), os.path.join(save_directory, name)
                if name in missing or (os.path.exists(target) and os.path.samefile(origin, target)):
                    continue
                shutil.copy(origin, target)
            if not any(os.path.exists(os.path.join(save_directory, f)) for f in PROCESSOR_FILES):
                self._save_default_processor(save_directory)
        return result

    def _save_default_processor(self, save_directory):
        try:
            from .processing_fer import FERProcessor
        except ImportError as err:  # the media stack (PyAV, OpenCV) is not installed
            logger.warning("saved the model without a processor (%s): pipeline() will need one", err)
            return
        FERProcessor.from_model_config(self.config).save_pretrained(save_directory)


class FERForEmotionClassification(FERPreTrainedModel):
    """Audio-visual emotion classifier over one window (`config.clip_seconds`) of a talking-face clip.

    Inputs (all optional except that each sample needs audio or video; the processor produces them all):
        input_features (`(B, n_mel, 80)`): log-mel features (`ParakeetFeatureExtractor`).
        audio_attention_mask (`(B, n_mel)`): 1 for real mel frames, 0 for padding.
        pixel_values_videos (`(B, T, 3, H, W)`): SigLIP-normalised face crops.
        video_frame_mask (`(B, T)` bool): True for frames inside the clip.
        roi_weights (`(B, T, num_patches)`): facial ROI weight per patch in [0, 1].
        audio_mask / video_mask (`(B,)` bool): whether the modality is present for each sample.
        frame_embeddings (`(B, T, Dv)`): instead of `pixel_values_videos`, the frames' vectors from
            [`embed_frames`] (a frame-feature cache); SigLIP, ROI compression and frame pooling are skipped and the
            ROI outputs are placeholders (`roi_indices` -1, scores 0): the cache holds the frames' own ROI outputs.
        labels (`(B,)` long): class indices for the loss.
    """

    def __init__(self, config: FERConfig):
        super().__init__(config)
        self.audio_encoder = ParakeetEncoder._from_config(config.audio_config)
        self.audio_segment_pool = FERAudioSegmentAttentionPool(
            config.audio_config.hidden_size, config.audio_pool_num_heads, config.num_segments
        )
        self.vision_encoder = SiglipVisionModel._from_config(config.vision_config)
        if getattr(self.vision_encoder, "head", None) is not None:
            raise ValueError("`vision_config.vision_use_head` must be False: the pooling head is never used")
        vision_dim = config.vision_config.hidden_size
        self.roi_compressor = FERRoiTokenCompressor(vision_dim, config.roi_top_k, config.roi_global_stats)
        self.frame_pool = FERFrameTokenPool(vision_dim, config.frame_pool_num_heads)
        self.temporal_encoder = FERVisualTemporalEncoder(
            vision_dim,
            config.temporal_num_gscb_layers,
            config.temporal_num_attention_layers,
            config.temporal_conv_kernel_size,
            config.temporal_num_heads,
            config.temporal_ffn_ratio,
        )
        self.visual_segment_pool = FERVisualSegmentPool(config.num_segments)
        self.fusion = FERLfm2Fusion(config)
        self.temporal_pool = FERTemporalAttentionPool(config.fused_dim)
        self.classifier = FERMLPHead(
            config.fused_dim, config.classifier_hidden_sizes, config.num_labels, config.classifier_dropout
        )
        self.post_init()
        self.freeze_backbones(
            vision=config.freeze_vision_encoder or None,
            audio=config.freeze_audio_encoder or None,
            fusion=config.freeze_fusion_backbone or None,
        )

    # ------------------------------------------------------------------------------------------
    def quantize_int8_(self) -> "FERForEmotionClassification":
        """CPU inference option: dynamic int8 quantisation of every `nn.Linear` (int8 weights, activations quantised
        on the fly), in place. Inference only; the fidelity against fp32 is measured by `benchmarks/bench_inference.py`.
        """
        if self.training:
            raise RuntimeError("int8 quantisation is for inference: call model.eval() first")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch deprecates the quantised tensor API in favour of torchao
            torch.ao.quantization.quantize_dynamic(self, {nn.Linear}, dtype=torch.qint8, inplace=True)
        self.is_int8_quantized = True
        return self

    # ------------------------------------------------------------------------------------------
    def encode_audio(self, input_features, audio_attention_mask, rows, record_hidden=False, record_attentions=False):
        """SPEC §1 for the samples in `rows`.

        Returns segments (b, S, Da), weights (b, S, L), has_audio (b, S), frame mask (b, L), and the
        `FERLayerRecorder` of the FastConformer blocks.
        """
        feats = input_features[rows]
        mask = None if audio_attention_mask is None else audio_attention_mask[rows].to(torch.long)
        blocks = self.audio_encoder.layers
        with FERLayerRecorder(blocks, [b.self_attn for b in blocks], record_hidden, record_attentions) as record:
            out = self.audio_encoder(input_features=feats, attention_mask=mask)
        hidden = out.last_hidden_state  # (b, L, Da)
        if mask is None:
            frame_mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        else:
            frame_mask = out.attention_mask.to(torch.bool)
        segments, weights, has_audio = self.audio_segment_pool(hidden, frame_mask)
        return segments, weights, has_audio, frame_mask, record

    def embed_frames(self, pixel_values, roi_weights=None) -> FERFrameEmbeddings:
        """SPEC §2.1–2.3 on a flat set of frames (SigLIP, ROI compression, frame token pool), in chunks of
        `config.vision_chunk_size`. The frame-feature cache of the app, live mode and batch annotation calls this
        once per sampled frame and feeds the vectors to `forward(frame_embeddings=...)`.

        Input pixel_values (F, 3, H, W) SigLIP-normalised face crops, roi_weights (F, num_patches) or None
        Output [`FERFrameEmbeddings`]: frame_embeddings (F, Dv), roi_indices (F, K), roi_scores (F, K),
        roi_patch_scores (F, N)
        """
        return self._embed_frames(pixel_values, roi_weights)[0]

    def _embed_frames(self, pixel_values, roi_weights, record_hidden=False, record_attentions=False):
        """`embed_frames`, plus SigLIP's per-layer hidden states (F, P, Dv) and attentions (F, H, P, P) when asked."""
        cfg = self.config
        size = cfg.vision_config.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise FERInputError(
                f"`pixel_values` must be (frames, 3, {size}, {size}) face crops, got {tuple(pixel_values.shape)}"
            )
        if roi_weights is not None and tuple(roi_weights.shape) != (pixel_values.shape[0], cfg.num_patches):
            raise FERInputError(
                f"`roi_weights` must be (frames, {cfg.num_patches}) to match the pixels, got {tuple(roi_weights.shape)}"
            )
        pixels = pixel_values.to(self.dtype)
        layers = self.vision_encoder.encoder.layers
        mirror = cfg.vision_mirror_average and not self.training
        grid = cfg.vision_config.image_size // cfg.vision_config.patch_size
        outputs, hidden, attentions = [], [], []
        for start in range(0, pixels.shape[0], cfg.vision_chunk_size):
            chunk = slice(start, start + cfg.vision_chunk_size)
            roi = None if roi_weights is None else roi_weights[chunk]
            with FERLayerRecorder(layers, [m.self_attn for m in layers], record_hidden, record_attentions) as rec:
                compressed, indices, kept, scores = self._compress_frames(pixels[chunk], roi)
            vectors = self.frame_pool(compressed)
            if mirror:  # the mean with the mirrored crop's vector (config.vision_mirror_average)
                flipped_roi = None if roi is None else roi.view(-1, grid, grid).flip(-1).reshape(roi.shape)
                compressed = self._compress_frames(pixels[chunk].flip(-1), flipped_roi)[0]
                vectors = (vectors + self.frame_pool(compressed)) / 2
            outputs.append((vectors, indices, kept, scores))
            hidden.append(rec.hidden_states)
            attentions.append(rec.attentions)
        if not outputs:  # no frame at all: empty tensors of the right widths
            k, n, dv = cfg.roi_top_k, cfg.num_patches, cfg.vision_config.hidden_size
            empty = pixels.new_zeros
            long = torch.zeros(0, k, dtype=torch.long, device=pixels.device)
            outputs.append((empty(0, dv), long, empty(0, k), empty(0, n)))
        vectors, indices, kept, scores = (torch.cat(parts) for parts in zip(*outputs))
        embedded = FERFrameEmbeddings(
            frame_embeddings=vectors, roi_indices=indices, roi_scores=kept, roi_patch_scores=scores
        )
        # per layer: the chunks' tensors joined along the frames
        join = lambda per_chunk: [torch.cat(layer) for layer in zip(*per_chunk)]  # noqa: E731
        return embedded, join(hidden), join(attentions)

    def _compress_frames(self, pixels, roi):
        """SigLIP + ROI compression of one chunk (SPEC §2.1–2.2).

        Input pixels (f, 3, H, W), roi (f, N) or None
        Output compressed tokens (f, K+G, Dv), roi indices (f, K), kept scores (f, K), patch scores (f, N)
        """
        keep = self.config.vision_keep_patches
        if roi is None or keep is None or keep >= roi.shape[-1]:
            tokens = self.vision_encoder(pixel_values=pixels).last_hidden_state  # (f, N, Dv)
            return self.roi_compressor(tokens, roi)
        tokens, patch_ids = self.encode_roi_patches(pixels, roi, keep)  # (f, P, Dv), (f, P)
        compressed, local, kept, local_scores = self.roi_compressor(tokens, roi.gather(1, patch_ids))
        indices = patch_ids.gather(1, local)  # back to indices on the full patch grid
        scores = local_scores.new_zeros(roi.shape).scatter(1, patch_ids, local_scores)
        return compressed, indices, kept, scores

    def encode_roi_patches(self, pixels, roi_weights, keep):
        """SigLIP on the `keep` patches with the highest ROI weight (position embeddings added before the cut).

        Input pixels (f, 3, H, W), roi_weights (f, N)  Output tokens (f, keep, Dv), patch indices (f, keep)
        """
        siglip = self.vision_encoder
        embeddings = siglip.embeddings(pixels)  # (f, N, Dv)
        patch_ids = roi_weights.topk(keep, dim=-1).indices.sort(dim=-1).values
        embeddings = embeddings.gather(1, patch_ids[..., None].expand(-1, -1, embeddings.shape[-1]))
        hidden = siglip.encoder(inputs_embeds=embeddings).last_hidden_state
        return siglip.post_layernorm(hidden), patch_ids

    def encode_video(self, pixel_values_videos, frame_mask, roi_weights, frame_embeddings=None, record_hidden=False,
                     record_attentions=False):
        """SPEC §2 for every sample (frames with `frame_mask` False are never encoded).

        Input pixel_values_videos (B, T, 3, H, W), or frame_embeddings (B, T, Dv) from `embed_frames` (then SigLIP,
        ROI compression and frame pooling are skipped); frame_mask (B, T); roi_weights (B, T, N) or None.
        Returns segments (B, S, Dv), has_video (B, S), roi indices (B, T, K), roi scores (B, T, K),
        patch scores (B, T, N), SigLIP hidden states and attentions per layer (B, T, ...) (empty lists when not
        asked for or from `frame_embeddings`). From `frame_embeddings` the ROI outputs are placeholders: -1 / 0.
        """
        b, t = frame_mask.shape
        cfg = self.config
        k, n = cfg.roi_top_k, cfg.num_patches
        hidden_states, attentions = [], []
        if frame_embeddings is not None:
            # Masked frames feed zeros, exactly as the pixel path (which never encodes them).
            frames = frame_embeddings.to(self.dtype) * frame_mask[..., None].to(self.dtype)  # (B, T, Dv)
            roi_indices = torch.full((b, t, k), -1, dtype=torch.long, device=frames.device)
            roi_scores = frames.new_zeros(b, t, k)
            patch_scores = frames.new_zeros(b, t, n)
        else:
            flat = frame_mask.reshape(-1).nonzero().squeeze(-1)  # indices into B*T
            pixels = pixel_values_videos.flatten(0, 1)[flat]
            roi = None if roi_weights is None else roi_weights.flatten(0, 1)[flat]
            embedded, hidden, attn = self._embed_frames(pixels, roi, record_hidden, record_attentions)
            vectors = embedded.frame_embeddings

            def scatter(values, fill=0):  # (F, ...) of the encoded frames -> (B, T, ...)
                full = values.new_full((b * t, *values.shape[1:]), fill)
                return full.index_copy(0, flat, values).view(b, t, *values.shape[1:])

            frames = scatter(vectors)
            roi_indices = scatter(embedded.roi_indices, -1)
            roi_scores, patch_scores = scatter(embedded.roi_scores), scatter(embedded.roi_patch_scores)
            hidden_states, attentions = [scatter(h) for h in hidden], [scatter(a) for a in attn]
        frames = self.temporal_encoder(frames, frame_mask)  # (B, T, Dv)
        segments, has_video = self.visual_segment_pool(frames, frame_mask)
        return segments, has_video, roi_indices, roi_scores, patch_scores, hidden_states, attentions

    # ------------------------------------------------------------------------------------------
    def _modality_masks(self, batch, device, input_features, video_input, audio_mask, video_mask):
        def resolve(mask, tensor, name):
            if mask is None:
                return torch.full((batch,), tensor is not None, dtype=torch.bool, device=device)
            mask = torch.as_tensor(mask, device=device).to(torch.bool).reshape(-1)
            if mask.shape[0] != batch:
                raise FERInputError(f"`{name}` has {mask.shape[0]} entries for a batch of {batch}")
            if mask.any() and tensor is None:
                raise FERInputError(f"`{name}` marks samples as present but no {name.split('_')[0]} input was given")
            return mask

        audio = resolve(audio_mask, input_features, "audio_mask")
        video = resolve(video_mask, video_input, "video_mask")
        trained = self.config.trained_modalities
        if trained is not None:  # a branch training never taught is not used (the result says why)
            audio = audio & ("audio" in trained)
            video = video & ("video" in trained)
        if self.training and self.config.modality_dropout > 0:
            both = audio & video
            drop = both & (torch.rand(batch, device=device) < self.config.modality_dropout)
            drop_audio = drop & (torch.rand(batch, device=device) < 0.5)
            audio, video = audio & ~drop_audio, video & ~(drop & ~drop_audio)
        return audio, video

    def _check_inputs(self, input_features, pixel_values_videos, frame_embeddings, audio_attention_mask=None,
                      video_frame_mask=None, roi_weights=None):
        """Shape checks; returns the video input (pixels or frame embeddings, or None) and the batch size."""
        cfg = self.config
        if pixel_values_videos is not None and frame_embeddings is not None:
            raise FERInputError(
                "give either `pixel_values_videos` or `frame_embeddings` (from `embed_frames`) for the video, not both"
            )
        video_input = pixel_values_videos if pixel_values_videos is not None else frame_embeddings
        reference = input_features if input_features is not None else video_input
        if reference is None:
            raise FERInputError(
                "give `input_features` (audio) and/or `pixel_values_videos` or `frame_embeddings` (video)"
            )
        if pixel_values_videos is not None and pixel_values_videos.dim() != 5:
            raise FERInputError(
                f"`pixel_values_videos` must be (B, T, 3, H, W), got {tuple(pixel_values_videos.shape)}"
            )
        if frame_embeddings is not None and (
            frame_embeddings.dim() != 3 or frame_embeddings.shape[-1] != cfg.vision_config.hidden_size
        ):
            raise FERInputError(
                f"`frame_embeddings` must be (B, T, {cfg.vision_config.hidden_size}) from `embed_frames`, "
                f"got {tuple(frame_embeddings.shape)}"
            )
        if input_features is not None and input_features.dim() != 3:
            raise FERInputError(f"`input_features` must be (B, n_mel, 80), got {tuple(input_features.shape)}")
        if input_features is not None and video_input is not None and input_features.shape[0] != video_input.shape[0]:
            raise FERInputError(
                f"audio batch ({input_features.shape[0]}) and video batch ({video_input.shape[0]}) differ"
            )
        if reference.shape[0] == 0:
            raise FERInputError("the batch is empty (0 rows): give at least one clip window")
        if video_input is not None and video_input.shape[1] != cfg.num_frames:
            raise FERInputError(
                f"the video has {video_input.shape[1]} frames per window but this model takes {cfg.num_frames} "
                "(`config.num_frames`); prepare the inputs with the model's own processor"
            )
        self._check_masks(input_features, video_input, audio_attention_mask, video_frame_mask, roi_weights)
        return video_input, reference.shape[0]

    def _check_masks(self, input_features, video_input, audio_attention_mask, video_frame_mask, roi_weights):
        """The masks and ROI weights must match the inputs they describe."""
        expected = []
        if input_features is not None:
            expected.append(("audio_attention_mask", audio_attention_mask, tuple(input_features.shape[:2])))
        if video_input is not None:
            b, t = video_input.shape[:2]
            expected += [("video_frame_mask", video_frame_mask, (b, t)),
                         ("roi_weights", roi_weights, (b, t, self.config.num_patches))]
        for name, tensor, shape in expected:
            if tensor is not None and tuple(tensor.shape) != shape:
                raise FERInputError(f"`{name}` must have shape {shape} to match the inputs, got {tuple(tensor.shape)}")

    def forward(
        self,
        input_features: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_frame_mask: torch.Tensor | None = None,
        roi_weights: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        frame_embeddings: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> FEREmotionClassifierOutput | tuple:
        cfg = self.config
        return_dict = return_dict if return_dict is not None else cfg.return_dict
        want_hidden = bool(output_hidden_states if output_hidden_states is not None else cfg.output_hidden_states)
        want_attn = bool(output_attentions if output_attentions is not None else cfg.output_attentions)
        video_input, batch = self._check_inputs(input_features, pixel_values_videos, frame_embeddings,
                                                audio_attention_mask, video_frame_mask, roi_weights)
        device = (input_features if input_features is not None else video_input).device
        audio_used, video_used = self._modality_masks(batch, device, input_features, video_input, audio_mask,
                                                      video_mask)
        s = cfg.num_segments

        # Audio branch (SPEC §1) on the samples that have audio; zeros and empty masks for the others.
        audio_len = cfg.num_encoder_frames() if input_features is None else cfg.encoder_frames_of_mel(
            input_features.shape[1])
        audio_segments = torch.zeros(batch, s, cfg.audio_config.hidden_size, device=device, dtype=self.dtype)
        has_audio = torch.zeros(batch, s, dtype=torch.bool, device=device)
        audio_attention = torch.zeros(batch, s, audio_len, device=device, dtype=self.dtype)
        audio_frames = torch.zeros(batch, audio_len, dtype=torch.bool, device=device)
        audio_record = None
        if audio_used.any():
            rows = audio_used.nonzero().squeeze(-1)
            segs, weights, has, frames, audio_record = self.encode_audio(
                input_features.to(self.dtype), audio_attention_mask, rows, want_hidden, want_attn
            )
            audio_segments = audio_segments.index_copy(0, rows, segs)
            has_audio = has_audio.index_copy(0, rows, has)
            audio_attention = audio_attention.index_copy(0, rows, weights)
            audio_frames = audio_frames.index_copy(0, rows, frames)

        # Visual branch (SPEC §2) on the frames of the samples that have video.
        t = cfg.num_frames if video_input is None else video_input.shape[1]
        k, n = cfg.roi_top_k, cfg.num_patches
        visual_segments = torch.zeros(batch, s, cfg.vision_config.hidden_size, device=device, dtype=self.dtype)
        has_video = torch.zeros(batch, s, dtype=torch.bool, device=device)
        roi_indices = torch.full((batch, t, k), -1, dtype=torch.long, device=device)
        roi_scores = torch.zeros(batch, t, k, device=device, dtype=self.dtype)
        patch_scores = torch.zeros(batch, t, n, device=device, dtype=self.dtype)
        vision_hidden, vision_attn = [], []
        if video_used.any():
            frame_mask = torch.ones(batch, t, dtype=torch.bool, device=device)
            if video_frame_mask is not None:
                frame_mask = video_frame_mask.to(device=device, dtype=torch.bool)
            frame_mask = frame_mask & video_used[:, None]
            if roi_weights is not None and roi_weights.shape[-1] != n:
                raise FERInputError(f"`roi_weights` must have {n} weights per frame, got {roi_weights.shape[-1]}")
            visual_segments, has_video, roi_indices, roi_scores, patch_scores, vision_hidden, vision_attn = (
                self.encode_video(pixel_values_videos, frame_mask, roi_weights, frame_embeddings, want_hidden,
                                  want_attn)
            )

        audio_rows = audio_used  # the samples the audio encoder ran on
        audio_used = audio_used & has_audio.any(-1)
        video_used = video_used & has_video.any(-1)
        if not (audio_used | video_used).all():
            bad = (~(audio_used | video_used)).nonzero().squeeze(-1).tolist()
            trained = cfg.trained_modalities
            if trained is not None and len(trained) == 1:
                raise NoUsableModalityError(
                    f"this model was trained on {'voices' if trained[0] == 'audio' else 'faces'} only, and "
                    f"sample(s) {bad} have no usable {'speech' if trained[0] == 'audio' else 'face'}; nothing to "
                    "classify"
                )
            raise NoUsableModalityError(
                f"sample(s) {bad} have neither usable audio nor video frames; nothing to classify"
            )
        has_audio, has_video = has_audio & audio_used[:, None], has_video & video_used[:, None]

        # Fusion (SPEC §3) and classifier (SPEC §4).
        present = torch.stack([audio_used, video_used], dim=-1).to(self.dtype)  # (B, 2)
        fused, fusion_record = self.fusion(
            audio_segments, visual_segments, has_audio, has_video, present / present.sum(-1, keepdim=True),
            want_hidden, want_attn,
        )
        segment_mask = has_audio | has_video  # (B, S)
        pooled, segment_attention = self.temporal_pool(fused, segment_mask)
        logits = self.classifier(pooled)  # (B, C)
        segment_logits = self.classifier(fused)  # (B, S, C)

        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(device).long().view(-1))

        output = FEREmotionClassifierOutput(
            loss=loss,
            logits=logits,
            segment_logits=segment_logits,
            segment_attention=segment_attention,
            segment_mask=segment_mask.long(),
            audio_segment_attention=audio_attention,
            audio_frame_mask=audio_frames.long(),
            roi_indices=roi_indices,
            roi_scores=roi_scores,
            roi_patch_scores=patch_scores,
            modalities_used=torch.stack([audio_used, video_used], dim=-1).long(),
        )
        if want_hidden or want_attn:
            self._add_backbone_outputs(output, want_hidden, want_attn, audio_record, audio_rows, vision_hidden,
                                       vision_attn, fusion_record, frame_embeddings is not None, roi_weights)
        return output if return_dict else output.to_tuple()

    def _add_backbone_outputs(self, output, want_hidden, want_attn, audio_record, audio_rows, vision_hidden,
                              vision_attn, fusion_record, from_embeddings, roi_weights):
        """Fill the `*_hidden_states` / `*_attentions` fields: (B, ...) tensors with zero rows (audio) or zero
        frames (video) where a sample had no such input; zeros throughout when the whole batch lacked it."""
        cfg = self.config
        batch, t = output.roi_indices.shape[:2]
        audio_len = output.audio_frame_mask.shape[1]
        eager = {
            name: sub._attn_implementation == "eager"
            for name, sub in (("audio", cfg.audio_config), ("vision", cfg.vision_config), ("fusion", cfg.lfm2_config))
        }
        zeros = output.logits.new_zeros
        if audio_record is not None:
            rows = audio_rows.nonzero().squeeze(-1)
            widen = lambda values: tuple(  # noqa: E731
                v.new_zeros(batch, *v.shape[1:]).index_copy(0, rows, v) for v in values
            )
            audio_hidden, audio_attn = widen(audio_record.hidden_states), widen(audio_record.attentions)
        else:
            layers, heads = cfg.audio_config.num_hidden_layers, cfg.audio_config.num_attention_heads
            audio_hidden = tuple(zeros(batch, audio_len, cfg.audio_config.hidden_size) for _ in range(layers + 1))
            count = layers if eager["audio"] else 0
            audio_attn = tuple(zeros(batch, heads, audio_len, audio_len) for _ in range(count))
        if not from_embeddings and not vision_hidden and not vision_attn:  # no frame of the batch was encoded
            keep = cfg.vision_keep_patches
            p = keep if keep is not None and roi_weights is not None else cfg.num_patches
            layers, heads = cfg.vision_config.num_hidden_layers, cfg.vision_config.num_attention_heads
            if want_hidden:
                vision_hidden = [zeros(batch, t, p, cfg.vision_config.hidden_size) for _ in range(layers + 1)]
            if want_attn and eager["vision"]:
                vision_attn = [zeros(batch, t, heads, p, p) for _ in range(layers)]
        if want_hidden:
            output.audio_hidden_states = audio_hidden
            output.vision_hidden_states = None if from_embeddings else tuple(vision_hidden)
            output.fusion_hidden_states = tuple(fusion_record.hidden_states)
        if want_attn:
            output.audio_attentions = audio_attn
            output.vision_attentions = None if from_embeddings else tuple(vision_attn)
            output.fusion_attentions = tuple(fusion_record.attentions)
            if not all(eager.values()):
                logger.warning_once(
                    "attention weights are computed by eager attention only: load the model with "
                    "attn_implementation='eager' to get them all (those under SDPA are empty)"
                )


# `save_pretrained` then writes `"auto_map": {"AutoModel": "modeling_fer.FERForEmotionClassification"}` and copies
# the code files, so `AutoModel.from_pretrained(folder, trust_remote_code=True)` works anywhere.
FERForEmotionClassification.register_for_auto_class("AutoModel")

__all__ = [
    "PAYLOAD_MODULES",
    "load_checked_safetensors",
    "refuse_nonfinite_weights",
    "FERPreTrainedModel",
    "FERForEmotionClassification",
    "FEREmotionClassifierOutput",
    "FERFrameEmbeddings",
]
