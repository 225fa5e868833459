"""Audio-visual emotion recognition (RAVDESS labels) as a Hugging Face remote-code model.

`from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor`

The names are loaded on first use, so `import fer_hf` (and so every `fer-*` command's `--help`) does not import
torch or transformers. The first name used loads the whole payload and registers the pipeline task with
transformers, so `pipeline(task=FER_PIPELINE_TASK, model=...)` works in this process. The classes register
themselves for the auto classes where they are defined (`save_pretrained` writes `auto_map` and copies the code
files, so a saved folder loads with trust_remote_code).
"""

from __future__ import annotations

import importlib.util

_NAMES = {
    "configuration_fer": ("RAVDESS_LABELS", "FERConfig"),
    "provenance_fer": ("make_backbones_provenance", "make_training_provenance"),
    "modeling_fer": ("PAYLOAD_MODULES", "FEREmotionClassifierOutput", "FERForEmotionClassification",
                     "FERFrameEmbeddings", "FERPreTrainedModel"),
    "results_fer": ("FERClipResult", "FERSkippedWindow", "FERWindowResult"),
    "pipeline_fer": ("FER_PIPELINE_TASK", "FEREmotionRecognitionPipeline"),
}
# The processor needs the media stack (PyAV, OpenCV); the model does not.
_MEDIA_NAMES = {"analysis_fer": ("FERAnalyzer",), "processing_fer": ("FERProcessor",)}

__all__ = [name for names in _NAMES.values() for name in names]
if all(importlib.util.find_spec(name) is not None for name in ("av", "cv2")):
    __all__ += [name for names in _MEDIA_NAMES.values() for name in names]


def _load() -> None:
    """Import the payload (what `import fer_hf` did before its names were lazy); register the pipeline task."""
    from . import configuration_fer, modeling_fer, pipeline_fer, provenance_fer, results_fer

    modules = [configuration_fer, provenance_fer, modeling_fer, results_fer, pipeline_fer]
    try:
        from . import analysis_fer, processing_fer

        modules += [analysis_fer, processing_fer]
    except ImportError:  # pragma: no cover - processor not available
        __all__[:] = [name for name in __all__ if not any(name in names for names in _MEDIA_NAMES.values())]
    for module in modules:
        short = module.__name__.rpartition(".")[2]
        globals().update({name: getattr(module, name) for name in {**_NAMES, **_MEDIA_NAMES}[short]})
    pipeline_fer.register_fer_pipeline()


def __getattr__(name: str):
    if name in __all__:
        _load()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
