"""Provenance records: how a model's weights came to be (untrained, pretrained backbones, or trained on what, with
which scores), stored in `config.provenance` and read by the card, the app and the results
(docs/architecture.md "Provenance")."""

from __future__ import annotations

import datetime
from collections.abc import Mapping

PROVENANCE_SCHEMA_VERSION = 1
PROVENANCE_STATUSES = ("untrained", "backbones", "trained")
BACKBONE_NAMES = ("vision", "audio", "fusion")
MODALITIES = ("audio", "video")
TRAINING_KEYS = (
    "dataset", "synthetic", "modality_layout", "mode", "fold", "train_actors", "validation_actors", "test_actors",
    "epochs", "metrics", "metrics_scope", "date", "commit",
)


def make_backbones_provenance(sources: Mapping[str, str]) -> dict:
    """The record of a model built from pretrained backbones (status "backbones"): `sources` maps the parts that
    were loaded (`vision`, `audio`, `fusion`) to where they came from (a Hub id or a local path)."""
    unknown = sorted(set(sources) - set(BACKBONE_NAMES))
    if unknown:
        raise ValueError(f"unknown backbone name(s) {unknown}; use {list(BACKBONE_NAMES)}")
    return {
        "schema_version": PROVENANCE_SCHEMA_VERSION,
        "status": "backbones" if sources else "untrained",
        "backbones": {name: str(sources[name]) for name in BACKBONE_NAMES if name in sources},
        "training": None,
    }


def make_training_provenance(
    *,
    dataset: str,
    synthetic: bool,
    modality_layout: str,
    mode: str,
    epochs: int,
    fold: int | None = None,
    train_actors=(),
    validation_actors=(),
    test_actors=(),
    metrics: Mapping[str, float] | None = None,
    metrics_scope: str | None = None,
    date: str | None = None,
    commit: str | None = None,
    backbones: Mapping[str, str] | None = None,
    modalities=None,
    sources: Mapping[str, str] | None = None,
) -> dict:
    """The record of a trained model (status "trained"), for training to store in `config.provenance`.

    Args:
        dataset: `"RAVDESS"` or `"synthetic"` (the generated RAVDESS-named set).
        synthetic: True when the clips were generated, not recorded (the card and the app then say "synthetic data").
        modality_layout: which clips were used, e.g. `"audio-video"` (RAVDESS modality 01) or `"all"`.
        mode: `"fold"` (one speaker-independent fold) or `"release"` (all actors).
        epochs: epochs trained.
        fold: the fold index in `"fold"` mode.
        train_actors, validation_actors, test_actors: actor ids of each split.
        metrics: e.g. `{"accuracy": .., "uar": .., "macro_f1": ..}` on `metrics_scope`, or None.
        metrics_scope: e.g. `"this fold's test actors"` or `"cross-validated mean over 4 folds"`.
        date: ISO-8601 (now, UTC, when omitted). commit: the git sha of the code that trained, or None.
        backbones: where the pretrained parts came from (kept from the starting model's record), or None.
        modalities: the branches that were trained, a subset of `("audio", "video")` (default: what
            `modality_layout` implies). At inference a branch that was never trained is not used.
        sources: optional free-text provenance per part, e.g. `{"vision": "FER2013 Training, 14 epochs"}`.
    """
    if mode not in ("fold", "release"):
        raise ValueError(f"`mode` must be 'fold' or 'release', got {mode!r}")
    if metrics is not None and metrics_scope is None:
        raise ValueError("give `metrics_scope` with `metrics` (which actors the figures were measured on)")
    modalities = layout_modalities(modality_layout) if modalities is None else tuple(modalities)
    if not modalities or any(m not in MODALITIES for m in modalities):
        raise ValueError(f"`modalities` must be a non-empty subset of {list(MODALITIES)}, got {modalities!r}")
    return {
        "schema_version": PROVENANCE_SCHEMA_VERSION,
        "status": "trained",
        "backbones": dict(backbones or {}),
        "training": {
            "dataset": str(dataset),
            "synthetic": bool(synthetic),
            "modality_layout": str(modality_layout),
            "mode": mode,
            "fold": fold,
            "train_actors": [int(a) for a in train_actors],
            "validation_actors": [int(a) for a in validation_actors],
            "test_actors": [int(a) for a in test_actors],
            "epochs": int(epochs),
            "metrics": None if metrics is None else {k: float(v) for k, v in metrics.items()},
            "metrics_scope": metrics_scope,
            "date": date or datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
            "commit": commit,
            "modalities": [m for m in MODALITIES if m in modalities],
            "sources": dict(sources or {}),
        },
    }


def layout_modalities(modality_layout: str) -> tuple[str, ...]:
    """The branches a training layout trains: `"audio-only"` -> audio, `"video-only"` -> video, else both."""
    return {"audio-only": ("audio",), "video-only": ("video",)}.get(str(modality_layout), MODALITIES)
