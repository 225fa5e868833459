"""`fer-annotate --ray`: on a local Ray started here (2 CPUs) the tables equal the local path's; it resumes a run."""

import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

ray = pytest.importorskip("ray")

sys.path.insert(0, os.path.dirname(__file__))
from media_factory import astronaut_face, make_clip, make_text_file  # noqa: E402

from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor  # noqa: E402
from fer_hf.tools.annotate import main  # noqa: E402

PROBS = [f"prob_{label}" for label in FERConfig.from_preset("tiny").id2label.values()]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def _rows(path):
    return sorted(pq.read_table(path).to_pylist(), key=lambda r: (r["source"], r["window_index"] or -1))


@pytest.mark.slow
def test_ray_path_equals_the_local_path_and_resumes(local_ray, tmp_path, caplog):
    torch.manual_seed(5)
    model = FERForEmotionClassification(FERConfig.from_preset("tiny")).eval()
    model.save_pretrained(tmp_path / "model")
    FERProcessor.from_model_config(model.config, min_speech_fraction=0.0).save_pretrained(tmp_path / "model")
    clips = tmp_path / "clips"
    clips.mkdir()
    make_clip(clips / "face.mp4", seconds=4.0, face_image=astronaut_face())
    make_clip(clips / "voice.mp4", seconds=2.0, video=False)
    make_text_file(clips / "broken.mp4")
    common = ["--model", str(tmp_path / "model"), "--batch-size", "2", "--no-progress"]
    assert main([str(clips), "--output", str(tmp_path / "local.parquet"), "--workers", "1", *common]) == 1
    # a first (local) run did part of the corpus, as if it had been stopped; Ray resumes it with the rest
    out = tmp_path / "ray.parquet"
    assert main([str(clips / "face.mp4"), "--output", str(out), "--workers", "0", *common]) == 0
    with caplog.at_level("INFO", logger="fer_hf.tools.annotate"):
        assert main([str(clips), "--output", str(out), "--ray", "--ray-files-per-batch", "2", *common]) == 1
    assert "3 file(s): 1 already done, 2 to annotate" in caplog.text
    got, want = _rows(out), _rows(tmp_path / "local.parquet")
    assert len(got) == len(want) == 2 + 1 + 1
    for a, b in zip(got, want):
        assert {k: v for k, v in a.items() if k not in PROBS} == {k: v for k, v in b.items() if k not in PROBS}
    np.testing.assert_allclose([[r[c] or 0.0 for c in PROBS] for r in got],
                               [[r[c] or 0.0 for c in PROBS] for r in want], atol=1e-5)
    broken = next(r for r in got if r["status"] == "error")
    assert Path(broken["source"]).name == "broken.mp4" and broken["error_type"] == "MediaDecodeError"
    files = pq.read_table(tmp_path / "ray.files.parquet").to_pylist()
    assert sorted(r["status"] for r in files) == ["error", "ok", "ok"]
