"""Stored-value regression: a seeded tiny model on a committed example clip, compared with tests/data/*.json.

What is pinned: the single-window logits and modalities (processor -> model) and the timeline's window
probabilities and modalities (the analysis engine with its frame-feature cache) on `examples/astronaut_speaking.mp4`.
A change in decoding, face crops, features, model code or initialisation shows up here.

Tolerance: 1e-4 absolute on logits and probabilities. Float32 results of the same code differ across CPUs, BLAS
builds and thread counts by ~1e-6; a real change in behaviour moves them by far more than 1e-4.

After an intended change, regenerate the stored values and commit them with the change:

    python tests/test_regression.py --update
"""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from conftest import EXAMPLES, TINY_SEED, build_tiny_model  # noqa: E402

STORED = os.path.join(os.path.dirname(__file__), "data", "regression_tiny_astronaut_speaking.json")
CLIP = os.path.join(EXAMPLES, "astronaut_speaking.mp4")
ATOL = 1e-4


def compute() -> dict:
    """The values this test pins, computed now."""
    from fer_hf.analysis_fer import FERAnalyzer
    from fer_hf.processing_fer import FERProcessor

    model = build_tiny_model(TINY_SEED)
    processor = FERProcessor.from_model_config(model.config)
    inputs, info = processor.prepare(videos=CLIP)
    with torch.no_grad():
        outputs = model(**inputs)
    single = processor.post_process(outputs, info)[0]
    timeline = FERAnalyzer(model, processor, batch_size=4).analyze(CLIP)
    return {
        "clip": os.path.basename(CLIP),
        "seed": TINY_SEED,
        "single_window": {
            "logits": [round(float(v), 6) for v in outputs.logits[0]],
            "modalities": single.windows[0].modalities,
            "window": [single.windows[0].start_s, single.windows[0].end_s],
        },
        "timeline": [
            {"start_s": w.start_s, "probabilities": w.probabilities, "modalities": w.modalities}
            for w in timeline.windows
        ],
    }


def test_seeded_tiny_model_on_the_example_clip_matches_the_stored_values():
    assert os.path.exists(STORED), "no stored values: run `python tests/test_regression.py --update` (commit them)"
    with open(STORED) as f:
        stored = json.load(f)
    now = compute()
    assert now["single_window"]["modalities"] == stored["single_window"]["modalities"]
    assert now["single_window"]["window"] == stored["single_window"]["window"]
    assert now["single_window"]["logits"] == pytest.approx(stored["single_window"]["logits"], abs=ATOL)
    assert [w["start_s"] for w in now["timeline"]] == [w["start_s"] for w in stored["timeline"]]
    for a, b in zip(now["timeline"], stored["timeline"]):
        assert a["modalities"] == b["modalities"]
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=ATOL)


if __name__ == "__main__":
    if "--update" not in sys.argv:
        raise SystemExit("usage: python tests/test_regression.py --update   (rewrites " + STORED + ")")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.makedirs(os.path.dirname(STORED), exist_ok=True)
    with open(STORED, "w") as f:
        json.dump(compute(), f, indent=1)
    print("wrote", STORED)
