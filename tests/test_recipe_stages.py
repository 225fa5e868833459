"""The staged compact recipe end to end on tiny generated data (CI has no datasets): face pretraining on a
FER2013-shaped folder, voice pretraining on RAVDESS-named synthetic wavs, fusion on their pseudo-pairs; resume; the
guards (collapse, chance, ties, non-finite checkpoints); the trained-modalities rule at inference."""

import json
import os

import numpy as np
import pytest
import torch

from fer_hf.configuration_fer import FERConfig
from fer_hf.errors_fer import FERError, NoUsableModalityError
from fer_hf.modeling_fer import FERForEmotionClassification
from fer_hf.provenance_fer import make_training_provenance
from fer_hf.tools import pretrain_face, pretrain_voice, train_fusion
from fer_hf.tools.compact_card import face_runs, face_totals
from fer_hf.tools.face_data import FER_LABELS, index_fer2013
from fer_hf.tools.stages import collapse_verdict, select_best


def _fer_folder(root):
    """7 classes x (3 Training, 2 PublicTest, 2 PrivateTest) grey 48x48 faces cut from the astronaut photo, plus
    an augmented copy that the index must skip."""
    import cv2
    from skimage import data

    face = cv2.cvtColor(data.astronaut()[30:230, 130:330], cv2.COLOR_RGB2GRAY)
    rng = np.random.default_rng(0)
    counter = 0
    for split, folder, count in (("Training", "train", 3), ("PublicTest", "validation", 2),
                                 ("PrivateTest", "test", 2)):
        for label in FER_LABELS:
            os.makedirs(root / folder / label, exist_ok=True)
            for _ in range(count):
                counter += 1
                dx, dy = rng.integers(-10, 11, 2)
                img = cv2.resize(np.roll(face, (dy, dx), (0, 1)), (48, 48), interpolation=cv2.INTER_AREA)
                img = np.clip(img * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
                cv2.imwrite(str(root / folder / label / f"{split}_{counter:05d}.jpg"), img)
    cv2.imwrite(str(root / "train" / "happy" / "Training_00001.jpg0.jpg"), img)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from fer_hf.tools.synthetic import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("recipe")
    fer = _fer_folder(root / "fer")
    voices = root / "ravdess"
    generate(voices, SyntheticSpec(num_actors=3, clips_per_class=1, seconds=(1.0, 1.4), num_folds=3,
                                   modalities=(3,)))
    folds = root / "folds.json"
    folds.write_text(json.dumps([[1], [2], [3]]))
    os.environ["FER_CACHE_DIR"] = str(root / "cache")
    return {"root": root, "fer": fer, "voices": voices, "folds": folds}


def test_fer_index_reads_the_original_splits_and_skips_augmented_copies(data):
    index = index_fer2013(data["fer"])
    assert {k: len(v) for k, v in index.items()} == {"Training": 21, "PublicTest": 14, "PrivateTest": 14}
    assert not any(path.endswith(".jpg0.jpg") for path, _ in index["Training"])


def test_the_three_stages_run_end_to_end_and_resume(data):
    root = data["root"]
    face_dir, voice_dir, fusion_dir = root / "face", root / "voice", root / "fusion"
    common = ["--preset", "tiny", "--threads", "1", "--report-to", "none"]
    face_args = ["--data-root", str(data["fer"]), "--output-dir", str(face_dir), "--epochs", "2",
                 "--batch-size", "8", "--workers", "1", *common]
    face = pretrain_face.run(pretrain_face.parse_args(face_args))
    assert face["test"]["num_samples"] == 14 and len(face["history"]) == 2
    for name in ("train.log", "results.json", "checkpoint.pt", "confusion_privatetest.png"):
        assert (face_dir / name).is_file(), name
    assert (face_dir / "final" / "model.safetensors").is_file()
    # resume: the finished run is taken up again from its checkpoint and trains nothing more
    again = pretrain_face.run(pretrain_face.parse_args([*face_args, "--resume"]))
    assert again["history"] == face["history"]
    with pytest.raises(FERError, match="--resume"):  # an existing run is never silently overwritten
        pretrain_face.run(pretrain_face.parse_args(face_args))
    # a warm restart continues from the finished run's weights; its time and epochs stay in the totals
    more_args = ["--data-root", str(data["fer"]), "--output-dir", str(root / "face_more"), "--crops-dir",
                 str(face_dir / "crops"), "--init-from", str(face_dir), "--epochs", "1", "--batch-size", "8",
                 "--workers", "1", *common]
    more = pretrain_face.run(pretrain_face.parse_args(more_args))
    assert more["init_from"]["epochs"] == 2 and more["init_from"]["test"]["accuracy"] == face["test"]["accuracy"]
    assert face_totals(more) == (3, pytest.approx(more["train_seconds"] + more["prepare_seconds"]
                                                  + face["train_seconds"]))
    assert face_runs(more) == 2
    with pytest.raises(FERError, match="not a finished face run"):
        pretrain_face.run(pretrain_face.parse_args([
            "--data-root", str(data["fer"]), "--output-dir", str(root / "face_bad"), "--crops-dir",
            str(face_dir / "crops"), "--init-from", str(root), "--epochs", "1", *common]))

    voice = pretrain_voice.run(pretrain_voice.parse_args([
        "--data-root", str(data["voices"]), "--output-dir", str(voice_dir), "--folds-file", str(data["folds"]),
        "--folds", "0", "--release", "--epochs", "2", "--batch-size", "4", *common]))
    assert voice["synthetic"] is True
    assert voice["cross_validation"]["folds"][0]["test_actors"] == [1]
    assert (voice_dir / "release" / "final" / "model.safetensors").is_file()
    assert (voice_dir / "fold0" / "runs").is_dir() is False  # --report-to none
    # a warm restart: each split starts from the same split of the earlier run; its time stays in the totals
    more_voice = pretrain_voice.run(pretrain_voice.parse_args([
        "--data-root", str(data["voices"]), "--output-dir", str(root / "voice_more"), "--folds-file",
        str(data["folds"]), "--folds", "0", "--release", "--epochs", "1", "--batch-size", "4", "--init-from",
        str(voice_dir), *common]))
    fold0 = json.loads((root / "voice_more" / "fold0" / "results.json").read_text())
    assert fold0["init_from"]["epochs"] == 2 and fold0["init_from"]["folder"].endswith("fold0")
    assert more_voice["cross_validation"]["train_seconds"] == pytest.approx(
        fold0["train_seconds"] + voice["cross_validation"]["train_seconds"], abs=0.2)

    fusion = train_fusion.run(train_fusion.parse_args([
        "--face-from", str(face_dir / "final"), "--voice-from", str(voice_dir / "release" / "final"),
        "--face-crops", str(face_dir / "crops"), "--data-root", str(data["voices"]), "--output-dir",
        str(fusion_dir), "--folds-file", str(data["folds"]), "--epochs", "1", "--batch-size", "8",
        "--face-results", str(root / "face_more" / "results.json"),
        "--voice-results", str(voice_dir / "results.json"), "--threads", "1", "--report-to", "none"]))
    assert fusion["face_only_privatetest"]["seven_way"]["num_samples"] == 14
    model = FERForEmotionClassification.from_pretrained(fusion_dir / "final")
    record = model.config.provenance
    # the card counts the face runs' epochs together (2 + the warm restart's 1)
    assert record["training"]["sources"]["vision"].endswith("3 epochs (in 2 runs)"), record["training"]["sources"]
    assert model.config.is_trained and model.config.trained_on_synthetic_data
    assert record["training"]["modalities"] == ["audio", "video"]
    assert set(record["training"]["metrics"]) >= {"face_accuracy", "face_uar", "voice_accuracy", "voice_uar"}
    # the frozen parts are the earlier stages' weights, unchanged
    face_model = FERForEmotionClassification.from_pretrained(face_dir / "final")
    voice_model = FERForEmotionClassification.from_pretrained(voice_dir / "release" / "final")
    assert torch.equal(model.vision_encoder.embeddings.patch_embedding.weight,
                       face_model.vision_encoder.embeddings.patch_embedding.weight)
    assert torch.equal(model.audio_encoder.subsampling.layers[0].weight,
                       voice_model.audio_encoder.subsampling.layers[0].weight)


def test_voice_folds_in_worker_processes_match_the_sequential_run(data, tmp_path):
    """`--workers 2` trains two folds at once (spawned processes): the same per-fold results as one after the
    other, each fold in its own folder; a finished fold is read back, not trained again."""
    common = ["--data-root", str(data["voices"]), "--folds-file", str(data["folds"]), "--folds", "0,1",
              "--epochs", "2", "--batch-size", "4", "--preset", "tiny", "--threads", "1", "--report-to", "none"]
    one = pretrain_voice.run(pretrain_voice.parse_args([*common, "--output-dir", str(tmp_path / "one")]))
    two = pretrain_voice.run(pretrain_voice.parse_args([*common, "--output-dir", str(tmp_path / "two"),
                                                        "--workers", "2"]))
    for a, b in zip(one["cross_validation"]["folds"], two["cross_validation"]["folds"], strict=True):
        assert (a["fold"], a["test_actors"], a["best_epoch"]) == (b["fold"], b["test_actors"], b["best_epoch"])
        assert a["accuracy"] == pytest.approx(b["accuracy"]) and a["uar"] == pytest.approx(b["uar"])
    assert (tmp_path / "two" / "fold1" / "train.log").is_file()
    again = pretrain_voice.run(pretrain_voice.parse_args([*common, "--output-dir", str(tmp_path / "two"),
                                                          "--workers", "2"]))
    assert again["cross_validation"]["folds"] == two["cross_validation"]["folds"]
    with pytest.raises(FERError, match="--workers"):
        pretrain_voice.run(pretrain_voice.parse_args([*common, "--output-dir", str(tmp_path / "bad"),
                                                      "--workers", "0"]))


def test_a_checkpoint_with_non_finite_weights_is_refused_on_resume(data, tmp_path):
    from fer_hf.tools.stages import StageRun

    run = StageRun(tmp_path, "face", threads=1, report_to="none")
    run.save_checkpoint({"model": {"w": torch.tensor([1.0, float("nan")])}, "epoch": 1})
    run.close()
    resumed = StageRun(tmp_path, "face", threads=1, resume=True, report_to="none")
    try:
        with pytest.raises(FERError, match="non-finite"):
            resumed.load_checkpoint()
    finally:
        resumed.close()


def test_collapse_and_chance_are_named():
    truth = np.repeat(np.arange(8), 10)
    assert "collapsed" in collapse_verdict(truth, np.full(80, 3), 8)
    assert "chance" in collapse_verdict(truth, (truth + 1) % 8, 8)  # every class predicted, none right
    assert collapse_verdict(truth, truth, 8) is None


def test_select_best_refuses_to_choose_among_ties():
    tied = [{"val_uar": 0.125, "val_loss": 2.07}] * 3
    assert select_best(tied) is None
    assert select_best([{"val_uar": 0.3, "val_loss": 1.0}, {"val_uar": 0.4, "val_loss": 1.2}]) == 1
    ties_at_best = [{"val_uar": 0.3, "val_loss": 1.2}, {"val_uar": 0.4, "val_loss": 1.0},
                    {"val_uar": 0.4, "val_loss": 0.9}]
    assert select_best(ties_at_best) == 2  # the lower validation loss


def test_a_branch_that_was_never_trained_is_not_used():
    config = FERConfig.from_preset("tiny")
    config.provenance = make_training_provenance(dataset="RAVDESS", synthetic=False, modality_layout="audio-only",
                                                 mode="release", epochs=1)
    assert config.trained_modalities == ("audio",)
    torch.manual_seed(0)
    model = FERForEmotionClassification(config).eval()
    audio = torch.randn(1, config.num_mel_frames(), 80)
    video = torch.randn(1, config.num_frames, 3, 32, 32)
    with torch.no_grad():
        out = model(input_features=audio, pixel_values_videos=video)
    assert out.modalities_used.tolist() == [[True, False]]
    with pytest.raises(NoUsableModalityError, match="trained on voices only"):
        model(pixel_values_videos=video)
    untrained = FERForEmotionClassification(FERConfig.from_preset("tiny")).eval()
    assert untrained.config.trained_modalities is None
    with torch.no_grad():
        assert untrained(input_features=audio, pixel_values_videos=video).modalities_used.tolist() == [[True, True]]


def test_a_face_run_continues_an_exported_model_with_the_blendshape_teacher(data, tmp_path):
    """`--init-from` an exported model (fresh head, its recorded runs counted) and `--teacher`: the blendshape head
    trains beside the class head from the cached scores; a missing teacher is refused in a person's words."""
    from fer_hf.tools.compact_card import read_voice_results
    from fer_hf.tools.face_teacher import BLENDSHAPE_NAMES, mirror_permutation

    common = ["--preset", "tiny", "--threads", "1", "--report-to", "none", "--batch-size", "8", "--workers", "1"]
    first = pretrain_face.run(pretrain_face.parse_args([
        "--data-root", str(data["fer"]), "--output-dir", str(tmp_path / "face"), "--epochs", "1", *common]))
    exported = tmp_path / "exported"
    FERForEmotionClassification.from_pretrained(tmp_path / "face" / "final").save_pretrained(exported)
    cv = {"accuracy": {"mean": 0.5, "std": 0.1}, "uar": {"mean": 0.5, "std": 0.1}, "folds": [{}], "train_seconds": 60}
    (exported / "eval_results.json").write_text(json.dumps({
        "face_stage": {"accuracy": 0.45, "uar": 0.4, "epochs": 30, "seconds": 900.0, "runs": 3, "best_epoch": 9},
        "voice_stage": cv, "seconds": {"voice": 80}}))
    crops = tmp_path / "face" / "crops"
    with pytest.raises(FERError, match="Face Landmarker"):  # no cached scores and no teacher model
        pretrain_face.run(pretrain_face.parse_args([
            "--data-root", str(data["fer"]), "--output-dir", str(tmp_path / "no_teacher"), "--crops-dir",
            str(crops), "--teacher", str(tmp_path / "missing.task"), "--epochs", "1", *common]))
    (crops / "blendshapes").mkdir()
    scores = np.random.default_rng(0).uniform(0, 1, (first["crops"]["Training"]["images"], len(BLENDSHAPE_NAMES)))
    np.save(crops / "blendshapes" / "Training.npy", scores.astype(np.float32))
    more = pretrain_face.run(pretrain_face.parse_args([
        "--data-root", str(data["fer"]), "--output-dir", str(tmp_path / "more"), "--crops-dir", str(crops),
        "--init-from", str(exported), "--teacher", str(tmp_path / "missing.task"), "--teacher-weight", "0.5",
        "--epochs", "2", *common]))
    assert more["teacher"]["weight"] == 0.5 and all(np.isfinite(h["teacher_loss"]) for h in more["history"])
    assert more["init_from"]["runs"] == 3 and more["init_from"]["test"]["accuracy"] == 0.45
    assert face_runs(more) == 4 and face_totals(more)[0] == 32
    # the exported model's per-frame path is where the run started
    start = FERForEmotionClassification.from_pretrained(exported)
    trained = FERForEmotionClassification.from_pretrained(tmp_path / "more" / "final")
    assert not torch.equal(start.vision_encoder.embeddings.patch_embedding.weight,
                           trained.vision_encoder.embeddings.patch_embedding.weight)
    # mirrored faces: Left and Right scores trade places, the rest stay
    mirror = mirror_permutation()
    assert (mirror[mirror] == np.arange(len(BLENDSHAPE_NAMES))).all()
    names = np.array(BLENDSHAPE_NAMES)
    assert names[mirror][list(BLENDSHAPE_NAMES).index("mouthSmileLeft")] == "mouthSmileRight"
    assert names[mirror][list(BLENDSHAPE_NAMES).index("jawOpen")] == "jawOpen"
    # a fusion that reuses the exported model's audio encoder reads its recorded voice stage
    voice = read_voice_results(exported)
    assert voice["cross_validation"]["uar"]["mean"] == 0.5 and voice["release"]["train_seconds"] == 20
    # a fused model built on this face run says, in its training record and summary, that a teacher was used
    from types import SimpleNamespace

    from fer_hf.tools.compact_card import recipe_summary, teacher_runs
    from fer_hf.tools.ravdess import FoldSplit

    face7 = {"accuracy": 0.4, "uar": 0.3, "macro_f1": 0.3}
    record = train_fusion.recipe_provenance(
        SimpleNamespace(face_results=str(tmp_path / "more" / "results.json"), voice_results=str(exported), epochs=1),
        FoldSplit(fold=None, train=(1, 2), val=(), test=()), {"face_only_privatetest": {"seven_way": face7}})
    assert "the last run also learned MediaPipe face blendshapes" in record["training"]["sources"]["vision"]
    assert "light augmentation" not in record["training"]["sources"]["vision"]  # that run used the standard one
    (tmp_path / "fusion").mkdir()
    (tmp_path / "fusion" / "results.json").write_text(json.dumps(
        {"face_only_privatetest": {"seven_way": face7}, "train_seconds": 10}))
    summary = recipe_summary(tmp_path / "more", exported, tmp_path / "fusion")
    assert summary["face_stage"]["teacher"]["weight"] == 0.5 and summary["face_stage"]["runs"] == 4
    assert summary["face_stage"]["teacher_runs"] == 1
    # teacher runs are counted along the --init-from chain, an exported model's own count included
    chain = {"teacher": {"weight": 0.5}, "init_from": {"teacher": {"weight": 0.5}, "init_from": {"teacher_runs": 2}}}
    assert teacher_runs(chain) == 4 and teacher_runs({"init_from": {"teacher_runs": 0}}) == 0
    later = pretrain_face.run(pretrain_face.parse_args([  # a run without the teacher, continuing one with it
        "--data-root", str(data["fer"]), "--output-dir", str(tmp_path / "later"), "--crops-dir", str(crops),
        "--init-from", str(tmp_path / "more"), "--epochs", "1", *common]))
    assert later["init_from"]["teacher"]["weight"] == 0.5 and teacher_runs(later) == 1 and face_runs(later) == 5


def test_light_face_augmentation_moves_faces_less_and_is_recorded(data, tmp_path):
    """`--augment light` (flip, small shift, mild photometric change) keeps an image much closer to itself than the
    standard ranges do, flips it as often, and the run records which augmentation trained it."""
    from fer_hf.tools.pretrain_face import FACE_AUGMENTATIONS, augment

    grid = 8
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 48), indexing="ij")
    grey = (0.5 + 0.4 * torch.sin(6 * xx + 3 * yy)).expand(256, 1, 48, 48).clone()
    roi = torch.rand(256, grid * grid)
    change, flips = {}, {}
    for name, policy in FACE_AUGMENTATIONS.items():
        out, moved_roi, flipped = augment(grey.clone(), roi, grid, torch.Generator().manual_seed(0), True, policy)
        assert out.shape == grey.shape and moved_roi.shape == roi.shape and torch.isfinite(out).all()
        unflipped = torch.where(flipped[:, None, None, None], out.flip(-1), out)
        change[name], flips[name] = float((unflipped - grey).abs().mean()), float(flipped.float().mean())
    assert change["light"] < 0.5 * change["standard"]
    assert 0.35 < flips["light"] < 0.65 and 0.35 < flips["standard"] < 0.65

    run = pretrain_face.run(pretrain_face.parse_args([
        "--data-root", str(data["fer"]), "--output-dir", str(tmp_path / "light"), "--augment", "light",
        "--label-smoothing", "0", "--epochs", "1", "--preset", "tiny", "--threads", "1", "--report-to", "none",
        "--batch-size", "8", "--workers", "1"]))
    assert run["args"]["augment"] == "light" and len(run["history"]) == 1
    # a fused model built on it says so in its training record (and so in its card)
    from types import SimpleNamespace

    from fer_hf.tools.ravdess import FoldSplit

    face7 = {"face_only_privatetest": {"seven_way": {"accuracy": 0.4, "uar": 0.3, "macro_f1": 0.3}}}
    record = train_fusion.recipe_provenance(
        SimpleNamespace(face_results=str(tmp_path / "light" / "results.json"), voice_results=None, epochs=1),
        FoldSplit(fold=None, train=(1, 2), val=(), test=()), face7)
    assert "trained with light augmentation" in record["training"]["sources"]["vision"]
    # a single run with the teacher is "it", not "the last run"
    taught = json.loads((tmp_path / "light" / "results.json").read_text()) | {
        "teacher": {"kind": "MediaPipe face blendshapes (52)", "weight": 0.5}}
    (tmp_path / "taught.json").write_text(json.dumps(taught))
    record = train_fusion.recipe_provenance(
        SimpleNamespace(face_results=str(tmp_path / "taught.json"), voice_results=None, epochs=1),
        FoldSplit(fold=None, train=(1, 2), val=(), test=()), face7)
    assert "; it also learned MediaPipe face blendshapes" in record["training"]["sources"]["vision"]
    with pytest.raises(SystemExit):  # an unknown augmentation is refused by the command line
        pretrain_face.parse_args(["--data-root", "x", "--output-dir", "y", "--augment", "strong"])
