"""Speaker-independent evaluation: one fold or all folds, metrics, confusion matrices and a results JSON.

    fer-evaluate --data-root data/RAVDESS --checkpoint "checkpoints/seed/fold{fold}/final" --fold all

For each fold the checkpoint (`{fold}` in the path is replaced by the fold index) is evaluated on that fold's
test actors: accuracy (WAR), UAR, macro-F1, per-class precision/recall/F1 and a confusion-matrix PNG. Over the
folds: mean ± sample standard deviation and the pooled confusion matrix. Everything goes to `<out>/results.json`.
`--modality` picks the RAVDESS files (default: the layout the checkpoint was trained on, from its provenance record);
a synthetic set (its marker file) is named as such in `dataset`. A release model (trained on every actor) has no
held-out actor and is refused: its estimate is the cross-validated mean of the fold models.

Results JSON (schema_version 1; metric values are fractions in [0, 1]):

    {
      "schema_version": 1,
      "task": {"type": "audio-visual-emotion-recognition", "name": "Audio-visual emotion recognition"},
      "dataset": {"name": "RAVDESS" | "synthetic (RAVDESS-named)", "type": "ravdess" | "synthetic",
                  "synthetic": false, "config": "audio-video speech", "split": "test", "data_root": "...",
                  "modality_layout": "audio-video", "modalities": [1], "vocal_channels": [1]},
      "protocol": "6-fold speaker-independent",
      "complete": true,                   # every fold of the protocol was evaluated
      "labels": ["neutral", ...],
      "metrics": [                        # what a model-index entry needs, mean over folds
        {"name": "Accuracy (WAR)", "type": "accuracy", "value": 0.71, "std": 0.04},
        {"name": "UAR", "type": "uar", "value": 0.70, "std": 0.05},
        {"name": "Macro-F1", "type": "f1", "args": {"average": "macro"}, "value": 0.69, "std": 0.05}],
      "summary": {"accuracy": {"mean", "std", "values"}, "uar": {...}, "macro_f1": {...}},
      "pooled": {"accuracy", "uar", "macro_f1", "num_samples", "per_class", "confusion_matrix"},
      "confusion_matrix_png": "confusion_all_folds.png",
      "folds": [{"fold": 0, "checkpoint": "...", "train_actors": [...], "val_actors": [...], "test_actors": [...],
                 "num_clips": 240, "failed_clips": [[path, reason]], "accuracy", "uar", "macro_f1",
                 "per_class": {label: {"precision", "recall", "f1", "support"}}, "confusion_matrix": [[...]],
                 "confusion_matrix_png": "confusion_fold0.png"}],
      "created": "2026-01-01T00:00:00Z", "seconds": 12.3
    }
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fer_hf.errors_fer import FERInputError

from .cli import refusals_as_one_line, setup_logging
from .metrics import classification_metrics, mean_std, plot_confusion_matrix
from .ravdess import (
    DEFAULT_FOLDS,
    LAYOUT_MODALITIES,
    MODALITY_LAYOUTS,
    VALIDATION_STRATEGIES,
    build_index,
    fold_split,
    load_folds,
)

if TYPE_CHECKING:
    import torch

# torch and the modules that need it are imported in the functions that use them, so that `fer-evaluate --help`
# and a wrong argument answer at once.

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
METRIC_CARD = (
    ("accuracy", "Accuracy (WAR)", "accuracy", None),
    ("uar", "UAR", "uar", None),
    ("macro_f1", "Macro-F1", "f1", {"average": "macro"}),
)


def checkpoint_training_record(checkpoint: str | Path) -> dict:
    """`config.provenance["training"]` of a saved model folder, or {} (no record: an older or untrained model)."""
    try:
        config = json.loads((Path(checkpoint) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return dict(((config.get("provenance") or {}).get("training")) or {})


def predict(model, dataset, collator, batch_size: int = 8, device: str | torch.device = "cpu", progress=False):
    """Run the model over `dataset`. Returns (y_true int64 `(N,)`, y_pred int64 `(N,)`, probs float32 `(N, C)`)."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    y_true, probs = [], []
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="evaluating", unit="batch", disable=not progress):
        batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        labels = batch.pop("labels")
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            logits = model(**batch).logits.float()
        probs.append(logits.softmax(-1).cpu().numpy())
        y_true.append(labels.numpy())
    if not probs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, model.config.num_labels), np.float32)
    p = np.concatenate(probs)
    return np.concatenate(y_true).astype(np.int64), p.argmax(-1).astype(np.int64), p


