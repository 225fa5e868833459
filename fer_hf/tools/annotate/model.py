"""The model side of `fer-annotate`: loading, the configuration hash and batched inference over chunks.

    model, processor = load_annotator("path/to/model")                 # or preset="realtime" (random weights)
    batcher = WindowBatcher(model, processor, batch_size=16, device="cpu")
    batcher.add(item, chunk); done = batcher.step()                    # rows of several chunks / files per forward

Chunks come from `stream.file_chunks` (the worker side: decoding, face front-end, log-mel, pixel
normalisation), in the worker processes or the Ray CPU tasks. `WindowBatcher` groups the rows of chunks of
different files into batches of `batch_size` for the model; the caller adds a chunk only while fewer than
`batch_size` rows wait, so what waits for the model is under one batch plus one chunk, whatever the files' lengths.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import deque
from pathlib import Path

import numpy as np
import torch

from fer_hf.errors_fer import FERInputError

logger = logging.getLogger(__name__)

# Processor settings a run may override (their values enter the configuration hash through the processor JSON).
PROCESSOR_OVERRIDES = ("max_windows", "max_duration_s", "window_seconds", "hop_seconds")


def set_threads(threads: int) -> None:
    """Limit torch, OpenCV and OpenMP in this process to `threads` threads."""
    import cv2

    threads = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and `taskset` restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def load_annotator(source: str | None = None, preset: str | None = None, seed: int = 0, **overrides):
    """The model (eval mode, CPU) and its processor, from a saved folder / Hub repo id, or a preset.

    A preset gives random weights (seeded): for smoke runs and benchmarks only, and the tables say so through the
    provenance columns. `overrides` set processor attributes (`PROCESSOR_OVERRIDES`).
    """
    from fer_hf.configuration_fer import FERConfig
    from fer_hf.modeling_fer import FERForEmotionClassification
    from fer_hf.processing_fer import FERProcessor

    if (source is None) == (preset is None):
        raise FERInputError("give either a model (--model DIR_OR_REPO) or a preset (--preset NAME)")
    if preset is not None:
        torch.manual_seed(seed)
        model = FERForEmotionClassification(FERConfig.from_preset(preset))
        processor = FERProcessor.from_model_config(model.config)
        logger.warning("preset %r with random weights (seed %d): predictions are meaningless", preset, seed)
    else:
        folder = Path(source).expanduser()
        if folder.exists() and not (folder / "config.json").is_file():
            raise FERInputError(f"no model (config.json) in {str(folder)!r}; give a saved model folder or a repo id")
        try:
            model = FERForEmotionClassification.from_pretrained(str(folder) if folder.exists() else source)
        except OSError as exc:
            raise FERInputError(f"cannot load the model {source!r}: {exc}") from exc
        try:
            processor = FERProcessor.from_pretrained(str(folder) if folder.exists() else source)
        except (OSError, ValueError):
            logger.info("no processor saved with %s: building it from the model config", source)
            processor = FERProcessor.from_model_config(model.config)
    for name, value in overrides.items():
        if name not in PROCESSOR_OVERRIDES:
            raise FERInputError(f"unknown processor setting {name!r}")
        if value is not None:
            setattr(processor, name, value)
    processor.validate()
    return model.eval(), processor


def _weights_fingerprint(source: str | None, preset: str | None, seed: int, config) -> str:
    if preset is not None:
        return f"preset={preset} seed={seed}"
    folder = Path(source).expanduser()
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
        return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return f"{source}@{getattr(config, '_commit_hash', None)}"


def config_hash(model, processor, source: str | None, preset: str | None, seed: int = 0,
                settings: dict | None = None) -> str:
    """Hash of everything that changes a row: model config (with provenance), weights, processor settings and
    the run's own `settings` (which people get rows, the window cap, the decoding scheme)."""
    text = json.dumps(
        {"model": json.loads(model.config.to_json_string(use_diff=False)),
         "processor": json.loads(processor.to_json_string()),
         "weights": _weights_fingerprint(source, preset, seed, model.config),
         "annotate": dict(settings or {})},
        sort_keys=True, default=str,
    )
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def model_info(config) -> dict:
    """Provenance columns of every row (`config.provenance`; a model saved without it counts as untrained)."""
    provenance = getattr(config, "provenance", None) or {}
    summarise = getattr(config, "provenance_summary", None)
    status = provenance.get("status", "untrained") if isinstance(provenance, dict) else "untrained"
    summary = summarise() if callable(summarise) else "no provenance record: treat as untrained (random weights)"
    return {"model_status": status, "model_summary": summary, "model_preset": getattr(config, "preset", None)}


