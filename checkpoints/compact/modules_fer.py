"""The small modules the FER model adds around its pretrained backbones (SPEC §1.3, §2.2–2.5, §3, §4).

Each module is a few dozen lines with its input and output shapes in its docstring.
Notation: B batch, T video frames, N patch tokens per frame, K kept ROI tokens,
L audio encoder frames, S segments, D a module's width, C classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .geometry_fer import segment_step_ranges


def segment_membership(length: int, num_segments: int, device=None) -> torch.Tensor:
    """Which of `length` time steps belong to each of `num_segments` contiguous segments.

    Segment s covers steps [floor(s*length/S), ceil((s+1)*length/S)) (`geometry_fer.segment_step_ranges`, the
    rule `FERConfig.segment_bounds_seconds` turns into seconds), so every segment holds at least one step even when
    length < S (a step on a boundary belongs to both neighbours).

    Returns: bool (S, length)
    """
    bounds = torch.tensor(segment_step_ranges(length, num_segments), device=device)  # (S, 2)
    steps = torch.arange(length, device=device)
    return (steps[None, :] >= bounds[:, :1]) & (steps[None, :] < bounds[:, 1:])


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over `dim` where `mask` is False gets zero weight; a row with no True gives all zeros (not NaN)."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=dim)
    return weights * mask.any(dim=dim, keepdim=True).to(weights.dtype)


class FERQueryAttentionPool(nn.Module):
    """Multi-head attention pooling with one learnable query, over a masked set of vectors.

    Input  x (..., M, D) and mask (..., Q, M) for Q pooled outputs that share the query
    Output pooled (..., Q, D) and weights (..., Q, M) averaged over heads (rows of an empty mask are 0)
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.query = nn.Parameter(torch.zeros(num_heads, self.head_dim))
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        *lead, m, d = x.shape
        k = self.key(x).view(*lead, m, self.num_heads, self.head_dim)  # (..., M, H, hd)
        v = self.value(x).view(*lead, m, self.num_heads, self.head_dim)
        scores = torch.einsum("...mhd,hd->...hm", k, self.query) / math.sqrt(self.head_dim)  # (..., H, M)
        weights = masked_softmax(scores.unsqueeze(-3), mask.unsqueeze(-2))  # (..., Q, H, M)
        pooled = torch.einsum("...qhm,...mhd->...qhd", weights, v).reshape(*lead, mask.shape[-2], d)
        return self.out(pooled), weights.mean(-2)


class FERAudioSegmentAttentionPool(nn.Module):
    """SPEC §1.3: pool FastConformer frames into S segments with a shared learnable query.

    Input  hidden (B, L, D), frame_mask (B, L) bool (False = padding, never attended)
    Output segments (B, S, D) with a segment-order embedding added, weights (B, S, L),
           segment_has_audio (B, S) bool
    """

    def __init__(self, dim: int, num_heads: int, num_segments: int):
        super().__init__()
        self.num_segments = num_segments
        self.pool = FERQueryAttentionPool(dim, num_heads)
        self.segment_embed = nn.Parameter(torch.zeros(num_segments, dim))

    def forward(self, hidden, frame_mask):
        member = segment_membership(hidden.shape[1], self.num_segments, hidden.device)  # (S, L)
        mask = member[None] & frame_mask[:, None, :]  # (B, S, L)
        segments, weights = self.pool(hidden, mask)
        return segments + self.segment_embed, weights, mask.any(-1)


