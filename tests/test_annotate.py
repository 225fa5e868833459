"""`fer-annotate`: folders / globs / manifests of generated clips (some bad) -> window and summary tables."""

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from frontend_media import write_people_clip  # noqa: E402
from media_factory import astronaut_face, copy_as, make_clip, make_empty_file, make_text_file  # noqa: E402

from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor  # noqa: E402
from fer_hf.errors_fer import FERInputError  # noqa: E402
from fer_hf.pipeline_fer import FEREmotionRecognitionPipeline  # noqa: E402
from fer_hf.results_fer import decide, top_margin  # noqa: E402
from fer_hf.tools.annotate import annotate, build_parser, main  # noqa: E402
from fer_hf.tools.annotate.inputs import discover  # noqa: E402
from fer_hf.tools.annotate.local import plan_threads  # noqa: E402
from fer_hf.tools.annotate.stream import CHUNK_WINDOWS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LABELS = list(FERConfig.from_preset("tiny").id2label.values())
PROBS = [f"prob_{label}" for label in LABELS]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotate")
    torch.manual_seed(3)
    model = FERForEmotionClassification(FERConfig.from_preset("tiny")).eval()
    processor = FERProcessor.from_model_config(model.config, min_speech_fraction=0.0)  # generated tones are not speech
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    clips = root / "clips"
    (clips / "session2").mkdir(parents=True)
    good = {
        "face_tone": make_clip(clips / "face_tone.mp4", seconds=4.0, face_image=astronaut_face())["path"],
        # PCM at the model's rate: a seek decodes the very samples a front-to-back pass does (see the pipeline test)
        "face_pcm": make_clip(clips / "face_pcm.mov", seconds=5.0, face_image=astronaut_face(),
                              audio_codec="pcm_s16le", sample_rate=16000, channels=1)["path"],
        "audio_only": make_clip(clips / "session2" / "audio_only.mp4", seconds=2.5, video=False)["path"],
        "busy_face_silent": make_clip(clips / "session2" / "busy.webm", seconds=3.0, audio="silence",
                                      background="noise", face_image=astronaut_face(),
                                      face_box=(200, 130, 290, 220))["path"],
    }
    bad = {
        "text": make_text_file(clips / "notes.mp4"),
        "empty": make_empty_file(clips / "empty.mov"),
        # music-like noise, no face: neither modality is usable -> the processor's NoUsableModalityError
        "nothing": make_clip(clips / "plain_silent.mp4", seconds=2.0, audio="silence", background="plain")["path"],
    }
    (clips / "readme.txt").write_text("not media: a folder search skips it")
    return dict(root=root, model=model, processor=processor, model_dir=str(root / "model"), clips=clips, good=good,
                bad=bad)


def run(args, expect=None):
    rc = main([*map(str, args), "--no-progress"])
    if expect is not None:
        assert rc == expect
    return rc


def read(path):
    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def folder_run(corpus):
    out = corpus["root"] / "folder" / "results.parquet"
    rc = run([corpus["clips"], "--model", corpus["model_dir"], "--output", out, "--workers", "1", "--batch-size", "3"])
    return dict(rc=rc, out=out, windows=read(out), files=read(out.with_name("results.files.parquet")))