# ----------------------------------------------------------------------------------------------
def autocast_dtype(device: str, precision: str) -> torch.dtype | None:
    """Mixed-precision dtype for `precision` ("auto", "fp32", "fp16", "bf16") on `device`; None = fp32."""
    if precision == "fp32" or (precision == "auto" and not device.startswith("cuda")):
        return None  # bf16 is far slower than fp32 on CPUs without a bf16 path
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class WindowBatcher:
    """Runs the model on the rows of many chunks in batches of at most `batch_size` rows.

    `add(item, chunk)` queues a chunk (`chunk["inputs"]`: arrays of `len(chunk["rows"])` model rows); `step` runs
    one forward over the oldest pending rows, which may come from several chunks and files, and returns the chunks
    whose rows are all classified, in the order they were added, as `(item, chunk, probabilities)` with one
    `{label: p}` per row from `processor.post_process`, sorted high to low. `peak_rows` is the most rows that
    waited at once.
    """

    def __init__(self, model, processor, batch_size: int = 16, device: str = "cpu", precision: str = "auto"):
        if batch_size < 1:
            raise FERInputError(f"--batch-size must be at least 1, got {batch_size}")
        self.model = model.to(device).eval()
        self.processor = processor
        self.batch_size = int(batch_size)
        self.device = device
        self.amp = autocast_dtype(device, precision)
        self._queue: deque = deque()  # entries [item, chunk, rows, next_row, logits_parts]
        self.pending_windows = 0  # rows waiting for the model
        self.windows_done = 0
        self.peak_rows = 0

    def add(self, item, chunk: dict) -> None:
        n = len(chunk["rows"])
        self._queue.append([item, chunk, n, 0, []])
        self.pending_windows += n
        self.peak_rows = max(self.peak_rows, self.pending_windows)

    def discard(self, item) -> None:
        """Forget the queued chunks of `item` (its file failed or its worker died)."""
        kept = deque()
        for entry in self._queue:
            if entry[0] == item:
                self.pending_windows -= entry[2] - entry[3]
            else:
                kept.append(entry)
        self._queue = kept

    def _forward(self, inputs: dict) -> torch.Tensor:
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            if self.amp is not None:
                with torch.autocast(device_type=self.device.split(":")[0], dtype=self.amp):
                    logits = self.model(**tensors).logits
            else:
                logits = self.model(**tensors).logits
        return logits.float().cpu()  # (B, C)

    def step(self) -> list[tuple]:
        """One forward over up to `batch_size` pending rows; returns the chunks it completed."""
        chunks, owners, room = [], [], self.batch_size
        for entry in self._queue:
            if room == 0:
                break
            take = min(room, entry[2] - entry[3])
            if take == 0:
                continue
            chunks.append({k: v[entry[3]: entry[3] + take] for k, v in entry[1]["inputs"].items()})
            owners.append((entry, take))
            entry[3] += take
            room -= take
        if chunks:
            logits = self._forward({k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]})
            offset = 0
            for entry, take in owners:
                entry[4].append(logits[offset: offset + take])
                offset += take
            self.pending_windows -= offset
            self.windows_done += offset
        done = []
        while self._queue and self._queue[0][3] == self._queue[0][2]:
            item, chunk, n, _, parts = self._queue.popleft()
            chunk.pop("inputs", None)  # the model inputs are no longer needed: free them now
            # one result per row (each row read as a one-window clip): {label: p}, high to low
            probabilities = ([dict(r.ranked()) for r in self.processor.post_process(torch.cat(parts))]
                             if n else [])
            done.append((item, chunk, probabilities))
        return done

    def drain(self):
        """Classify everything pending; yields completed chunks."""
        while self._queue:
            yield from self.step()


__all__ = ["WindowBatcher", "autocast_dtype", "config_hash", "load_annotator", "model_info",
           "set_threads", "usable_cores", "PROCESSOR_OVERRIDES"]
