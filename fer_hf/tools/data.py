"""Preprocessing cache, torch `Dataset` and collator for training on RAVDESS-named clips.

Decoding an mp4, finding the face and resampling the audio costs far more than a training step of the small
models, so it is done once per clip and stored:

    <cache_dir>/<fingerprint>/settings.json            processor settings + image format (the fingerprint's source)
    <cache_dir>/<fingerprint>/Actor_XX/<name>.npz      one file per clip (written atomically: resumable)
    <cache_dir>/<fingerprint>/failures.json            clips that could not be used, with the reason

The fingerprint hashes every processor setting that changes the stored data (frames, window, crop size, face
margin, ...) and the payload's `FRONTEND_VERSION` (face/decoding code) where it exists, so a different preset gets
its own folder and a stale cache is never read. `<name>` is `RavdessClip.cache_name`: the file's seven fields, or
`02+03-<recording>` for a `paired` clip (face from the 02 mp4, voice from the 03 wav), so the layouts never share a
cache file. Temporary files carry the writer's pid and a random suffix, so concurrent writers (several ranks or
jobs on one cache) can never collide; under `torchrun` / `accelerate` only rank 0 builds (`fer_hf.tools.train`).

One `.npz` holds exactly what the processor computes for the clip's (single, centred) window before its
batching step: the `T` uint8 face crops (JPEG or PNG encoded), the ROI weight maps, the frame mask, the 16 kHz
waveform (int16) and the modality flags with their reasons. At train time the collator hands these rows back to
the processor's own batching code (mel features, pixel normalisation), so training inputs are built by the
same code as inference inputs; `tests/test_training.py` checks cached -> inputs against processor(path).

Both steps are the processor's own public ones: `FERProcessor.decode_windows` (file -> rows, cached here) and
`FERProcessor.batch_rows` (rows -> model inputs, in the collator).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch

from fer_hf.errors_fer import FERError, FERInputError

from .ravdess import RavdessClip

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
IMAGE_FORMATS = ("jpeg", "png")
INT16_SCALE = 32767.0  # waveform in [-1, 1] <-> int16
# Processor settings that do not change what is cached.
_UNCACHED_SETTINGS = ("id2label", "processor_class", "max_windows", "hop_seconds", "max_duration_s")


class CacheError(FERError):
    """The cache folder is unusable (settings mismatch, unreadable file) or a processor hook is missing."""


def processor_settings(processor) -> dict:
    """The processor settings that determine the cached data (JSON-ready)."""
    settings = processor.to_dict()
    fe = settings.pop("feature_extractor", None)
    for key in _UNCACHED_SETTINGS:
        settings.pop(key, None)
    if isinstance(fe, dict):
        settings["mel_bins"] = fe.get("feature_size")
    return settings


def frontend_version():
    """The payload's `FRONTEND_VERSION` (bumped when decoding / face code changes what is cached), or None."""
    import importlib

    for module in ("fer_hf.frontend_fer", "fer_hf.processing_fer", "fer_hf.faces_fer", "fer_hf.media_fer"):
        version = getattr(importlib.import_module(module), "FRONTEND_VERSION", None)
        if version is not None:
            return version
    return None


def cache_fingerprint(processor, image_format: str, jpeg_quality: int) -> str:
    """12 hex digits identifying the processor settings + front-end version + image encoding."""
    key = dict(processor_settings(processor), image_format=image_format, cache_version=CACHE_VERSION)
    version = frontend_version()
    if version is not None:
        key["frontend_version"] = version
    if image_format == "jpeg":
        key["jpeg_quality"] = int(jpeg_quality)
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------
# One clip <-> one .npz


