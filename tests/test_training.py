"""Preprocessing cache, training (loss goes down, LR groups, freezing, class weights, resume) and evaluation."""

import json

import numpy as np
import pytest
import torch

from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor
from fer_hf.tools.data import (
    CachedClipDataset,
    CacheError,
    FERCollator,
    build_cache,
    cache_fingerprint,
    read_clip_cache,
)
from fer_hf.tools.ravdess import build_index, parse_ravdess_name
from fer_hf.tools.synthetic import SyntheticSpec, generate
from fer_hf.tools.train import BackboneFreezeCallback, FERTrainer, backbone_of, class_weights, resolve_precision

SPEC = SyntheticSpec(num_actors=3, clips_per_class=1, seconds=(1.0, 1.3), width=240, height=180, fps=15,
                     num_folds=3)
# The tiny preset learns from scratch much faster with a larger init (see docs/training.md).
TINY_INIT = dict(modality_dropout=0.0)  # the tiny preset's own initialisation trains from scratch


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, SPEC)
    return root


@pytest.fixture(scope="module")
def processor():
    # generated tones are not speech; speech detection has its own tests (test_frontend_*)
    return FERProcessor.from_model_config(FERConfig.from_preset("tiny"), min_speech_fraction=0.0)


@pytest.fixture(scope="module")
def cached(dataset, processor, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return build_cache(build_index(dataset).clips, processor, cache, progress=False)


def test_cache_round_trip_matches_processor(dataset, processor, tmp_path):
    clips = build_index(dataset).clips[:3]
    reference = processor(videos=[c.path for c in clips], return_tensors="pt")
    for image_format, pixel_atol in (("png", 1e-6), ("jpeg", None)):
        report = build_cache(clips, processor, tmp_path / image_format, image_format=image_format, progress=False)
        assert report.written == 3 and not report.failed
        data = CachedClipDataset(report.entries)
        batch = FERCollator(processor)([data[i] for i in range(3)])
        assert batch["labels"].tolist() == [c.label for c in clips]
        for key in reference.keys():
            assert batch[key].shape == reference[key].shape, key
            assert batch[key].dtype == reference[key].dtype, key
        for key in ("audio_attention_mask", "video_frame_mask", "audio_mask", "video_mask", "roi_weights"):
            assert torch.equal(batch[key], reference[key]), key
        # int16 audio: mel features (normalised per bin) within a few hundredths.
        torch.testing.assert_close(batch["input_features"], reference["input_features"], atol=0.05, rtol=0)
        diff = (batch["pixel_values_videos"] - reference["pixel_values_videos"]).abs()
        if pixel_atol is not None:  # PNG is lossless
            assert diff.max() <= pixel_atol
        else:  # JPEG q95: about 2 grey levels on average at 32 x 32
            assert diff.mean() < 0.03
    row, meta = read_clip_cache(report.entries[0].path)
    assert meta["clip"]["actor"] == clips[0].actor and row["info"]["video_reason"] == "ok"


def test_cache_is_resumable_and_skips_bad_files(dataset, processor, tmp_path):
    clips = build_index(dataset).clips[:4]
    broken = tmp_path / "Actor_01" / "01-01-02-02-02-02-01.mp4"
    broken.parent.mkdir()
    broken.write_bytes(b"\x00\x00\x00\x20ftypisom" + b"garbage" * 50)  # passes the index, fails to decode
    clips.append(parse_ravdess_name(broken))
    first = build_cache(clips, processor, tmp_path / "cache", progress=False)
    assert first.written == 4 and len(first.entries) == 4
    assert len(first.failed) == 1 and "MediaDecodeError" in first.failed[0][1]
    failures = json.loads((tmp_path / "cache" / cache_fingerprint(processor, "jpeg", 95) / "failures.json").read_text())
    assert failures[0]["path"] == str(broken)
    second = build_cache(clips, processor, tmp_path / "cache", progress=False)
    assert second.reused == 4 and second.written == 0 and len(second.failed) == 1
    # Another preset writes to another folder: a stale cache is never read.
    other = FERProcessor.from_model_config(FERConfig.from_preset("tiny", num_frames=4))
    assert cache_fingerprint(other, "jpeg", 95) != cache_fingerprint(processor, "jpeg", 95)
    with pytest.raises(CacheError, match="image_format"):
        build_cache(clips, processor, tmp_path / "cache", image_format="gif")


def test_a_few_training_steps_lower_the_loss(cached, processor):
    torch.manual_seed(0)
    model = FERForEmotionClassification(FERConfig.from_preset("tiny", **TINY_INIT))
    batch = FERCollator(processor)([CachedClipDataset(cached.entries)[i] for i in range(8)])
    labels = batch.pop("labels")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss_now():
        model.eval()
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model(**batch).logits, labels).item()

    before = loss_now()
    model.train()
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss_now() < before - 0.05


