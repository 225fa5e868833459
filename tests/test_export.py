"""Hub export: folder contents, model card, fresh-process verification, push only after it (HfApi mocked)."""

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from hub_user import run_as_hub_user  # noqa: E402
from media_factory import astronaut_face, make_clip  # noqa: E402

import fer_hf  # noqa: E402
import fer_hf.tools.export as export_mod  # noqa: E402
from fer_hf import RAVDESS_LABELS, FERConfig, FERForEmotionClassification  # noqa: E402
from fer_hf.provenance_fer import make_backbones_provenance, make_training_provenance  # noqa: E402
from fer_hf.tools.backbones import save_model_with_report  # noqa: E402
from fer_hf.tools.evaluate import aggregate  # noqa: E402
from fer_hf.tools.export import ExportError, ExportVerificationError  # noqa: E402
from fer_hf.tools.metrics import classification_metrics  # noqa: E402
from fer_hf.tools.model_card import (  # noqa: E402
    extract_python_snippets,
    normalise_eval_results,
    parse_front_matter,
    render_model_card,  # noqa: E402
)
from fer_hf.tools.requirements import install_command, no_deps_requirements, runtime_requirements  # noqa: E402


class ForbiddenHfApi:
    """Stands in for HfApi when nothing may touch the network."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("HfApi must not be used without --push-to-hub")


def eval_results():
    """A results document as fer_hf.tools.evaluate writes it (two folds)."""
    folds = []
    for fold, (y_true, y_pred) in enumerate(
        [([0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 0]), ([0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 2, 4, 5, 6, 7])]
    ):
        folds.append({"fold": fold, **classification_metrics(y_true, y_pred, RAVDESS_LABELS)})
    dataset = {"name": "RAVDESS", "type": "ravdess", "config": "audio-video speech", "split": "test"}
    return aggregate(folds, RAVDESS_LABELS, num_folds=2, dataset=dataset)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = FERForEmotionClassification(FERConfig.from_preset("tiny")).eval()
    # the record fer-train writes (the weights here are random: the exporter trusts the record, it cannot check it)
    model.config.provenance = make_training_provenance(
        dataset="RAVDESS", synthetic=False, modality_layout="audio-video", mode="release", epochs=3,
        train_actors=range(1, 25), metrics={"accuracy": 0.5, "uar": 0.5, "macro_f1": 0.4},
        metrics_scope="cross-validated mean over 2 folds",
        backbones={"vision": "google/siglip2-base-patch16-224", "fusion": "/local/lfm2"},
    )
    save_model_with_report(model, {}, root / "ckpt")
    (root / "results.json").write_text(json.dumps(eval_results()))
    clip = make_clip(root / "clip.mp4", seconds=1.5, size=(320, 240), face_image=astronaut_face())["path"]
    return dict(root=root, model=model, clip=clip)


@pytest.fixture(scope="module")
def exported(checkpoint):
    """The CLI run without --push-to-hub: writes, verifies in a fresh process, never touches HfApi."""
    out = checkpoint["root"] / "out"
    mp = pytest.MonkeyPatch()
    mp.setattr(export_mod, "HfApi", ForbiddenHfApi)
    try:
        summary = export_mod.export(
            checkpoint["root"] / "ckpt",
            out,
            eval_results=checkpoint["root"] / "results.json",
            repo_id="someone/fer-tiny",
            max_shard_size="100KB",
            clip=checkpoint["clip"],
        )
    finally:
        mp.undo()
    return dict(out=out, summary=summary)


def test_folder_holds_safetensors_code_configs_and_card(exported):
    out = exported["out"]
    files = set(os.listdir(out))
    assert {
        "config.json",
        "processor_config.json",
        "README.md",
        "model.safetensors.index.json",
        "eval_results.json",
        "modeling_fer.py",
        "configuration_fer.py",
        "modules_fer.py",
        "processing_fer.py",
        "pipeline_fer.py",
        "errors_fer.py",
        "media_fer.py",
        "faces_fer.py",
    } <= files
    assert sorted(f for f in files if f.endswith(".py")) == sorted(fer_hf.PAYLOAD_MODULES)  # exactly the payload
    assert len([f for f in files if re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", f)]) > 1  # sharded
    assert not any(f.endswith(export_mod.PICKLE_SUFFIXES) for f in files)
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_fer.FERConfig",
        "AutoModel": "modeling_fer.FERForEmotionClassification",
    }
    assert config["custom_pipelines"] == {
        "audio-visual-emotion-recognition": {
            "impl": "pipeline_fer.FEREmotionRecognitionPipeline",
            "pt": ["AutoModel"],
            "type": "multimodal",
        }
    }
    processor = json.loads((out / "processor_config.json").read_text())
    assert processor["auto_map"] == {"AutoProcessor": "processing_fer.FERProcessor"}
    assert "--" not in json.dumps(config["auto_map"]) + json.dumps(processor["auto_map"])
    for name in ("pipeline_fer.py", "processing_fer.py", "modeling_fer.py"):
        assert not re.search(r"^\s*(from|import) fer_hf", (out / name).read_text(), re.M), name


def test_fresh_process_verification_passed(exported):
    check = exported["summary"]["verification"]
    assert check["max_abs_diff"] <= 1e-5 and check["pipeline_max_diff"] <= 1e-5
    assert check["model_module"].startswith("transformers_modules.")  # the folder's code, not fer_hf
    assert (check["model_class"], check["processor_class"]) == ("FERForEmotionClassification", "FERProcessor")
    assert "pushed" not in exported["summary"]


def test_model_card_front_matter(exported):
    meta = parse_front_matter((exported["out"] / "README.md").read_text())
    assert meta["license"] == "cc-by-nc-sa-4.0" and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "video-classification"
    assert {"custom_code", "audio-visual", "emotion-recognition"} <= set(meta["tags"])
    assert meta["datasets"] == ["RAVDESS"] and meta["metrics"] == ["accuracy", "recall", "f1"]
    assert meta["base_model"] == ["google/siglip2-base-patch16-224"]  # local paths are not Hub base models
    (result,) = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == "fer-tiny"
    values = {m["type"]: m["value"] for m in result["metrics"]}
    summary = eval_results()["summary"]
    assert values == {
        "accuracy": round(summary["accuracy"]["mean"], 4),
        "recall": round(summary["uar"]["mean"], 4),
        "f1": round(summary["macro_f1"]["mean"], 4),
    }
    assert result["metrics"][1]["args"] == {"average": "macro"}
    assert result["dataset"]["type"] == "ravdess"


def test_model_card_snippet_runs_in_a_fresh_process(exported, checkpoint, tmp_path):
    """The card's code, with the repo id pointed at the exported folder, works for a user without fer_hf."""
    (snippet,) = extract_python_snippets((exported["out"] / "README.md").read_text())
    assert 'pipeline(model="someone/fer-tiny", trust_remote_code=True)' in snippet
    shutil.copy(checkpoint["clip"], tmp_path / "clip.mp4")
    code = snippet.replace("someone/fer-tiny", str(exported["out"]))
    result = run_as_hub_user(code, tmp_path, tmp_path / "modules")
    assert result.returncode == 0, result.stderr[-3000:]
    first_line = result.stdout.splitlines()[0]
    ranked = eval(first_line)  # the printed pipeline output: a list of {label, score}
    assert [r["label"] for r in ranked] and {r["label"] for r in ranked} == set(RAVDESS_LABELS)
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)


