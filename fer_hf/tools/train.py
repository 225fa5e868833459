"""Train speaker-independent fold models, or a release model on every actor, with the Hugging Face `Trainer`.

    fer-train --data-root data/RAVDESS --preset seed --fold all --epochs 30 --freeze-epochs 3   # cross-validation
    fer-train --data-root data/RAVDESS --preset seed --mode release --freeze-epochs 3           # release model

(`python -m fer_hf.tools.train` is the same command.) Everything distributed (DDP, FSDP, DeepSpeed, multi-node)
comes from `torchrun` / `accelerate launch` around the same command; only rank 0 builds the preprocessing cache,
every rank checks that it sees the same clip list, and `--prepare-only` builds the cache alone (the first step of
a cluster job). Per fold, `<output-dir>/fold<k>/` holds the Trainer checkpoints (`checkpoint-<step>/`), TensorBoard
logs (`runs/`), `sessions.json` (every start and resume) and `final/`: the best checkpoint by validation UAR with
`model.safetensors`, `config.json` (with the provenance record: data set, layout, actors, this fold's test score),
the processor JSON and `training_info.json`. A release run writes `<output-dir>/release/` the same way.

Choices (see docs/training.md):
- validation actors: the next fold's (`ravdess.fold_split`), so train/val/test never share a speaker; a fold
  without usable validation clips is refused unless `--validation none`;
- class balance: class-weighted cross-entropy, weight_c = N / (C * n_c) from the training split;
- learning rates: the pretrained backbones train at `--backbone-lr`, everything else at `--lr`; both are logged;
- release: the epoch count is the median of the folds' best epochs, the recipe must match the folds'.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fer_hf.errors_fer import FERInputError

from .cli import BACKBONE_PARTS, PRESET_NAMES, refusals_as_one_line, setup_logging
from .distributed import (
    check_on_all_ranks,
    check_same_on_all_ranks,
    digest_of,
    distributed_state,
    gather,
    on_main_then_broadcast,
    rank_and_world,
)
from .metrics import classification_metrics
from .ravdess import (
    DEFAULT_FOLDS,
    MODALITY_LAYOUTS,
    VALIDATION_STRATEGIES,
    build_index,
    clip_list_record,
    fold_split,
    load_folds,
    release_split,
)
from .recipe import SCOPE_CV, SCOPE_FOLD, release_settings, training_provenance

if TYPE_CHECKING:
    from fer_hf.configuration_fer import FERConfig

# torch, transformers and the modules that need them are imported in the functions that use them, so that
# `fer-train --help` and a wrong argument answer at once.

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = 30
PREPARE_DESCRIPTION = ("Build the preprocessing cache of every clip (fer-train --prepare-only: the first step of a "
                       "cluster job), then stop. Give the data and model options the training run will get.")
_TRAINER_NAMES = ("BackboneFreezeCallback", "FERTrainer", "backbone_of", "class_weights")  # re-exported


def __getattr__(name: str):
    if name in _TRAINER_NAMES:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_precision(name: str) -> dict:
    """TrainingArguments flags: bf16/fp16 only when CUDA is available (`auto`: bf16 if supported, else fp16)."""
    import torch

    cuda = torch.cuda.is_available()
    if name == "auto":
        name = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if name in ("bf16", "fp16") and not cuda:
        raise FERInputError(f"--precision {name} needs a CUDA GPU; use fp32 (or auto) on CPU")
    return {"bf16": name == "bf16", "fp16": name == "fp16"}


def build_model(args, config: FERConfig):
    from fer_hf.modeling_fer import FERForEmotionClassification

    if args.init_from:
        return FERForEmotionClassification.from_pretrained(args.init_from, config=config)
    return FERForEmotionClassification(config)


def make_config(args) -> FERConfig:
    from fer_hf.configuration_fer import FERConfig

    overrides = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if args.modality_dropout is not None:
        overrides["modality_dropout"] = args.modality_dropout
    if args.init_from:
        config = FERConfig.from_pretrained(args.init_from)
        for key, value in overrides.items():
            if key in FERConfig.sub_configs and isinstance(value, dict):
                for sub_key, sub_value in value.items():  # merge into the sub-config, as from_preset does
                    setattr(getattr(config, key), sub_key, sub_value)
            else:
                setattr(config, key, value)
        config.validate_fer()
        return config
    return FERConfig.from_preset(args.preset, **overrides)


def _cache(args, clips, processor):
    """Rank 0 builds the cache for `clips`; every rank gets rank 0's report and checks it can read the files."""
    from .data import build_cache

    rank, world = rank_and_world()
    report = on_main_then_broadcast(lambda: build_cache(
        clips, processor, args.cache_dir, workers=args.workers, image_format=args.image_format,
        jpeg_quality=args.jpeg_quality, progress=not args.no_progress))
    missing = [e.path for e in report.entries if not os.path.isfile(e.path)]
    check_on_all_ranks(not missing, f"{len(missing)} cache files written by rank 0 are not readable here (first: "
                                    f"{missing[0] if missing else ''}); --cache-dir must be shared by every rank")
    if world > 1 and rank > 0:
        logger.info("rank %d: using rank 0's cache report (%s)", rank, report.summary())
    return report


