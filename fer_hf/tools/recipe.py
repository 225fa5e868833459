"""From cross-validation to a release model, and the provenance record that says what a model is.

A **fold model** (`--fold k`) is trained on the training actors of fold k, selected on its validation actors and
scored on its test actors: its own score is that fold's test score. A **release model** (`--mode release`) is
trained on every actor of the protocol with the settings the folds chose (`release_settings`: the epoch count is
the median of the folds' best epochs); it has no held-out actor, so the only honest figure for it is the
cross-validated mean ± std of the *recipe* that produced it, and the record says so (`metrics_scope`).

The record is `config.provenance` (docs/architecture.md, "Provenance"), written into `config.json` of the final
model by `fer_hf.tools.train`.
"""

from __future__ import annotations

import datetime
import json
import logging
import statistics
import subprocess
from pathlib import Path

from fer_hf.errors_fer import FERInputError

from .metrics import mean_std

logger = logging.getLogger(__name__)

PROVENANCE_SCHEMA_VERSION = 1
SCOPE_FOLD = "this fold's test actors"
SCOPE_CV = "cross-validated mean over k folds"
METRIC_KEYS = ("accuracy", "uar", "macro_f1")
# Training arguments that define the recipe: a release run must use the folds' values.
RECIPE_ARGS = ("preset", "init_from", "set", "modality", "vocal_channel", "lr", "backbone_lr", "weight_decay",
               "warmup_ratio", "scheduler", "max_grad_norm", "freeze_epochs", "freeze_parts", "class_balance",
               "modality_dropout", "image_format", "jpeg_quality", "gradient_checkpointing", "precision")


class RecipeError(FERInputError):
    """The cross-validation folder cannot give release settings (missing folds, a different recipe)."""


def git_commit() -> str | None:
    """The checkout's commit (with `+dirty` when it has uncommitted changes), or None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha or None


def global_batch(args: dict) -> int:
    return int(args.get("batch_size", 1)) * int(args.get("grad_accum", 1)) * int(args.get("world_size", 1))


def release_settings(cv_dir: str | Path, num_folds: int, current_args: dict) -> dict:
    """Read `<cv_dir>/fold<k>/final/training_info.json` of every fold and choose the release settings.

    Returns:
        `{"cv_dir", "folds": [k...], "complete": bool, "best_epochs": [...], "epochs": int (median of the best
        epochs, at least 1), "metrics": {key: mean}, "metrics_std": {key: std}, "metrics_per_fold": {key: [...]},
        "modality_layout", "dataset", "synthetic"}`.

    Raises:
        RecipeError: no fold found, a fold without test metrics, or a recipe argument (learning rates, preset,
            global batch, ...) that differs between the folds and this run.
    """
    cv_dir = Path(cv_dir)
    infos = []
    for k in range(num_folds):
        path = cv_dir / f"fold{k}" / "final" / "training_info.json"
        if path.is_file():
            infos.append(json.loads(path.read_text()))
    if not infos:
        raise RecipeError(f"no fold results under {str(cv_dir)!r} (expected fold<k>/final/training_info.json); "
                          "train the folds first (--fold all) and point --cv-dir at their --output-dir")
    missing = sorted(set(range(num_folds)) - {i["fold"] for i in infos})
    if missing:
        logger.warning("cross-validation in %s lacks folds %s: the estimate covers %d of %d folds", cv_dir, missing,
                       len(infos), num_folds)
    for info in infos:
        if not info.get("test_metrics"):
            raise RecipeError(f"fold {info['fold']} in {str(cv_dir)!r} has no test metrics (trained before they were "
                              "recorded?); train it again")
        differing = [key for key in RECIPE_ARGS if info["args"].get(key) != current_args.get(key)]
        if global_batch(info["args"]) != global_batch(current_args):
            differing.append(f"global batch ({global_batch(info['args'])} vs {global_batch(current_args)})")
        if differing:
            raise RecipeError(f"the release run must use the recipe the folds were trained with, but these settings "
                              f"differ from fold {info['fold']}'s: {', '.join(differing)}")
    best = [int(i["best_epoch"]) if i.get("best_epoch") else round(float(i["epochs_trained"])) for i in infos]
    per_fold = {key: [float(i["test_metrics"][key]) for i in infos] for key in METRIC_KEYS}
    summary = {key: mean_std(values) for key, values in per_fold.items()}
    first = infos[0]
    return {
        "cv_dir": str(cv_dir), "folds": [i["fold"] for i in infos], "num_folds": num_folds, "complete": not missing,
        "best_epochs": best, "epochs": max(1, round(statistics.median(best))),
        "metrics": {k: s["mean"] for k, s in summary.items()}, "metrics_std": {k: s["std"] for k, s in summary.items()},
        "metrics_per_fold": per_fold, "modality_layout": first.get("modality_layout"),
        "dataset": first.get("dataset"), "synthetic": first.get("synthetic"),
    }


def training_provenance(config, *, synthetic: bool, layout: str, mode: str, split: dict, epochs: float,
                        metrics: dict | None, metrics_std: dict | None = None, scope: str | None = None,
                        extra: dict | None = None) -> dict:
    """The `config.provenance` record of a trained model (docs/architecture.md); earlier `backbones` are kept."""
    previous = getattr(config, "provenance", None) or {}
    training = {
        "dataset": "synthetic" if synthetic else "RAVDESS",
        "synthetic": bool(synthetic),
        "modality_layout": layout,
        "mode": mode,
        "fold": split.get("fold"),
        "train_actors": list(split.get("train_actors", [])),
        "validation_actors": list(split.get("val_actors", [])),
        "test_actors": list(split.get("test_actors", [])),
        "epochs": epochs,
        "metrics": None if metrics is None else {k: float(metrics[k]) for k in METRIC_KEYS if k in metrics},
        "metrics_scope": scope if metrics is not None else None,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
    }
    if metrics_std is not None:
        training["metrics_std"] = {k: float(metrics_std[k]) for k in METRIC_KEYS if k in metrics_std}
    training.update(extra or {})
    return {"schema_version": PROVENANCE_SCHEMA_VERSION, "status": "trained",
            "backbones": dict(previous.get("backbones") or getattr(config, "backbone_sources", None) or {}),
            "training": training}


__all__ = ["RecipeError", "SCOPE_CV", "SCOPE_FOLD", "git_commit", "release_settings", "training_provenance"]
