"""The custom transformers pipeline: `pipeline(model=folder, trust_remote_code=True)("clip.mp4")`."""

import json
import os
import sys
import textwrap

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from hub_user import run_as_hub_user  # noqa: E402
from media_factory import astronaut_face, make_clip  # noqa: E402

from fer_hf import RAVDESS_LABELS, FERConfig, FERForEmotionClassification, FERProcessor  # noqa: E402
from fer_hf.errors_fer import FERInputError  # noqa: E402
from fer_hf.pipeline_fer import FER_PIPELINE_TASK, FEREmotionRecognitionPipeline  # noqa: E402
from fer_hf.tools.export import write_export_folder  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    torch.manual_seed(1)
    model = FERForEmotionClassification(FERConfig.from_preset("tiny")).eval()
    # generated tones are not speech; speech detection has its own tests (test_frontend_*)
    processor = FERProcessor.from_model_config(model.config, min_speech_fraction=0.0)
    folder = write_export_folder(model, processor, root / "model", "someone/fer-tiny")
    clip = make_clip(root / "clip.mp4", seconds=4.0, size=(320, 240), face_image=astronaut_face())["path"]
    return dict(root=root, model=model, processor=processor, folder=folder, clip=clip)


def expected_scores(setup, **options):
    inputs, info = setup["processor"].prepare(videos=setup["clip"], return_tensors="pt", **options)
    with torch.no_grad():
        outputs = setup["model"](**inputs)
    probs = outputs.logits.softmax(-1)  # (windows, C); both modalities in every window: a plain mean
    assert outputs.modalities_used.all()
    expected = {setup["model"].config.id2label[i]: float(p) for i, p in enumerate(probs.mean(0))}
    result = setup["processor"].post_process(outputs, info)[0]
    assert result.probabilities == pytest.approx(expected, abs=1e-6)
    return expected


def check_ranked(result, expected, top_k=None):
    assert [set(r) for r in result] == [{"label", "score", "top"}] * len(result)
    assert not any(r["top"] for r in result[1:])  # `top` marks the first entry, or none (no clear emotion)
    scores = [r["score"] for r in result]
    assert scores == sorted(scores, reverse=True)
    assert len(result) == (top_k or len(RAVDESS_LABELS))
    for r in result:
        assert abs(r["score"] - expected[r["label"]]) < 1e-5, r


def test_pipeline_from_a_folder_in_a_fresh_process(setup, tmp_path):
    """Both `pipeline(task=..., model=dir, ...)` and `pipeline(model=dir, ...)` (task from config.json) work."""
    script = textwrap.dedent(
        f"""
        import json
        from transformers import pipeline
        folder, clip = {str(setup["folder"])!r}, {str(setup["clip"])!r}
        explicit = pipeline(task={FER_PIPELINE_TASK!r}, model=folder, trust_remote_code=True)
        inferred = pipeline(model=folder, trust_remote_code=True)
        out = dict(explicit=explicit(clip), inferred=inferred(clip), task=inferred.task,
                   windows=inferred(clip, sliding_window=True, top_k=3), cls=type(inferred).__module__)
        print(json.dumps(out))
        """
    )
    result = run_as_hub_user(script, tmp_path, tmp_path / "modules")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["task"] == FER_PIPELINE_TASK and out["cls"].startswith("transformers_modules.")
    expected = expected_scores(setup)
    check_ranked(out["explicit"], expected)
    assert out["inferred"] == out["explicit"]
    check_ranked(out["windows"], expected_scores(setup, sliding_window=True), top_k=3)


def test_pipeline_on_an_in_memory_model_and_decoded_arrays(setup):
    classifier = FEREmotionRecognitionPipeline(model=setup["model"], processor=setup["processor"], device=-1)
    check_ranked(classifier(setup["clip"]), expected_scores(setup))
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32)
    result = classifier({"audio": audio, "sampling_rate": 16000}, top_k=2)
    assert len(result) == 2 and result[0]["score"] >= result[1]["score"]
    batch = classifier([setup["clip"], setup["clip"]])
    assert len(batch) == 2 and batch[0] == batch[1]
    frames = np.zeros((20, 120, 160, 3), np.uint8)
    old_keys = classifier({"audio": audio, "sampling_rate": 16000, "video_frames": frames, "fps": 10.0})
    new_keys = classifier({"audio": audio, "sampling_rate": 16000, "frames": frames, "fps": 10.0})
    assert old_keys == new_keys


def test_pipeline_returns_the_full_result_with_modalities(setup):
    from fer_hf.results_fer import FERClipResult

    classifier = FEREmotionRecognitionPipeline(model=setup["model"], processor=setup["processor"], device=-1)
    result = classifier(setup["clip"], return_result=True, sliding_window=True, hop_seconds=1.0)
    assert isinstance(result, FERClipResult) and len(result.windows) == 2
    assert result.windows[0].modalities["audio"] and result.windows[0].modalities["video"]
    ranked = classifier(setup["clip"], sliding_window=True, hop_seconds=1.0)
    assert [(r["label"], r["score"]) for r in ranked] == result.ranked()
    rng = np.random.default_rng(0)
    audio_only = classifier({"audio": (0.1 * rng.standard_normal(32000)).astype(np.float32),
                             "sampling_rate": 16000}, return_result=True)
    assert audio_only.windows[0].modalities["video_reason"] == "no video frames given"


def test_top_is_the_results_top_label_by_its_confidence_margin(setup):
    """The one-liner follows the result's rule: below the margin ("no clear emotion") no entry is `top`."""
    for margin, named in ((0.0, True), (0.99, False)):
        processor = FERProcessor.from_model_config(setup["model"].config, min_speech_fraction=0.0,
                                                   confidence_margin=margin)
        classifier = FEREmotionRecognitionPipeline(model=setup["model"], processor=processor, device=-1)
        ranked, result = classifier(setup["clip"]), classifier(setup["clip"], return_result=True)
        assert [r["top"] for r in ranked] == [named] + [False] * (len(ranked) - 1)
        assert result.top_label == (ranked[0]["label"] if named else None) and result.confident == named


def test_pipeline_without_a_saved_processor_builds_one(setup):
    classifier = FEREmotionRecognitionPipeline(model=setup["model"], processor=None, device=-1)
    built = classifier.fer_processor
    assert built.audio_processing.min_speech_fraction == 0.1  # the defaults, speech detection on
    built.audio_processing.min_speech_fraction = 0.0  # the generated tone is not speech (as in `setup`)
    check_ranked(classifier(setup["clip"]), expected_scores(setup))


def test_pipeline_input_errors(setup):
    classifier = FEREmotionRecognitionPipeline(model=setup["model"], processor=setup["processor"], device=-1)
    with pytest.raises(FERInputError, match="unknown media key"):
        classifier({"pixels": 1})
    with pytest.raises(FERInputError, match="media file path"):
        classifier(42)
    with pytest.raises(FERInputError, match="unexpected pipeline argument"):
        classifier(setup["clip"], temperature=2.0)


def test_pipeline_needs_trust_remote_code(setup, monkeypatch):
    from transformers import pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline(model=str(setup["folder"]), trust_remote_code=False)
