"""The checks of transformers' common model tests (`ModelTesterMixin`) that apply to this model, on the tiny preset.

transformers' own mixin lives in its repository's `tests/`, not in the installed package, so these are written for
this model: same intent, one test each. Not applicable here (and why): token embeddings (no `input_ids`), head
pruning / masking (removed from transformers 5), generation, torchscript / fx tracing (the model branches on which
modalities are present), multi-GPU / tensor parallelism (CPU-only CI).
"""

import copy

import pytest
import torch
from test_modeling import make_inputs
from transformers import PreTrainedModel, set_seed

from fer_hf import FERConfig, FERForEmotionClassification

OUTPUT_FLAGS = [dict(), dict(output_hidden_states=True), dict(output_attentions=True),
                dict(output_hidden_states=True, output_attentions=True)]


@pytest.fixture(scope="module")
def config():
    return FERConfig.from_preset("tiny")


@pytest.fixture(scope="module")
def model(config):
    torch.manual_seed(0)
    model = FERForEmotionClassification(config).eval()
    model.set_attn_implementation("eager")
    return model


def _tensors(value):
    """Every tensor of a (nested) output, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """`torch.allclose` after zeroing NaNs, as the common tests compare (it raises on bool tensors)."""
    a, b = a.clone(), b.clone()
    a[a != a] = 0
    b[b != b] = 0
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_can_init_all_missing_weights(config, monkeypatch):
    """A model loaded with every weight missing (meta device, then `_init_weights`) equals one built from scratch,
    when each module's init starts from the same seed: every parameter is initialised by `_init_weights` and by the
    same rule as in `__init__` (SigLIP's projections by SigLIP's init, the subsampling convs by He init)."""
    original = PreTrainedModel._initialize_weights

    def seeded(self, module, *args):
        set_seed(0)
        original(self, module, *args)

    monkeypatch.setattr(PreTrainedModel, "_initialize_weights", seeded)
    built = FERForEmotionClassification(copy.deepcopy(config))
    loaded = FERForEmotionClassification.from_pretrained(None, config=copy.deepcopy(config), state_dict={})
    buffers = {name for name, _ in built.named_buffers()}
    a, b = built.state_dict(), loaded.state_dict()
    assert list(a) == list(b)
    different = sorted(k for k in a if k not in buffers and not torch.equal(a[k], b[k]))
    assert different == []


def test_meta_device_model_initialises_every_tensor(config):
    """Built on the meta device and materialised, `initialize_weights` leaves no tensor unset (NaN-filled first)."""
    with torch.device("meta"):
        model = FERForEmotionClassification(config)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
    for module in model.modules():
        module._is_hf_initialized = False
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            tensor._is_hf_initialized = False
    model.initialize_weights()
    unset = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
             if t.is_floating_point() and not torch.isfinite(t).all()]
    assert unset == []


@pytest.mark.parametrize("flags", OUTPUT_FLAGS, ids=["plain", "hidden", "attentions", "both"])
def test_model_outputs_equivalence(model, config, flags):
    """`return_dict=False` gives the same tensors, in the same order, as `return_dict=True` then `to_tuple()`; every
    output tensor compares with `allclose` (no bool tensor among them)."""
    inputs = make_inputs(config, batch=2)
    with torch.no_grad():
        as_tuple = model(**inputs, return_dict=False, **flags)
        as_dict = model(**inputs, return_dict=True, **flags)
    assert isinstance(as_tuple, tuple)
    left, right = _tensors(as_tuple), _tensors(as_dict.to_tuple())
    assert len(left) == len(right) > 0
    for i, (a, b) in enumerate(zip(left, right)):
        assert a.dtype != torch.bool, f"output tensor {i} is bool"
        assert _close(a, b), f"output tensor {i} differs"
    with_labels = dict(inputs, labels=torch.tensor([0, 1]))
    with torch.no_grad():
        first = model(**with_labels, return_dict=False, **flags)
        second = model(**with_labels, return_dict=True, **flags).to_tuple()
    assert all(_close(a, b) for a, b in zip(_tensors(first), _tensors(second)))


def test_determinism(model, config):
    inputs = make_inputs(config, batch=2)
    with torch.no_grad():
        first, second = model(**inputs).logits, model(**inputs).logits
    assert torch.equal(first, second)


def test_batching_equivalence(model, config):
    """Each row of a batch gives the same outputs as that row alone."""
    inputs = make_inputs(config, batch=3)
    with torch.no_grad():
        batched = model(**inputs)
        for row in range(3):
            single = model(**{k: v[row:row + 1] for k, v in inputs.items()})
            for name in ("logits", "segment_logits", "segment_attention", "audio_segment_attention",
                         "roi_patch_scores", "modalities_used"):
                assert _close(getattr(batched, name)[row:row + 1], getattr(single, name)), name


def test_save_load_round_trip_and_missing_keys(model, config, tmp_path):
    model.save_pretrained(tmp_path)
    reloaded, info = FERForEmotionClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert all(not v for v in info.values()), info
    inputs = make_inputs(config, batch=2)
    with torch.no_grad():
        assert _close(model(**inputs).logits, reloaded.eval()(**inputs).logits)


def test_training_and_gradient_checkpointing_flags(config):
    model = FERForEmotionClassification(config)
    assert model.supports_gradient_checkpointing
    model.activation_checkpointing_enable()
    model.train()
    out = model(**make_inputs(config, batch=2), labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert out.loss.requires_grad and torch.isfinite(out.loss)
    model.activation_checkpointing_disable()


def test_model_main_input_name_and_config_class(config):
    model = FERForEmotionClassification(config)
    assert model.config_class is FERConfig
    assert model.main_input_name == "input_features"
    assert FERForEmotionClassification.base_model_prefix == "fer"


def test_retain_grad_of_hidden_states_and_attentions(config):
    torch.manual_seed(0)
    model = FERForEmotionClassification(config)
    model.set_attn_implementation("eager")
    out = model(**make_inputs(config, batch=1), output_hidden_states=True, output_attentions=True)
    hidden, attention = out.fusion_hidden_states[0], out.fusion_attentions[0]
    hidden.retain_grad()
    attention.retain_grad()
    out.logits.sum().backward()
    assert hidden.grad is not None and attention.grad is not None