def test_lr_groups_weight_decay_and_class_weights(tmp_path):
    from transformers import TrainingArguments

    model = FERForEmotionClassification(FERConfig.from_preset("tiny"))
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.1, report_to=[],
                             use_cpu=True)
    trainer = FERTrainer(model=model, args=args, backbone_lr=1e-5)
    optimizer = trainer.create_optimizer()
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    for name, param in model.named_parameters():
        group = by_param[id(param)]
        assert group["lr"] == (1e-5 if backbone_of(name) else 1e-3), name
        if name.endswith("bias"):
            assert group["weight_decay"] == 0.0, name
    assert backbone_of("vision_encoder.encoder.layers.0.mlp.fc1.weight") == "vision"
    assert backbone_of("module.fusion.backbone.layers.0.conv.in_proj.weight") == "fusion"
    assert backbone_of("fusion.audio_proj.value.weight") is None
    # Neutral has half as many clips as the other classes: weight twice as large, mean 1.
    labels = [0] * 2 + [c for c in range(1, 8) for _ in range(4)]
    weights = class_weights(labels, 8)
    assert weights[0] == pytest.approx(2 * weights[1]) and weights.mean().item() == pytest.approx(1.0, rel=0.1)
    assert class_weights([0, 0, 1], 3)[2] == 0.0
    # Every group's learning rate is logged; `learning_rate` is the head's, not the first group's (backbone).
    trainer.log({"learning_rate": 123.0, "loss": 1.0})
    logged = trainer.state.log_history[-1]
    assert (logged["learning_rate_head"], logged["learning_rate_backbone"], logged["learning_rate"]) == \
           (1e-3, 1e-5, 1e-3)
    assert resolve_precision("fp32") == {"bf16": False, "fp16": False}
    if not torch.cuda.is_available():
        assert resolve_precision("auto") == {"bf16": False, "fp16": False}
        with pytest.raises(ValueError, match="CUDA"):
            resolve_precision("bf16")


def test_freeze_callback_modes():
    from transformers import TrainerState

    model = FERForEmotionClassification(FERConfig.from_preset("tiny"))
    callback = BackboneFreezeCallback(epochs=2)
    state = TrainerState()
    for epoch, frozen in ((0.0, True), (1.0, True), (2.0, False)):
        state.epoch = epoch
        callback.on_epoch_begin(None, state, None, model=model)
        assert all(p.requires_grad != frozen for p in model.vision_encoder.parameters())
        assert all(p.requires_grad != frozen for p in model.fusion.backbone.parameters())
        assert all(p.requires_grad for p in model.classifier.parameters())
    dropping = BackboneFreezeCallback(epochs=-1, parts=("audio",), mode="drop_grads")
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    state.epoch = 5.0
    dropping.on_pre_optimizer_step(None, state, None, model=model)
    assert all(p.grad is None for p in model.audio_encoder.parameters())
    assert all(p.grad is not None for p in model.vision_encoder.parameters())


def _train_args(dataset, tmp_path, *extra):
    from fer_hf.tools.train import parse_args

    return parse_args([
        "--data-root", str(dataset), "--folds", str(dataset / "folds.json"), "--fold", "0", "--preset", "tiny",
        "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "run"), "--batch-size", "4",
        "--lr", "1e-3", "--backbone-lr", "1e-3", "--report-to", "none", "--no-progress", "--logging-steps", "1",
        "--save-total-limit", "5",
        *extra,
    ])