def _checkpoints(folder: Path) -> list[Path]:
    """`checkpoint-<step>` folders, by step."""
    found = folder.glob("checkpoint-*") if folder.is_dir() else []
    return sorted((p for p in found if p.name.split("-")[-1].isdigit()), key=lambda p: int(p.name.split("-")[-1]))


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def check_resume_point(checkpoint: str | Path) -> None:
    """Refuse (`CorruptCheckpointError`, one line) a `checkpoint-<step>` folder whose weights cannot be read or hold
    NaN / infinite values, before the Trainer would resume a diverged or damaged run."""
    from fer_hf.modeling_fer import load_checked_safetensors

    advice = (f"Delete {str(checkpoint)!r} to resume from the checkpoint before it, or start again with "
              "--overwrite-output-dir.")
    for weights in sorted(Path(checkpoint).glob("*.safetensors")):
        load_checked_safetensors(weights, advice=advice)


def _prepare_run_dir(args, run_dir: Path) -> str | None:
    """The checkpoint to resume from (or None), after refusing to mix a fresh run into an old one."""
    from transformers.trainer_utils import get_last_checkpoint

    from .run_dir import SessionLog

    if args.resume:
        resume = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
        if resume is None:
            logger.warning("--resume: no checkpoint in %s, starting from scratch", run_dir)
        else:
            check_resume_point(resume)
            logger.info("resuming from %s", resume)
        return resume
    old = _checkpoints(run_dir)
    rank, _ = rank_and_world()
    check_on_all_ranks(not old or args.overwrite_output_dir,
                       f"{run_dir} holds checkpoints of an earlier run ({old[-1].name if old else ''}); add --resume "
                       "to continue it, --overwrite-output-dir to start again, or choose another --output-dir",
                       FERInputError)
    if old and rank == 0:
        logger.warning("--overwrite-output-dir: removing %d old checkpoints in %s", len(old), run_dir)
        for path in old:
            shutil.rmtree(path)
        SessionLog(run_dir).reset()
    gather(None)  # every rank waits for the clean-up
    return None


