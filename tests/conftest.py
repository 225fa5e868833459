"""Shared fixtures: the tiny preset's config, a seeded tiny model, its processor, and generated clips.

Media come from `tests/media_factory.py` (the project's one clip writer, `fer_hf.tools.synthetic.encode_clip`);
nothing is downloaded. Session-scoped: build once, never mutate (tests that change a processor make their own).
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
TINY_SEED = 0  # the seed of `tiny_model` (and of the stored regression values)


def build_tiny_model(seed: int = TINY_SEED):
    """A fresh tiny-preset model in eval mode, its weights drawn with `torch.manual_seed(seed)`."""
    import torch

    from fer_hf import FERConfig, FERForEmotionClassification

    torch.manual_seed(seed)
    return FERForEmotionClassification(FERConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="session")
def tiny_config():
    from fer_hf import FERConfig

    return FERConfig.from_preset("tiny")


@pytest.fixture(scope="session")
def tiny_model():
    return build_tiny_model()


@pytest.fixture(scope="session")
def tiny_processor(tiny_config):
    from fer_hf.processing_fer import FERProcessor

    return FERProcessor.from_model_config(tiny_config)


@pytest.fixture(scope="session")
def talking_face_clip(tmp_path_factory):
    """7 s, 320x240 at 25 fps, the astronaut's face on a gradient, a voice-like tone (AAC 48 kHz stereo)."""
    from media_factory import astronaut_face, make_clip

    path = tmp_path_factory.mktemp("shared_clips") / "talking_face.mp4"
    return make_clip(path, seconds=7.0, fps=25, size=(320, 240), face_image=astronaut_face())


@pytest.fixture(scope="session")
def example_clip():
    """Path of a committed example clip (examples/make_examples.py): 4 s, astronaut, synthetic voice."""
    return os.path.join(EXAMPLES, "astronaut_speaking.mp4")