def encode_images(crops: np.ndarray, keep: np.ndarray, image_format: str = "jpeg", quality: int = 95):
    """uint8 `(T, S, S, 3)` RGB -> (uint8 `(bytes,)` concatenated encoded images, int64 `(T + 1,)` offsets).
    Frames with `keep` False are stored as zero bytes (they decode to black, as the processor leaves them)."""
    if image_format not in IMAGE_FORMATS:
        raise CacheError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    ext, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)]) if image_format == "jpeg" else (".png", [])
    chunks, offsets = [], [0]
    for crop, k in zip(crops, keep):
        data = b""
        if k:
            ok, buf = cv2.imencode(ext, cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), params)
            if not ok:
                raise CacheError(f"OpenCV could not encode a {crop.shape} crop as {image_format}")
            data = buf.tobytes()
        chunks.append(data)
        offsets.append(offsets[-1] + len(data))
    return np.frombuffer(b"".join(chunks), np.uint8), np.asarray(offsets, np.int64)


def decode_images(buffer: np.ndarray, offsets: np.ndarray, size: int) -> np.ndarray:
    """Inverse of `encode_images`: uint8 `(T, size, size, 3)` RGB."""
    out = np.zeros((len(offsets) - 1, size, size, 3), np.uint8)
    for k in range(len(offsets) - 1):
        a, b = int(offsets[k]), int(offsets[k + 1])
        if b > a:
            img = cv2.imdecode(buffer[a:b], cv2.IMREAD_COLOR)
            if img is None:
                raise CacheError(f"corrupt image {k} in a cache file")
            out[k] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return out