def test_verification_catches_a_folder_that_differs(exported, checkpoint):
    changed = FERForEmotionClassification.from_pretrained(exported["out"]).eval()
    with torch.no_grad():
        changed.classifier.apply(
            lambda m: m.bias.add_(torch.randn_like(m.bias)) if isinstance(m, torch.nn.Linear) else None
        )
    processor = export_mod.load_checkpoint(exported["out"])[1]
    with pytest.raises(ExportVerificationError, match="differ by"):
        export_mod.verify_export(changed, processor, exported["out"], clip=checkpoint["clip"])


class RecordingHfApi:
    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/0"})()


def test_push_happens_only_after_verification_with_the_folder(checkpoint, tmp_path, monkeypatch):
    RecordingHfApi.calls = []
    monkeypatch.setattr(export_mod, "HfApi", RecordingHfApi)
    monkeypatch.setattr(
        export_mod, "verify_export", lambda *a, **k: RecordingHfApi.calls.append(("verified",)) or {"max_abs_diff": 0.0}
    )
    out = tmp_path / "pushed"
    summary = export_mod.export(checkpoint["root"] / "ckpt", out, push_to_hub="someone/fer-tiny", private=True)
    names = [c[0] for c in RecordingHfApi.calls]
    assert names == ["verified", "init", "create_repo", "upload_folder"]
    assert RecordingHfApi.calls[2] == (
        "create_repo",
        "someone/fer-tiny",
        {"exist_ok": True, "private": True, "repo_type": "model"},
    )
    upload = RecordingHfApi.calls[3][1]
    assert upload["repo_id"] == "someone/fer-tiny" and Path(upload["folder_path"]) == out
    assert summary["pushed"].startswith("https://huggingface.co/someone/fer-tiny")
    assert 'pipeline(model="someone/fer-tiny"' in (out / "README.md").read_text()


