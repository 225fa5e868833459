"""Which model the app runs and what it says about it: the shipped or newest trained folder, a Hub id, or an
untrained preset (said loudly), and its provenance line."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor

logger = logging.getLogger("fer_app")
ROOT = Path(__file__).resolve().parent.parent  # the repository (or Space) root
CHECKPOINTS = ROOT / "checkpoints"
EXAMPLES = ROOT / "examples"


def untrained_reason(folder: Path) -> str | None:
    """Why the weights of a local model folder are not trained for emotions (None when nothing says so)."""
    if (folder / "backbone_report.json").is_file() and not (folder / "training_info.json").is_file():
        return "its backbones are pretrained but its emotion classifier was never trained (fer-backbones output)"
    return None


def newest_checkpoint(folder: Path = CHECKPOINTS) -> Path | None:
    """The newest trained folder under `folder` holding `config.json` and `model.safetensors`; finished training
    runs (`final/` with `training_info.json`) win over intermediate Trainer checkpoints."""
    if not folder.is_dir():
        return None
    found = [p.parent for p in folder.rglob("model.safetensors")
             if (p.parent / "config.json").is_file() and untrained_reason(p.parent) is None]
    rank = lambda p: ((p / "training_info.json").is_file(), (p / "model.safetensors").stat().st_mtime)
    return max(found, key=rank, default=None)


def load_model(source: str | None, preset: str):
    """(model, processor, info). `source` None builds an untrained model from `preset`, saying so in `info`."""
    if source is None:
        torch.manual_seed(0)  # the same untrained weights at every start, so results are at least reproducible
        config = FERConfig.from_preset(preset)
        model = FERForEmotionClassification(config)
        processor = FERProcessor.from_model_config(config)
        return model, processor, {
            "source": f"untrained '{preset}' preset (random weights)", "preset": preset, "trained": False,
            "why_untrained": f"no trained weights were found, so this app runs the '{preset}' architecture with "
                             "random weights, only to try the pipeline",
        }
    from transformers import AutoModel, AutoProcessor

    if source.startswith(("/", ".", "~")) and not Path(source).expanduser().is_dir():
        raise SystemExit(f"No model folder at {source!r}: give a folder saved with save_pretrained "
                         "(config.json + model.safetensors) or a Hub repo id.")
    source = str(Path(source).expanduser()) if source.startswith("~") else source
    try:
        model = AutoModel.from_pretrained(source, trust_remote_code=True)
    except Exception as exc:
        raise SystemExit(f"Could not load the model {source!r}: {type(exc).__name__}: {exc}\n"
                         "Give a local folder saved with save_pretrained (config.json + model.safetensors) "
                         "or a Hub repo id you can reach.") from None
    try:
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # no processor saved with it: derive one
        logger.warning("no processor found with %s (%s); building one from the model config", source, exc)
        processor = FERProcessor.from_model_config(model.config)
    folder = Path(source)
    reason = untrained_reason(folder) if folder.is_dir() else None
    info = {"source": str(source), "preset": getattr(model.config, "preset", None), "trained": reason is None}
    if reason:
        info["why_untrained"] = f"the model at {source} is not trained: {reason}"
    return model, processor, info


def provenance(config, info: dict) -> dict:
    """{"status", "summary"}: the model's own provenance record when it has one, else what loading found out."""
    if hasattr(config, "provenance_summary"):
        record = getattr(config, "provenance", None) or {}
        return {"status": record.get("status", "untrained"), "summary": config.provenance_summary()}
    if not info["trained"]:
        return {"status": "untrained", "summary": f"untrained: {info['why_untrained']}; predictions are meaningless"}
    return {"status": "trained", "summary": f"trained weights from {info['source']}"}