def test_train_resume_and_evaluate(dataset, tmp_path):
    from fer_hf.tools import evaluate, train

    # Fold 0 of 3 one-actor folds: train actor 3, validate on actor 2, test actor 1; 8 clips = 2 steps per epoch.
    first = train.run(_train_args(dataset, tmp_path, "--epochs", "2", "--freeze-epochs", "1"))[0]
    assert first["split"] == {"fold": 0, "train_actors": [3], "val_actors": [2], "test_actors": [1]}
    assert first["global_step"] == 4 and first["resumed_from"] is None
    fold_dir = tmp_path / "run" / "fold0"
    final = fold_dir / "final"
    for name in ("model.safetensors", "config.json", "processor_config.json", "training_info.json"):
        assert (final / name).is_file(), name
    assert (fold_dir / "checkpoint-4" / "processor_config.json").is_file()
    assert (fold_dir / "checkpoint-4" / "optimizer.pt").is_file()  # what --resume needs; measured disk use:
    assert first["disk_bytes"]["last_checkpoint"] > (fold_dir / "checkpoint-4" / "model.safetensors").stat().st_size * 2
    assert set(first["val_metrics"]) >= {"eval_accuracy", "eval_uar", "eval_macro_f1"}

    # A fresh run into the same folder is refused (one line, before any training); so is a locked folder.
    with pytest.raises(ValueError, match="earlier run.*--resume"):
        train.run(_train_args(dataset, tmp_path, "--epochs", "3"))
    from fer_hf.tools.run_dir import LOCK_NAME, RunLockedError

    (tmp_path / "run" / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "another-host", "started": "then"}))
    with pytest.raises(RunLockedError, match="pid 1 on another-host"):
        train.run(_train_args(dataset, tmp_path, "--epochs", "3", "--resume"))
    (tmp_path / "run" / LOCK_NAME).unlink()

    # Resume: a longer run picks up at step 4 instead of starting again, and its record covers the whole run.
    second = train.run(_train_args(dataset, tmp_path, "--epochs", "3", "--resume"))[0]
    assert second["resumed_from"].endswith("checkpoint-4") and second["global_step"] == 6
    state = json.loads((fold_dir / "checkpoint-6" / "trainer_state.json").read_text())
    assert [round(e["epoch"]) for e in state["log_history"] if "eval_loss" in e] == [1, 2, 3]
    assert [round(e["epoch"]) for e in second["eval_history"]] == [1, 2, 3]
    assert second["total"]["sessions"] == 2 and second["total"]["global_step"] == 6
    assert [(s["start_step"], s["end_step"]) for s in second["sessions"]] == [(0, 4), (4, 6)]
    assert second["seconds"] == pytest.approx(first["seconds"] + second["session_seconds"], abs=0.2)
    assert "learning_rate_head" in next(e for e in state["log_history"] if "loss" in e)
    assert not (tmp_path / "run" / LOCK_NAME).exists()

    results = evaluate.run(evaluate.parse_args([
        "--data-root", str(dataset), "--folds", str(dataset / "folds.json"), "--fold", "0",
        "--checkpoint", str(tmp_path / "run" / "fold{fold}" / "final"), "--cache-dir", str(tmp_path / "cache"),
        "--out", str(tmp_path / "results"), "--no-progress",
    ]))
    saved = json.loads((tmp_path / "results" / "results.json").read_text())
    assert saved["dataset"]["name"] == "synthetic (RAVDESS-named)" and saved["dataset"]["synthetic"] is True
    assert saved["dataset"]["modality_layout"] == "audio-video" and saved["protocol"] == "3-fold speaker-independent"
    assert saved["complete"] is False and saved["folds"][0]["test_actors"] == [1]
    assert [m["type"] for m in saved["metrics"]] == ["accuracy", "uar", "f1"]
    assert saved["folds"][0]["num_clips"] == 8 and sum(map(sum, saved["pooled"]["confusion_matrix"])) == 8
    assert 0.0 <= results["metrics"][0]["value"] <= 1.0
    assert (tmp_path / "results" / "confusion_fold0.png").is_file()
    assert (tmp_path / "results" / "confusion_all_folds.png").is_file()


