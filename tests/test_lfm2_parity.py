"""The fusion backbone is LFM2 itself: in the causal setting it equals `Lfm2Model(inputs_embeds=...)` layer for layer.

If a transformers release changes how LFM2's layers are called (masks, rotary positions, the conv cache path), this
fails loudly instead of the fusion silently computing something else.
"""

import pytest
import torch
from transformers import Lfm2Config, Lfm2Model

from fer_hf.fusion_fer import FERLfm2FusionBackbone


def tiny_lfm2_config(attn_implementation):
    config = Lfm2Config(
        vocab_size=32,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_types=["conv", "full_attention", "conv", "full_attention"],
        block_multiple_of=32,
        use_cache=False,
    )
    config._attn_implementation = attn_implementation
    return config


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_causal_fusion_backbone_equals_lfm2_model_layer_for_layer(attn_implementation):
    config = tiny_lfm2_config(attn_implementation)
    torch.manual_seed(0)
    reference = Lfm2Model(config).eval()
    backbone = FERLfm2FusionBackbone(config, causal=True).eval()
    weights = {k: v for k, v in reference.state_dict().items() if not k.startswith("embed_tokens.")}
    weights = {k.replace("embedding_norm.", "norm."): v for k, v in weights.items()}
    missing, unexpected = backbone.load_state_dict(weights, strict=True)
    assert not missing and not unexpected

    embeds = torch.randn(3, 16, config.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(inputs_embeds=embeds, output_hidden_states=True)
        ours, record = backbone(embeds, output_hidden_states=True)
    assert torch.allclose(ours, expected.last_hidden_state, atol=1e-5)
    assert len(record.hidden_states) == len(expected.hidden_states) == config.num_hidden_layers + 1
    for layer, (a, b) in enumerate(zip(record.hidden_states, expected.hidden_states)):
        assert torch.allclose(a, b, atol=1e-5), f"hidden state {layer} differs from Lfm2Model's"


def test_bidirectional_fusion_differs_from_causal_only_in_the_attention_layers():
    """The default (`fusion_causal=False`) lets attention see later tokens; the short convolutions stay causal."""
    config = tiny_lfm2_config("sdpa")
    torch.manual_seed(0)
    causal = FERLfm2FusionBackbone(config, causal=True).eval()
    bidirectional = FERLfm2FusionBackbone(config, causal=False).eval()
    bidirectional.load_state_dict(causal.state_dict())
    embeds = torch.randn(2, 16, config.hidden_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, a = causal(embeds, output_hidden_states=True)
        _, b = bidirectional(embeds, output_hidden_states=True)
    assert torch.allclose(a.hidden_states[1], b.hidden_states[1], atol=1e-6)  # layer 1 is a conv layer
    assert not torch.allclose(a.hidden_states[2], b.hidden_states[2], atol=1e-4)  # layer 2 attends
    # the last token sees every token either way; the first sees only itself under the causal mask
    assert torch.allclose(a.hidden_states[2][:, -1], b.hidden_states[2][:, -1], atol=1e-5)
    assert not torch.allclose(a.hidden_states[2][:, 0], b.hidden_states[2][:, 0], atol=1e-4)