def test_folder_run_rows_schema_and_exit_status(corpus, folder_run):
    assert folder_run["rc"] == 1  # some files failed
    schema = pq.read_schema(folder_run["out"])
    assert schema.names[:7] == ["source", "person_id", "is_speaker", "window_index", "start_s", "end_s", "status"]
    assert schema.names[7:15] == PROBS
    assert {"top_label", "margin", "audio_used", "video_used", "audio_reason", "video_reason", "speech_fraction",
            "face_frames", "frames", "error_type", "error", "model_status", "model_summary", "model_preset",
            "config_hash", "file_key"} <= set(schema.names)
    assert str(schema.field("window_index").type) == "int32" and str(schema.field("prob_happy").type) == "double"
    files = {Path(r["source"]).name: r for r in folder_run["files"]}
    assert set(files) == {Path(p).name for p in [*corpus["good"].values(), *corpus["bad"].values()]}
    assert "readme.txt" not in files
    for name in ("face_tone.mp4", "audio_only.mp4", "busy.webm"):
        assert files[name]["status"] == "ok" and files[name]["windows"] >= 1
        assert abs(sum(files[name][c] for c in PROBS) - 1) < 1e-5
        check_answer(files[name], corpus["processor"].confidence_margin)
    assert files["face_tone.mp4"]["windows"] == 2  # 4 s in 3 s windows: 0-3 and 1-4 (the last ends at the end)
    for row in folder_run["windows"]:
        assert row["model_status"] == "untrained" and row["model_preset"] == "tiny"
        if row["status"] == "ok":
            assert abs(sum(row[c] for c in PROBS) - 1) < 1e-5
            check_answer(row, corpus["processor"].confidence_margin)
            assert row["end_s"] > row["start_s"] >= 0
    by_file = {}
    for row in folder_run["windows"]:
        by_file.setdefault(Path(row["source"]).name, []).append(row)
    audio_only = by_file["audio_only.mp4"]
    assert all(r["audio_used"] and not r["video_used"] and r["video_reason"] == "no video stream" for r in audio_only)
    busy = by_file["busy.webm"]
    assert all(r["video_used"] and not r["audio_used"] and r["audio_reason"] == "silent audio track" for r in busy)
    assert all(r["face_frames"] > 0 for r in busy)
    # the face classified is named by its clip-wide track id (one person here), the audio-only rows have none
    assert {r["person_id"] for r in busy} == {0} and {r["person_id"] for r in audio_only} == {None}
    assert all(r["is_speaker"] for r in folder_run["windows"] if r["status"] != "error")
    assert files["busy.webm"]["person_id"] == 0 and files["busy.webm"]["people"] == 1
    assert files["audio_only.mp4"]["person_id"] is None and files["audio_only.mp4"]["people"] == 0


def check_answer(row, confidence_margin):
    """`top_label` and `margin` follow the result type's rule: null below the confidence margin."""
    ordered = [row[c] for c in PROBS]
    assert row["margin"] == pytest.approx(top_margin(ordered), abs=1e-6)
    assert row["top_label"] == decide(ordered, LABELS, confidence_margin)[0]
    assert (row["top_label"] is None) == (row["margin"] < confidence_margin)


def test_top_label_is_null_below_the_confidence_margin(corpus, tmp_path):
    """One meaning of the top label: with a margin no answer reaches, every `top_label` is null ("no clear
    emotion", as the result, the pipeline and the app say); the margins and probabilities are unchanged."""
    model_dir = tmp_path / "model"
    corpus["model"].save_pretrained(model_dir)
    FERProcessor.from_model_config(corpus["model"].config, min_speech_fraction=0.0,
                                   confidence_margin=0.99).save_pretrained(model_dir)
    out = tmp_path / "results.parquet"
    run([corpus["good"]["face_pcm"], "--model", model_dir, "--output", out, "--workers", "0"], expect=0)
    windows, files = read(out), read(out.with_name("results.files.parquet"))
    assert windows and all(r["top_label"] is None and 0 <= r["margin"] < 0.99 for r in windows)
    (summary,) = files
    assert summary["top_label"] is None and summary["margin"] == pytest.approx(top_margin([summary[c] for c in PROBS]))


