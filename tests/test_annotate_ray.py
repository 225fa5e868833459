"""`fer-annotate --ray`: on a local Ray started here (2 CPUs) the tables equal the local path's (streamed chunks,
a row per person with `--people all`); it resumes a run."""

import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

ray = pytest.importorskip("ray")

sys.path.insert(0, os.path.dirname(__file__))
from frontend_media import write_people_clip  # noqa: E402
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
    n = lambda v: -1 if v is None else v  # noqa: E731
    return sorted(pq.read_table(path).to_pylist(),
                  key=lambda r: (r["source"], n(r["window_index"]), not r["is_speaker"], n(r["person_id"])))


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
    write_people_clip(clips / "two.mp4", seconds=4.5)  # two windows, two people in each
    common = ["--model", str(tmp_path / "model"), "--batch-size", "2", "--people", "all", "--no-progress"]
    assert main([str(clips), "--output", str(tmp_path / "local.parquet"), "--workers", "1", *common]) == 1
    # a first (local) run did part of the corpus, as if it had been stopped; Ray resumes it with the rest
    out = tmp_path / "ray.parquet"
    assert main([str(clips / "face.mp4"), "--output", str(out), "--workers", "0", *common]) == 0
    with caplog.at_level("INFO", logger="fer_hf.tools.annotate"):
        assert main([str(clips), "--output", str(out), "--ray", "--ray-chunks-per-batch", "2", *common]) == 1
    assert "4 file(s): 1 already done, 3 to annotate" in caplog.text
    got, want = _rows(out), _rows(tmp_path / "local.parquet")
    assert len(got) == len(want) == 2 + 1 + 1 + 2 * 2
    two = [r for r in got if r["source"].endswith("two.mp4")]
    assert len({r["person_id"] for r in two}) == 2 and [r["is_speaker"] for r in two] == [True, False] * 2
    for a, b in zip(got, want):
        assert {k: v for k, v in a.items() if k not in PROBS} == {k: v for k, v in b.items() if k not in PROBS}
    np.testing.assert_allclose([[r[c] or 0.0 for c in PROBS] for r in got],
                               [[r[c] or 0.0 for c in PROBS] for r in want], atol=1e-5)
    broken = next(r for r in got if r["status"] == "error")
    assert Path(broken["source"]).name == "broken.mp4" and broken["error_type"] == "MediaDecodeError"
    files = sorted(pq.read_table(tmp_path / "ray.files.parquet").to_pylist(), key=lambda r: r["source"])
    assert [r["status"] for r in files] == ["error", "ok", "ok", "ok"]
    local = sorted(pq.read_table(tmp_path / "local.files.parquet").to_pylist(), key=lambda r: r["source"])
    for a, b in zip(files, local):  # the summaries too (the decode time in `seconds` and the part number apart)
        keep = lambda r: {k: v for k, v in r.items() if k not in PROBS and k != "seconds"}  # noqa: E731
        assert keep(a) == keep(b)
        np.testing.assert_allclose([a[c] or 0.0 for c in PROBS], [b[c] or 0.0 for c in PROBS], atol=1e-5)