def test_failed_verification_blocks_the_push(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "HfApi", ForbiddenHfApi)

    def fail(*args, **kwargs):
        raise ExportVerificationError("logits differ")

    monkeypatch.setattr(export_mod, "verify_export", fail)
    argv = ["--checkpoint", str(checkpoint["root"] / "ckpt"), "--output-dir", str(tmp_path / "o"),
            "--push-to-hub", "someone/fer-tiny"]
    with pytest.raises(SystemExit) as refused:  # the CLI: one line, exit status 2
        export_mod.main(argv)
    assert refused.value.code == 2
    assert not (tmp_path / "o").exists()  # a folder that failed its verification is not left behind
    with pytest.raises(ExportVerificationError):  # --debug keeps the error and its trace
        export_mod.main([*argv, "--debug"])


def test_bad_export_requests(checkpoint, tmp_path):
    with pytest.raises(ExportError, match="no model checkpoint"):
        export_mod.export(tmp_path, tmp_path / "o")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    model, processor = export_mod.load_checkpoint(checkpoint["root"] / "ckpt")
    with pytest.raises(ExportError, match="not empty"):
        export_mod.write_export_folder(model, processor, tmp_path / "busy", "a/b")


def test_eval_results_parsing_is_tolerant():
    flat = normalise_eval_results({"accuracy": 0.5, "uar": 0.4, "macro_f1": 0.3})
    assert [(m["type"], m["value"]) for m in flat] == [("accuracy", 0.5), ("recall", 0.4), ("f1", 0.3)]
    assert normalise_eval_results({"summary": {"uar": {"mean": 0.6, "std": 0.1}}})[0]["std"] == 0.1
    assert normalise_eval_results(None) == [] and normalise_eval_results({"other": 1}) == []


def test_card_without_results_still_parses(checkpoint):
    untrained = FERForEmotionClassification(FERConfig.from_preset("tiny")).eval()  # no record, no figures
    meta = parse_front_matter(render_model_card(untrained, "a/b"))
    assert "model-index" not in meta and meta["license"] == "cc-by-nc-sa-4.0"
    # a release model's card claims the figures its provenance record holds, even without an evaluation JSON
    meta = parse_front_matter(render_model_card(checkpoint["model"], "a/b"))
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.5


