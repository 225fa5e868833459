"""The two tables of `fer-annotate`: their schemas and the rows of one file.

Window table: one row per window of a file (and per person once several are tracked); a file that cannot be
read gives one row with `status="error"` and the processor's message; a window with neither usable audio nor
a face gives a row with `status="skipped"` and the reasons. Summary table: one row per file.
Column order and types are fixed by the schemas below (metadata columns follow `source`).
"""

from __future__ import annotations

import logging

import pyarrow as pa

logger = logging.getLogger(__name__)

STATUS_OK, STATUS_SKIPPED, STATUS_ERROR = "ok", "skipped", "error"


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
         pa.field("person_id", pa.int64()),
         pa.field("window_index", pa.int32()),
         pa.field("start_s", pa.float64()), pa.field("end_s", pa.float64()),
         pa.field("status", pa.string()),
         *[pa.field(c, pa.float64()) for c in probability_columns(labels)],
         pa.field("top_label", pa.string()),
         pa.field("audio_used", pa.bool_()), pa.field("video_used", pa.bool_()),
         pa.field("audio_reason", pa.string()), pa.field("video_reason", pa.string()),
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
         pa.field("top_label", pa.string()),
         pa.field("person_id", pa.int64()),
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
    """

    def __init__(self, labels: list[str], metadata: tuple[list[pa.Field], dict[str, str]], model_info: dict):
        self.labels = list(labels)
        self.prob_columns = probability_columns(self.labels)
        self.meta_fields, self.meta_mapping = metadata
        self.meta_types = {f.name: f.type for f in self.meta_fields}
        self.model_info = dict(model_info)
        reserved = set(files_schema(self.labels, []).names) | set(windows_schema(self.labels, []).names)
        self.reserved = reserved

    def schemas(self) -> tuple[pa.Schema, pa.Schema]:
        return windows_schema(self.labels, self.meta_fields), files_schema(self.labels, self.meta_fields)

    def _common(self, file, key: str) -> dict:
        return {"source": file.path, **_metadata(file, self.meta_mapping, self.meta_types),
                **self.model_info, "file_key": key}

    def error(self, file, key: str, error_type: str, message: str, seconds: float = 0.0) -> tuple[list, dict]:
        common = self._common(file, key)
        window = dict(common, status=STATUS_ERROR, error_type=error_type, error=message)
        summary = dict(common, status=STATUS_ERROR, error_type=error_type, error=message, windows=0,
                       windows_skipped=0, size_bytes=file.size_bytes, mtime_ns=file.mtime_ns, seconds=seconds)
        return [window], summary

    def rows(self, file, key: str, outcome: dict) -> tuple[list[dict], dict]:
        """Window rows and the summary row of a decoded and classified file.

        `outcome` holds `clip_info` (one dict per classified window, from the processor), `skipped` (the windows
        left out, from the processor), `probabilities` (one `{label: p}` per classified window, from
        `FERProcessor.post_process`, sorted high to low) and `seconds`.
        """
        common = self._common(file, key)
        rows = []
        for info, probs in zip(outcome["clip_info"], outcome["probabilities"]):
            rows.append(dict(
                common, person_id=None, window_index=info["window_index"], start_s=info["window_start_s"],
                end_s=info["window_end_s"], status=STATUS_OK,
                **{c: probs[label] for c, label in zip(self.prob_columns, self.labels)},
                top_label=next(iter(probs)), audio_used=info["audio_used"], video_used=info["video_used"],
                audio_reason=info["audio_reason"], video_reason=info["video_reason"],
                face_frames=sum(b is not None for b in info["face_boxes"]),
                frames=sum(t is not None for t in info["frame_source_times_s"]),
            ))
        for skip in outcome["skipped"]:
            rows.append(dict(
                common, person_id=None, window_index=skip["window_index"], start_s=skip["window_start_s"],
                end_s=skip["window_end_s"], status=STATUS_SKIPPED, audio_used=False, video_used=False,
                audio_reason=skip["audio_reason"], video_reason=skip["video_reason"],
            ))
        rows.sort(key=lambda r: r["window_index"])
        # The clip answer as the pipeline gives it: the mean of the classified windows' probabilities.
        n = len(outcome["probabilities"])
        clip = {label: sum(p[label] for p in outcome["probabilities"]) / n for label in self.labels}
        summary = dict(
            common, status=STATUS_OK, duration_s=outcome["clip_info"][0]["duration_s"], windows=n,
            windows_skipped=len(outcome["skipped"]),
            **{c: clip[label] for c, label in zip(self.prob_columns, self.labels)},
            top_label=max(clip, key=clip.get), person_id=None, size_bytes=file.size_bytes,
            mtime_ns=file.mtime_ns, seconds=outcome["seconds"],
        )
        return rows, summary


__all__ = ["RowBuilder", "metadata_fields", "probability_columns", "windows_schema", "files_schema",
           "STATUS_OK", "STATUS_SKIPPED", "STATUS_ERROR"]
