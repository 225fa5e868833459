"""Model card of a model made by the staged compact recipe (face, voice, fusion stages: docs/training.md).

`render_model_card` hands such a model (its provenance layout is `"pseudo-pairs"`) to `render_compact_card`, which
says what each part learned from, under which terms, and the per-modality scores with the commands that measured
them, from the recipe's summary JSON (`recipe_summary`: the three stages' `results.json` files).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .requirements import install_command

PSEUDO_PAIRS = "pseudo-pairs"
CHANCE_MARGIN = 0.05


def face_runs(face: dict) -> int:
    """How many face runs the final one continues (`fer-pretrain-face --init-from` chains), itself included."""
    runs, earlier = 1, face.get("init_from")
    while earlier:  # an exported model's summary stands for its own chain of runs
        runs, earlier = runs + (earlier.get("runs") or 1), earlier.get("init_from")
    return runs


def teacher_runs(face: dict) -> int:
    """How many runs of a face stage's `--init-from` chain learned from a teacher (`--teacher`), itself included."""
    count, earlier = int(bool(face.get("teacher"))), face.get("init_from")
    while earlier:  # an exported model's summary counts its own chain's teacher runs
        count += earlier["teacher_runs"] if "teacher_runs" in earlier else int(bool(earlier.get("teacher")))
        earlier = earlier.get("init_from")
    return count


def face_totals(face: dict) -> tuple[int, float]:
    """(epochs, seconds) of a face stage including the earlier runs it continued (`init_from` chain)."""
    epochs = face["epochs"]
    seconds = (face["train_seconds"] + face.get("prepare_seconds", 0)
               + (face.get("teacher") or {}).get("prepare_seconds", 0))
    earlier = face.get("init_from")
    while earlier:
        epochs += earlier.get("epochs") or 0
        seconds += earlier.get("train_seconds") or 0
        earlier = earlier.get("init_from")
    return epochs, seconds


def read_voice_results(path) -> dict:
    """A voice stage's results: its `results.json` (a file, or the `fer-pretrain-voice` folder holding it), or the
    voice stage recorded in an exported compact model's `eval_results.json` (a fusion run that reuses a published
    model's audio encoder). Returns `{"cross_validation": {...}, "release": {"train_seconds": ...}}`."""
    path = Path(path)
    for candidate in ((path,) if path.is_file() else (path / "results.json", path / "eval_results.json")):
        if not candidate.is_file():
            continue
        data = json.loads(candidate.read_text())
        if "voice_stage" not in data:
            return data
        cv = dict(data["voice_stage"])
        voice_seconds = (data.get("seconds") or {}).get("voice", 0)
        return {"cross_validation": cv, "release": {"train_seconds": voice_seconds - cv.get("train_seconds", 0)},
                "from": str(candidate)}
    raise FileNotFoundError(f"no voice stage results (results.json or eval_results.json) at {path}")


def recipe_summary(face_dir, voice_dir, fusion_dir, fusion_folds_dir=None, real_clips: dict | None = None) -> dict:
    """The scores of a compact recipe run, from the stages' `results.json` (the export's `eval_results`).

    `voice_dir` may also be an exported compact model whose audio encoder the fusion reused (`read_voice_results`).
    """
    read = lambda path: json.loads(Path(path).read_text())  # noqa: E731
    face, fusion = (read(Path(d) / "results.json") for d in (face_dir, fusion_dir))
    voice = read_voice_results(voice_dir)
    face_epochs, face_seconds = face_totals(face)
    summary = {
        "recipe": "compact",
        "face_stage": {k: face["test"][k] for k in ("accuracy", "uar", "macro_f1")}
        | {"split": "FER2013 PrivateTest", "epochs": face_epochs, "best_epoch": face["best_epoch"],
           "seconds": face_seconds, "runs": face_runs(face), "confusion_matrix": face["test"]["confusion_matrix"],
           "teacher": face.get("teacher"), "teacher_runs": teacher_runs(face)},
        "voice_stage": dict(voice.get("cross_validation") or {}),
        "fused_face_only": {k: fusion["face_only_privatetest"]["seven_way"][k] for k in ("accuracy", "uar",
                                                                                      "macro_f1")},
        "seconds": {"face": round(face_seconds),
                    "voice": round((voice.get("cross_validation") or {}).get("train_seconds", 0)
                                   + (voice.get("release") or {}).get("train_seconds", 0)),
                    "fusion": round(fusion["train_seconds"] + fusion.get("prepare_seconds", 0))},
    }
    if fusion_folds_dir:
        folds = sorted(Path(fusion_folds_dir).glob("fold*/results.json"))
        rows = [read(p) for p in folds]
        if rows:
            from .metrics import mean_std

            summary["fused_folds"] = {
                kind: {k: mean_std([r[kind][k] for r in rows]) for k in ("accuracy", "uar")}
                for kind in ("voice_only_test_actors", "pseudo_pairs_test_actors")} | {"folds": len(rows)}
    if real_clips:
        summary["real_clips"] = real_clips
    return summary


def degenerate_reason(config) -> str | None:
    """Why a trained model's own recorded scores say it is collapsed or at chance (None when they do not).

    Every `*uar` figure of `config.provenance["training"]["metrics"]` must beat chance (1 / classes of that test,
    7 for a face test on FER2013, else the model's labels) by `CHANCE_MARGIN`."""
    training = ((config.provenance or {}).get("training")) or {}
    for name, value in (training.get("metrics") or {}).items():
        if not name.endswith("uar"):
            continue
        chance = 1.0 / (7 if name.startswith("face") else len(config.id2label))
        if value <= chance + CHANCE_MARGIN:
            return f"its recorded {name} is {value:.3f}, at chance ({chance:.3f})"
    return None


