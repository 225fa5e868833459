"""Inputs of `fer-annotate`: files, folders, globs and manifests turned into one list of media files.

    files = discover(["talks/", "extra/*.webm", "corpus.csv"], path_column="path")
    files[0].path, files[0].metadata          # absolute path, manifest columns carried through

- a folder is searched recursively for media files (`MEDIA_EXTENSIONS`, case-insensitive);
- a glob (`*`, `?`, `[`; `**` crosses folders) takes every file it matches, whatever its extension;
- a `.csv` / `.jsonl` / `.ndjson` file is a manifest: one media file per row in `path_column` (relative paths are
  relative to the manifest's folder); its other columns are metadata carried into every output row;
- any other path is a media file, even when it does not exist: a missing file becomes an error row, it never
  stops the run.

Each file's resume key (`file_key`) is a hash of its absolute path, size, modification time and the
model/processor configuration: a file that changes, or a run with another model or window setting, is redone.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from fer_hf.errors_fer import FERInputError

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts")
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".m4a", ".ogg", ".opus", ".aac")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS
MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".ndjson")
_GLOB_CHARS = ("*", "?", "[")


@dataclass(frozen=True)
class InputFile:
    """One media file to annotate: absolute `path`, manifest `metadata` (column -> value), stat at discovery."""

    path: str
    metadata: dict = field(default_factory=dict, hash=False, compare=False)
    size_bytes: int = -1  # -1: the file could not be stat'ed (it will become an error row)
    mtime_ns: int = 0

    def key(self, config_hash: str) -> str:
        """Resume key: the same file (path, size, mtime) under the same model/processor configuration."""
        text = f"{self.path}\0{self.size_bytes}\0{self.mtime_ns}\0{config_hash}"
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:24]


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, 0
    return int(st.st_size), int(st.st_mtime_ns)


def _make(path: str | os.PathLike, metadata: dict | None = None) -> InputFile:
    absolute = os.path.abspath(os.fspath(path))
    size, mtime = _stat(absolute)
    return InputFile(absolute, dict(metadata or {}), size, mtime)


def _folder_files(folder: Path, extensions: tuple[str, ...]) -> list[str]:
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, n) for n in sorted(names)
                  if not n.startswith(".") and os.path.splitext(n)[1].lower() in extensions]
    return found


def read_manifest(path: str | os.PathLike, path_column: str = "path") -> list[InputFile]:
    """Rows of a CSV (header line) or JSON-lines manifest as `InputFile`s; other columns become metadata.

    Types come from pyarrow's reader (numbers stay numbers). Relative paths are taken from the manifest's folder.
    Raises FERInputError when the manifest cannot be read or has no `path_column`.
    """
    import pyarrow.csv as pa_csv
    import pyarrow.json as pa_json

    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            table = pa_csv.read_csv(path)
        else:
            table = pa_json.read_json(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError with its own wording
        raise FERInputError(f"cannot read the manifest {str(path)!r}: {exc}") from exc
    if path_column not in table.column_names:
        raise FERInputError(
            f"the manifest {str(path)!r} has no {path_column!r} column (columns: {table.column_names}); "
            f"name the column of media paths with --path-column"
        )
    base = path.parent.resolve()
    files = []
    for row in table.to_pylist():
        value = row.pop(path_column)
        if value is None or str(value).strip() == "":
            logger.warning("manifest %s: a row without a %r value is skipped: %s", path, path_column, row)
            continue
        media = Path(str(value)).expanduser()
        files.append(_make(media if media.is_absolute() else base / media, row))
    return files


def discover(
    inputs: list[str], path_column: str = "path", extensions: tuple[str, ...] = MEDIA_EXTENSIONS
) -> list[InputFile]:
    """Every media file named by `inputs`, in order, each once (the first mention keeps its metadata)."""
    files: list[InputFile] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = [_make(p) for p in _folder_files(path, extensions)]
            if not found:
                logger.warning("no media files (%s) under %s", ", ".join(extensions), path)
            files += found
        elif path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS:
            files += read_manifest(path, path_column)
        elif any(c in item for c in _GLOB_CHARS) and not path.exists():
            matches = sorted(glob.glob(os.path.expanduser(item), recursive=True))
            found = []
            for m in matches:
                found += [_make(p) for p in _folder_files(Path(m), extensions)] if os.path.isdir(m) else [_make(m)]
            if not found:
                logger.warning("the pattern %r matches no file", item)
            files += found
        else:
            files.append(_make(path))  # a missing or unreadable file becomes an error row
    unique: dict[str, InputFile] = {}
    for f in files:
        unique.setdefault(f.path, f)
    if len(unique) < len(files):
        logger.info("%d duplicate path(s) given more than once are annotated once", len(files) - len(unique))
    return list(unique.values())


def metadata_columns(files: list[InputFile]) -> list[str]:
    """Metadata column names in first-seen order."""
    names: dict[str, None] = {}
    for f in files:
        for k in f.metadata:
            names.setdefault(k, None)
    return list(names)


__all__ = ["InputFile", "MEDIA_EXTENSIONS", "MANIFEST_EXTENSIONS", "discover", "read_manifest", "metadata_columns"]