def evaluate_fold(
    checkpoint: str | Path,
    index,
    fold: int,
    folds=DEFAULT_FOLDS,
    validation: str = "next_fold",
    split_name: str = "test",
    cache_dir: str = "cache",
    out_dir: str | Path | None = None,
    batch_size: int = 8,
    workers: int = 1,
    image_format: str = "jpeg",
    jpeg_quality: int = 95,
    device: str | None = None,
    progress: bool = False,
) -> dict:
    """Evaluate one checkpoint on one fold's `split_name` actors ("test" or "val"). Returns the fold's entry of the
    results JSON (and writes `confusion_fold<k>.png` under `out_dir` when given)."""
    import torch

    from fer_hf.modeling_fer import FERForEmotionClassification
    from fer_hf.processing_fer import FERProcessor

    from .data import CachedClipDataset, FERCollator, build_cache

    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise FERInputError(f"no model checkpoint (config.json) in {str(checkpoint)!r}")
    training = checkpoint_training_record(checkpoint)
    if training.get("mode") == "release":
        raise FERInputError(f"{str(checkpoint)!r} is a release model trained on every actor "
                            f"({training.get('train_actors')}): no actor is held out, so a test score would be a "
                            "training score; its estimate is the cross-validated mean of the fold models")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    split = fold_split(fold, folds, validation)
    actors = split.test if split_name == "test" else split.val
    processor = FERProcessor.from_pretrained(str(checkpoint))
    model = FERForEmotionClassification.from_pretrained(str(checkpoint)).to(device)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    clips = index.for_actors(actors)
    if not clips:
        raise FERInputError(f"fold {fold}: no {split_name} clips for actors {list(actors)} under {index.root}")
    report = build_cache(clips, processor, cache_dir, workers=workers, image_format=image_format,
                         jpeg_quality=jpeg_quality, progress=progress)
    dataset = CachedClipDataset(report.entries)
    y_true, y_pred, _ = predict(model, dataset, FERCollator(processor), batch_size, device, progress)
    metrics = classification_metrics(y_true, y_pred, labels)
    entry = dict(fold=fold, checkpoint=str(checkpoint), train_actors=list(split.train), val_actors=list(split.val),
                 test_actors=list(split.test), split=split_name, num_clips=len(dataset), failed_clips=report.failed,
                 **metrics)
    if out_dir is not None:
        png = f"confusion_fold{fold}.png"
        plot_confusion_matrix(metrics["confusion_matrix"], labels, Path(out_dir) / png,
                              title=f"fold {fold} ({split_name} actors {list(actors)}): "
                                    f"WAR {metrics['accuracy']:.1%}, UAR {metrics['uar']:.1%}")
        entry["confusion_matrix_png"] = png
    logger.info("fold %d: %d clips, accuracy %.4f, UAR %.4f, macro-F1 %.4f", fold, len(dataset),
                metrics["accuracy"], metrics["uar"], metrics["macro_f1"])
    from .stages import collapse_verdict

    entry["verdict"] = collapse_verdict(y_true, y_pred, len(labels))
    if entry["verdict"]:
        logger.warning("fold %d: THE MODEL IS DEGENERATE: %s", fold, entry["verdict"])
    return entry


def aggregate(fold_entries: list[dict], labels, num_folds: int, dataset: dict, out_dir: str | Path | None = None,
              seconds: float | None = None) -> dict:
    """Combine fold entries into the results JSON document (see the module docstring)."""
    summary = {key: mean_std([f[key] for f in fold_entries]) for key, *_ in METRIC_CARD}
    pooled_cm = np.sum([np.asarray(f["confusion_matrix"]) for f in fold_entries], axis=0)
    y_true = np.repeat(np.arange(len(labels)), pooled_cm.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(len(labels)), row) for row in pooled_cm]) if pooled_cm.sum() else []
    pooled = classification_metrics(y_true, y_pred, labels)
    metrics = []
    for key, name, mtype, margs in METRIC_CARD:
        item = {"name": name, "type": mtype, "value": summary[key]["mean"], "std": summary[key]["std"]}
        if margs:
            item["args"] = margs
        metrics.append(item)
    results = {
        "schema_version": SCHEMA_VERSION,
        "task": {"type": "audio-visual-emotion-recognition", "name": "Audio-visual emotion recognition"},
        "dataset": dataset,
        "protocol": f"{num_folds}-fold speaker-independent",
        "complete": sorted(f["fold"] for f in fold_entries) == list(range(num_folds)),
        "labels": list(labels),
        "metrics": metrics,
        "summary": summary,
        "pooled": pooled,
        "folds": fold_entries,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": None if seconds is None else round(seconds, 1),
    }
    if out_dir is not None:
        png = "confusion_all_folds.png"
        plot_confusion_matrix(pooled_cm, labels, Path(out_dir) / png,
                              title=f"{len(fold_entries)} fold(s) pooled: WAR {pooled['accuracy']:.1%}, "
                                    f"UAR {pooled['uar']:.1%}")
        results["confusion_matrix_png"] = png
    return results


