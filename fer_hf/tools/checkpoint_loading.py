"""Checkpoint-key bookkeeping shared by the backbone loader and the NeMo importer.

`sort_checkpoint_keys` maps checkpoint keys onto a module's keys; `load_state_into` copies tensors into a module
after checking keys and shapes exactly, filling a `BackboneReport` (what was loaded, ignored, missing, cast).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from fer_hf.errors_fer import FERError

if TYPE_CHECKING:  # imported where used, so that the commands parse their arguments without torch
    import torch
    from torch import nn

logger = logging.getLogger(__name__)


class BackboneLoadError(FERError, ValueError):
    """A backbone checkpoint cannot be used."""


class CheckpointNotFoundError(BackboneLoadError, FileNotFoundError):
    """The path does not exist, the Hub repo or file cannot be fetched, or it holds no safetensors weights."""


class BackboneMismatchError(BackboneLoadError):
    """The checkpoint's architecture, layer pattern, keys or tensor shapes differ from the model's backbone."""


@dataclass
class BackboneReport:
    """What happened to every checkpoint key for one backbone.

    `loaded` are target keys (in the backbone module); `ignored` counts known-unused checkpoint keys per reason;
    `missing` / `unexpected` are only non-empty in the report attached to a `BackboneMismatchError`.
    `casts` counts dtype conversions, e.g. `{"torch.bfloat16->torch.float32": 98}`.
    """

    backbone: str
    source: str
    checkpoint_format: str
    loaded: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    casts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        ignored = ", ".join(f"{n} {reason}" for reason, n in self.ignored.items()) or "none"
        casts = ", ".join(f"{n} {cast}" for cast, n in self.casts.items()) or "none"
        lines = [
            f"{self.backbone}: {len(self.loaded)} tensors loaded from {self.source} ({self.checkpoint_format})",
            f"  ignored: {ignored}",
            f"  missing: {len(self.missing)}, unexpected: {len(self.unexpected)}, dtype casts: {casts}",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def sort_checkpoint_keys(keys, target_of) -> tuple[dict[str, str], dict[str, int], list[str]]:
    """Sort checkpoint keys with `target_of(key) -> (target | None, ignore reason | None)`.

    Returns ({source key: target key}, ignored counts per reason, unexpected keys (neither target nor reason)).
    """
    wanted, ignored, unexpected = {}, Counter(), []
    for key in keys:
        target, reason = target_of(key)
        if target is not None:
            wanted[key] = target
        elif reason is not None:
            ignored[reason] += 1
        else:
            unexpected.append(key)
    return wanted, dict(ignored), sorted(unexpected)


def load_state_into(module: nn.Module, tensors: dict[str, torch.Tensor], report: BackboneReport) -> BackboneReport:
    """Copy `tensors` into `module` after checking that keys and shapes match exactly; fills `report`."""
    import torch

    target = module.state_dict()
    report.missing = sorted(set(target) - set(tensors))
    report.unexpected = sorted(report.unexpected + [k for k in tensors if k not in target])
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in sorted(tensors.items())
        if k in target and v.shape != target[k].shape
    ]
    if report.missing or report.unexpected or wrong:
        problems = []
        for name, items in (("missing", report.missing), ("unexpected", report.unexpected), ("wrong shape", wrong)):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                problems.append(f"{len(items)} {name}: {items[:8]}{more}")
        error = BackboneMismatchError(
            f"{report.backbone} checkpoint {report.source} does not fit the model: " + "; ".join(problems)
        )
        error.report = report
        raise error
    casts = Counter()
    with torch.no_grad():
        for key in sorted(tensors):
            src, dst = tensors[key], target[key]
            if src.dtype != dst.dtype:
                casts[f"{src.dtype}->{dst.dtype}"] += 1
            dst.copy_(src)
    report.loaded, report.casts = sorted(tensors), dict(casts)
    logger.info(report.summary())
    return report


__all__ = [
    "BackboneLoadError",
    "BackboneMismatchError",
    "BackboneReport",
    "CheckpointNotFoundError",
    "load_state_into",
    "sort_checkpoint_keys",
]
