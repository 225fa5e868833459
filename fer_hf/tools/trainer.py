"""The `Trainer` subclass and callbacks used by `fer_hf.tools.train`.

- `FERTrainer`: AdamW over {backbone, head} x {decay, no decay} groups, a class-weighted cross-entropy,
  logits-only predictions, and every group's learning rate in the logs (`learning_rate_head`,
  `learning_rate_backbone`; `learning_rate` is the head's);
- `BackboneFreezeCallback`: the pretrained backbones frozen for the first N epochs (single process: no backward
  through them; DDP/FSDP: their gradients are dropped);
- `SaveProcessorCallback`: the processor saved into every checkpoint;
- `class_weights`, `backbone_of`, `compute_metrics_fn`.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

from .metrics import classification_metrics

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
    BatchNorm statistics and dropout of frozen backbones: in `"requires_grad"` mode the model keeps frozen parts in
    eval mode itself (`freeze_backbones` / `train()`); in `"drop_grads"` mode the parameters stay trainable, so
    `FERTrainer` puts the frozen parts in eval mode before each training forward (`frozen_parts`).
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

    def frozen_parts(self, epoch: float | None) -> tuple[str, ...]:
        """The parts the model must hold in eval mode now (only `"drop_grads"`: the model cannot tell)."""
        return self.parts if self.mode == "drop_grads" and self.frozen_at(epoch) else ()

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.mode == "drop_grads" and self.frozen_at(state.epoch) and model is not None:
            for name, param in model.named_parameters():
                if backbone_of(name) in self.parts:
                    param.grad = None


class SaveProcessorCallback(TrainerCallback):
    """Save the processor into every checkpoint folder, next to the weights (rank 0 only).

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
        self.freeze = next((c for c in self.callback_handler.callbacks if isinstance(c, BackboneFreezeCallback)), None)

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

    def group_learning_rates(self) -> dict[str, float]:
        """`{"learning_rate_<group>": lr}` for each named parameter group, as the scheduler set them now."""
        if self.optimizer is None:
            return {}
        rates = {}
        for group in self.optimizer.param_groups:
            rates.setdefault(f"learning_rate_{group.get('name', 'group')}", float(group["lr"]))
        return rates

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs carry every group's learning rate; `learning_rate` is the head's (`--lr`), not whichever
        group happens to come first."""
        if "learning_rate" in logs:
            rates = self.group_learning_rates()
            logs = dict(logs, **rates)
            if "learning_rate_head" in rates:
                logs["learning_rate"] = rates["learning_rate_head"]
        super().log(logs, start_time)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and self.freeze is not None:  # DDP freezing: BatchNorm / dropout of frozen parts fixed
            for part in self.freeze.frozen_parts(self.state.epoch):
                self.accelerator.unwrap_model(model).backbone_modules()[part].eval()
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


__all__ = [
    "BACKBONE_PREFIXES",
    "BackboneFreezeCallback",
    "FERTrainer",
    "SaveProcessorCallback",
    "backbone_of",
    "class_weights",
    "compute_metrics_fn",
]