def _json_safe(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    raise TypeError(type(value).__name__)


def write_clip_cache(path: Path, row: dict, clip: RavdessClip, image_format: str = "jpeg", quality: int = 95) -> int:
    """Store one processor row as `path` (atomic rename). Returns the file size in bytes."""
    keep = row["frame_mask"] & bool(row["video_used"])
    images, offsets = encode_images(row["crops"], keep, image_format, quality)
    audio = row["audio"]
    pcm = (np.zeros(0, np.int16) if audio is None
           else np.clip(np.round(audio * INT16_SCALE), -32768, 32767).astype(np.int16))
    info = {k: v for k, v in row["info"].items() if k != "face_frames"}
    meta = dict(info=info, clip=dataclasses.asdict(clip), video_used=bool(row["video_used"]),
                audio_used=audio is not None, image_size=int(row["crops"].shape[1]), cache_version=CACHE_VERSION)
    buf = io.BytesIO()
    np.savez(buf, images=images, offsets=offsets, roi=row["roi"].astype(np.float32),
             frame_mask=row["frame_mask"].astype(bool), audio=pcm,
             meta=np.frombuffer(json.dumps(meta, default=_json_safe).encode(), np.uint8))
    atomic_write(path, buf.getvalue())
    return len(buf.getvalue())


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `path` through a temporary file unique to this writer (pid + random suffix), then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_clip_cache(path: str | os.PathLike) -> tuple[dict, dict]:
    """Load one cache file: (processor row, meta). The row's `audio` is float32 or None."""
    try:
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            crops = decode_images(z["images"], z["offsets"], meta["image_size"])
            pcm = z["audio"]
            row = dict(
                audio=(pcm.astype(np.float32) / INT16_SCALE) if meta["audio_used"] else None,
                crops=crops, roi=z["roi"].astype(np.float32), frame_mask=z["frame_mask"].astype(bool),
                video_used=bool(meta["video_used"]), info=meta["info"],
            )
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise CacheError(f"cannot read cache file {os.fspath(path)!r}: {err}") from err
    return row, meta


# ----------------------------------------------------------------------------------------------
# Building the cache


@dataclasses.dataclass
class CacheEntry:
    """A cached clip: its cache file and its RAVDESS record."""

    path: str
    clip: RavdessClip

    @property
    def label(self) -> int:
        return self.clip.label


@dataclasses.dataclass
class CacheReport:
    """What `build_cache` did: usable entries (in input order), failures with reasons, bytes written."""

    cache_dir: str
    entries: list[CacheEntry]
    failed: list[tuple[str, str]]
    reused: int = 0
    written: int = 0
    bytes_written: int = 0

    def summary(self) -> str:
        return (f"cache {self.cache_dir}: {len(self.entries)} clips usable ({self.reused} reused, {self.written} "
                f"written, {self.bytes_written / 1e6:.1f} MB), {len(self.failed)} failed")


_WORKER: dict = {}


def _init_worker(processor, image_format, quality, limit_threads=True):
    if limit_threads:  # worker processes: one thread each, the pool is the parallelism
        cv2.setNumThreads(1)
        torch.set_num_threads(1)
    _WORKER.update(processor=processor, image_format=image_format, quality=quality)


def _picklable(processor):
    """A shallow copy without a detector that cannot be pickled (OpenCV cascades); workers build their own."""
    import copy
    import pickle

    clone = copy.copy(processor)
    try:
        pickle.dumps(getattr(processor, "_face_detector", None))
    except Exception:  # noqa: BLE001 - any pickling failure: let the worker create the default detector
        clone._face_detector = None
    return clone


PAIR_DURATION_TOLERANCE_S = 0.25  # a 02 mp4 and its 03 wav lasting longer apart are reported


def decode_clip(processor, clip: RavdessClip) -> dict:
    """The processor row of the clip's centred window (what `processor(path)` uses).

    For a `paired` clip (`clip.audio_path` set) the face fields come from the 02 mp4 and the voice from the 03 wav,
    each decoded by the processor's own `decode_windows` on its centred window (the two files of one RAVDESS
    recording last the same to a few ms; a larger gap is logged and kept in `info["pair_duration_gap_s"]`).
    """
    row = processor.decode_windows(clip.path)[0]
    if clip.audio_path is None:
        return row
    voice = processor.decode_windows(clip.audio_path)[0]
    info = dict(row["info"])
    for key in ("audio_used", "audio_reason"):
        info[key] = voice["info"][key]
    gap = abs(float(voice["info"]["duration_s"]) - float(info["duration_s"]))
    info.update(audio_source=clip.audio_path, pair_duration_gap_s=round(gap, 3))
    if gap > PAIR_DURATION_TOLERANCE_S:
        logger.warning("%s and %s differ in length by %.2f s: their centred windows do not cover the same moment",
                       clip.path, clip.audio_path, gap)
    return dict(row, audio=voice["audio"], info=info)


def _cache_one(job: tuple[str, RavdessClip]) -> tuple[str, int | None, str | None]:
    """Decode + store one clip. Returns (cache path, bytes or None, failure reason or None); never raises."""
    target, clip = job
    try:
        row = decode_clip(_WORKER["processor"], clip)
        if row["audio"] is None and not row["video_used"]:
            info = row["info"]
            return target, None, f"no usable modality (audio: {info['audio_reason']}; video: {info['video_reason']})"
        size = write_clip_cache(Path(target), row, clip, _WORKER["image_format"], _WORKER["quality"])
        return target, size, None
    except FERError as err:
        return target, None, f"{type(err).__name__}: {err}"
    except Exception as err:  # noqa: BLE001 - one bad file must not stop a 1440-clip run
        logger.debug("unexpected failure on %s", clip.path, exc_info=True)
        return target, None, f"unexpected {type(err).__name__}: {err}"


def cache_folder(cache_root: str | os.PathLike, processor, image_format: str = "jpeg", jpeg_quality: int = 95) -> Path:
    """`<cache_root>/<fingerprint>`, created with its `settings.json`."""
    folder = Path(cache_root) / cache_fingerprint(processor, image_format, jpeg_quality)
    folder.mkdir(parents=True, exist_ok=True)
    settings = dict(processor_settings(processor), image_format=image_format, jpeg_quality=jpeg_quality,
                    cache_version=CACHE_VERSION)
    atomic_write(folder / "settings.json", json.dumps(settings, indent=1, sort_keys=True, default=str))
    return folder


def build_cache(
    clips: Iterable[RavdessClip],
    processor,
    cache_root: str | os.PathLike,
    workers: int = 1,
    image_format: str = "jpeg",
    jpeg_quality: int = 95,
    progress: bool = True,
) -> CacheReport:
    """Decode every clip not cached yet (in `workers` processes) and return the usable entries.

    Existing cache files are reused (resumable); clips that fail (decode error, no face and no audio, ...) are
    logged, listed in `failures.json` and retried on the next call. With `workers > 1` the pool uses the "spawn"
    start method (safe next to torch's thread pools), so a calling script needs the usual
    `if __name__ == "__main__":` guard; the CLIs have it.
    """
    if image_format not in IMAGE_FORMATS:
        raise CacheError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    folder = cache_folder(cache_root, processor, image_format, jpeg_quality)
    clips = list(clips)
    targets = [str(folder / f"Actor_{c.actor:02d}" / f"{c.cache_name}.npz") for c in clips]
    todo = [(t, c) for t, c in zip(targets, clips) if not Path(t).is_file()]
    report = CacheReport(str(folder), [], [], reused=len(clips) - len(todo))
    results: dict[str, tuple[int | None, str | None]] = {}
    if todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="caching clips", unit="clip", disable=not progress)
        if workers <= 1:
            _init_worker(processor, image_format, jpeg_quality, limit_threads=False)
            for job in todo:
                target, size, reason = _cache_one(job)
                results[target] = (size, reason)
                bar.update()
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            ctx = mp.get_context("spawn")  # torch + fork can deadlock; spawn is safe everywhere
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(_picklable(processor), image_format, jpeg_quality)) as pool:
                for target, size, reason in pool.map(_cache_one, todo, chunksize=4):
                    results[target] = (size, reason)
                    bar.update()
        bar.close()
    for target, clip in zip(targets, clips):
        size, reason = results.get(target, (None, None))
        if reason is not None:
            report.failed.append((clip.path, reason))
            logger.warning("cannot use %s: %s", clip.path, reason)
            continue
        if size is not None:
            report.written += 1
            report.bytes_written += size
        report.entries.append(CacheEntry(target, clip))
    _update_failures(folder / "failures.json", [c.path for c in clips], report.failed)
    logger.info(report.summary())
    return report


