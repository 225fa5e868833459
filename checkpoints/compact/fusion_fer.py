"""SPEC §3: the LFM2 fusion of the audio and visual segments.

`FERLfm2FusionBackbone` is a transformers sub-model made of LFM2's own decoder layers (no token embedding, no LM
head); `FERLfm2Fusion` projects both streams into its width, interleaves them, runs it and combines the two tokens of
each segment. (A file of its own: transformers decides whether a model's attention can be switched at run time from
the source of the module that defines it.)
"""

from __future__ import annotations

import contextvars
import logging

import torch
from torch import nn
from transformers.models.lfm2.modeling_lfm2 import (
    Lfm2DecoderLayer,
    Lfm2PreTrainedModel,
    Lfm2RMSNorm,
    Lfm2RotaryEmbedding,
)

from .modules_fer import FERGatedProjection, FERLayerRecorder

# LFM2's short convolutions ask for the `causal_conv1d` package, a CUDA kernel, on every CPU run too. The hint is
# dropped while the fusion runs on CPU (nothing to install there) and kept on a GPU. transformers logs it once per
# process: a process that runs on CPU first does not see it later on a GPU either.
_FUSION_ON_CPU = contextvars.ContextVar("fer_fusion_on_cpu", default=False)


class _NoCudaKernelHintOnCpu(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_FUSION_ON_CPU.get() and "causal_conv1d" in record.getMessage())


logging.getLogger("transformers.integrations.hub_kernels").addFilter(_NoCudaKernelHintOnCpu())


class FERLfm2FusionBackbone(Lfm2PreTrainedModel):
    """SPEC §3.3: LFM2 decoder layers fed embeddings directly (no token embedding, no LM head).

    A transformers sub-model (like `Lfm2Model` without `embed_tokens`), so attention implementation, weight
    init and gradient checkpointing follow LFM2's own. Its `norm` is LFM2's final norm (`embedding_norm`).

    Input (B, 2S, D) interleaved tokens
    Output (B, 2S, D); with `record`, also the hidden states (input, each layer, the last after the final norm, as
    `Lfm2Model` returns them) and the attention layers' weights (B, H, 2S, 2S) (eager attention only)
    """

    def __init__(self, config, causal: bool = False):
        super().__init__(config)
        self.causal = causal
        self.layers = nn.ModuleList([Lfm2DecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.rotary_emb = Lfm2RotaryEmbedding(config=config)
        self.norm = Lfm2RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.post_init()

    def forward(self, hidden, output_hidden_states: bool = False, output_attentions: bool = False):
        b, n, _ = hidden.shape
        position_ids = torch.arange(n, device=hidden.device)[None].expand(b, -1)
        position_embeddings = self.rotary_emb(hidden, position_ids=position_ids)
        # Additive mask for the attention layers (works for eager and SDPA): all zeros = bidirectional.
        mask = torch.zeros(b, 1, n, n, dtype=hidden.dtype, device=hidden.device)
        if self.causal:
            future = torch.ones(n, n, dtype=torch.bool, device=hidden.device).triu(1)
            mask = mask.masked_fill(future, torch.finfo(hidden.dtype).min)
        attention = [layer.self_attn for layer in self.layers if layer.is_attention_layer]
        on_cpu = _FUSION_ON_CPU.set(hidden.device.type == "cpu")
        try:
            with FERLayerRecorder(self.layers, attention, output_hidden_states, output_attentions) as record:
                for layer in self.layers:
                    hidden = layer(
                        hidden,
                        attention_mask=mask if layer.is_attention_layer else None,
                        position_embeddings=position_embeddings,
                        position_ids=position_ids,
                    )
        finally:
            _FUSION_ON_CPU.reset(on_cpu)
        hidden = self.norm(hidden)
        if output_hidden_states:
            record.hidden_states[-1] = hidden
        return hidden, record


class FERLfm2Fusion(nn.Module):
    """SPEC §3: gated projections + type embeddings, interleave, LFM2 layers, separate & combine, projection.

    Input audio (B, S, Da), visual (B, S, Dv), has_audio / has_video (B, S) bool, weights (B, 2) for combining
    Output fused segments (B, S, fused_dim) and the backbone's `FERLayerRecorder`
    """

    def __init__(self, config):
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

    def forward(self, audio, visual, has_audio, has_video, combine_weights, output_hidden_states=False,
                output_attentions=False):
        a = torch.where(has_audio[..., None], self.audio_proj(audio), self.audio_missing + self.audio_proj.type_embed)
        v = torch.where(
            has_video[..., None], self.visual_proj(visual), self.visual_missing + self.visual_proj.type_embed
        )
        b, s, d = a.shape
        tokens = torch.stack([a, v], dim=2).reshape(b, 2 * s, d)  # [a1, v1, a2, v2, ...]  (B, 2S, D)
        tokens, record = self.backbone(tokens, output_hidden_states, output_attentions)
        tokens = tokens.view(b, s, 2, d)  # (B, S, 2, D)
        # (audio + visual) / 2 when both are present; only the present one otherwise.
        fused = torch.einsum("bsmd,bm->bsd", tokens, combine_weights.to(tokens.dtype))
        return self.output_proj(fused), record


__all__ = ["FERLfm2FusionBackbone", "FERLfm2Fusion"]
