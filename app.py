"""Emotion recognition from a talking face: the Gradio app's entry (local, or a Hugging Face Space).

    python app.py                                   # the shipped trained model (checkpoints/compact/)
    python app.py --model path/or/hub-repo-id       # or FER_MODEL=...
    python app.py --preset tiny                     # no trained weights: try the pipeline on a random model

The app itself is the `fer_app` package (`fer_app/server.py` builds `demo`); this file reads the command line first,
so `--help` is instant, and exposes `demo` for Spaces and `gradio app.py`.
"""

import logging
import sys

from fer_app.settings import configure

if __name__ == "__main__":
    configure(sys.argv[1:])  # `--help` exits here, before torch and gradio are imported
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

from fer_app.server import demo, launch  # noqa: E402

__all__ = ["demo"]

if __name__ == "__main__":
    launch()