def train_fold(args, fold: int | None, index, folds, release: dict | None = None) -> dict:
    """Train fold `fold`, or the release model when `release` (from `recipe.release_settings`) is given.

    Returns the summary written to `final/training_info.json`.
    """
    import numpy as np
    import torch
    from transformers import TrainingArguments, set_seed

    from .data import CachedClipDataset, FERCollator
    from .run_dir import SessionCallback, SessionLog, totals
    from .stages import collapse_verdict, select_best
    from .trainer import BackboneFreezeCallback, FERTrainer, SaveProcessorCallback, class_weights, compute_metrics_fn

    started = time.time()
    rank, world = rank_and_world()
    set_seed(args.seed)
    split = release_split(folds) if release is not None else fold_split(fold, folds, args.validation)
    name = "release" if release is not None else f"fold {fold}"
    config = make_config(args)
    processor = training_processor(config, index)
    subsets = {key: index.for_actors(actors) for key, actors in
               (("train", split.train), ("val", split.val), ("test", split.test))}
    if not subsets["train"]:
        raise FERInputError(f"{name}: no training clips for actors {list(split.train)} under {index.root}")
    check_same_on_all_ranks(digest_of({k: clip_list_record(v, index.root) for k, v in subsets.items()}),
                            f"{name} clip list", f"{sum(map(len, subsets.values()))} clips")
    report = _cache(args, subsets["train"] + subsets["val"] + subsets["test"], processor)
    usable = {e.clip.path: e for e in report.entries}
    datasets = {key: CachedClipDataset([usable[c.path] for c in clips if c.path in usable])
                for key, clips in subsets.items()}
    train_ds, val_ds, test_ds = datasets["train"], datasets["val"], datasets["test"]
    if args.validation != "none" and release is None and not len(val_ds):
        raise FERInputError(f"{name}: no usable validation clips (actors {list(split.val)}), so no model selection "
                            "is possible; check the data under --data-root, or pass --validation none to keep the "
                            "last checkpoint instead")
    logger.info("%s: %d train clips (actors %s), %d val clips (actors %s), %d test clips (actors %s)", name,
                len(train_ds), list(split.train), len(val_ds), list(split.val), len(test_ds), list(split.test))

    model = build_model(args, config)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    weights = class_weights(train_ds.labels, config.num_labels) if args.class_balance == "loss" else None
    rank_record = {"rank": rank, "train_clips": digest_of([e.path for e in train_ds.entries]),
                   "val_clips": digest_of([e.path for e in val_ds.entries]),
                   "class_weights": None if weights is None else [round(w, 6) for w in weights.tolist()],
                   "cache": "built here" if rank == 0 else "report received from rank 0"}
    ranks = gather(rank_record)
    check_same_on_all_ranks(digest_of({k: v for k, v in rank_record.items() if k not in ("rank", "cache")}),
                            f"{name} training data (clips and class weights)")
    freeze_mode = "drop_grads" if world > 1 else "requires_grad"
    if world > 1:
        model.freeze_backbones(vision=False, audio=False, fusion=False)  # the callback drops grads instead
    run_dir = Path(args.output_dir) / ("release" if release is not None else f"fold{fold}")
    resume = _prepare_run_dir(args, run_dir)
    has_val = len(val_ds) > 0
    epochs = release["epochs_used"] if release is not None else args.epochs
    targs = TrainingArguments(
        output_dir=str(run_dir),
        num_train_epochs=epochs,
        max_steps=args.max_steps if args.max_steps else -1,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size or args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_ratio,
        lr_scheduler_type=args.scheduler,
        max_grad_norm=args.max_grad_norm,
        eval_strategy="epoch" if has_val else "no",
        save_strategy="epoch",
        save_total_limit=args.save_total_limit,
        save_only_model=args.save_only_model,
        load_best_model_at_end=has_val,
        metric_for_best_model="uar" if has_val else None,
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=args.logging_steps,
        report_to=[] if args.report_to == "none" else [args.report_to],
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=args.dataloader_workers,
        remove_unused_columns=False,
        label_names=["labels"],
        activation_checkpointing=args.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if args.gradient_checkpointing else None,
        disable_tqdm=args.no_progress,
        use_cpu=not torch.cuda.is_available(),
        **resolve_precision(args.precision),
    )
    sessions = SessionCallback(SessionLog(run_dir), resume, world, started)
    callbacks = [SaveProcessorCallback(processor), sessions]
    if args.freeze_epochs != 0:
        callbacks.append(BackboneFreezeCallback(args.freeze_epochs, args.freeze_parts, freeze_mode))
    trainer = FERTrainer(
        model=model, args=targs, train_dataset=train_ds, eval_dataset=val_ds if has_val else None,
        data_collator=FERCollator(processor), compute_metrics=compute_metrics_fn(labels), callbacks=callbacks,
        class_weights=weights, backbone_lr=args.backbone_lr,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    eval_history = [{k: e[k] for k in ("epoch", "step", "eval_loss", "eval_accuracy", "eval_uar", "eval_macro_f1")
                     if k in e} for e in trainer.state.log_history if "eval_uar" in e]  # the whole run's epochs
    val_metrics = trainer.evaluate() if has_val else {}
    best_step = getattr(trainer.state, "best_global_step", None)
    best_epoch = next((e["epoch"] for e in eval_history if e["step"] == best_step), None)
    if len(eval_history) > 1 and select_best([{"val_uar": e["eval_uar"]} for e in eval_history]) is None:
        logger.warning("%s: EVERY EPOCH SCORED THE SAME validation UAR (%.4f): the model learned nothing to choose "
                       "by, so the kept epoch means nothing", name, eval_history[0]["eval_uar"])
    test_metrics, verdict = None, None
    if len(test_ds):
        pred = trainer.predict(test_ds, metric_key_prefix="test")
        y_true, y_pred = np.asarray(pred.label_ids), np.asarray(pred.predictions).argmax(-1)
        test_metrics = classification_metrics(y_true, y_pred, labels)
        verdict = collapse_verdict(y_true, y_pred, len(labels))
        logger.info("%s: test actors %s: accuracy %.4f, UAR %.4f, macro-F1 %.4f", name, list(split.test),
                    test_metrics["accuracy"], test_metrics["uar"], test_metrics["macro_f1"])
        if verdict:
            logger.warning("%s: THE MODEL IS DEGENERATE on its test actors: %s", name, verdict)
    if release is not None:
        provenance = training_provenance(
            config, synthetic=index.synthetic, layout=index.layout, mode="release", split=split.to_dict(),
            epochs=epochs, metrics=release["metrics"], metrics_std=release["metrics_std"], scope=SCOPE_CV,
            extra={"cv_folds": len(release["folds"]), "cv_complete": release["complete"],
                   "cv_best_epochs": release["best_epochs"], "epochs_source": release["epochs_source"]})
    else:
        provenance = training_provenance(
            config, synthetic=index.synthetic, layout=index.layout, mode="fold", split=split.to_dict(), epochs=epochs,
            metrics=test_metrics, scope=SCOPE_FOLD, extra={"best_epoch": best_epoch})
    trainer.model.config.provenance = provenance
    final_dir = run_dir / "final"
    trainer.save_model(str(final_dir))  # model.safetensors + config.json (+ the code files, auto_map); rank 0 only
    session_list = sessions.finish(write=trainer.is_world_process_zero())
    info = dict(
        fold=fold, mode="release" if release is not None else "fold", split=split.to_dict(), preset=config.preset,
        dataset=index.dataset_name, synthetic=index.synthetic, modality_layout=index.layout,
        data_root=index.root, cache_dir=report.cache_dir, num_train_clips=len(train_ds), num_val_clips=len(val_ds),
        num_test_clips=len(test_ds), failed_clips=report.failed,
        class_weights=None if weights is None else weights.tolist(), freeze_epochs=args.freeze_epochs,
        epochs_trained=trainer.state.epoch, best_epoch=best_epoch, best_checkpoint=trainer.state.best_model_checkpoint,
        train_metrics=result.metrics, val_metrics=val_metrics, test_metrics=test_metrics, eval_history=eval_history,
        release=release, provenance=provenance, verdict=verdict, resumed_from=resume,
        global_step=trainer.state.global_step,
        session_seconds=round(time.time() - started, 1), total=totals(session_list), sessions=session_list,
        world_size=world, ranks=ranks, args=dict(vars(args), world_size=world),
    )
    info["seconds"] = info["total"]["seconds"]
    last = _checkpoints(run_dir)[-1:] if trainer.is_world_process_zero() else []
    info["disk_bytes"] = {"last_checkpoint": _folder_bytes(last[0]) if last else None,
                          "final": _folder_bytes(final_dir) if trainer.is_world_process_zero() else None,
                          "save_only_model": args.save_only_model}
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(final_dir))
        (final_dir / "training_info.json").write_text(json.dumps(info, indent=1, default=str))
        from .model_card import render_model_card

        (final_dir / "README.md").write_text(render_model_card(trainer.model, str(final_dir)))
    logger.info("%s done in %.0f s (whole run %.0f s); final model in %s; val %s", name, info["session_seconds"],
                info["seconds"], final_dir, val_metrics)
    return info