def test_package_never_unpickles_without_weights_only():
    """Every torch.load in fer_hf passes weights_only=True (safetensors everywhere else)."""
    folder = Path(fer_hf.__file__).parent
    offenders = []
    for path in folder.glob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.start() : text.find("\n\n", match.start())]
            depth, end = 0, 0
            for i, ch in enumerate(call):
                depth += ch == "("
                depth -= ch == ")"
                if depth == 0 and ch == ")":
                    end = i
                    break
            if "weights_only=True" not in call[:end]:
                offenders.append(f"{path.name}: {call[: end + 1]}")
        if re.search(r"\bpickle\.loads?\(|torch\.save\(", text):
            offenders.append(f"{path.name}: pickle.load / torch.save")
    assert offenders == []


def test_export_names_its_pinned_requirements_and_the_card_installs_them(exported):
    out = exported["out"]
    lines = [line for line in (out / "requirements.txt").read_text().splitlines() if line and line[0] != "#"]
    assert lines == runtime_requirements()
    no_deps = [line for line in (out / "requirements-no-deps.txt").read_text().splitlines() if line[:1] not in "#"]
    assert [line for line in no_deps if line] == no_deps_requirements()
    card = (out / "README.md").read_text()
    assert install_command() in card
    assert "opencv-python-headless==4." in card and "pip install torch==" in card
    assert card.index("pip install torch==") < card.index("transformers==")  # torch first: the CPU build


def test_export_refuses_an_untrained_model_unless_told_and_then_says_what_it_is(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = FERForEmotionClassification(FERConfig.from_preset("tiny")).eval()
    model.save_pretrained(tmp_path / "random")
    with pytest.raises(ExportError, match="not a trained model.*--allow-untrained"):
        export_mod.export(tmp_path / "random", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(export_mod, "verify_export", lambda *args, **kwargs: {"skipped": "this test"})
    summary = export_mod.export(tmp_path / "random", tmp_path / "out", repo_id="a/b", allow_untrained=True)
    assert summary["provenance"]["status"] == "untrained"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "**Untrained model.**" in card and "predictions are meaningless" in card
    assert "Trained on RAVDESS" not in card
    meta = parse_front_matter(card)
    assert "datasets" not in meta and "untrained" in meta["tags"]


def test_cards_say_exactly_what_the_weights_are(checkpoint):
    config = FERConfig.from_preset("tiny")
    model = FERForEmotionClassification(config).eval()
    # pretrained backbones only
    model.config.provenance = make_backbones_provenance({"vision": "google/siglip2-base-patch16-224"})
    card = render_model_card(model, "a/b")
    assert "**Not trained for emotions.**" in card and "Trained on RAVDESS" not in card
    assert parse_front_matter(card)["base_model"] == ["google/siglip2-base-patch16-224"]
    # trained on the synthetic set, with its (meaningless) figures
    model.config.provenance = make_training_provenance(
        dataset="synthetic", synthetic=True, modality_layout="audio-video", mode="fold", fold=0, epochs=2,
        metrics={"accuracy": 1.0, "uar": 1.0, "macro_f1": 1.0}, metrics_scope="this fold's test actors",
    )
    card = render_model_card(model, "a/b", eval_results())
    assert card.index("**Trained on synthetic data (not RAVDESS).**") < card.index("## Usage")  # said first
    assert "**Synthetic data:**" in card and "Trained on RAVDESS" not in card
    meta = parse_front_matter(card)
    assert "datasets" not in meta and "synthetic-data" in meta["tags"]
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["type"] == "synthetic" and "synthetic" in result["dataset"]["name"]
    # trained on RAVDESS: the record's own summary heads the card
    card = render_model_card(checkpoint["model"], "a/b", eval_results())
    assert "**Weights:** trained on RAVDESS (all actors, 3 epochs" in card and "Trained on RAVDESS (Livingstone" in card
    assert "untrained" not in parse_front_matter(card)["tags"]
    assert parse_front_matter(card)["datasets"] == ["RAVDESS"]
