"""The app's settings: command line (when `app.py` runs as a script) over environment variables over defaults.

Parsed before any heavy import, so `python app.py --help` answers in well under a second.

    configure(sys.argv[1:])    # app.py, run as a script
    current()                  # what the server uses (the defaults and environment when nothing was configured)
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

# FERConfig.PRESETS, named here so `--help` needs no torch import
PRESET_NAMES = ("seed", "realtime", "tiny", "compact")


# ----------------------------------------------------------------------------------------------------------------
# Settings: command line (when run as a script) over environment variables over defaults
@dataclass
class Settings:
    model: str | None
    preset: str
    host: str | None
    port: int | None
    max_seconds: float
    max_upload_mb: int
    concurrency: int
    queue_size: int
    batch_windows: int
    hop_seconds: float
    render_side: int
    int8: bool


def parse_settings(argv: list[str]) -> Settings:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Audio-visual emotion recognition demo (Gradio).")
    parser.add_argument("--model", default=env("FER_MODEL"),
                        help="trained model: a local folder or a Hub repo id (env FER_MODEL); default: the newest "
                             "folder under checkpoints/ with config.json and model.safetensors")
    parser.add_argument("--preset", default=env("FER_PRESET", "realtime"), choices=PRESET_NAMES,
                        help="architecture of the UNTRAINED model used when no trained model is found (env FER_PRESET)")
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME"), help="interface to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "0")) or None)
    parser.add_argument("--max-seconds", type=float, default=float(env("FER_MAX_SECONDS", "30")),
                        help="longest clip accepted, in seconds; longer clips can be analysed in their first part "
                             "(env FER_MAX_SECONDS)")
    parser.add_argument("--max-upload-mb", type=int, default=int(env("FER_MAX_UPLOAD_MB", "50")),
                        help="largest upload accepted, in MB (env FER_MAX_UPLOAD_MB)")
    parser.add_argument("--concurrency", type=int, default=int(env("FER_CONCURRENCY", "1")),
                        help="clips analysed at the same time; the rest wait in the queue (env FER_CONCURRENCY)")
    parser.add_argument("--queue-size", type=int, default=int(env("FER_QUEUE_SIZE", "16")),
                        help="requests that may wait in the queue before new ones are refused (env FER_QUEUE_SIZE)")
    parser.add_argument("--batch-windows", type=int, default=int(env("FER_BATCH_WINDOWS", "4")),
                        help="windows per model call (bounds memory; results appear after each batch)")
    parser.add_argument("--hop-seconds", type=float, default=float(env("FER_HOP_SECONDS", "1.0")),
                        help="time between the starts of two overlapping 3 s windows, rounded to whole frame "
                             "steps (realtime: 1.0 -> 1.125 s) (env FER_HOP_SECONDS)")
    parser.add_argument("--render-side", type=int, default=int(env("FER_RENDER_SIDE", "480")),
                        help="long side of the annotated video in pixels, 0 = no annotated video (env FER_RENDER_SIDE)")
    parser.add_argument("--int8", action="store_true", default=env("FER_INT8", "0").lower() in ("1", "true", "yes"),
                        help="CPU only: dynamic int8 quantisation of the linear layers, ~2.8x faster for the realtime "
                             "model; outputs shift slightly (README, Performance) (env FER_INT8=1)")
    return Settings(**vars(parser.parse_args(argv)))



_CURRENT: Settings | None = None


def configure(argv: list[str]) -> Settings:
    """Parse `argv` (exits on `--help` or a bad option) and make it the settings the server is built with."""
    global _CURRENT
    _CURRENT = parse_settings(argv)
    return _CURRENT


def current() -> Settings:
    """The configured settings, or (read now) those of the environment and defaults."""
    return _CURRENT if _CURRENT is not None else parse_settings([])