def test_error_rows_carry_the_processors_message(corpus, folder_run):
    rows = {Path(r["source"]).name: r for r in folder_run["windows"] if r["status"] == "error"}
    assert set(rows) == {"notes.mp4", "empty.mov", "plain_silent.mp4"}
    for name, path in (("notes.mp4", corpus["bad"]["text"]), ("empty.mov", corpus["bad"]["empty"]),
                       ("plain_silent.mp4", corpus["bad"]["nothing"])):
        with pytest.raises(FERInputError) as raised:
            corpus["processor"](videos=path, sliding_window=True)
        assert rows[name]["error"] == str(raised.value)
        assert rows[name]["error_type"] == type(raised.value).__name__
        assert rows[name]["window_index"] is None and rows[name]["prob_happy"] is None
    assert rows["plain_silent.mp4"]["error_type"] == "NoUsableModalityError"


def test_rows_equal_the_pipelines_per_window_output(corpus, folder_run):
    """Windows, modalities and faces are the pipeline's (`sliding_window=True`) for every clip; so are the
    probabilities wherever both decode the same samples. The pipeline seeks to each window and decodes its audio
    afresh; the annotation decodes each file once, front to back. For PCM audio at the model's rate that is the same
    samples, so every window matches. For AAC the seek starts 0.1 s early and the resampler on the front-to-back
    decode's sample grid (a tone without noise then decodes to within 1e-5 either way: test_media), but these clips'
    tone carries a little noise, which AAC codes as noise (perceptual noise substitution) that the decoder makes up
    with a generator restarted by the seek; that moves a random tiny model's probabilities by about 1e-3: those
    windows are held to 1e-2, the others to 1e-5."""
    processor, model = corpus["processor"], corpus["model"]
    pcm = corpus["good"]["face_pcm"]
    for path in corpus["good"].values():
        inputs, info = processor.prepare(videos=path, sliding_window=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**{k: inputs[k] for k in processor.model_input_names}).logits
        expected = logits.softmax(-1).numpy()
        rows = sorted((r for r in folder_run["windows"] if r["source"] == path and r["status"] == "ok"),
                      key=lambda r: r["window_index"])
        assert [r["window_index"] for r in rows] == [i["window_index"] for i in info.windows]
        assert [(r["start_s"], r["end_s"]) for r in rows] == [(i["window_start_s"], i["window_end_s"])
                                                               for i in info.windows]
        for r, i in zip(rows, info.windows):
            assert (r["audio_used"], r["video_used"], r["audio_reason"], r["video_reason"], r["speech_fraction"]) == (
                i["audio_used"], i["video_used"], i["audio_reason"], i["video_reason"], i["speech_fraction"])
            assert r["face_frames"] == sum(b is not None for b in i["face_boxes"])
            assert r["person_id"] == (i["person"]["track_id"] if i["video_used"] else None)
        got = np.array([[r[c] for c in PROBS] for r in rows])
        same_samples = np.array([path == pcm or r["start_s"] == 0 or not r["audio_used"] for r in rows])
        np.testing.assert_allclose(got[same_samples], expected[same_samples], atol=1e-5)
        np.testing.assert_allclose(got[~same_samples], expected[~same_samples], atol=1e-2)
        # the per-file answer is the pipeline's clip answer (sliding windows)
        ranked = FEREmotionRecognitionPipeline(model=model, processor=processor, device=-1)(path, sliding_window=True)
        summary = next(r for r in folder_run["files"] if r["source"] == path)
        for item in ranked:
            assert abs(summary[f"prob_{item['label']}"] - item["score"]) < (1e-5 if same_samples.all() else 1e-2)
        if same_samples.all():  # the same answer: the pipeline's `top` entry, or none below the margin
            assert summary["top_label"] == next((item["label"] for item in ranked if item["top"]), None)
    assert len([r for r in folder_run["windows"] if r["source"] == pcm]) == 3  # windows at 0, 1.5 and 2 s


