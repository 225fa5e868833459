"""Every saved model folder is a complete remote-code model: `pipeline(model=folder, trust_remote_code=True)` works
offline in a fresh process where `fer_hf` cannot be imported, for a plain `save_pretrained` folder and for a folder
written by the backbone builder (not only for `fer_hf.tools.export`)."""

import json
import os
import sys
import textwrap

import pytest
import torch
from transformers import SiglipVisionModel

sys.path.insert(0, os.path.dirname(__file__))
from hub_user import run_as_hub_user  # noqa: E402
from media_factory import astronaut_face, make_clip  # noqa: E402

from fer_hf import PAYLOAD_MODULES, FERConfig, FERForEmotionClassification, FERProcessor  # noqa: E402
from fer_hf.modeling_fer import PIPELINE_TASK  # noqa: E402
from fer_hf.pipeline_fer import FER_PIPELINE_TASK  # noqa: E402
from fer_hf.tools.backbones import build_model_from_backbones, save_model_with_report  # noqa: E402
from fer_hf.tools.export import fresh_process_env  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    clip = make_clip(root / "clip.mp4", seconds=3.0, size=(320, 240), face_image=astronaut_face())["path"]
    torch.manual_seed(0)
    plain = FERForEmotionClassification(FERConfig.from_preset("tiny")).eval()
    plain.save_pretrained(root / "plain")
    torch.manual_seed(1)
    SiglipVisionModel(FERConfig.from_preset("tiny").vision_config).save_pretrained(root / "siglip")
    built, reports = build_model_from_backbones(FERConfig.from_preset("tiny"), vision=root / "siglip")
    save_model_with_report(built, reports, root / "backbones")
    return dict(root=root, clip=clip, models={"plain": plain, "backbones": built})


def expected_scores(model, clip):
    processor = FERProcessor.from_model_config(model.config)
    inputs = processor(videos=clip, return_tensors="pt")
    with torch.no_grad():
        probs = model(**{k: inputs[k] for k in processor.model_input_names}).logits.softmax(-1).mean(0)
    return {model.config.id2label[i]: float(p) for i, p in enumerate(probs)}


def test_the_model_registers_the_pipelines_task():
    assert PIPELINE_TASK == FER_PIPELINE_TASK


@pytest.mark.parametrize("kind", ["plain", "backbones"])
def test_saved_folder_holds_the_whole_payload_and_the_pipeline_registration(folders, kind):
    folder = folders["root"] / kind
    assert set(PAYLOAD_MODULES) <= set(os.listdir(folder))
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"][FER_PIPELINE_TASK]["impl"] == "pipeline_fer.FEREmotionRecognitionPipeline"
    assert (folder / "processor_config.json").exists()
    status = {"plain": "untrained", "backbones": "backbones"}[kind]
    assert config.get("provenance", None) is None if kind == "plain" else config["provenance"]["status"] == status


def test_pipeline_on_saved_folders_in_a_fresh_offline_process(folders, tmp_path):
    root, clip = folders["root"], folders["clip"]
    script = textwrap.dedent(
        f"""
        import json
        from transformers import pipeline
        out = {{}}
        for kind in ("plain", "backbones"):
            classifier = pipeline(model={str(root)!r} + "/" + kind, trust_remote_code=True)
            out[kind] = dict(task=classifier.task, result=classifier({str(clip)!r}))
        print(json.dumps(out))
        """
    )
    assert fresh_process_env(tmp_path / "modules")["HF_HUB_OFFLINE"] == "1"
    result = run_as_hub_user(script, tmp_path, tmp_path / "modules")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for kind, model in folders["models"].items():
        assert out[kind]["task"] == FER_PIPELINE_TASK
        expected = expected_scores(model, clip)
        scores = {r["label"]: r["score"] for r in out[kind]["result"]}
        assert set(scores) == set(expected)
        for label, score in scores.items():
            assert abs(score - expected[label]) < 1e-5, (kind, label)