def training_processor(config, index):
    """The processor the cache is built with: the model's own settings, with speech detection off for a
    synthetic set (its voices are gated tones, which the speech detector rightly rejects as not speech)."""
    from fer_hf.processing_fer import FERProcessor

    if index.synthetic:
        logger.info("synthetic set: its tones are not speech, so speech detection is off for this run")
        return FERProcessor.from_model_config(config, min_speech_fraction=0.0)
    return FERProcessor.from_model_config(config)


def prepare_cache(args, index) -> dict:
    """`--prepare-only`: build the cache of every indexed clip (rank 0, `--workers` processes) and stop."""

    processor = training_processor(make_config(args), index)
    report = _cache(args, index.clips, processor)
    logger.info("cache ready: %s", report.summary())
    return {"cache_dir": report.cache_dir, "clips": len(index.clips), "usable": len(report.entries),
            "written": report.written, "reused": report.reused, "failed": report.failed,
            "bytes_written": report.bytes_written}


@contextlib.contextmanager
def output_dir_lock(folder):
    """Rank 0 holds the output folder's lock for the whole run; every rank stops when it is taken."""
    from .run_dir import OutputDirLock, RunLockedError

    rank, world = rank_and_world()
    lock, error = OutputDirLock(folder), None
    if rank == 0:
        try:
            lock.acquire()
        except RunLockedError as err:
            error = err
    check_on_all_ranks(error is None, str(error), RunLockedError)
    try:
        yield lock
    finally:
        lock.release()


