"""Issue 22 "Hardening", model and command side: unusable weights are refused on load, resume and export; JSON never
carries NaN; sizes that decide memory have upper bounds; each bad input of the public API gets a typed error of the
package in words; a command that cannot run says so in one line with its own exit status (CPU, tiny preset)."""

import errno
import json
import logging
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from media_factory import make_clip, make_text_file  # noqa: E402

from fer_hf import FERConfig, FERForEmotionClassification  # noqa: E402
from fer_hf.errors_fer import (  # noqa: E402
    CorruptCheckpointError,
    FERError,
    FERInputError,
    MediaDecodeError,
    UnsupportedSampleRateError,
)
from fer_hf.processing_fer import FERProcessor  # noqa: E402
from fer_hf.results_fer import FERClipResult, outputs_to_numpy  # noqa: E402

ANSI = "\x1b["


def poisoned(model):
    """A copy of `model` with one NaN in the classifier's weights (what a diverged training run leaves)."""
    bad = FERForEmotionClassification(model.config)
    bad.load_state_dict(model.state_dict())
    with torch.no_grad():
        next(bad.classifier.parameters()).view(-1)[0] = float("nan")
    return bad


@pytest.fixture(scope="module")
def nan_folder(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("nan_model")
    poisoned(tiny_model).save_pretrained(folder)
    return folder


def readable(message: str) -> None:
    """A message for a person: one line, no colour codes, no raw error numbers."""
    assert "\n" not in message and ANSI not in message and "Errno" not in message, message


# ---------------------------------------------------------------------------------------------- weights
def test_nan_weights_are_refused_on_load(nan_folder):
    with pytest.raises(CorruptCheckpointError, match="NaN or infinite values") as info:
        FERForEmotionClassification.from_pretrained(nan_folder)
    assert "diverged" in str(info.value) and "classifier" in str(info.value)
    readable(str(info.value))


def test_truncated_or_garbage_safetensors_is_refused_on_load(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match="cannot be read.*truncated") as info:
        FERForEmotionClassification.from_pretrained(tmp_path)
    readable(str(info.value))
    weights.write_bytes(b"not a weights file at all" * 8)
    with pytest.raises(CorruptCheckpointError, match="cannot be read"):
        FERForEmotionClassification.from_pretrained(tmp_path)


def test_a_pickle_only_folder_is_refused_without_torchs_unsafe_advice(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save({"state": tiny_model.state_dict(), "extra": logging.Formatter()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CorruptCheckpointError, match="pickle file") as info:
        FERForEmotionClassification.from_pretrained(tmp_path)
    readable(str(info.value))
    assert "weights_only" not in str(info.value) and "safetensors" in str(info.value)


def test_stage_resume_refuses_nan_in_the_kept_best_epoch(tmp_path):
    from fer_hf.tools.stages import StageRun

    run = StageRun(tmp_path, "face", threads=1, report_to="none")
    run.save_checkpoint({"model": {"w": torch.ones(2)}, "best": {"w": torch.tensor([float("inf"), 0.0])},
                         "epoch": 1})
    run.close()
    resumed = StageRun(tmp_path, "face", threads=1, resume=True, report_to="none")
    try:
        with pytest.raises(CorruptCheckpointError, match="non-finite weights .*best.*--overwrite"):
            resumed.load_checkpoint()
    finally:
        resumed.close()


def test_fer_train_resume_refuses_a_nan_or_corrupt_checkpoint(tmp_path, nan_folder):
    from fer_hf.tools.train import check_resume_point

    checkpoint = tmp_path / "checkpoint-12"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes((nan_folder / "model.safetensors").read_bytes())
    with pytest.raises(CorruptCheckpointError, match="NaN or infinite.*--overwrite-output-dir") as info:
        check_resume_point(checkpoint)
    readable(str(info.value))
    (checkpoint / "model.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(CorruptCheckpointError, match="cannot be read.*checkpoint before it"):
        check_resume_point(checkpoint)


def test_fusion_stage_refuses_nan_parts_of_an_earlier_stage(nan_folder, tiny_model):
    from fer_hf.tools.train_fusion import load_parts

    with pytest.raises(CorruptCheckpointError, match="NaN or infinite"):
        load_parts(FERForEmotionClassification(tiny_model.config), nan_folder, ("classifier.",))


def test_export_refuses_nan_weights_from_a_folder_and_from_memory(tmp_path, nan_folder, tiny_model, tiny_processor,
                                                                   caplog):
    from fer_hf.tools.export import main, write_export_folder

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(nan_folder), "--output-dir", str(tmp_path / "out"), "--allow-untrained"])
    assert exit_info.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "NaN or infinite" in errors[0]
    with pytest.raises(CorruptCheckpointError, match="Nothing was exported"):
        write_export_folder(poisoned(tiny_model), tiny_processor, tmp_path / "out2", "user/model")
    assert not (tmp_path / "out2").exists()


# ---------------------------------------------------------------------------------------------- JSON
def test_to_json_writes_null_for_nan_and_infinity():
    labels = ["a", "b"]
    result = FERClipResult("x.mp4", float("inf"), labels, {"a": float("nan"), "b": 1.0}, None, False, 0.1)
    text = result.to_json()
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    assert data["probabilities"]["a"] is None and data["duration_s"] is None and data["probabilities"]["b"] == 1.0


def test_nan_logits_are_refused_not_turned_into_nan_probabilities():
    with pytest.raises(FERError, match="NaN or infinite scores"):
        outputs_to_numpy({"logits": torch.tensor([[0.1, float("nan")]])})


# ---------------------------------------------------------------------------------------------- size limits
@pytest.mark.parametrize("overrides, name", [
    (dict(num_frames=10**9), "num_frames"),
    (dict(vision_config=dict(image_size=65536, patch_size=8)), "vision_config.image_size"),
    (dict(sampling_rate=10**7), "sampling_rate"),
    (dict(num_segments=10**6), "num_segments"),
    (dict(classifier_hidden_sizes=[32, 10**8]), "classifier_hidden_sizes"),
    (dict(lfm2_config=dict(hidden_size=2**20)), "lfm2_config.hidden_size"),
])
def test_config_sizes_that_decide_memory_have_upper_bounds(overrides, name):
    with pytest.raises(ValueError, match=rf"`{name}`=.* above the limit"):
        FERConfig.from_preset("tiny", **overrides)


@pytest.mark.parametrize("overrides, match", [
    (dict(max_duration_s=1e12), "max_duration_s"),
    (dict(window_seconds=1e9), "window_seconds"),
    (dict(max_windows=10**9), "max_windows"),
    (dict(num_frames=10**9), "num_frames"),
])
def test_processor_sizes_have_upper_bounds(tiny_config, overrides, match):
    with pytest.raises(ValueError, match=match):
        FERProcessor.from_model_config(tiny_config, **overrides)


# ---------------------------------------------------------------------------------------------- bad inputs
SR = 16000
BAD_INPUTS = {
    "0x0 frames": ({"frames": np.zeros((8, 0, 0, 3), np.uint8), "fps": 8.0}, FERInputError, "at least one pixel"),
    "frames of different sizes": ({"frames": [np.zeros((32, 32, 3), np.uint8), np.zeros((40, 30, 3), np.uint8)],
                                   "fps": 2.0}, FERInputError, "same size"),
    "NaN sampling_rate": ({"audio": np.zeros(SR, np.float32), "sampling_rate": float("nan")},
                          UnsupportedSampleRateError, "sampling_rate"),
    "NaN start_s": ({"audio": np.zeros(SR, np.float32), "sampling_rate": SR, "start_s": float("nan")},
                    FERInputError, "start_s"),
    "complex audio": ({"audio": np.ones(SR, np.complex64), "sampling_rate": SR}, FERInputError, "real-valued"),
    "NaN frame times": ({"frames": np.zeros((2, 32, 32, 3), np.uint8), "frame_times_s": [0.0, float("nan")]},
                        FERInputError, "frame_times_s"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_processor_inputs_get_a_typed_error_in_words(tiny_processor, case):
    media, error, match = BAD_INPUTS[case]
    with pytest.raises(error, match=match) as info:
        tiny_processor(media)
    readable(str(info.value))


def test_model_call_with_zero_rows_is_refused(tiny_model, tiny_config):
    size = tiny_config.vision_config.image_size
    for inputs in (dict(input_features=torch.zeros(0, 301, 80)),
                   dict(pixel_values_videos=torch.zeros(0, tiny_config.num_frames, 3, size, size))):
        with pytest.raises(FERInputError, match="empty"):
            tiny_model(**inputs)


def test_model_call_with_4_of_8_frames_is_refused(tiny_model, tiny_config):
    size, t = tiny_config.vision_config.image_size, tiny_config.num_frames
    with pytest.raises(FERInputError, match=f"4 frames per window but this model takes {t}"):
        tiny_model(pixel_values_videos=torch.zeros(1, 4, 3, size, size))
    with pytest.raises(FERInputError, match="4 frames per window"):
        tiny_model(frame_embeddings=torch.zeros(1, 4, tiny_config.vision_config.hidden_size))
    with pytest.raises(FERInputError, match="video_frame_mask"):  # 8 frames, a mask of 4: was an IndexError
        tiny_model(pixel_values_videos=torch.zeros(1, t, 3, size, size),
                   video_frame_mask=torch.ones(1, 4, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- media and commands
def test_decoder_jargon_becomes_a_plain_message(tmp_path):
    from fer_hf.media_fer import open_media

    with pytest.raises(MediaDecodeError, match="the decoder says: invalid data found") as info:
        open_media(make_text_file(tmp_path / "notes.mp4"))
    readable(str(info.value))
    assert str(tmp_path) not in str(info.value)


def test_refusals_as_one_line_turns_a_full_disk_into_exit_2(caplog):
    from fer_hf.tools.cli import EXIT_REFUSED, refusals_as_one_line

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as info:
        with refusals_as_one_line():
            raise OSError(errno.ENOSPC, "No space left on device", "/out/model.safetensors")
    assert info.value.code == EXIT_REFUSED == 2
    assert "the disk is full" in caplog.text and "Errno" not in caplog.text
    with pytest.raises(OSError), refusals_as_one_line():  # any other OSError is a bug: its trace is kept
        raise OSError(errno.EBADF, "Bad file descriptor")


def test_fer_annotate_on_a_full_disk_says_so_in_one_line_and_leaves_no_tmp(tmp_path, monkeypatch, capsys, caplog):
    import pyarrow.parquet as pq

    from fer_hf.tools.annotate import EXIT_COULD_NOT_RUN, EXIT_FAILURES, main
    from fer_hf.tools.annotate import store as annotate_store

    clip = make_clip(tmp_path / "clip.mp4", seconds=1.0, video=False)["path"]
    real = pq.write_table

    def full_disk(table, where, *args, **kwargs):
        real(table, where, *args, **kwargs)  # a partial file is on disk when the device fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    out = tmp_path / "out" / "results.parquet"
    with caplog.at_level(logging.ERROR):
        status = main([clip, "--preset", "tiny", "--output", str(out), "--workers", "0", "--no-progress"])
    assert status == EXIT_COULD_NOT_RUN == 2 and EXIT_FAILURES == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "the disk is full" in errors[0] and "rerun the same command" in errors[0]
    assert "Traceback" not in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.tmp"))
    assert issubclass(annotate_store.OutputWriteError, FERError)
