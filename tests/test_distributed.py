"""Training under torchrun with 2 CPU processes (gloo): one cache build, the same data on every rank, checkpoints
written once, the same result as one process; ranks that see different clip lists stop with one clear line."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fer_hf.tools.synthetic import SyntheticSpec, generate

REPO = Path(__file__).resolve().parents[1]
SPEC = SyntheticSpec(num_actors=3, clips_per_class=1, seconds=(1.0, 1.3), width=240, height=180, fps=15,
                     num_folds=3)
# No dropout anywhere, so one process and two processes compute the same thing (up to BatchNorm statistics:
# the FastConformer convolution module normalises over each rank's 4 clips instead of all 8).
NO_DROPOUT = ["--set", "classifier_dropout=0", "--set", "fusion_dropout=0", "--modality-dropout", "0"]

pytestmark = pytest.mark.skipif(shutil.which("torchrun") is None and not hasattr(torch.distributed, "run"),
                                reason="torchrun is not available")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, SPEC)
    return root


def _flags(dataset, tmp_path, out, batch_size):
    # Fold 0 of 3 one-actor folds: 8 training clips; a global batch of 8 is one step per epoch, so the order in
    # which the samplers visit the clips does not matter.
    return ["--data-root", str(dataset), "--folds", str(dataset / "folds.json"), "--fold", "0", "--preset", "tiny",
            "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out), "--batch-size", str(batch_size),
            "--epochs", "2", "--lr", "1e-3", "--backbone-lr", "1e-3", "--report-to", "none", "--no-progress",
            "--logging-steps", "1", *NO_DROPOUT]


def _torchrun(args, tmp_path, log_name, timeout=300):
    """Run `args` (after `-m`/a script) under torchrun with 2 CPU processes; returns (rc, {rank: stderr text})."""
    logs = tmp_path / log_name
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--log-dir", str(logs), "--redirects", "3", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    texts = {}
    for path in logs.rglob("stderr.log"):
        texts[int(path.parent.name)] = path.read_text()
    return proc, texts


def test_two_processes_build_once_agree_and_match_one_process(dataset, tmp_path):
    from fer_hf.tools import train

    proc, logs = _torchrun(["-m", "fer_hf.tools.train", *_flags(dataset, tmp_path, tmp_path / "ddp", 4)], tmp_path,
                           "logs")
    assert proc.returncode == 0, (proc.stderr[-2000:], {r: t[-2000:] for r, t in logs.items()})
    assert sorted(logs) == [0, 1]

    # One cache build: rank 0 writes the 24 clips (train + val + test actors), rank 1 uses its report.
    assert "24 written" in logs[0] and "written" not in logs[1].replace("24 written", "")
    assert "using rank 0's cache report" in logs[1]
    (folder,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(list(folder.rglob("*.npz"))) == 24 and not list(folder.rglob("*.tmp"))

    info = json.loads((tmp_path / "ddp" / "fold0" / "final" / "training_info.json").read_text())
    assert info["world_size"] == 2 and [r["rank"] for r in info["ranks"]] == [0, 1]
    r0, r1 = info["ranks"]
    assert (r0["train_clips"], r0["val_clips"], r0["class_weights"]) == \
           (r1["train_clips"], r1["val_clips"], r1["class_weights"])
    assert (r0["cache"], r1["cache"]) == ("built here", "report received from rank 0")

    # Checkpoints written once (by rank 0): one per epoch, each complete; one session of 2 processes.
    fold_dir = tmp_path / "ddp" / "fold0"
    assert sorted(p.name for p in fold_dir.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    for ckpt in fold_dir.glob("checkpoint-*"):
        assert (ckpt / "model.safetensors").is_file() and (ckpt / "processor_config.json").is_file()
    assert "Writing model shards" in logs[0] and "Writing model shards" not in logs[1]
    assert info["total"]["sessions"] == 1 and info["sessions"][0]["world_size"] == 2
    assert not (tmp_path / "ddp" / ".fer-train.lock").exists()

    # The same run in one process with the same global batch: the same losses and weights, within the
    # BatchNorm difference.
    single = train.run(train.parse_args(_flags(dataset, tmp_path, tmp_path / "single", 8)))[0]
    assert single["ranks"][0]["train_clips"] == r0["train_clips"]
    assert single["ranks"][0]["class_weights"] == r0["class_weights"]
    losses = [(a["eval_loss"], b["eval_loss"]) for a, b in zip(info["eval_history"], single["eval_history"])]
    assert len(losses) == 2
    for multi, one in losses:
        assert multi == pytest.approx(one, abs=0.02)
    assert info["test_metrics"]["num_samples"] == single["test_metrics"]["num_samples"] == 8
    w_multi = load_file(str(fold_dir / "final" / "model.safetensors"))
    w_single = load_file(str(tmp_path / "single" / "fold0" / "final" / "model.safetensors"))
    assert w_multi.keys() == w_single.keys()
    worst = max(float((w_multi[k].float() - w_single[k].float()).abs().max()) for k in w_multi)
    assert worst < 5e-3, worst


def test_ranks_that_see_different_clips_stop_with_one_clear_line(dataset, tmp_path):
    """Rank 1 reads a copy of the set that lacks one clip (as on a node with a stale copy): every rank stops."""
    partial = tmp_path / "partial"
    shutil.copytree(dataset, partial)
    next(iter(sorted(partial.glob("Actor_02/*.mp4")))).unlink()
    script = tmp_path / "per_rank_root.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from fer_hf.tools import train
        roots = [{str(dataset)!r}, {str(partial)!r}]
        train.main(["--data-root", roots[int(os.environ["RANK"])], *sys.argv[1:]])
    """))
    flags = _flags(dataset, tmp_path, tmp_path / "run", 4)[2:]  # without --data-root
    proc, logs = _torchrun([str(script), *flags], tmp_path, "logs")
    assert proc.returncode != 0
    for rank in (0, 1):
        errors = [line for line in logs[rank].splitlines() if " ERROR " in line]
        assert len(errors) == 1, logs[rank][-3000:]
        assert "the ranks see different clip lists" in errors[0] and "24 clips" in errors[0]
        assert "23 clips" in errors[0] and "Traceback" not in logs[rank]
    assert not (tmp_path / "cache").exists()  # stopped before anything was built