def parse_args(argv=None, prepare_only: bool = False) -> argparse.Namespace:
    """`fer-train`'s arguments; with `prepare_only`, `fer-prepare-cache`'s (the same, with `--prepare-only` implied)."""
    if prepare_only:
        p = argparse.ArgumentParser(prog="fer-prepare-cache", description=PREPARE_DESCRIPTION)
    else:
        p = argparse.ArgumentParser(prog="fer-train", description=__doc__.split("\n\n")[0])
    d = p.add_argument_group("data")
    d.add_argument("--data-root", required=True, help="RAVDESS folder (Actor_XX/ sub-folders or flat)")
    d.add_argument("--modality", choices=tuple(MODALITY_LAYOUTS), default="audio-video",
                   help="which RAVDESS files: " + "; ".join(f"{k}: {v}" for k, v in MODALITY_LAYOUTS.items()))
    d.add_argument("--cache-dir", default="cache", help="preprocessing cache root (default: cache)")
    d.add_argument("--prepare-only", action="store_true", default=prepare_only,
                   help=argparse.SUPPRESS if prepare_only else
                   "only build the preprocessing cache of every clip (first step of a cluster job), then stop")
    d.add_argument("--folds", help="folds file (JSON or one fold per line); default: the 6 folds of 4 actors")
    d.add_argument("--fold", default="0", help="fold index, or 'all' to train every fold in turn (default 0)")
    d.add_argument("--validation", choices=VALIDATION_STRATEGIES, default="next_fold",
                   help="validation actors: the next fold's (default; required to be non-empty) or none")
    d.add_argument("--vocal-channel", choices=("speech", "song", "both"), default="speech")
    d.add_argument("--workers", type=int, default=1, help="processes that build the cache (default 1)")
    d.add_argument("--image-format", choices=("jpeg", "png"), default="jpeg", help="face crops in the cache")
    d.add_argument("--jpeg-quality", type=int, default=95)
    d.add_argument("--dataloader-workers", type=int, default=0)
    m = p.add_argument_group("model")
    m.add_argument("--preset", choices=PRESET_NAMES, default="seed")
    m.add_argument("--init-from", help="start from a saved FER model folder (e.g. with pretrained backbones)")
    m.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, JSON value (repeatable)")
    m.add_argument("--modality-dropout", type=float, help="override config.modality_dropout")
    m.add_argument("--gradient-checkpointing", action="store_true")
    o = p.add_argument_group("optimisation")
    o.add_argument("--mode", choices=("fold", "release"), default="fold",
                   help="fold: train --fold (cross-validation); release: train on every actor with the settings the "
                        "folds in --cv-dir chose")
    o.add_argument("--cv-dir", help="release mode: the --output-dir of the fold runs (default: this --output-dir)")
    o.add_argument("--epochs", type=float, help=f"epochs (default {DEFAULT_EPOCHS}; release: chosen by the folds)")
    o.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (overrides --epochs)")
    o.add_argument("--batch-size", type=int, default=8, help="per process (the global batch is x processes)")
    o.add_argument("--eval-batch-size", type=int, default=0)
    o.add_argument("--grad-accum", type=int, default=1)
    o.add_argument("--lr", type=float, default=3e-4, help="learning rate of the new modules (head)")
    o.add_argument("--backbone-lr", type=float, default=3e-5, help="learning rate of the pretrained backbones")
    o.add_argument("--weight-decay", type=float, default=0.05)
    o.add_argument("--warmup-ratio", type=float, default=0.05, help="warm-up as a fraction of the steps")
    o.add_argument("--scheduler", default="cosine", help="transformers scheduler name (default cosine)")
    o.add_argument("--max-grad-norm", type=float, default=1.0)
    o.add_argument("--freeze-epochs", type=int, default=0,
                   help="keep the backbones frozen for the first N epochs (-1: always; 0: never)")
    o.add_argument("--freeze-parts", nargs="+", choices=BACKBONE_PARTS, default=list(BACKBONE_PARTS))
    o.add_argument("--class-balance", choices=("loss", "none"), default="loss")
    o.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    o.add_argument("--seed", type=int, default=42)
    o.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; under contention 1 thread per process can be many "
                        "times faster than the default)")
    r = p.add_argument_group("run")
    r.add_argument("--output-dir", help="default: checkpoints/<preset>")
    r.add_argument("--resume", action="store_true", help="continue from the last checkpoint of each fold")
    r.add_argument("--overwrite-output-dir", action="store_true",
                   help="delete the checkpoints of an earlier run in the fold folder and start again")
    r.add_argument("--save-only-model", action="store_true",
                   help="checkpoints without optimizer/scheduler state (about 1/3 of the disk; --resume impossible)")
    r.add_argument("--logging-steps", type=int, default=10)
    r.add_argument("--save-total-limit", type=int, default=2)
    r.add_argument("--report-to", choices=("tensorboard", "none"), default="tensorboard")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--debug", action="store_true", help="show the full trace of a refusal")
    args = p.parse_args(argv)
    args.output_dir = args.output_dir or os.path.join("checkpoints", args.preset)
    if not 0 <= args.warmup_ratio < 1:
        p.error(f"--warmup-ratio must be in [0, 1), got {args.warmup_ratio}")
    if args.fold != "all" and not args.fold.isdigit():
        p.error(f"--fold must be a fold index or 'all', got {args.fold!r}")
    if args.epochs is not None and args.epochs <= 0 and args.max_steps <= 0:
        p.error("--epochs must be positive (or give --max-steps)")
    if args.mode == "fold" and args.epochs is None:
        args.epochs = float(DEFAULT_EPOCHS)
    if args.resume and args.save_only_model:
        p.error("--resume needs the optimizer state, which --save-only-model leaves out of the checkpoints")
    if args.freeze_epochs > 0 and args.epochs is not None and args.freeze_epochs >= args.epochs:
        logger.warning("--freeze-epochs %d >= --epochs %s: the backbones never unfreeze", args.freeze_epochs,
                       args.epochs)
    return args


