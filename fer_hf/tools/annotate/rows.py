"""The two tables of `fer-annotate`: their schemas and the rows of one file.

Window table: one row per window of a file and person classified (`--people speaker`: the chosen person only;
`--people all`: every face track present in the window, `is_speaker` marking the chosen one); a file that cannot
be read gives one row with `status="error"` and the processor's message; a window with neither usable audio nor
a face gives a row with `status="skipped"` and the reasons. Summary table: one row per file.
Column order and types are fixed by the schemas below (metadata columns follow `source`). `top_label` follows the
result type's rule (`results_fer.decide`): null below the processor's `confidence_margin` ("no clear emotion"), as
the pipeline, the app and `FERClipResult` say; `margin` is how far the top probability leads the second.

A file's rows arrive chunk by chunk, classified in any order (`FileRows`); the file is complete, and its summary
made, once its end message has come and every chunk it announced is in.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pyarrow as pa

from fer_hf.results_fer import aggregate_windows, decide, top_margin

logger = logging.getLogger(__name__)

STATUS_OK, STATUS_SKIPPED, STATUS_ERROR = "ok", "skipped", "error"
# The tables' layout, part of the resume key (2: `top_label` by the confidence margin; `margin`, `speech_fraction`).
TABLE_VERSION = 2


def probability_columns(labels: list[str]) -> list[str]:
    """`prob_<label>` for each class, in model order."""
    return [f"prob_{label}" for label in labels]


def _model_fields() -> list[pa.Field]:
    return [
        pa.field("model_status", pa.string()),  # provenance status: untrained | backbones | trained
        pa.field("model_summary", pa.string()),  # provenance in one sentence
        pa.field("model_preset", pa.string()),
        pa.field("config_hash", pa.string()),  # model + processor + window settings
        pa.field("file_key", pa.string()),  # resume key: path, size, mtime, config_hash
    ]


def windows_schema(labels: list[str], metadata: list[pa.Field]) -> pa.Schema:
    return pa.schema(
        [pa.field("source", pa.string()), *metadata,
         pa.field("person_id", pa.int64()),  # clip-wide face track id of the face classified (null: no face)
         pa.field("is_speaker", pa.bool_()),  # the row of the person the front-end chose for this window
         pa.field("window_index", pa.int32()),
         pa.field("start_s", pa.float64()), pa.field("end_s", pa.float64()),
         pa.field("status", pa.string()),
         *[pa.field(c, pa.float64()) for c in probability_columns(labels)],
         pa.field("top_label", pa.string()),  # null: no clear emotion (margin below the confidence margin)
         pa.field("margin", pa.float64()),  # top probability minus the second
         pa.field("audio_used", pa.bool_()), pa.field("video_used", pa.bool_()),
         pa.field("audio_reason", pa.string()), pa.field("video_reason", pa.string()),
         pa.field("speech_fraction", pa.float64()),  # share of the window's audio that is speech (null: not run)
         pa.field("face_frames", pa.int32()), pa.field("frames", pa.int32()),
         pa.field("error_type", pa.string()), pa.field("error", pa.string()),
         *_model_fields()]
    )


def files_schema(labels: list[str], metadata: list[pa.Field]) -> pa.Schema:
    return pa.schema(
        [pa.field("source", pa.string()), *metadata,
         pa.field("status", pa.string()),
         pa.field("error_type", pa.string()), pa.field("error", pa.string()),
         pa.field("duration_s", pa.float64()),
         pa.field("windows", pa.int32()), pa.field("windows_skipped", pa.int32()),
         *[pa.field(c, pa.float64()) for c in probability_columns(labels)],
         pa.field("top_label", pa.string()), pa.field("margin", pa.float64()),  # of the clip answer
         pa.field("person_id", pa.int64()),  # the person chosen in most windows: the clip answer is theirs
         pa.field("people", pa.int32()),  # face tracks found in the file
         pa.field("size_bytes", pa.int64()), pa.field("mtime_ns", pa.int64()),
         pa.field("seconds", pa.float64()),  # decode + front-end time of the file in its worker
         *_model_fields(),
         pa.field("part", pa.int64())]  # internal: the part that committed the row (dropped from the final table)
    )


def metadata_fields(files, reserved: set[str]) -> tuple[list[pa.Field], dict[str, str]]:
    """Arrow fields for the manifests' metadata columns and `name -> column` (a clash gets a `meta_` prefix).

    Each column's type is inferred over all files' values (numbers stay numbers); a column whose values do not
    share one type, or are all empty, is stored as text.
    """
    names: dict[str, list] = {}
    for f in files:
        for k, v in f.metadata.items():
            names.setdefault(k, []).append(v)
    fields, mapping = [], {}
    for name, values in names.items():
        column = name
        while column in reserved or column in mapping.values():
            column = "meta_" + column
        if column != name:
            logger.warning("manifest column %r is stored as %r (the table has its own %r)", name, column, name)
        try:
            kind = pa.array(values).type
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            kind = pa.null()
        if pa.types.is_null(kind) or pa.types.is_nested(kind):
            kind = pa.string()
        fields.append(pa.field(column, kind))
        mapping[name] = column
    return fields, mapping


def _metadata(file, mapping: dict[str, str], fields: dict[str, pa.DataType]) -> dict:
    out = {}
    for name, column in mapping.items():
        value = file.metadata.get(name)
        if value is not None and pa.types.is_string(fields[column]) and not isinstance(value, str):
            value = str(value)
        out[column] = value
    return out


class RowBuilder:
    """Builds the rows of one file from the model step's outcome (same code for the local and the Ray path).

    Args:
        labels: class names in model order.
        metadata: `(fields, mapping)` from `metadata_fields`.
        model_info: `model_status`, `model_summary`, `model_preset`, `config_hash`.
        confidence_margin: the processor's; below it `top_label` is null (the result type's rule).
    """

    def __init__(self, labels: list[str], metadata: tuple[list[pa.Field], dict[str, str]], model_info: dict,
                 confidence_margin: float):
        self.labels = list(labels)
        self.confidence_margin = float(confidence_margin)
        self.prob_columns = probability_columns(self.labels)
        self.meta_fields, self.meta_mapping = metadata
        self.meta_types = {f.name: f.type for f in self.meta_fields}
        self.model_info = dict(model_info)
        reserved = set(files_schema(self.labels, []).names) | set(windows_schema(self.labels, []).names)
        self.reserved = reserved

    def schemas(self) -> tuple[pa.Schema, pa.Schema]:
        return windows_schema(self.labels, self.meta_fields), files_schema(self.labels, self.meta_fields)

    def _answer(self, probs: dict) -> dict:
        """`top_label` (None below the confidence margin) and `margin` of `{label: p}`, by the result's rule."""
        ordered = [probs[label] for label in self.labels]
        top, _ = decide(ordered, self.labels, self.confidence_margin)
        return {"top_label": top, "margin": round(top_margin(ordered), 6)}

    def _common(self, file, key: str) -> dict:
        return {"source": file.path, **_metadata(file, self.meta_mapping, self.meta_types),
                **self.model_info, "file_key": key}

    def error(self, file, key: str, error_type: str, message: str, seconds: float = 0.0) -> tuple[list, dict]:
        common = self._common(file, key)
        window = dict(common, status=STATUS_ERROR, error_type=error_type, error=message)
        summary = dict(common, status=STATUS_ERROR, error_type=error_type, error=message, windows=0,
                       windows_skipped=0, size_bytes=file.size_bytes, mtime_ns=file.mtime_ns, seconds=seconds)
        return [window], summary

    def window_rows(self, file, key: str, chunk: dict, probabilities: list[dict]) -> list[dict]:
        """Window rows of one classified chunk: `chunk["rows"]` (from `stream.py`) with one `{label: p}`
        per row (`FERProcessor.post_process`, high to low), and its skipped windows."""
        common = self._common(file, key)
        rows = [dict(common, **meta, status=STATUS_OK,
                     **{c: probs[label] for c, label in zip(self.prob_columns, self.labels)},
                     **self._answer(probs))
                for meta, probs in zip(chunk["rows"], probabilities)]
        rows += [dict(common, **skip, person_id=None, is_speaker=True, status=STATUS_SKIPPED, audio_used=False,
                      video_used=False) for skip in chunk["skipped"]]
        return rows

    def summary(self, file, key: str, end: dict, speaker: list, skipped: int, person_id: int | None) -> dict:
        """The summary row of a complete file: `speaker` holds the chosen person's classified windows
        (`probabilities`, `modalities`), whose aggregate is the clip answer, as the pipeline gives it."""
        clip, _, _ = aggregate_windows(speaker, self.labels, self.confidence_margin)
        return dict(
            self._common(file, key), status=STATUS_OK, duration_s=end["duration_s"], windows=len(speaker),
            windows_skipped=skipped, **{c: clip[label] for c, label in zip(self.prob_columns, self.labels)},
            **self._answer(clip), person_id=person_id, people=end["people"],
            size_bytes=file.size_bytes, mtime_ns=file.mtime_ns, seconds=end["seconds"],
        )