def run(args) -> dict:
    started = time.time()
    folds = load_folds(args.folds) if args.folds else DEFAULT_FOLDS
    channels = {"speech": (1,), "song": (2,), "both": (1, 2)}[args.vocal_channel]
    fold_ids = list(range(len(folds))) if args.fold == "all" else [int(args.fold)]
    layout = args.modality
    if layout is None:  # the layout the (first) checkpoint was trained on
        trained = checkpoint_training_record(args.checkpoint.replace("{fold}", str(fold_ids[0])))
        layout = trained.get("modality_layout") or "audio-video"
        logger.info("modality layout %s (%s)", layout, "from the checkpoint's provenance" if trained else "default")
    index = build_index(args.data_root, vocal_channels=channels, layout=layout)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for k in fold_ids:
        checkpoint = args.checkpoint.replace("{fold}", str(k))
        entries.append(evaluate_fold(
            checkpoint, index, k, folds, args.validation, args.split, args.cache_dir, out, args.batch_size,
            args.workers, args.image_format, args.jpeg_quality, args.device, progress=not args.no_progress,
        ))
    labels = list(entries[0]["per_class"])
    dataset = {"name": args.dataset_name or index.dataset_name, "type": "synthetic" if index.synthetic else "ravdess",
               "synthetic": index.synthetic, "config": f"{layout} {args.vocal_channel}", "split": args.split,
               "data_root": str(args.data_root), "modality_layout": layout,
               "modalities": list(LAYOUT_MODALITIES[layout]), "vocal_channels": list(channels)}
    results = aggregate(entries, labels, len(folds), dataset, out, time.time() - started)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    s = results["summary"]
    logger.info("%s over %d fold(s): accuracy %.4f ± %.4f, UAR %.4f ± %.4f, macro-F1 %.4f ± %.4f -> %s",
                results["protocol"], len(entries), s["accuracy"]["mean"], s["accuracy"]["std"], s["uar"]["mean"],
                s["uar"]["std"], s["macro_f1"]["mean"], s["macro_f1"]["std"], out / "results.json")
    return results


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fer-evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="RAVDESS folder (Actor_XX/ sub-folders or flat)")
    p.add_argument("--modality", choices=tuple(MODALITY_LAYOUTS),
                   help="which RAVDESS files (default: the layout the checkpoint was trained on)")
    p.add_argument("--checkpoint", required=True,
                   help="model folder; '{fold}' is replaced by the fold index (e.g. checkpoints/seed/fold{fold}/final)")
    p.add_argument("--fold", default="all", help="fold index or 'all' (default)")
    p.add_argument("--folds", help="folds file (JSON or one fold per line); default: the 6 folds of 4 actors")
    p.add_argument("--validation", choices=VALIDATION_STRATEGIES, default="next_fold",
                   help="must match training: which actors were validation actors")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--vocal-channel", choices=("speech", "song", "both"), default="speech")
    p.add_argument("--cache-dir", default="cache")
    p.add_argument("--image-format", choices=("jpeg", "png"), default="jpeg")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--workers", type=int, default=1, help="processes that build the cache")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--dataset-name", help="dataset name written to the results JSON (default: RAVDESS, or "
                                          "'synthetic (RAVDESS-named)' for a generated set)")
    p.add_argument("--out", default="results", help="output folder for results.json and the PNGs")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show the full trace of a refusal")
    args = p.parse_args(argv)
    if args.fold != "all" and not args.fold.isdigit():
        p.error(f"--fold must be a fold index or 'all', got {args.fold!r}")
    if args.fold == "all" and "{fold}" not in args.checkpoint:
        p.error("--fold all needs '{fold}' in --checkpoint (one model per fold)")
    return args


def main(argv=None) -> None:
    """`fer-evaluate`: arguments first (no torch import before they are valid), then the run."""
    argv = sys.argv[1:] if argv is None else list(argv)
    setup_logging()
    args = parse_args(argv)
    with refusals_as_one_line(args.debug):
        run(args)


if __name__ == "__main__":
    main()


__all__ = ["aggregate", "checkpoint_training_record", "evaluate_fold", "parse_args", "predict", "run"]