def _release(args, folds) -> dict:
    """The release settings: the folds' recipe check, the CV estimate and the epoch count."""
    cv_args = {k: v for k, v in vars(args).items()}
    cv_args["world_size"] = rank_and_world()[1]
    settings = release_settings(args.cv_dir or args.output_dir, len(folds), cv_args)
    if args.epochs is not None:
        settings["epochs_used"] = args.epochs
        settings["epochs_source"] = f"--epochs {args.epochs:g} (the folds' best epochs suggest {settings['epochs']})"
        logger.warning("release: --epochs %g given; the folds' best epochs %s suggest %d", args.epochs,
                       settings["best_epochs"], settings["epochs"])
    else:
        settings["epochs_used"] = settings["epochs"]
        settings["epochs_source"] = f"median of the folds' best epochs {settings['best_epochs']}"
    logger.info("release: %d epochs (%s); cross-validated estimate of this recipe: UAR %.4f ± %.4f over %d folds",
                settings["epochs_used"], settings["epochs_source"], settings["metrics"]["uar"],
                settings["metrics_std"]["uar"], len(settings["folds"]))
    return settings


def run(args) -> list[dict]:
    distributed_state()  # the process group, before any rank does anything (gloo on CPU, NCCL on GPUs)
    folds = load_folds(args.folds) if args.folds else DEFAULT_FOLDS
    channels = {"speech": (1,), "song": (2,), "both": (1, 2)}[args.vocal_channel]
    index = build_index(args.data_root, vocal_channels=channels, layout=args.modality)
    if not index.clips:
        raise FERInputError(f"no usable RAVDESS {args.modality} clips under {args.data_root!r} ({index.summary()})")
    check_same_on_all_ranks(digest_of(clip_list_record(index.clips, index.root)), "clip list",
                            f"{len(index.clips)} clips under {index.root}")
    if args.prepare_only:
        return [prepare_cache(args, index)]
    with output_dir_lock(args.output_dir):
        if args.mode == "release":
            return [train_fold(args, None, index, folds, release=_release(args, folds))]
        fold_ids = range(len(folds)) if args.fold == "all" else [int(args.fold)]
        return [train_fold(args, k, index, folds) for k in fold_ids]


def main(argv=None, prepare_only: bool = False) -> None:
    """`fer-train`: arguments first (no torch import before they are valid), then the run."""
    argv = sys.argv[1:] if argv is None else list(argv)
    setup_logging()
    args = parse_args(argv, prepare_only=prepare_only)
    with refusals_as_one_line(args.debug):
        from .stages import set_threads

        set_threads(args.threads)
        if args.prepare_only:  # the cache only: nothing is written into the output folder
            run(args)
            return
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(Path(args.output_dir) / "train.log")  # the whole log, every session appended
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        try:
            run(args)
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()


def prepare_main(argv=None) -> None:
    """`fer-prepare-cache`: `fer-train --prepare-only` under its own name and usage."""
    main(argv, prepare_only=True)


if __name__ == "__main__":
    main()


__all__ = [*_TRAINER_NAMES, "parse_args", "prepare_main", "resolve_precision", "run", "train_fold"]
