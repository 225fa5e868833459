"""The synthetic RAVDESS-named dataset: valid names, real H.264 + AAC mp4s, a face the detector finds."""

import json

import av
import numpy as np
import pytest

from fer_hf.tools.ravdess import build_index, load_folds, parse_ravdess_name
from fer_hf.tools.synthetic import SyntheticSpec, clip_names, generate, main

SMALL = SyntheticSpec(num_actors=3, clips_per_class=1, seconds=(1.0, 1.3), width=240, height=180, fps=15,
                      num_folds=3)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return root, generate(root, SMALL)


def test_names_are_valid_and_distinct():
    spec = SyntheticSpec(clips_per_class=4)
    names = clip_names(spec, actor=7)
    assert len(names) == len({n for n, _ in names}) == 32
    for name, cls in names:
        clip = parse_ravdess_name(f"Actor_07/{name}.mp4")
        assert clip.label == cls and clip.actor == 7 and clip.modality == 1 and clip.vocal_channel == 1
    with pytest.raises(ValueError, match="clips_per_class"):
        clip_names(SyntheticSpec(clips_per_class=5), 1)


def test_generated_set_indexes_cleanly(small_set):
    root, paths = small_set
    assert len(paths) == 3 * 8
    index = build_index(root)
    assert len(index) == 24 and not index.malformed and not index.unreadable
    assert index.actors == [1, 2, 3] and set(index.label_counts().values()) == {3}
    assert load_folds(root / "folds.json") == ((1,), (2,), (3,))
    assert json.loads((root / "folds.json").read_text()) == {"folds": [[1], [2], [3]]}
    # The marker names the set as synthetic everywhere downstream (index, results, provenance, card).
    marker = json.loads((root / "SYNTHETIC_DATASET.json").read_text())
    assert marker["dataset"] == "synthetic" and marker["spec"]["num_actors"] == 3
    assert index.synthetic and index.dataset_name == "synthetic (RAVDESS-named)"


def test_clips_are_real_h264_aac_mp4(small_set):
    _, paths = small_set
    with av.open(str(paths[0])) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert (video.codec_context.width, video.codec_context.height) == (240, 180)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert 15 <= len(frames) <= 20 and frames[0].dtype == np.uint8


def test_processor_finds_face_and_audio(small_set):
    from fer_hf import FERConfig, FERProcessor

    _, paths = small_set
    # generated tones are not speech; speech detection has its own tests (test_frontend_*)
    processor = FERProcessor.from_model_config(FERConfig.from_preset("tiny"), min_speech_fraction=0.0)
    batch = processor(videos=[str(p) for p in paths[:8]], return_tensors="np")
    assert batch["video_mask"].all() and batch["audio_mask"].all()
    # The class cue is visible: mean face colour differs between classes (one clip per class here).
    colours = batch["pixel_values_videos"].mean(axis=(1, 3, 4))  # (8, 3)
    assert np.linalg.norm(colours[:, None] - colours[None], axis=-1)[np.triu_indices(8, 1)].min() > 0.02


def test_generation_is_deterministic_and_resumable(tmp_path, small_set):
    root, paths = small_set
    spec = SyntheticSpec(num_actors=1, clips_per_class=1, seconds=(1.0, 1.3), width=240, height=180, fps=15,
                         num_folds=1)
    again = generate(tmp_path, spec)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths[:8]]
    before = {p: p.stat().st_mtime_ns for p in again}
    generate(tmp_path, spec)
    assert {p: p.stat().st_mtime_ns for p in again} == before


def test_cli(tmp_path):
    main(["--out", str(tmp_path), "--actors", "2", "--clips-per-class", "1", "--folds", "2", "--width", "160",
          "--height", "120", "--min-seconds", "0.5", "--max-seconds", "0.6", "--fps", "10"])
    assert len(list(tmp_path.glob("Actor_0[12]/*.mp4"))) == 16
    with pytest.raises(ValueError, match="num_folds"):
        generate(tmp_path, SyntheticSpec(num_actors=2, num_folds=3))