def test_aggregate_over_folds(tmp_path):
    from fer_hf.tools.evaluate import aggregate
    from fer_hf.tools.metrics import classification_metrics

    labels = ["a", "b"]
    folds = [dict(fold=k, **classification_metrics(t, p, labels))
             for k, (t, p) in enumerate((([0, 1, 1], [0, 1, 1]), ([0, 1], [1, 1])))]
    results = aggregate(folds, labels, 2, {"name": "RAVDESS"}, tmp_path)
    assert results["complete"] and results["protocol"] == "2-fold speaker-independent"
    assert results["summary"]["accuracy"]["values"] == [1.0, 0.5]
    assert results["metrics"][0]["value"] == pytest.approx(0.75)
    assert results["metrics"][0]["std"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert results["pooled"]["confusion_matrix"] == [[1, 1], [0, 3]]
    assert (tmp_path / results["confusion_matrix_png"]).is_file()


def test_release_model_card_says_what_was_trained_and_measured(dataset, tmp_path):
    """Cross-validation (3 folds), then a release model on every actor: its record and card claim the CV estimate
    of the recipe, name the synthetic data and say that the weights saw every actor; a fold model claims its own
    fold's score."""
    from fer_hf.tools import evaluate, train
    from fer_hf.tools.model_card import parse_front_matter, render_model_card

    folds = [train_fold["test_metrics"] for train_fold in train.run(_train_args(dataset, tmp_path, "--fold", "all",
                                                                                "--epochs", "1"))]
    assert len(folds) == 3
    results = evaluate.run(evaluate.parse_args([
        "--data-root", str(dataset), "--folds", str(dataset / "folds.json"), "--fold", "all", "--no-progress",
        "--checkpoint", str(tmp_path / "run" / "fold{fold}" / "final"), "--cache-dir", str(tmp_path / "cache"),
        "--out", str(tmp_path / "results")]))
    # the training-time test score of each fold is the evaluation's
    assert [f["uar"] for f in results["folds"]] == pytest.approx([f["uar"] for f in folds])

    info = train.run(_train_args(dataset, tmp_path, "--mode", "release"))[0]
    release = info["release"]
    assert info["split"]["train_actors"] == [1, 2, 3] and info["num_val_clips"] == info["num_test_clips"] == 0
    best = [json.loads((tmp_path / "run" / f"fold{k}" / "final" / "training_info.json").read_text())["best_epoch"]
            for k in range(3)]
    assert release["best_epochs"] == [round(b) for b in best]
    assert info["epochs_trained"] == pytest.approx(release["epochs"]) == sorted(round(b) for b in best)[1] == 1
    record = json.loads((tmp_path / "run" / "release" / "final" / "config.json").read_text())["provenance"]
    training = record["training"]
    assert record["status"] == "trained" and training["mode"] == "release" and training["fold"] is None
    assert training["dataset"] == "synthetic" and training["test_actors"] == []
    assert training["metrics_scope"] == "cross-validated mean over k folds"
    assert training["metrics"]["uar"] == pytest.approx(results["summary"]["uar"]["mean"])
    assert training["metrics_std"]["uar"] == pytest.approx(results["summary"]["uar"]["std"])

    model = FERForEmotionClassification.from_pretrained(str(tmp_path / "run" / "release" / "final"))
    card = render_model_card(model, "someone/fer-release", results)
    meta = parse_front_matter(card)
    (entry,) = meta["model-index"][0]["results"]
    assert entry["dataset"]["type"] == "synthetic" and "cross-validation of this recipe" in entry["dataset"]["name"]
    assert "weights trained on all actors" in entry["dataset"]["name"] and "datasets" not in meta
    values = {m["type"]: m["value"] for m in entry["metrics"]}
    assert values["recall"] == round(results["summary"]["uar"]["mean"], 4)
    assert "trained on all 3 actors" in card and "no test score of its own" in card
    assert "not on RAVDESS" in card and "**Synthetic data:**" in card
    with pytest.raises(ValueError, match="release model"):  # no held-out actor to evaluate on
        evaluate.run(evaluate.parse_args([
            "--data-root", str(dataset), "--folds", str(dataset / "folds.json"), "--fold", "0", "--no-progress",
            "--checkpoint", str(tmp_path / "run" / "release" / "final"), "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "results2")]))

    fold1 = FERForEmotionClassification.from_pretrained(str(tmp_path / "run" / "fold1" / "final"))
    fold_meta = parse_front_matter(fold_card := render_model_card(fold1, "someone/fer-fold1", results))
    (fold_entry,) = fold_meta["model-index"][0]["results"]
    assert "fold 1 test actors [2]" in fold_entry["dataset"]["name"]
    fold_values = {m["type"]: m["value"] for m in fold_entry["metrics"]}
    assert fold_values["recall"] == round(results["folds"][1]["uar"], 4)  # its own fold, not the mean
    assert "trained on actors [1]" in fold_card
    assert "an estimate of the recipe, not a score of these weights" in fold_card


def test_refusals_validation_split_and_prepare_only(dataset, tmp_path, caplog):
    from fer_hf.tools import train

    # One clear line and exit status 2, not a traceback; --debug gives the trace.
    with pytest.raises(SystemExit) as stop:
        train.main(["--data-root", str(tmp_path / "missing"), "--preset", "tiny", "--output-dir", str(tmp_path)])
    assert stop.value.code == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "is not a directory" in errors[0].getMessage() and "--debug" in errors[0].getMessage()
    with pytest.raises(FileNotFoundError):
        train.main(["--data-root", str(tmp_path / "missing"), "--preset", "tiny", "--debug"])

    # Validation actors without a usable clip: refused unless --validation none.
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps([[1], [4], [2, 3]]))  # fold 0 validates on actor 4, who has no clip
    with pytest.raises(ValueError, match="no usable validation clips.*--validation none"):
        train.run(_train_args(dataset, tmp_path, "--folds", str(folds), "--epochs", "1"))

    # --prepare-only builds the cache of every clip and trains nothing.
    (summary,) = train.run(_train_args(dataset, tmp_path, "--prepare-only", "--workers", "2",
                                       "--output-dir", str(tmp_path / "prepared")))
    assert summary["clips"] == summary["usable"] == 24 and not summary["failed"]
    assert not (tmp_path / "prepared").exists()
    assert not (tmp_path / "run" / ".fer-train.lock").exists()  # the refused run released its lock


def test_drop_grads_freezing_holds_frozen_backbones_in_eval(cached, processor, tmp_path):
    """Under DDP the frozen parts stay trainable (gradients dropped), so the trainer fixes their BatchNorm statistics
    and dropout itself: a training forward while frozen leaves the FastConformer's running stats untouched."""
    from transformers import TrainerState, TrainingArguments

    model = FERForEmotionClassification(FERConfig.from_preset("tiny", modality_dropout=0.0))
    freeze = BackboneFreezeCallback(epochs=1, mode="drop_grads")
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = FERTrainer(model=model, args=args, callbacks=[freeze])
    batch = FERCollator(processor)([CachedClipDataset(cached.entries)[i] for i in range(4)])
    norms = [m for m in model.audio_encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms
    before = [m.running_mean.clone() for m in norms]
    trainer.state = TrainerState(epoch=0.0)
    model.train()
    trainer.compute_loss(model, batch)
    assert all(not m.training for m in model.audio_encoder.modules()) and model.classifier.training
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))
    trainer.state.epoch = 1.0  # unfrozen: the statistics move again
    model.train()
    trainer.compute_loss(model, batch)
    assert any(not torch.equal(m.running_mean, b) for m, b in zip(norms, before))