class FERRoiTokenCompressor(nn.Module):
    """SPEC §2.2: keep the K most important patch tokens of each frame plus global statistics.

    score = sigmoid(Linear(token)), times the ROI weight where a map is given; the top-K tokens (kept in
    spatial order) are scaled by their score so the scorer gets gradient; global tokens (mean/max/min/std over
    all N tokens) are appended.

    Input  tokens (F, N, D), roi_weights (F, N) or None
    Output compressed (F, K + G, D), indices (F, K) long, kept scores (F, K), all scores (F, N)
    """

    def __init__(self, dim: int, top_k: int, global_stats: list[str]):
        super().__init__()
        self.top_k = top_k
        self.global_stats = list(global_stats)
        self.scorer = nn.Linear(dim, 1)

    def forward(self, tokens, roi_weights=None):
        scores = torch.sigmoid(self.scorer(tokens).squeeze(-1))  # (F, N)
        if roi_weights is not None:
            scores = scores * roi_weights.to(scores.dtype)
        indices = scores.topk(self.top_k, dim=-1).indices.sort(dim=-1).values  # (F, K), spatial order
        kept_scores = scores.gather(1, indices)
        kept = tokens.gather(1, indices[..., None].expand(-1, -1, tokens.shape[-1])) * kept_scores[..., None]
        stats = {
            "mean": lambda: tokens.mean(1),
            "max": lambda: tokens.amax(1),
            "min": lambda: tokens.amin(1),
            "std": lambda: tokens.std(1, unbiased=False),
        }
        globals_ = [stats[name]() for name in self.global_stats]  # G x (F, D)
        compressed = torch.cat([kept, torch.stack(globals_, dim=1)], dim=1) if globals_ else kept
        return compressed, indices, kept_scores, scores


class FERFrameTokenPool(nn.Module):
    """SPEC §2.3: one vector per frame by attention pooling over its compressed tokens.

    Input (F, K + G, D)  Output (F, D)
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.pool = FERQueryAttentionPool(dim, num_heads)

    def forward(self, tokens):
        mask = torch.ones(tokens.shape[0], 1, tokens.shape[1], dtype=torch.bool, device=tokens.device)
        pooled, _ = self.pool(tokens, mask)
        return pooled[:, 0]


class FERGatedShortConvBlock(GradientCheckpointingLayer):
    """SPEC §2.4 GSCB: pre-norm, value/gate projection, causal depthwise conv on the value, SiLU gate, residual.

    Input x (B, T, D), frame_mask (B, T) bool  Output (B, T, D)
    """

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.in_proj = nn.Linear(dim, 2 * dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size, groups=dim, padding=kernel_size - 1)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x, frame_mask):
        value, gate = self.in_proj(self.norm(x)).chunk(2, dim=-1)  # 2 x (B, T, D)
        value = value * frame_mask[..., None].to(value.dtype)  # padding frames feed nothing forward
        value = self.conv(value.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)  # causal: drop the look-ahead
        return x + self.out_proj(value * F.silu(gate))


class FERTemporalAttentionLayer(GradientCheckpointingLayer):
    """SPEC §2.4 attention layer: pre-norm multi-head self-attention over frames + pre-norm GELU feed-forward.

    Input x (B, T, D), frame_mask (B, T) bool  Output (B, T, D)
    """

    def __init__(self, dim: int, num_heads: int, ffn_ratio: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_ratio * dim), nn.GELU(), nn.Linear(ffn_ratio * dim, dim))

    def forward(self, x, frame_mask):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        # A sample whose frames are all padding attends everywhere (its output is discarded) instead of NaN.
        keys = frame_mask | ~frame_mask.any(-1, keepdim=True)  # (B, T)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=keys[:, None, None, :])  # (B, H, T, hd)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.ffn(self.norm2(x))


class FERVisualTemporalEncoder(nn.Module):
    """SPEC §2.4: GSCB layers then attention layers over the frame sequence.

    Input (B, T, D), frame_mask (B, T)  Output (B, T, D)
    """

    def __init__(self, dim, num_gscb, num_attention, kernel_size, num_heads, ffn_ratio):
        super().__init__()
        self.layers = nn.ModuleList(
            [FERGatedShortConvBlock(dim, kernel_size) for _ in range(num_gscb)]
            + [FERTemporalAttentionLayer(dim, num_heads, ffn_ratio) for _ in range(num_attention)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, frame_mask):
        for layer in self.layers:
            x = layer(x, frame_mask)
        return self.norm(x)


class FERVisualSegmentPool(nn.Module):
    """SPEC §2.5: average the valid frames of each of S contiguous segments.

    Input (B, T, D), frame_mask (B, T)  Output segments (B, S, D), segment_has_video (B, S) bool
    """

    def __init__(self, num_segments: int):
        super().__init__()
        self.num_segments = num_segments

    def forward(self, x, frame_mask):
        member = segment_membership(x.shape[1], self.num_segments, x.device)  # (S, T)
        weights = (member[None] & frame_mask[:, None, :]).to(x.dtype)  # (B, S, T)
        counts = weights.sum(-1, keepdim=True)
        segments = torch.bmm(weights / counts.clamp(min=1.0), x)  # (B, S, D)
        return segments, counts.squeeze(-1) > 0


class FERGatedProjection(nn.Module):
    """SPEC §3.1: GLU projection (SiLU gate) into the fusion width, plus a learned modality type embedding.

    Input (B, S, D_in)  Output (B, S, D_fusion)
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.value = nn.Linear(in_dim, out_dim)
        self.gate = nn.Linear(in_dim, out_dim)
        self.type_embed = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x):
        return self.value(x) * F.silu(self.gate(x)) + self.type_embed