def test_rerun_is_idempotent_and_a_changed_file_is_redone(corpus, tmp_path, caplog):
    clips = tmp_path / "c"
    clips.mkdir()
    a = copy_as(corpus["good"]["face_tone"], clips / "a.mp4")
    copy_as(corpus["good"]["audio_only"], clips / "b.mp4")
    out = tmp_path / "out.parquet"
    args = [clips, "--model", corpus["model_dir"], "--output", out, "--workers", "0"]
    run(args, expect=0)
    first = out.read_bytes(), out.with_name("out.files.parquet").read_bytes()
    caplog.clear()
    with caplog.at_level("INFO", logger="fer_hf.tools.annotate"):
        run(args, expect=0)
    assert "2 already done, 0 to annotate" in caplog.text
    assert (out.read_bytes(), out.with_name("out.files.parquet").read_bytes()) == first
    os.utime(a, ns=(time.time_ns(), time.time_ns() + 10**9))  # the file changed: its key changes
    caplog.clear()
    with caplog.at_level("INFO", logger="fer_hf.tools.annotate"):
        run(args, expect=0)
    assert "1 already done, 1 to annotate" in caplog.text
    files = read(out.with_name("out.files.parquet"))
    assert len(files) == 2 and len({r["file_key"] for r in files}) == 2
    # another window setting is another configuration: everything is redone, old rows leave the tables
    before = {r["config_hash"] for r in read(out)}
    run([*args, "--hop-seconds", "0.5"], expect=0)
    windows = read(out)
    assert {round(b["start_s"] - a["start_s"], 6) for a, b in zip(windows, windows[1:])
            if a["source"] == b["source"]} <= {0.5}
    assert len({r["config_hash"] for r in windows}) == 1 and not {r["config_hash"] for r in windows} & before
    # a window length other than the model's is refused before any file is read (exit 2: could not run)
    run([*args, "--window-seconds", "2.0"], expect=2)


def test_manifest_metadata_globs_and_text_formats(corpus, tmp_path):
    manifest = tmp_path / "corpus.csv"
    rel = os.path.relpath(corpus["good"]["face_tone"], tmp_path)
    manifest.write_text(f"path,speaker,session,status\n{rel},s01,1,keep\nmissing.mp4,s02,2,x\n")
    out = tmp_path / "out.jsonl"
    glob = str(corpus["clips"] / "session2" / "*.mp4")
    rc = run([manifest, glob, "--model", corpus["model_dir"], "--output", out, "--workers", "1"])
    assert rc == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    files = {Path(r["source"]).name: r for r in map(json.loads, out.with_name("out.files.jsonl").read_text()
                                                     .splitlines())}
    assert set(files) == {"face_tone.mp4", "missing.mp4", "audio_only.mp4"}
    tone = [r for r in rows if r["source"].endswith("face_tone.mp4")]
    assert tone and all(r["speaker"] == "s01" and r["session"] == 1 and r["meta_status"] == "keep" for r in tone)
    assert files["missing.mp4"]["error_type"] == "MediaNotFoundError" and files["missing.mp4"]["speaker"] == "s02"
    assert files["audio_only.mp4"]["speaker"] is None
    csv_out = tmp_path / "out.csv"
    run([manifest, "--model", corpus["model_dir"], "--output", csv_out, "--workers", "0"], expect=1)
    header = csv_out.read_text().splitlines()[0]
    assert header.startswith('"source","speaker","session","meta_status","person_id"')


def test_batching_and_workers_do_not_change_the_rows(corpus, folder_run, tmp_path):
    out = tmp_path / "inline.parquet"
    run([*corpus["good"].values(), "--model", corpus["model_dir"], "--output", out, "--workers", "0",
         "--batch-size", "1"], expect=0)
    key = lambda r: (r["source"], r["window_index"])  # noqa: E731
    inline = sorted(read(out), key=key)
    pooled = sorted((r for r in folder_run["windows"] if r["source"] in corpus["good"].values()), key=key)
    assert [key(r) for r in inline] == [key(r) for r in pooled]
    np.testing.assert_allclose([[r[c] for c in PROBS] for r in inline], [[r[c] for c in PROBS] for r in pooled],
                               atol=1e-5)


