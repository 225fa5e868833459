"""Train one speaker-independent fold (or all) with the Hugging Face `Trainer`.

    python -m fer_hf.tools.train --data-root data/RAVDESS --preset seed --fold 0 --epochs 30 --freeze-epochs 3

Everything distributed (DDP, FSDP, DeepSpeed, multi-node) comes from `accelerate launch` / `torchrun` around
the same command. Per fold, `<output-dir>/fold<k>/` holds the Trainer checkpoints (`checkpoint-<step>/`:
safetensors weights, optimizer, scheduler, RNG state and the processor), TensorBoard logs (`runs/`) and
`final/`: the best checkpoint by validation UAR (the last one without a validation set) with
`model.safetensors`, `config.json`, the processor JSON and `training_info.json` — ready for export.

Choices (see docs/training.md):
- validation actors: the next fold's (`ravdess.fold_split`), so train/val/test never share a speaker;
- class balance: class-weighted cross-entropy, weight_c = N / (C * n_c) from the training split (neutral has half
  as many clips); a weighted sampler would fight the distributed sampler, a weighted loss works everywhere;
- learning rates: the pretrained backbones (`vision_encoder`, `audio_encoder`, `fusion.backbone`) train at
  `--backbone-lr`, everything else at `--lr`; no weight decay on biases and norms;
- freezing: backbones frozen for the first `--freeze-epochs` epochs by `BackboneFreezeCallback`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import PartialState
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from fer_hf.configuration_fer import FERConfig
from fer_hf.errors_fer import FERInputError

from .data import CachedClipDataset, FERCollator, build_cache
from .metrics import classification_metrics
from .ravdess import DEFAULT_FOLDS, VALIDATION_STRATEGIES, build_index, fold_split, load_folds

logger = logging.getLogger(__name__)

BACKBONE_PREFIXES = {"vision": "vision_encoder.", "audio": "audio_encoder.", "fusion": "fusion.backbone."}


def class_weights(labels, num_classes: int) -> torch.Tensor:
    """float32 `(num_classes,)`: N / (C * n_c) for classes present in `labels`, 0 for absent ones (mean 1)."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def backbone_of(param_name: str) -> str | None:
    """`vision` / `audio` / `fusion` when the parameter belongs to that pretrained backbone, else None (head)."""
    name = param_name.removeprefix("module.")
    return next((part for part, prefix in BACKBONE_PREFIXES.items() if name.startswith(prefix)), None)


class BackboneFreezeCallback(TrainerCallback):
    """Keep the pretrained backbones frozen while `state.epoch < epochs` (`epochs < 0`: the whole run).

    Modes:
    - `"requires_grad"` (single process): frozen parameters get `requires_grad=False`, so no backward runs through
      the backbones — the cheap way;
    - `"drop_grads"` (DDP / FSDP / DeepSpeed): every parameter stays trainable (the distributed wrappers register
      their gradient hooks once, when they wrap the model) and the frozen parameters' gradients are dropped before
      each optimizer step, so they do not move and their optimizer state stays empty.
    The state is a function of the epoch, so a resumed run freezes or unfreezes exactly as the original would.
    """

    def __init__(self, epochs: int, parts=("vision", "audio", "fusion"), mode: str = "requires_grad"):
        if mode not in ("requires_grad", "drop_grads"):
            raise ValueError(f"mode must be 'requires_grad' or 'drop_grads', got {mode!r}")
        self.epochs, self.parts, self.mode = epochs, tuple(parts), mode
        self._applied: bool | None = None

    def frozen_at(self, epoch: float | None) -> bool:
        return self.epochs < 0 or (epoch or 0.0) < self.epochs - 1e-6

    def _apply(self, model, state) -> None:
        frozen = self.frozen_at(state.epoch)
        if self.mode == "requires_grad" and model is not None and frozen != self._applied:
            model.freeze_backbones(**{part: frozen for part in self.parts})
            logger.info("epoch %.2f: backbones %s %s", state.epoch or 0.0, list(self.parts),
                        "frozen" if frozen else "unfrozen")
        self._applied = frozen

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._apply(model, state)

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        self._apply(model, state)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.mode == "drop_grads" and self.frozen_at(state.epoch) and model is not None:
            for name, param in model.named_parameters():
                if backbone_of(name) in self.parts:
                    param.grad = None


class SaveProcessorCallback(TrainerCallback):
    """Save the processor into every checkpoint folder, next to the weights.

    (Passing it as the Trainer's `processing_class` would do the same, but transformers 5.23's Trainer then
    reads `processor.tokenizer`, which an audio-visual processor does not have.)
    """

    def __init__(self, processor):
        self.processor = processor

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.processor.save_pretrained(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))


