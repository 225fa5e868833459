"""Audio-visual emotion recognition (RAVDESS labels) as a Hugging Face remote-code model.

`from fer_hf import FERConfig, FERForEmotionClassification, FERProcessor`
"""

from .configuration_fer import RAVDESS_LABELS, FERConfig, make_backbones_provenance, make_training_provenance
from .modeling_fer import (
    PAYLOAD_MODULES,
    FEREmotionClassifierOutput,
    FERForEmotionClassification,
    FERFrameEmbeddings,
    FERPreTrainedModel,
)
from .results_fer import FERClipResult, FERSkippedWindow, FERWindowResult

# save_pretrained writes `auto_map` and copies the code files, so the folder loads with trust_remote_code.
FERConfig.register_for_auto_class()
FERForEmotionClassification.register_for_auto_class("AutoModel")

__all__ = [
    "RAVDESS_LABELS",
    "PAYLOAD_MODULES",
    "make_backbones_provenance",
    "make_training_provenance",
    "FERConfig",
    "FERForEmotionClassification",
    "FERPreTrainedModel",
    "FEREmotionClassifierOutput",
    "FERFrameEmbeddings",
    "FERClipResult",
    "FERWindowResult",
    "FERSkippedWindow",
]

from .pipeline_fer import FER_PIPELINE_TASK, FEREmotionRecognitionPipeline, register_fer_pipeline  # noqa: E402

register_fer_pipeline()  # pipeline(task=FER_PIPELINE_TASK, model=...) in this process
__all__ += ["FER_PIPELINE_TASK", "FEREmotionRecognitionPipeline"]

try:  # the processor needs the media stack (PyAV, OpenCV); the model does not
    from .analysis_fer import FERAnalyzer  # noqa: F401
    from .processing_fer import FERProcessor  # noqa: F401

    FERProcessor.register_for_auto_class()
    __all__ += ["FERProcessor", "FERAnalyzer"]
except ImportError:  # pragma: no cover - processor not available
    pass
