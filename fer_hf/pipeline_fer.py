"""A transformers pipeline for the audio-visual emotion model (Hub code: relative imports only).

An exported folder's `config.json` names this class under `custom_pipelines`, so

    from transformers import pipeline
    classifier = pipeline(model="user/fer-model", trust_remote_code=True)   # task read from config.json
    classifier("clip.mp4")
    # [{"label": "happy", "score": 0.41}, {"label": "neutral", "score": 0.17}, ...]   sorted high to low

`task="audio-visual-emotion-recognition"` may be given explicitly. Inputs are a media file path, or a dict
`{"audio": wave, "sampling_rate": 16000, "video_frames": frames, "fps": 30.0}` of decoded arrays (either modality
may be left out). Call options: `top_k`, `sliding_window=True` (classify every window of a long clip and average
the probabilities), `window_seconds`, `stride_seconds`.
"""

from __future__ import annotations

import os

import torch
from transformers import Pipeline

from .errors_fer import FERInputError

FER_PIPELINE_TASK = "audio-visual-emotion-recognition"
_ARRAY_KEYS = ("audio", "sampling_rate", "video_frames", "fps")


class FEREmotionRecognitionPipeline(Pipeline):
    """Media file (or decoded arrays) -> emotion labels with probabilities, sorted high to low.

    Uses the model's processor (`FERProcessor`, loaded with `AutoProcessor`) for decoding, face crops and
    features. With `sliding_window=True` every window of the clip is classified and the window probabilities
    are averaged; otherwise one window centred on the clip is used.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False

    def _sanitize_parameters(self, top_k=None, sliding_window=None, window_seconds=None, stride_seconds=None, **kwargs):
        if kwargs:
            raise FERInputError(f"unexpected pipeline argument(s) {sorted(kwargs)}")
        preprocess = {}
        for name, value in (
            ("sliding_window", sliding_window),
            ("window_seconds", window_seconds),
            ("stride_seconds", stride_seconds),
        ):
            if value is not None:
                preprocess[name] = value
        postprocess = {} if top_k is None else {"top_k": int(top_k)}
        return preprocess, {}, postprocess

    def preprocess(self, inputs, **options):
        if self.processor is None:
            raise FERInputError("this pipeline needs the model's processor (AutoProcessor) to read media")
        if isinstance(inputs, (str, os.PathLike)):
            batch = self.processor(videos=inputs, return_tensors="pt", **options)
        elif isinstance(inputs, dict) and set(inputs) <= set(_ARRAY_KEYS):
            batch = self.processor(**inputs, return_tensors="pt", **options)
        else:
            raise FERInputError(
                "give a media file path, or a dict with some of "
                f"{list(_ARRAY_KEYS)} (decoded audio and/or RGB frames), got {type(inputs).__name__}"
            )
        return {name: batch[name] for name in self.processor.model_input_names if name in batch}

    def _forward(self, model_inputs):
        return {"logits": self.model(**model_inputs).logits}  # (windows, num_labels)

    def postprocess(self, model_outputs, top_k=None):
        # (windows, C) -> mean probability over the windows of the clip
        probs = torch.softmax(model_outputs["logits"].float(), dim=-1).mean(0)
        id2label = self.model.config.id2label
        order = torch.argsort(probs, descending=True).tolist()[: top_k or len(probs)]
        return [{"label": id2label[i], "score": round(float(probs[i]), 6)} for i in order]


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