class FERTrainer(Trainer):
    """`Trainer` with backbone/head learning-rate groups, a class-weighted loss and logits-only predictions."""

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args, class_weights: torch.Tensor | None = None, backbone_lr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights
        self.backbone_lr = backbone_lr

    def create_optimizer(self, model=None):
        """AdamW over four groups: {backbone, head} x {decay, no decay}. Frozen parameters are included so that
        unfreezing later needs no new optimizer (AdamW skips parameters without a gradient)."""
        if self.optimizer is not None:
            return self.optimizer
        model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(model))
        backbone_lr = self.args.learning_rate if self.backbone_lr is None else self.backbone_lr
        groups = {}
        for name, param in model.named_parameters():
            part = "backbone" if backbone_of(name) else "head"
            key = (part, name in decay)
            groups.setdefault(key, []).append(param)
        param_groups = [
            {"params": params, "weight_decay": self.args.weight_decay if has_decay else 0.0,
             "lr": backbone_lr if part == "backbone" else self.args.learning_rate, "name": f"{part}"}
            for (part, has_decay), params in sorted(groups.items())
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits.float()
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        loss = F.cross_entropy(logits, labels, weight=weight)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        return loss.detach(), (None if prediction_loss_only else outputs.logits.detach()), labels


def compute_metrics_fn(labels_names):
    def compute_metrics(eval_pred) -> dict:
        preds = np.asarray(eval_pred.predictions).argmax(-1)
        m = classification_metrics(np.asarray(eval_pred.label_ids), preds, labels_names)
        return {"accuracy": m["accuracy"], "uar": m["uar"], "macro_f1": m["macro_f1"]}

    return compute_metrics


def resolve_precision(name: str) -> dict:
    """TrainingArguments flags: bf16/fp16 only when CUDA is available (`auto`: bf16 if supported, else fp16)."""
    cuda = torch.cuda.is_available()
    if name == "auto":
        name = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if name in ("bf16", "fp16") and not cuda:
        raise FERInputError(f"--precision {name} needs a CUDA GPU; use fp32 (or auto) on CPU")
    return {"bf16": name == "bf16", "fp16": name == "fp16"}


def build_model(args, config: FERConfig):
    from fer_hf.modeling_fer import FERForEmotionClassification

    if args.init_from:
        model = FERForEmotionClassification.from_pretrained(args.init_from, config=config)
    else:
        model = FERForEmotionClassification(config)
    return model


def make_config(args) -> FERConfig:
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


def train_fold(args, fold: int, index, folds) -> dict:
    """Train one fold; returns the training summary written to `final/training_info.json`."""
    from fer_hf.processing_fer import FERProcessor

    started = time.time()
    set_seed(args.seed)
    split = fold_split(fold, folds, args.validation)
    config = make_config(args)
    processor = FERProcessor.from_model_config(config)
    subsets = {name: index.for_actors(actors) for name, actors in
               (("train", split.train), ("val", split.val), ("test", split.test))}
    needed = subsets["train"] + subsets["val"]
    if not subsets["train"]:
        raise FERInputError(f"fold {fold}: no training clips for actors {list(split.train)} under {index.root}")
    state = PartialState()
    with state.main_process_first():  # distributed: rank 0 fills the cache, the other ranks then find it full
        report = build_cache(needed, processor, args.cache_dir, workers=args.workers, image_format=args.image_format,
                             jpeg_quality=args.jpeg_quality, progress=not args.no_progress and state.is_main_process)
    usable = {e.clip.path: e for e in report.entries}
    train_ds = CachedClipDataset([usable[c.path] for c in subsets["train"] if c.path in usable])
    val_ds = CachedClipDataset([usable[c.path] for c in subsets["val"] if c.path in usable])
    logger.info("fold %d: %d train clips (actors %s), %d val clips (actors %s), test actors %s", fold, len(train_ds),
                list(split.train), len(val_ds), list(split.val), list(split.test))

    model = build_model(args, config)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    weights = class_weights(train_ds.labels, config.num_labels) if args.class_balance == "loss" else None
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    freeze_mode = "drop_grads" if distributed else "requires_grad"
    if distributed:
        model.freeze_backbones(vision=False, audio=False, fusion=False)  # the callback drops grads instead
    fold_dir = Path(args.output_dir) / f"fold{fold}"
    has_val = len(val_ds) > 0
    targs = TrainingArguments(
        output_dir=str(fold_dir),
        num_train_epochs=args.epochs,
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
    callbacks = [SaveProcessorCallback(processor)]
    if args.freeze_epochs != 0:
        callbacks.append(BackboneFreezeCallback(args.freeze_epochs, args.freeze_parts, freeze_mode))
    trainer = FERTrainer(
        model=model, args=targs, train_dataset=train_ds, eval_dataset=val_ds if has_val else None,
        data_collator=FERCollator(processor),
        compute_metrics=compute_metrics_fn(labels), callbacks=callbacks,
        class_weights=weights, backbone_lr=args.backbone_lr,
    )
    resume = None
    if args.resume:
        resume = get_last_checkpoint(str(fold_dir)) if fold_dir.is_dir() else None
        if resume is None:
            logger.warning("--resume: no checkpoint in %s, starting from scratch", fold_dir)
        else:
            logger.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    val_metrics = trainer.evaluate() if has_val else {}
    final_dir = fold_dir / "final"
    trainer.save_model(str(final_dir))  # model.safetensors + config.json (+ the code files, auto_map)
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(final_dir))
    info = dict(
        fold=fold, split=split.to_dict(), preset=config.preset, data_root=index.root, cache_dir=report.cache_dir,
        num_train_clips=len(train_ds), num_val_clips=len(val_ds), failed_clips=report.failed,
        class_weights=None if weights is None else weights.tolist(), freeze_epochs=args.freeze_epochs,
        train_metrics=result.metrics, val_metrics=val_metrics, best_checkpoint=trainer.state.best_model_checkpoint,
        resumed_from=resume, global_step=trainer.state.global_step,
        seconds=round(time.time() - started, 1), args={k: v for k, v in vars(args).items()},
    )
    if trainer.is_world_process_zero():
        (final_dir / "training_info.json").write_text(json.dumps(info, indent=1, default=str))
    logger.info("fold %d done in %.0f s; final model in %s; val %s", fold, info["seconds"], final_dir, val_metrics)
    return info


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fer_hf.tools.train", description=__doc__.split("\n\n")[0])
    d = p.add_argument_group("data")
    d.add_argument("--data-root", required=True, help="RAVDESS folder (Actor_XX/ sub-folders or flat)")
    d.add_argument("--cache-dir", default="cache", help="preprocessing cache root (default: cache)")
    d.add_argument("--folds", help="folds file (JSON or one fold per line); default: the 6 folds of 4 actors")
    d.add_argument("--fold", default="0", help="fold index, or 'all' to train every fold in turn (default 0)")
    d.add_argument("--validation", choices=VALIDATION_STRATEGIES, default="next_fold",
                   help="validation actors: the next fold's (default) or none")
    d.add_argument("--vocal-channel", choices=("speech", "song", "both"), default="speech")
    d.add_argument("--workers", type=int, default=1, help="processes that build the cache (default 1)")
    d.add_argument("--image-format", choices=("jpeg", "png"), default="jpeg", help="face crops in the cache")
    d.add_argument("--jpeg-quality", type=int, default=95)
    d.add_argument("--dataloader-workers", type=int, default=0)
    m = p.add_argument_group("model")
    m.add_argument("--preset", choices=FERConfig.PRESETS, default="seed")
    m.add_argument("--init-from", help="start from a saved FER model folder (e.g. with pretrained backbones)")
    m.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, JSON value (repeatable)")
    m.add_argument("--modality-dropout", type=float, help="override config.modality_dropout")
    m.add_argument("--gradient-checkpointing", action="store_true")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=float, default=30)
    o.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (overrides --epochs)")
    o.add_argument("--batch-size", type=int, default=8)
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
    o.add_argument("--freeze-parts", nargs="+", choices=tuple(BACKBONE_PREFIXES), default=list(BACKBONE_PREFIXES))
    o.add_argument("--class-balance", choices=("loss", "none"), default="loss")
    o.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    o.add_argument("--seed", type=int, default=42)
    r = p.add_argument_group("run")
    r.add_argument("--output-dir", help="default: checkpoints/<preset>")
    r.add_argument("--resume", action="store_true", help="continue from the last checkpoint of each fold")
    r.add_argument("--logging-steps", type=int, default=10)
    r.add_argument("--save-total-limit", type=int, default=2)
    r.add_argument("--report-to", choices=("tensorboard", "none"), default="tensorboard")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.output_dir = args.output_dir or os.path.join("checkpoints", args.preset)
    if not 0 <= args.warmup_ratio < 1:
        p.error(f"--warmup-ratio must be in [0, 1), got {args.warmup_ratio}")
    if args.fold != "all" and not args.fold.isdigit():
        p.error(f"--fold must be a fold index or 'all', got {args.fold!r}")
    if args.epochs <= 0 and args.max_steps <= 0:
        p.error("--epochs must be positive (or give --max-steps)")
    if args.freeze_epochs > 0 and args.freeze_epochs >= args.epochs:
        logger.warning("--freeze-epochs %d >= --epochs %s: the backbones never unfreeze", args.freeze_epochs,
                       args.epochs)
    return args


def run(args) -> list[dict]:
    folds = load_folds(args.folds) if args.folds else DEFAULT_FOLDS
    channels = {"speech": (1,), "song": (2,), "both": (1, 2)}[args.vocal_channel]
    index = build_index(args.data_root, vocal_channels=channels)
    if not index.clips:
        raise FERInputError(f"no usable RAVDESS clips under {args.data_root!r} ({index.summary()})")
    fold_ids = range(len(folds)) if args.fold == "all" else [int(args.fold)]
    return [train_fold(args, k, index, folds) for k in fold_ids]


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(parse_args(argv))


if __name__ == "__main__":
    main()


__all__ = ["BackboneFreezeCallback", "FERTrainer", "class_weights", "parse_args", "run", "train_fold"]