def test_resume_after_a_kill_gives_the_uninterrupted_tables(corpus, tmp_path):
    clips = tmp_path / "many"
    clips.mkdir()
    for i in range(8):
        copy_as(corpus["good"]["face_tone"] if i % 2 else corpus["good"]["audio_only"], clips / f"clip{i}.mp4")
    out = tmp_path / "killed.parquet"
    cmd = [sys.executable, "-m", "fer_hf.tools.annotate", str(clips), "--model", corpus["model_dir"], "--output",
           str(out), "--workers", "1", "--part-files", "1", "--batch-size", "2", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # its own process group, so the kill takes the decode worker with it (as a scheduler's kill of a job does)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    parts = out.with_name(out.name + ".parts")
    deadline = time.monotonic() + 300
    while not (parts / "files-000002.parquet").exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = sorted(parts.glob("files-*.parquet"))
    assert 2 <= len(committed) < 8, "the kill did not land midway"
    assert not out.exists()  # tables are only written at the end of a run, never half
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"8 file(s): {len(committed)} already done, {8 - len(committed)} to annotate" in resumed.stderr
    reference = tmp_path / "clean.parquet"
    run([clips, "--model", corpus["model_dir"], "--output", reference, "--workers", "0"], expect=0)
    key = lambda r: (r["source"], r["window_index"])  # noqa: E731
    got, want = sorted(read(out), key=key), sorted(read(reference), key=key)
    assert [key(r) for r in got] == [key(r) for r in want] and len(got) == 4 * 2 + 4 * 1
    np.testing.assert_allclose([[r[c] for c in PROBS] for r in got], [[r[c] for c in PROBS] for r in want],
                               atol=1e-5)
    assert len(read(out.with_name("killed.files.parquet"))) == 8


def test_people_all_gives_every_tracked_person_rows_with_stable_ids(corpus, tmp_path):
    path = write_people_clip(tmp_path / "two.mp4", seconds=6.0)  # windows at 0, 1.5 and 3 s
    common = [path, "--model", corpus["model_dir"], "--workers", "1", "--batch-size", "3"]
    run([*common, "--output", tmp_path / "all.parquet", "--people", "all"], expect=0)
    run([*common, "--output", tmp_path / "speaker.parquet"], expect=0)
    rows, speaker = read(tmp_path / "all.parquet"), read(tmp_path / "speaker.parquet")
    ids = {r["person_id"] for r in rows}
    assert len(ids) == 2 and None not in ids
    windows = sorted({r["window_index"] for r in rows})
    assert windows == [0, 1, 2] and len(rows) == 2 * len(windows)
    chosen = []
    for w in windows:
        pair = [r for r in rows if r["window_index"] == w]
        assert [r["is_speaker"] for r in pair] == [True, False]  # the chosen person's row first
        assert {r["person_id"] for r in pair} == ids  # both people, under the same two ids in every window
        assert all(r["status"] == "ok" and r["audio_used"] and r["video_used"] and r["face_frames"] > 0 for r in pair)
        assert not np.allclose([pair[0][c] for c in PROBS], [pair[1][c] for c in PROBS])  # two faces, two answers
        chosen.append(pair[0]["person_id"])
    # --people speaker gives exactly the chosen person's rows of --people all
    assert len(speaker) == len(windows) and all(r["is_speaker"] for r in speaker)
    mine = [r for r in rows if r["is_speaker"]]
    assert [(r["window_index"], r["person_id"]) for r in speaker] == [(r["window_index"], r["person_id"]) for r in mine]
    np.testing.assert_allclose([[r[c] for c in PROBS] for r in speaker], [[r[c] for c in PROBS] for r in mine],
                               atol=1e-6)
    # the summary keeps the chosen person's clip answer, and names the person chosen in most windows (the front-end
    # may pick either here: the mouths of two still faces follow a tone only by chance)
    every, only = read(tmp_path / "all.files.parquet")[0], read(tmp_path / "speaker.files.parquet")[0]
    most = max(set(chosen), key=lambda p: (chosen.count(p), -chosen.index(p)))
    assert every["person_id"] == only["person_id"] == most and every["people"] == only["people"] == 2
    assert every["windows"] == only["windows"] == 3
    assert all(abs(every[c] - only[c]) < 1e-6 for c in PROBS)


def test_memory_is_bounded_by_the_batch_not_by_the_file_length(corpus, tmp_path):
    """A 40 s clip has 13 times the windows of a 4 s one; the rows waiting for the model and the decoded frames a
    worker holds stay the same: under one batch plus one chunk, and the frames of about one window."""
    frames_per_window = corpus["model"].config.num_frames
    figures = {}
    for name, seconds in (("short", 4.0), ("long", 40.0)):
        path = make_clip(tmp_path / f"{name}.mp4", seconds=seconds, face_image=astronaut_face())["path"]
        args = build_parser().parse_args([path, "--model", corpus["model_dir"], "--output",
                                          str(tmp_path / f"{name}.parquet"), "--workers", "1", "--batch-size", "2",
                                          "--no-progress"])
        figures[name] = annotate(args)
    short, long = figures["short"], figures["long"]
    assert short.exit_status == long.exit_status == 0
    assert (short.run_windows, long.run_windows) == (2, 26)
    for summary in (short, long):
        assert 0 < summary.peak_rows <= 2 + CHUNK_WINDOWS - 1
        assert 0 < summary.peak_frames <= 2 * frames_per_window
    assert long.peak_frames <= short.peak_frames + frames_per_window // 2


def test_workers_exit_when_the_parent_is_killed(corpus, tmp_path):
    """kill -9 of fer-annotate alone (not its process group): its decode workers notice and exit."""
    psutil = pytest.importorskip("psutil")
    clips = tmp_path / "many"
    clips.mkdir()
    for i in range(6):
        copy_as(corpus["good"]["face_tone"], clips / f"clip{i}.mp4")
    out = tmp_path / "orphans.parquet"
    cmd = [sys.executable, "-m", "fer_hf.tools.annotate", str(clips), "--model", corpus["model_dir"], "--output",
           str(out), "--workers", "2", "--part-files", "1", "--batch-size", "2", "--no-progress"]
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
                                stderr=stderr)
    workers = []
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 300
        while not (out.with_name(out.name + ".parts") / "files-000001.parquet").exists() or len(workers) < 2:
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
            assert time.monotonic() < deadline
            workers = parent.children(recursive=True)
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the parent only: its workers are not signalled
        proc.wait()

        def gone(p):
            try:
                return p.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        deadline = time.monotonic() + 5
        while not all(gone(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(gone(p) for p in workers), [p.pid for p in workers if not gone(p)]
    finally:
        proc.kill()
        for p in workers:
            if not gone(p):
                p.kill()


def test_a_worker_killed_midway_is_replaced_and_its_file_read_again(corpus, tmp_path, caplog):
    psutil = pytest.importorskip("psutil")
    import threading

    clips = tmp_path / "long"
    clips.mkdir()
    long = make_clip(clips / "a.mp4", seconds=20.0, face_image=astronaut_face())["path"]
    copy_as(long, clips / "b.mp4")
    killed = []

    def reading_a_clip(child) -> bool:
        try:
            return any(f.path.endswith(".mp4") for f in child.open_files())
        except psutil.Error:
            return False

    def kill_the_worker():  # as soon as the worker has a clip open, it is in the middle of that file
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            busy = [c for c in psutil.Process().children() if reading_a_clip(c)]
            if busy:
                time.sleep(0.1)
                for child in busy:
                    killed.append(child.pid)
                    child.kill()
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    out = tmp_path / "out.parquet"
    with caplog.at_level("INFO", logger="fer_hf.tools.annotate"):
        rc = run([clips, "--model", corpus["model_dir"], "--output", out, "--workers", "1", "--batch-size", "2"])
    killer.join()
    assert killed and rc == 0
    assert "a decoding process died" in caplog.text and "trying the file again" in caplog.text
    rows, files = read(out), read(out.with_name("out.files.parquet"))
    assert [r["status"] for r in files] == ["ok", "ok"] and [r["windows"] for r in files] == [13, 13]
    by_file = {}
    for r in rows:
        by_file.setdefault(Path(r["source"]).name, []).append(r["window_index"])
    assert by_file == {"a.mp4": list(range(13)), "b.mp4": list(range(13))}  # each window once: no partial leftovers


@pytest.mark.parametrize("use_prctl", [True, False], ids=["prctl", "watchdog"])
def test_a_worker_dies_with_its_parent_by_prctl_or_by_the_watchdog(tmp_path, use_prctl):
    """`exit_with_parent` in a grandchild; its parent is SIGKILLed; the grandchild is gone within a second or two."""
    psutil = pytest.importorskip("psutil")
    script = (
        "import os, sys, time\n"
        "from fer_hf.tools.annotate.local import exit_with_parent\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        f"    how = exit_with_parent(os.getppid(), use_prctl={use_prctl})\n"
        "    print(os.getpid(), how, flush=True)\n"
        "    time.sleep(120)\n"
        "    os._exit(0)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.PIPE, text=True)
    pid, how = proc.stdout.readline().split()
    child = psutil.Process(int(pid))
    try:
        assert how == ("prctl" if use_prctl else "watchdog")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        child.wait(timeout=5)  # NoSuchProcess / reaped by init; psutil raises TimeoutExpired if it lingers
    except psutil.NoSuchProcess:
        pass
    finally:
        proc.kill()
        if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
            child.kill()


def test_discover_folders_globs_and_missing_paths(corpus, tmp_path):
    found = discover([str(corpus["clips"]), str(corpus["clips"] / "*.mp4"), str(tmp_path / "gone.mp4")])
    names = [Path(f.path).name for f in found]
    assert len(names) == len(set(names)) and "readme.txt" not in names and names[-1] == "gone.mp4"
    assert found[-1].size_bytes == -1
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"file": "a.mp4"}\n')
    with pytest.raises(FERInputError, match="no 'path' column"):
        discover([str(bad)])


def test_usage_errors_exit_2(corpus, tmp_path, caplog):
    missing = [tmp_path / "nothing_here", "--model", corpus["model_dir"], "--output", tmp_path / "o.parquet",
               "--workers", "0"]
    assert run(missing) == 1  # an explicit missing file is an error row, not a stop
    with caplog.at_level("INFO", logger="fer_hf.tools.annotate"):
        assert run(missing) == 1 and "1 already done, 0 to annotate" in caplog.text  # failures count as done
        assert run([*missing, "--retry-errors"]) == 1 and "0 already done, 1 to annotate" in caplog.text
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert run([empty, "--model", corpus["model_dir"], "--output", tmp_path / "o2.parquet"]) == 2
    assert run([corpus["good"]["face_tone"], "--model", str(tmp_path), "--output", tmp_path / "o3.parquet"]) == 2
    assert "no model (config.json)" in caplog.text


def test_threads_never_exceed_the_cores():
    for cores in (1, 2, 4, 16):
        for workers in (None, 0, 1, 2, 3, 32):
            for device in ("cpu", "cuda"):
                w, model_threads = plan_threads(workers, cores, device)
                assert w <= cores and model_threads >= 1
                assert w + model_threads <= max(cores, w + 1)


def test_console_script_and_help():
    """`fer-annotate` is installed as a console script (`python -m fer_hf.tools.annotate` runs in the resume test)."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fer-annotate"] == "fer_hf.tools.annotate:main"
    text = build_parser().format_help()
    assert all(option in text for option in ("--ray", "--batch-size", "--workers", "--device", "--retry-errors"))
