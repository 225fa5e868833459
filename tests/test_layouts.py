"""Every RAVDESS modality layout on generated files named as RAVDESS names them: 01 audio-video, 02 + 03 pairs
(one partner missing), 03 audio-only, 02 video-only — indexed, cached, batched and trained on."""

import json

import pytest

from fer_hf import FERConfig, FERProcessor
from fer_hf.tools.data import CachedClipDataset, FERCollator, build_cache, read_clip_cache
from fer_hf.tools.ravdess import MODALITY_LAYOUTS, build_index
from fer_hf.tools.synthetic import SyntheticSpec, generate

SPEC = SyntheticSpec(num_actors=3, clips_per_class=1, seconds=(1.0, 1.3), width=240, height=180, fps=15,
                     num_folds=3, modalities=(1, 2, 3))
MISSING_WAV = "Actor_01/03-01-05-01-01-01-01.wav"  # its 02 mp4 has no partner: left out of `paired`


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    generate(root, SPEC)
    (root / MISSING_WAV).unlink()
    return root


@pytest.fixture(scope="module")
def processor():
    # the synthetic voices are gated tones, not speech: speech detection off, as fer-train does for this set
    return FERProcessor.from_model_config(FERConfig.from_preset("tiny"), min_speech_fraction=0.0)


def test_generated_files_are_named_and_formed_as_ravdess(dataset):
    names = sorted(p.name for p in (dataset / "Actor_02").iterdir())
    assert len(names) == 24 and {n[:2] for n in names} == {"01", "02", "03"}
    assert all(n.endswith(".wav") == n.startswith("03") for n in names)
    import av

    with av.open(str(dataset / "Actor_02" / "02-01-03-01-01-01-02.mp4")) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 0
    with av.open(str(dataset / "Actor_02" / "03-01-03-01-01-01-02.wav")) as c:
        assert len(c.streams.video) == 0 and c.streams.audio[0].sample_rate == 48000
    assert json.loads((dataset / "SYNTHETIC_DATASET.json").read_text())["dataset"] == "synthetic"


@pytest.mark.parametrize("layout, count, audio, video", [
    ("audio-video", 24, True, True),
    ("paired", 23, True, True),
    ("audio-only", 23, True, False),
    ("video-only", 24, False, True),
])
def test_each_layout_indexes_caches_and_batches(dataset, processor, tmp_path, layout, count, audio, video):
    index = build_index(dataset, layout=layout)
    assert index.layout == layout and index.synthetic and len(index) == count
    if layout == "paired":
        assert [(p.split("/")[-1], "partner" in r) for p, r in index.unpaired] == [("02-01-05-01-01-01-01.mp4", True)]
        clip = index.clips[0]
        assert clip.modality == 2 and clip.audio_path.endswith(f"03-{clip.recording_id}.wav")
        assert clip.cache_name == f"02+03-{clip.recording_id}"
    else:
        assert not index.unpaired
    clips = index.for_actors([2])[:3]
    report = build_cache(clips, processor, tmp_path / "cache", progress=False)
    assert len(report.entries) == 3 and not report.failed
    row, meta = read_clip_cache(report.entries[0].path)
    assert (row["audio"] is not None, row["video_used"]) == (audio, video)
    if not audio:
        assert row["info"]["audio_reason"] == "no audio stream"
    if not video:
        assert row["info"]["video_reason"] == "no video stream"
    if layout == "paired":  # the voice came from the wav, the face from the mp4
        assert row["info"]["audio_source"] == clips[0].audio_path and row["info"]["pair_duration_gap_s"] < 0.05
    batch = FERCollator(processor)([CachedClipDataset(report.entries)[i] for i in range(3)])
    assert batch["audio_mask"].tolist() == [audio] * 3 and batch["video_mask"].tolist() == [video] * 3


def test_layouts_never_share_cache_files(dataset, processor, tmp_path):
    names = set()
    for layout in MODALITY_LAYOUTS:
        clips = build_index(dataset, layout=layout).for_actors([3])[:1]
        names |= {e.path for e in build_cache(clips, processor, tmp_path, progress=False).entries}
    assert len(names) == 4


def test_training_and_evaluation_record_the_layout(dataset, tmp_path):
    from fer_hf.tools import evaluate, train

    flags = ["--data-root", str(dataset), "--folds", str(dataset / "folds.json"), "--fold", "0", "--preset", "tiny",
             "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "run"), "--batch-size", "4",
             "--epochs", "1", "--report-to", "none", "--no-progress", "--modality", "audio-only", "--save-only-model"]
    info = train.run(train.parse_args(flags))[0]
    (checkpoint,) = (tmp_path / "run" / "fold0").glob("checkpoint-*")  # weights only: no optimizer state
    assert (checkpoint / "model.safetensors").is_file() and not (checkpoint / "optimizer.pt").exists()
    assert info["disk_bytes"]["save_only_model"] and info["disk_bytes"]["last_checkpoint"] > 0
    assert info["modality_layout"] == "audio-only" and info["num_train_clips"] == 8
    assert info["num_test_clips"] == 7  # actor 1 lost one wav
    config = json.loads((tmp_path / "run" / "fold0" / "final" / "config.json").read_text())
    record = config["provenance"]["training"]
    assert record["modality_layout"] == "audio-only" and record["dataset"] == "synthetic" and record["synthetic"]
    assert record["test_actors"] == [1] and record["metrics_scope"] == "this fold's test actors"
    # evaluate takes the layout from the checkpoint's provenance record
    results = evaluate.run(evaluate.parse_args([
        "--data-root", str(dataset), "--folds", str(dataset / "folds.json"), "--fold", "0", "--no-progress",
        "--checkpoint", str(tmp_path / "run" / "fold{fold}" / "final"), "--cache-dir", str(tmp_path / "cache"),
        "--out", str(tmp_path / "results")]))
    assert results["dataset"]["modality_layout"] == "audio-only" and results["dataset"]["modalities"] == [3]
    assert results["folds"][0]["num_clips"] == 7
    assert results["folds"][0]["accuracy"] == pytest.approx(record["metrics"]["accuracy"])
