"""Audio-visual emotion recognition: FastConformer + SigLIP + LFM2 fusion (SPEC §1–5).

Reading order: `FERForEmotionClassification.forward` runs the audio branch, the visual branch,
the LFM2 fusion and the classifier, each a method named after its SPEC section. The pretrained
parts are transformers' own `ParakeetEncoder`, `SiglipVisionModel` and `Lfm2DecoderLayer`;
the modules this project adds live in `modules_fer.py`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ParakeetEncoder, PreTrainedModel, SiglipVisionModel
from transformers.models.lfm2.modeling_lfm2 import (
    Lfm2DecoderLayer,
    Lfm2PreTrainedModel,
    Lfm2RMSNorm,
    Lfm2RotaryEmbedding,
)
from transformers.utils import ModelOutput

from .configuration_fer import FERConfig
from .errors_fer import FERInputError, NoUsableModalityError
from .modules_fer import (
    FERAudioSegmentAttentionPool,
    FERFrameTokenPool,
    FERGatedProjection,
    FERMLPHead,
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
        segment_mask (`torch.BoolTensor` of shape `(batch_size, num_segments)`): segments holding any used input.
        audio_segment_attention (`torch.FloatTensor` of shape `(batch_size, num_segments, audio_frames)`,
            *optional*): audio pooling weights over FastConformer frames (80 ms each), averaged over heads.
        audio_frame_mask (`torch.BoolTensor` of shape `(batch_size, audio_frames)`, *optional*): valid encoder frames.
        roi_indices (`torch.LongTensor` of shape `(batch_size, num_frames, roi_top_k)`, *optional*): patch indices
            kept per frame (row-major over the patch grid); -1 where a frame was not encoded.
        roi_scores (`torch.FloatTensor` of shape `(batch_size, num_frames, roi_top_k)`, *optional*): their scores.
        roi_patch_scores (`torch.FloatTensor` of shape `(batch_size, num_frames, num_patches)`, *optional*):
            the importance score of every patch (after the ROI weight map), 0 where a frame was not encoded.
        modalities_used (`torch.BoolTensor` of shape `(batch_size, 2)`): `[:, 0]` audio, `[:, 1]` video.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    segment_logits: torch.FloatTensor | None = None
    segment_attention: torch.FloatTensor | None = None
    segment_mask: torch.BoolTensor | None = None
    audio_segment_attention: torch.FloatTensor | None = None
    audio_frame_mask: torch.BoolTensor | None = None
    roi_indices: torch.LongTensor | None = None
    roi_scores: torch.FloatTensor | None = None
    roi_patch_scores: torch.FloatTensor | None = None
    modalities_used: torch.BoolTensor | None = None

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


class FERLfm2FusionBackbone(Lfm2PreTrainedModel):
    """SPEC §3.3: LFM2 decoder layers fed embeddings directly (no token embedding, no LM head).

    A transformers sub-model (like `Lfm2Model` without `embed_tokens`), so attention implementation, weight
    init and gradient checkpointing follow LFM2's own. Its `norm` is LFM2's final norm (`embedding_norm`).

    Input (B, 2S, D) interleaved tokens  Output (B, 2S, D)
    """

    def __init__(self, config, causal: bool = False):
        super().__init__(config)
        self.causal = causal
        self.layers = nn.ModuleList([Lfm2DecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.rotary_emb = Lfm2RotaryEmbedding(config=config)
        self.norm = Lfm2RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.post_init()

    def forward(self, hidden):
        b, n, _ = hidden.shape
        position_ids = torch.arange(n, device=hidden.device)[None].expand(b, -1)
        position_embeddings = self.rotary_emb(hidden, position_ids=position_ids)
        # Additive mask for the attention layers (works for eager and SDPA): all zeros = bidirectional.
        mask = torch.zeros(b, 1, n, n, dtype=hidden.dtype, device=hidden.device)
        if self.causal:
            future = torch.ones(n, n, dtype=torch.bool, device=hidden.device).triu(1)
            mask = mask.masked_fill(future, torch.finfo(hidden.dtype).min)
        for layer in self.layers:
            hidden = layer(
                hidden,
                attention_mask=mask if layer.is_attention_layer else None,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
            )
        return self.norm(hidden)


class FERLfm2Fusion(nn.Module):
    """SPEC §3: gated projections + type embeddings, interleave, LFM2 layers, separate & combine, projection.

    Input audio (B, S, Da), visual (B, S, Dv), has_audio / has_video (B, S) bool, weights (B, 2) for combining
    Output fused segments (B, S, fused_dim)
    """

    def __init__(self, config: FERConfig):
        super().__init__()
        width = config.fusion_hidden_size
        self.audio_proj = FERGatedProjection(config.audio_config.hidden_size, width)
        self.visual_proj = FERGatedProjection(config.vision_config.hidden_size, width)
        # Stand in for a segment whose modality is missing (no track, no face, or past the clip's end).
        self.audio_missing = nn.Parameter(torch.zeros(width))
        self.visual_missing = nn.Parameter(torch.zeros(width))
        self.backbone = FERLfm2FusionBackbone(config.lfm2_config, causal=config.fusion_causal)
        self.output_proj = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, config.fused_dim), nn.GELU(), nn.Dropout(config.fusion_dropout)
        )

    def forward(self, audio, visual, has_audio, has_video, combine_weights):
        a = torch.where(has_audio[..., None], self.audio_proj(audio), self.audio_missing + self.audio_proj.type_embed)
        v = torch.where(
            has_video[..., None], self.visual_proj(visual), self.visual_missing + self.visual_proj.type_embed
        )
        b, s, d = a.shape
        tokens = torch.stack([a, v], dim=2).reshape(b, 2 * s, d)  # [a1, v1, a2, v2, ...]  (B, 2S, D)
        tokens = self.backbone(tokens).view(b, s, 2, d)  # (B, S, 2, D)
        # (audio + visual) / 2 when both are present; only the present one otherwise.
        fused = torch.einsum("bsmd,bm->bsd", tokens, combine_weights.to(tokens.dtype))
        return self.output_proj(fused)


class FERPreTrainedModel(PreTrainedModel):
    config_class = FERConfig
    config: FERConfig
    base_model_prefix = "fer"
    main_input_name = "pixel_values_videos"
    input_modalities = ("video", "audio")
    supports_gradient_checkpointing = True
    _no_split_modules = ["SiglipEncoderLayer", "ParakeetEncoderBlock", "Lfm2DecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        for name, param in module.named_parameters(recurse=False):
            if name in ("query", "segment_embed", "type_embed", "audio_missing", "visual_missing"):
                nn.init.normal_(param, std=std)


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
    def backbone_modules(self) -> dict[str, nn.Module]:
        """The pretrained parts, by name: `vision`, `audio`, `fusion` (the LFM2 layers)."""
        return {"vision": self.vision_encoder, "audio": self.audio_encoder, "fusion": self.fusion.backbone}

    def freeze_backbones(self, vision: bool | None = None, audio: bool | None = None, fusion: bool | None = None):
        """Freeze (`True`) or unfreeze (`False`) each pretrained part; `None` leaves it as it is."""
        for name, flag in (("vision", vision), ("audio", audio), ("fusion", fusion)):
            if flag is not None:
                self.backbone_modules()[name].requires_grad_(not flag)

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

    def save_pretrained(self, *args, **kwargs):
        if getattr(self, "is_int8_quantized", False):
            raise RuntimeError("an int8-quantised model is for inference only; save the fp32 model instead")
        return super().save_pretrained(*args, **kwargs)

    # ------------------------------------------------------------------------------------------
    def encode_audio(self, input_features, audio_attention_mask, rows):
        """SPEC §1 for the samples in `rows`.

        Returns segments (b, S, Da), weights (b, S, L), has_audio (b, S), frame mask (b, L).
        """
        feats = input_features[rows]
        mask = None if audio_attention_mask is None else audio_attention_mask[rows].to(torch.long)
        out = self.audio_encoder(input_features=feats, attention_mask=mask)
        hidden = out.last_hidden_state  # (b, L, Da)
        if mask is None:
            frame_mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        else:
            frame_mask = out.attention_mask.to(torch.bool)
        segments, weights, has_audio = self.audio_segment_pool(hidden, frame_mask)
        return segments, weights, has_audio, frame_mask

    def embed_frames(self, pixel_values, roi_weights=None) -> FERFrameEmbeddings:
        """SPEC §2.1–2.3 on a flat set of frames (SigLIP, ROI compression, frame token pool), in chunks of
        `config.vision_chunk_size`. The frame-feature cache of the app, live mode and batch annotation calls this
        once per sampled frame and feeds the vectors to `forward(frame_embeddings=...)`.

        Input pixel_values (F, 3, H, W) SigLIP-normalised face crops, roi_weights (F, num_patches) or None
        Output [`FERFrameEmbeddings`]: frame_embeddings (F, Dv), roi_indices (F, K), roi_scores (F, K),
        roi_patch_scores (F, N)
        """
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
        outputs = []
        for start in range(0, pixels.shape[0], cfg.vision_chunk_size):
            chunk = slice(start, start + cfg.vision_chunk_size)
            roi = None if roi_weights is None else roi_weights[chunk]
            keep = cfg.vision_keep_patches
            if roi is None or keep is None or keep >= roi.shape[-1]:
                tokens = self.vision_encoder(pixel_values=pixels[chunk]).last_hidden_state  # (f, N, Dv)
                compressed, indices, kept, scores = self.roi_compressor(tokens, roi)  # (f, K+G, Dv)
            else:
                tokens, patch_ids = self.encode_roi_patches(pixels[chunk], roi, keep)  # (f, P, Dv), (f, P)
                compressed, local, kept, local_scores = self.roi_compressor(tokens, roi.gather(1, patch_ids))
                indices = patch_ids.gather(1, local)  # back to indices on the full patch grid
                scores = local_scores.new_zeros(roi.shape).scatter(1, patch_ids, local_scores)
            outputs.append((self.frame_pool(compressed), indices, kept, scores))
        if not outputs:  # no frame at all: empty tensors of the right widths
            k, n, dv = cfg.roi_top_k, cfg.num_patches, cfg.vision_config.hidden_size
            empty = pixels.new_zeros
            outputs.append((empty(0, dv), torch.zeros(0, k, dtype=torch.long, device=pixels.device), empty(0, k),
                            empty(0, n)))
        vectors, indices, kept, scores = (torch.cat(parts) for parts in zip(*outputs))
        return FERFrameEmbeddings(frame_embeddings=vectors, roi_indices=indices, roi_scores=kept,
                                  roi_patch_scores=scores)

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

    def encode_video(self, pixel_values_videos, frame_mask, roi_weights, frame_embeddings=None):
        """SPEC §2 for every sample (frames with `frame_mask` False are never encoded).

        Input pixel_values_videos (B, T, 3, H, W), or frame_embeddings (B, T, Dv) from `embed_frames` (then SigLIP,
        ROI compression and frame pooling are skipped); frame_mask (B, T); roi_weights (B, T, N) or None.
        Returns segments (B, S, Dv), has_video (B, S), roi indices (B, T, K), roi scores (B, T, K),
        patch scores (B, T, N). From `frame_embeddings` the ROI outputs are placeholders: indices -1, scores 0.
        """
        b, t = frame_mask.shape
        cfg = self.config
        k, n = cfg.roi_top_k, cfg.num_patches
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
            embedded = self.embed_frames(pixels, roi)
            vectors = embedded.frame_embeddings
            dim = vectors.shape[-1]
            frames = vectors.new_zeros(b * t, dim).index_copy(0, flat, vectors).view(b, t, dim)
            roi_indices = embedded.roi_indices.new_full((b * t, k), -1).index_copy(0, flat, embedded.roi_indices)
            roi_scores = vectors.new_zeros(b * t, k).index_copy(0, flat, embedded.roi_scores)
            patch_scores = vectors.new_zeros(b * t, n).index_copy(0, flat, embedded.roi_patch_scores)
            roi_indices, roi_scores, patch_scores = (
                roi_indices.view(b, t, k), roi_scores.view(b, t, k), patch_scores.view(b, t, n)
            )
        frames = self.temporal_encoder(frames, frame_mask)  # (B, T, Dv)
        segments, has_video = self.visual_segment_pool(frames, frame_mask)
        return segments, has_video, roi_indices, roi_scores, patch_scores

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
        if self.training and self.config.modality_dropout > 0:
            both = audio & video
            drop = both & (torch.rand(batch, device=device) < self.config.modality_dropout)
            drop_audio = drop & (torch.rand(batch, device=device) < 0.5)
            audio, video = audio & ~drop_audio, video & ~(drop & ~drop_audio)
        return audio, video

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
        return_dict: bool | None = None,
    ) -> FEREmotionClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
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
        batch, device = reference.shape[0], reference.device
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
        if input_features is not None and video_input is not None:
            if input_features.shape[0] != video_input.shape[0]:
                raise FERInputError(
                    f"audio batch ({input_features.shape[0]}) and video batch ({video_input.shape[0]}) differ"
                )
        audio_used, video_used = self._modality_masks(
            batch, device, input_features, video_input, audio_mask, video_mask
        )
        s = cfg.num_segments

        # Audio branch (SPEC §1) on the samples that have audio.
        audio_segments = torch.zeros(batch, s, cfg.audio_config.hidden_size, device=device, dtype=self.dtype)
        has_audio = torch.zeros(batch, s, dtype=torch.bool, device=device)
        audio_attention = audio_frames = None
        if audio_used.any():
            rows = audio_used.nonzero().squeeze(-1)
            segs, weights, has, frames = self.encode_audio(input_features.to(self.dtype), audio_attention_mask, rows)
            audio_segments = audio_segments.index_copy(0, rows, segs)
            has_audio = has_audio.index_copy(0, rows, has)
            audio_attention = weights.new_zeros(batch, s, weights.shape[-1]).index_copy(0, rows, weights)
            audio_frames = frames.new_zeros(batch, frames.shape[-1]).index_copy(0, rows, frames)

        # Visual branch (SPEC §2) on the frames of the samples that have video.
        visual_segments = torch.zeros(batch, s, cfg.vision_config.hidden_size, device=device, dtype=self.dtype)
        has_video = torch.zeros(batch, s, dtype=torch.bool, device=device)
        roi_indices = roi_scores = patch_scores = None
        if video_used.any():
            t = video_input.shape[1]
            frame_mask = torch.ones(batch, t, dtype=torch.bool, device=device)
            if video_frame_mask is not None:
                frame_mask = video_frame_mask.to(device=device, dtype=torch.bool)
            frame_mask = frame_mask & video_used[:, None]
            if roi_weights is not None and roi_weights.shape[-1] != cfg.num_patches:
                raise FERInputError(
                    f"`roi_weights` must have {cfg.num_patches} weights per frame, got {roi_weights.shape[-1]}"
                )
            visual_segments, has_video, roi_indices, roi_scores, patch_scores = self.encode_video(
                pixel_values_videos, frame_mask, roi_weights, frame_embeddings
            )

        audio_used = audio_used & has_audio.any(-1)
        video_used = video_used & has_video.any(-1)
        if not (audio_used | video_used).all():
            bad = (~(audio_used | video_used)).nonzero().squeeze(-1).tolist()
            raise NoUsableModalityError(
                f"sample(s) {bad} have neither usable audio nor video frames; nothing to classify"
            )
        has_audio, has_video = has_audio & audio_used[:, None], has_video & video_used[:, None]

        # Fusion (SPEC §3) and classifier (SPEC §4).
        present = torch.stack([audio_used, video_used], dim=-1).to(self.dtype)  # (B, 2)
        fused = self.fusion(
            audio_segments, visual_segments, has_audio, has_video, present / present.sum(-1, keepdim=True)
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
            segment_mask=segment_mask,
            audio_segment_attention=audio_attention,
            audio_frame_mask=audio_frames,
            roi_indices=roi_indices,
            roi_scores=roi_scores,
            roi_patch_scores=patch_scores,
            modalities_used=torch.stack([audio_used, video_used], dim=-1),
        )
        return output if return_dict else output.to_tuple()


__all__ = ["FERPreTrainedModel", "FERForEmotionClassification", "FEREmotionClassifierOutput", "FERFrameEmbeddings"]