class FERTemporalAttentionPool(nn.Module):
    """SPEC §4.1: softmax(q·Kᵀ/√D) over the valid segments with one learnable query; K = V = the segments.

    Input (B, S, D), segment_mask (B, S)  Output pooled (B, D), weights (B, S)
    """

    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))

    def forward(self, x, segment_mask):
        scores = x @ self.query / math.sqrt(x.shape[-1])  # (B, S)
        weights = masked_softmax(scores, segment_mask)
        return torch.einsum("bs,bsd->bd", weights, x), weights


class FERMLPHead(nn.Module):
    """SPEC §4.2: [Linear, LayerNorm, GELU, Dropout] per hidden width, then Linear to the classes.

    Input (..., D)  Output (..., C)
    """

    def __init__(self, in_dim: int, hidden_sizes: list[int], num_labels: int, dropout: float):
        super().__init__()
        layers, dim = [], in_dim
        for hidden in hidden_sizes:
            layers += [nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout)]
            dim = hidden
        layers.append(nn.Linear(dim, num_labels))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x):
        return self.mlp(x)


class FERLayerRecorder:
    """Records, during one forward pass, what `output_hidden_states` / `output_attentions` return.

    `hidden_states`: the input of the first of `layers`, then each layer's output (a tensor each).
    `attentions`: the weights each of `attention_modules` returns as the second item of its output (only eager
    attention computes them: under SDPA the list stays empty).
    Use as a context manager around the forward: the hooks are removed on exit.
    """

    def __init__(self, layers, attention_modules=(), hidden_states: bool = True, attentions: bool = True):
        self.layers = list(layers) if hidden_states else []
        self.attention_modules = list(attention_modules) if attentions else []
        self.hidden_states: list[torch.Tensor] = []
        self.attentions: list[torch.Tensor] = []
        self._handles = []

    def __enter__(self):
        if self.layers:
            self._handles.append(self.layers[0].register_forward_pre_hook(self._record_input, with_kwargs=True))
        self._handles += [layer.register_forward_hook(self._record_output) for layer in self.layers]
        self._handles += [m.register_forward_hook(self._record_attention) for m in self.attention_modules]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _record_input(self, module, args, kwargs):
        self.hidden_states.append(args[0] if args else kwargs["hidden_states"])

    def _record_output(self, module, args, output):
        self.hidden_states.append(output[0] if isinstance(output, tuple) else output)

    def _record_attention(self, module, args, output):
        if isinstance(output, tuple) and len(output) > 1 and output[1] is not None:
            self.attentions.append(output[1])


__all__ = [
    "segment_membership",
    "FERLayerRecorder",
    "masked_softmax",
    "FERQueryAttentionPool",
    "FERAudioSegmentAttentionPool",
    "FERRoiTokenCompressor",
    "FERFrameTokenPool",
    "FERGatedShortConvBlock",
    "FERTemporalAttentionLayer",
    "FERVisualTemporalEncoder",
    "FERVisualSegmentPool",
    "FERGatedProjection",
    "FERTemporalAttentionPool",
    "FERMLPHead",
]