def _pct(value, std=None) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "") + " %"


def render_compact_card(model, repo_id: str, summary: dict | None, usage: str) -> str:
    """The `README.md` of a compact-recipe model."""
    config = model.config
    training = ((config.provenance or {}).get("training")) or {}
    summary = summary or {}
    face, voice, fused = summary.get("face_stage") or {}, summary.get("voice_stage") or {}, summary.get(
        "fused_face_only") or {}
    meta = {"license": "cc-by-nc-sa-4.0", "library_name": "transformers", "pipeline_tag": "video-classification",
            "tags": ["custom_code", "audio-visual", "emotion-recognition", "ravdess", "fer2013", "cpu"],
            "datasets": ["fer2013", "ravdess"]}
    n_params = sum(p.numel() for p in model.parameters())
    v = voice.get("accuracy") or {}
    u = voice.get("uar") or {}
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
        f"# {repo_id.split('/')[-1]}: audio-visual emotion recognition, compact CPU model", "",
        f"**Weights:** {config.provenance_summary()}.", "",
        "This is the `compact` preset of the project's model, trained from scratch on 2 CPU cores: a **CPU stand-in "
        "for the seed model** (pretrained SigLIP2 / FastConformer / LFM2, which needs a GPU to train). Same "
        "architecture and code: a FastConformer-shaped audio encoder, a SigLIP-shaped vision tower on aligned face "
        "crops with ROI token compression and a temporal encoder, LFM2 fusion layers and an attention-pooled MLP "
        f"head over the 8 RAVDESS classes; {n_params / 1e6:.1f} M parameters, "
        f"{config.num_frames} face crops of {config.vision_config.image_size}x{config.vision_config.image_size} "
        f"(grey) + {config.clip_seconds:g} s of 16 kHz audio per window.", "",
        "## Usage", "", "```bash", install_command(), "```", "", "```python", usage.rstrip(), "```", "",
        "## What each part learned from", "",
        "| part | data | terms |", "|---|---|---|",
        f"| vision tower (+ ROI compression, frame pooling) | {training.get('sources', {}).get('vision', 'FER2013')} "
        "| FER2013 (Goodfellow et al., 2013) was released for the ICML 2013 Representation Learning challenge; it "
        "has no open licence and is used for research" + (
            "; the teacher, MediaPipe's Face Landmarker with blendshapes, is Apache-2.0 (used in training only, not "
            "shipped)" if face.get("teacher") else "") + " |",
        f"| audio encoder | {training.get('sources', {}).get('audio', 'RAVDESS speech')} | RAVDESS: CC BY-NC-SA 4.0 |",
        f"| fusion, temporal encoder, classifier | {training.get('sources', {}).get('fusion', 'pseudo-pairs')} | "
        "both of the above |", "",
        "No labelled audio-visual data was used: the fusion learned from **pseudo-pairs**, a RAVDESS voice shown "
        "with a FER2013 face of the same label (a still face over the window's frames). The weights are released "
        "under CC BY-NC-SA 4.0 (non-commercial, share-alike), for research.", "",
        "## Evaluation", "",
        "| test | data (never trained on) | accuracy | UAR |", "|---|---|---|---|",
        f"| face only, face stage | FER2013 PrivateTest, 7 classes | {_pct(face.get('accuracy'))} | "
        f"{_pct(face.get('uar'))} |",
        f"| face only, this model | FER2013 PrivateTest, 7 classes (argmax over the 7 FER classes) | "
        f"{_pct(fused.get('accuracy'))} | {_pct(fused.get('uar'))} |",
        f"| voice only, voice stage | RAVDESS speech, {len(voice.get('folds') or [])}-fold speaker-independent "
        f"(mean ± std) | {_pct(v.get('mean'), v.get('std'))} | {_pct(u.get('mean'), u.get('std'))} |",
    ]
    folds = summary.get("fused_folds")
    if folds:
        vo, pp = folds["voice_only_test_actors"], folds["pseudo_pairs_test_actors"]
        lines += [
            f"| voice only, fused model | RAVDESS test actors, {folds['folds']} fusion folds | "
            f"{_pct(vo['accuracy']['mean'], vo['accuracy']['std'])} | {_pct(vo['uar']['mean'], vo['uar']['std'])} |",
            f"| face + voice pseudo-pairs | RAVDESS test actors + PrivateTest faces | "
            f"{_pct(pp['accuracy']['mean'], pp['accuracy']['std'])} | {_pct(pp['uar']['mean'], pp['uar']['std'])} |"]
    real = summary.get("real_clips")
    if real:
        lines += ["", f"Real audio-visual clips (never trained on): {real.get('text', '')}"]
    lines += [
        "", "Chance is 14.3 % (7 face classes) and 12.5 % (8 voice classes). Commands and CPU times: the project's "
        "`docs/training.md`.", "",
        "## Limitations", "",
        "- The face tower saw grey 48x48 FER2013 faces: serving crops are made grey and small the same way, so fine "
        "detail is lost; its scores are far below pretrained models.",
        "- The voice encoder learned from 24 actors reading two sentences in North American English, with acted "
        "emotions; expect lower scores on spontaneous speech, other languages and noisy rooms.",
        "- The fusion never saw a real face and voice of one person together, and saw still faces only (the temporal "
        "encoder learned little about motion). FER2013 has no calm: a calm voice was paired with a neutral face.",
        "- Do not use it to make decisions about people.", "",
    ]
    return "\n".join(lines)


__all__ = ["PSEUDO_PAIRS", "degenerate_reason", "read_voice_results", "recipe_summary", "render_compact_card",
           "teacher_runs"]
