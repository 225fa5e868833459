"""The trained compact model that ships in `checkpoints/compact/`: what `python app.py`, live mode and
`fer-annotate` load by default.

Pinned: it loads with `AutoModel` / `AutoProcessor` / `pipeline(..., trust_remote_code=True)` in a fresh process as a
Hub user has it (no `fer_hf`), and gives the stored probabilities on the committed example clip; its provenance says
trained, on what, with both branches; its code files are exactly the package's (no drift); it is small.

After retraining or a deliberate change of the model code: `python -m fer_hf.tools.payload checkpoints/compact --sync`
(code files) and `python tests/test_shipped_model.py --update` (stored values).
"""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import EXAMPLES  # noqa: E402
from hub_user import run_as_hub_user  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "checkpoints", "compact")
STORED = os.path.join(os.path.dirname(__file__), "data", "shipped_compact_astronaut_speaking.json")
CLIP = os.path.join(EXAMPLES, "astronaut_speaking.mp4")
ATOL = 1e-4

_LOAD = """
import json, sys, torch
from transformers import AutoModel, AutoProcessor, pipeline
folder, clip = sys.argv[1:3] if len(sys.argv) > 2 else (FOLDER, CLIP)
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
inputs, info = processor.prepare(videos=clip)
with torch.no_grad():
    out = model(**inputs)
result = processor.post_process(out, info, model.config)[0]
pipe = pipeline(model=folder, trust_remote_code=True)
print(json.dumps({"probabilities": result.probabilities, "modalities": out.modalities_used.tolist(),
                  "status": model.config.provenance_status, "trained_modalities": list(model.config.trained_modalities),
                  "pipeline": pipe(clip)}))
"""


def compute(tmp_path) -> dict:
    code = _LOAD.replace("FOLDER", repr(SHIPPED)).replace("CLIP", repr(CLIP))
    done = run_as_hub_user(code, tmp_path, tmp_path / "modules")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(SHIPPED, "model.safetensors")),
                                reason="no shipped model in checkpoints/compact")


def test_shipped_model_loads_as_a_hub_user_and_gives_the_stored_values(tmp_path):
    got = compute(tmp_path)
    with open(STORED) as f:
        stored = json.load(f)
    assert got["status"] == "trained" and got["trained_modalities"] == ["audio", "video"]
    assert got["modalities"] == stored["modalities"]
    for label, value in stored["probabilities"].items():
        assert abs(got["probabilities"][label] - value) <= ATOL, (label, got["probabilities"][label], value)
    assert [p["label"] for p in got["pipeline"]] == [p["label"] for p in stored["pipeline"]]


def test_shipped_code_files_are_the_package_s():
    from fer_hf.tools.payload import payload_drift

    assert payload_drift(SHIPPED) == [], ("the shipped model's code differs from fer_hf/: run "
                                          "`python -m fer_hf.tools.payload checkpoints/compact --sync`")


def test_shipped_folder_is_small_safe_and_says_what_it_is():
    from fer_hf.configuration_fer import FERConfig
    from fer_hf.tools.compact_card import degenerate_reason

    files = os.listdir(SHIPPED)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    assert os.path.getsize(os.path.join(SHIPPED, "model.safetensors")) <= 60 * 2**20
    config = FERConfig.from_pretrained(SHIPPED)
    assert config.preset == "compact" and config.is_trained and not config.trained_on_synthetic_data
    assert degenerate_reason(config) is None
    card = open(os.path.join(SHIPPED, "README.md")).read()
    for needed in ("FER2013", "RAVDESS", "CC BY-NC-SA 4.0", "pseudo-pairs", "CPU stand-in"):
        assert needed in card, needed


def test_the_app_and_fer_annotate_default_to_it(tmp_path):
    import subprocess

    from fer_hf.tools.cli import shipped_model

    assert os.path.samefile(shipped_model(), SHIPPED)
    from pathlib import Path

    others = [str(p) for p in Path(ROOT, "checkpoints").rglob("model.safetensors")
              if not p.parent.samefile(SHIPPED)]
    if others:
        pytest.skip(f"other local checkpoints {others} may be newer than the shipped one (a fresh clone has none)")
    env = {k: v for k, v in os.environ.items() if k not in ("FER_MODEL", "FER_PRESET")}
    code = ("import json; from fer_app import server as app; "
            "print(json.dumps({'source': app.MODEL_INFO['source'], 'trained': app.MODEL_INFO['trained'], "
            "'status': app.PROVENANCE['status']}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert os.path.samefile(got["source"], SHIPPED) and got["trained"] and got["status"] == "trained"


if __name__ == "__main__" and "--update" in sys.argv:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        values = compute(Path(tmp))
    with open(STORED, "w") as f:
        json.dump(values, f, indent=1)
    print(f"wrote {STORED}")