def _update_failures(path: Path, checked: list[str], failed: list[tuple[str, str]]) -> None:
    """Merge this call's outcome into `failures.json`: the clips it checked are dropped, its failures added, other
    clips' entries (from calls over other actors) kept."""
    entries = {}
    try:
        entries = {e["path"]: e["reason"] for e in json.loads(path.read_text())}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for clip_path in checked:
        entries.pop(clip_path, None)
    entries.update(dict(failed))
    atomic_write(path, json.dumps([{"path": p, "reason": r} for p, r in sorted(entries.items())], indent=1))


# ----------------------------------------------------------------------------------------------
# Dataset and collator


class CachedClipDataset(torch.utils.data.Dataset):
    """Items are `{"row": processor row, "labels": int}` read from the cache (nothing is decoded from mp4)."""

    def __init__(self, entries: Sequence[CacheEntry]):
        self.entries = list(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict:
        entry = self.entries[i]
        row, _ = read_clip_cache(entry.path)
        return {"row": row, "labels": entry.label}

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.entries]


class FERCollator:
    """Batch dataset items into model inputs with the processor's own feature code.

    Returns a dict of tensors: `input_features` `(B, n_mel, 80)`, `audio_attention_mask` `(B, n_mel)`,
    `pixel_values_videos` `(B, T, 3, S, S)`, `video_frame_mask` `(B, T)`, `roi_weights` `(B, T, N)`,
    `audio_mask` `(B,)`, `video_mask` `(B,)` and `labels` `(B,)` long.
    """

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, items: Sequence[dict]) -> dict:
        if not items:
            raise FERInputError("cannot collate an empty batch")
        batch = self.processor.batch_rows([item["row"] for item in items], return_tensors="pt")
        out = {key: batch[key] for key in batch.keys()}
        out["labels"] = torch.tensor([int(item["labels"]) for item in items], dtype=torch.long)
        return out


__all__ = [
    "CacheEntry",
    "CacheError",
    "CacheReport",
    "CachedClipDataset",
    "FERCollator",
    "atomic_write",
    "build_cache",
    "cache_fingerprint",
    "decode_clip",
    "frontend_version",
    "read_clip_cache",
    "write_clip_cache",
]