class FileRows:
    """The rows of one file while its chunks are classified (in any order), and its summary once complete."""

    def __init__(self, builder: RowBuilder, file, key: str):
        self.builder, self.file, self.key = builder, file, key
        self.rows: list[dict] = []
        self.speaker: list = []  # the chosen person's classified windows, for the clip answer
        self.chosen: dict[int, tuple] = {}  # person id -> (windows where they were chosen with a face, first one)
        self.skipped = 0
        self.seen: set[int] = set()  # chunk numbers in: a chunk delivered twice (a retried Ray task) counts once
        self.end: dict | None = None

    def add(self, chunk: dict, probabilities: list[dict]) -> None:
        if chunk["seq"] in self.seen:
            return
        self.seen.add(chunk["seq"])
        self.rows += self.builder.window_rows(self.file, self.key, chunk, probabilities)
        for meta, probs in zip(chunk["rows"], probabilities):
            if meta["is_speaker"]:
                modalities = {"audio": meta["audio_used"], "video": meta["video_used"]}
                self.speaker.append(SimpleNamespace(index=meta["window_index"], probabilities=probs,
                                                    modalities=modalities))
                if meta["video_used"] and meta["person_id"] is not None:
                    count, first = self.chosen.get(meta["person_id"], (0, meta["window_index"]))
                    self.chosen[meta["person_id"]] = (count + 1, min(first, meta["window_index"]))
        self.skipped += len(chunk["skipped"])

    @property
    def complete(self) -> bool:
        return self.end is not None and len(self.seen) >= self.end["chunks"]

    def finish(self) -> tuple[list[dict], dict]:
        """(window rows in window order, the chosen person's row first; the summary row)."""
        self.rows.sort(key=lambda r: (r["window_index"], not r["is_speaker"],
                                      -1 if r["person_id"] is None else r["person_id"]))
        # the person chosen in most windows, the earliest chosen on a tie (as results_fer.clip_faces decides)
        person = max(self.chosen, key=lambda p: (self.chosen[p][0], -self.chosen[p][1])) if self.chosen else None
        self.speaker.sort(key=lambda w: w.index)  # chunks may come in any order: sum in window order
        return self.rows, self.builder.summary(self.file, self.key, self.end, self.speaker, self.skipped, person)


__all__ = ["FileRows", "RowBuilder", "metadata_fields", "probability_columns", "windows_schema", "files_schema",
           "STATUS_OK", "STATUS_SKIPPED", "STATUS_ERROR", "TABLE_VERSION"]
