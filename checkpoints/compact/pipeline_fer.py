"""A transformers pipeline for the audio-visual emotion model (Hub code: relative imports only).

A saved model folder's `config.json` names this class under `custom_pipelines`, so

    from transformers import pipeline
    classifier = pipeline(model="user/fer-model", trust_remote_code=True)   # task read from config.json
    classifier("clip.mp4")
    # [{"label": "happy", "score": 0.41, "top": True}, {"label": "neutral", "score": 0.17, "top": False}, ...]
    # sorted high to low; "top" marks the result's `top_label`: no entry has it when the first two are closer than
    # the processor's `confidence_margin` (0.10), the "no clear emotion" of the result and the app
    result = classifier("clip.mp4", return_result=True)                   # the full FERClipResult
    result.windows[0].modalities                                           # which modalities were used, and why

`task="audio-visual-emotion-recognition"` may be given explicitly. Inputs are a media file path, or decoded arrays
as a `FERMedia` or a dict `{"audio": wave, "sampling_rate": 16000, "frames": frames, "fps": 30.0}` (either modality
may be left out; the older key `video_frames` is accepted for `frames`). Call options: `top_k`,
`sliding_window=True` (classify every window of a long clip; the clip answer is the result's aggregate over the
windows, see `FERClipResult.aggregation`), `window_seconds`, `hop_seconds`, `return_result`.
A folder saved without a processor gets one built from the model config.
"""

from __future__ import annotations

import os

from transformers import Pipeline

from .errors_fer import FERInputError
from .media_fer import FERMedia

FER_PIPELINE_TASK = "audio-visual-emotion-recognition"


class FEREmotionRecognitionPipeline(Pipeline):
    """Media file (or decoded arrays) -> emotion labels with probabilities, sorted high to low, `top` marking the
    result's `top_label` (none below the confidence margin), or the full `FERClipResult` with `return_result=True`.
    Uses the model's processor (`FERProcessor`)."""

    _load_processor = None  # optional: a folder without processor_config.json gets one from the model config
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False

    def _sanitize_parameters(self, top_k=None, sliding_window=None, window_seconds=None, hop_seconds=None,
                             return_result=None, **kwargs):
        if kwargs:
            raise FERInputError(f"unexpected pipeline argument(s) {sorted(kwargs)}")
        preprocess = {}
        for name, value in (
            ("sliding_window", sliding_window),
            ("window_seconds", window_seconds),
            ("hop_seconds", hop_seconds),
        ):
            if value is not None:
                preprocess[name] = value
        postprocess = {"top_k": None if top_k is None else int(top_k), "return_result": bool(return_result)}
        return preprocess, {}, postprocess

    @property
    def fer_processor(self):
        """The `FERProcessor` in use (built from the model config when the folder had none)."""
        if self.processor is None:
            from .processing_fer import FERProcessor

            self.processor = FERProcessor.from_model_config(self.model.config)
        return self.processor

    def preprocess(self, inputs, **options):
        if not isinstance(inputs, (str, os.PathLike, dict, FERMedia)):
            raise FERInputError(
                "give a media file path, or decoded arrays as a FERMedia or a dict with some of "
                f"'audio', 'sampling_rate', 'frames', 'fps', got {type(inputs).__name__}"
            )
        processor = self.fer_processor
        processor.check_model(self.model.config)
        batch, info = processor.prepare(videos=inputs, return_tensors="pt", **options)
        model_inputs = {name: batch[name] for name in processor.model_input_names if name in batch}
        model_inputs["fer_info"] = info
        return model_inputs

    def _forward(self, model_inputs):
        info = model_inputs.pop("fer_info")
        outputs = self.model(**model_inputs)
        return {"logits": outputs.logits, "outputs": outputs, "fer_info": info}  # logits (windows, num_labels)

    def postprocess(self, model_outputs, top_k=None, return_result=False):
        result = self.fer_processor.post_process(model_outputs["outputs"], model_outputs["fer_info"],
                                                 self.model.config)[0]
        if return_result:
            return result
        return [{"label": label, "score": score, "top": label == result.top_label}
                for label, score in result.ranked(top_k)]


def register_fer_pipeline():
    """Register the task with transformers (so `save_pretrained` of this pipeline writes `custom_pipelines`)."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    if FER_PIPELINE_TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            FER_PIPELINE_TASK, pipeline_class=FEREmotionRecognitionPipeline, pt_model=AutoModel, type="multimodal"
        )
    return FER_PIPELINE_TASK


__all__ = ["FER_PIPELINE_TASK", "FEREmotionRecognitionPipeline", "register_fer_pipeline"]
