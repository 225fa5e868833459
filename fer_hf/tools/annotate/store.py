"""Crash-safe storage of `fer-annotate` results: committed parts, a ledger of done files, final tables.

Layout next to the output `results.parquet`:

    results.parquet.parts/
        windows-000001.parquet    window rows of the files committed in part 1
        files-000001.parquet      one summary row per file of part 1 (the commit record: written last)
        .lock                     held while a run uses the folder
    results.parquet               the window table, rebuilt from the parts at the end of every run
    results.files.parquet         the per-file summary table

A part is committed by writing its windows file, then its files file, each to a temporary name that is renamed
into place (atomic on POSIX) after an fsync. A run killed at any moment leaves committed parts whole; a windows
file whose files file never arrived is removed at the next start. The files parts are the ledger: a rerun skips
every file whose key is in them. The final tables are written to a temporary name and renamed too, so they are
either the previous complete version or the new one, never half written. They hold exactly the current inputs'
keys (a file that changed, or a run with another configuration, replaces the old rows), the latest commit of each.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import time
from pathlib import Path

from fer_hf.errors_fer import FERError, FERInputError

logger = logging.getLogger(__name__)

FORMATS = ("parquet", "csv", "jsonl")
_PART = re.compile(r"^(windows|files)-(\d{6,})\.parquet$")


def output_format(path: str | os.PathLike, requested: str | None = None) -> str:
    """The table format: `requested`, else from the suffix (.parquet, .csv, .jsonl / .ndjson), else Parquet."""
    if requested:
        if requested not in FORMATS:
            raise FERInputError(f"unknown output format {requested!r}; choose one of {list(FORMATS)}")
        return requested
    suffix = Path(path).suffix.lower()
    return {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}.get(suffix, "parquet")


def summary_path(output: str | os.PathLike, fmt: str) -> Path:
    """`results.parquet` -> `results.files.parquet` (same folder and format)."""
    output = Path(output)
    suffix = output.suffix if output.suffix else {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}[fmt]
    return output.with_name(output.stem + ".files" + suffix)


class OutputWriteError(FERError):
    """The tables or the committed parts cannot be written (a full disk, no permission): the run cannot go on."""


def write_error(path, err: OSError) -> OutputWriteError:
    """The one-line refusal for an `OSError` while writing `path` (committed parts stay: a rerun resumes)."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the disk is full"
    else:
        reason = err.strerror or str(err) or type(err).__name__
    return OutputWriteError(f"could not write {str(path)!r}: {reason}. Free some space or choose another --output, "
                            "then rerun the same command (the files committed so far are kept)")


def _fsync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


class PartStore:
    """The parts folder of one output: commit parts, read the ledger, write the final tables.

    Args:
        folder: the parts folder (created).
        windows_schema, files_schema: `pyarrow.Schema`s of the two tables (every part is written with them).
    """

    def __init__(self, folder: str | os.PathLike, windows_schema, files_schema):
        self.folder = Path(folder)
        self.windows_schema = windows_schema
        self.files_schema = files_schema
        self._lock = None
        self._next = 1

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> PartStore:
        self.folder.mkdir(parents=True, exist_ok=True)
        # A POSIX record lock belongs to this process: forked decode workers do not inherit it, and it goes away
        # with the process however it ends (flock would stay held by a killed run's orphaned workers).
        self._lock = open(self.folder / ".lock", "w")
        try:
            fcntl.lockf(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise FERInputError(
                f"another fer-annotate run is writing to {str(self.folder)!r}; wait for it or choose another --output"
            ) from None
        self._clean()
        return self

    def close(self) -> None:
        if self._lock is not None:
            fcntl.lockf(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> PartStore:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _parts(self) -> dict[str, dict[int, Path]]:
        parts: dict[str, dict[int, Path]] = {"windows": {}, "files": {}}
        for p in self.folder.iterdir():
            m = _PART.match(p.name)
            if m:
                parts[m.group(1)][int(m.group(2))] = p
        return parts

    def _clean(self) -> None:
        """Drop temporary files and windows parts that were never committed (a run killed mid-commit)."""
        for p in self.folder.glob("*.tmp"):
            p.unlink()
        parts = self._parts()
        for n, p in parts["windows"].items():
            if n not in parts["files"]:
                logger.info("removing %s: its commit did not finish", p.name)
                p.unlink()
        self._next = max([0, *parts["files"]]) + 1

    # ------------------------------------------------------------------ writing
    def commit(self, window_rows: list[dict], file_rows: list[dict]) -> int | None:
        """Write one part (window rows, then the files' summary rows that commit them). Returns its number."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not file_rows:
            return None
        n = self._next
        self._next += 1
        for kind, rows, schema in (("windows", window_rows, self.windows_schema),
                                   ("files", [dict(r, part=n) for r in file_rows], self.files_schema)):
            final = self.folder / f"{kind}-{n:06d}.parquet"
            tmp = final.with_name(final.name + ".tmp")
            try:
                pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
                _fsync_replace(tmp, final)
            except OSError as err:
                tmp.unlink(missing_ok=True)  # a windows part without its files part is removed at the next start
                raise write_error(final, err) from None
        return n

    # ------------------------------------------------------------------ reading
    def ledger(self) -> dict[str, dict]:
        """`file_key -> {"status", "part"}` of every committed file (the latest commit of a key wins)."""
        import pyarrow.parquet as pq

        done: dict[str, dict] = {}
        for n, p in sorted(self._parts()["files"].items()):
            table = pq.read_table(p, columns=["file_key", "status", "part"])
            for key, status, part in zip(*(table.column(c).to_pylist() for c in ("file_key", "status", "part"))):
                done[key] = {"status": status, "part": part}
        return done

    def write_tables(self, keys: set[str], output: str | os.PathLike, fmt: str) -> dict:
        """Write the window table to `output` and the summary table next to it, for the files in `keys`.

        Streams part by part (memory: one part). Returns counts: files, ok, failed, windows. A failed write
        (`OutputWriteError`) leaves the previous tables as they were and no temporary file.
        """
        ledger = {k: v for k, v in self.ledger().items() if k in keys}
        counts = {"files": len(ledger), "ok": 0, "failed": 0, "windows": 0}
        output = Path(output)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            self._write_tables(ledger, output, fmt, counts)
        except OSError as err:
            raise write_error(output, err) from None
        return counts

    def _write_tables(self, ledger: dict, output: Path, fmt: str, counts: dict) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        parts = self._parts()
        wanted_parts = sorted({v["part"] for v in ledger.values()})
        with _TableWriter(output, fmt, self.windows_schema) as windows, \
                _TableWriter(summary_path(output, fmt), fmt, self.files_schema.remove(
                    self.files_schema.get_field_index("part"))) as files:
            for n in wanted_parts:
                part_keys = pa.array([k for k, v in ledger.items() if v["part"] == n], pa.string())
                ft = pq.read_table(parts["files"][n], schema=self.files_schema)
                ft = ft.filter(pc.is_in(ft.column("file_key"), value_set=part_keys)).drop_columns(["part"])
                wt = pq.read_table(parts["windows"][n], schema=self.windows_schema)
                wt = wt.filter(pc.is_in(wt.column("file_key"), value_set=part_keys))
                files.write(ft)
                windows.write(wt)
                status = ft.column("status").to_pylist()
                counts["ok"] += sum(s == "ok" for s in status)
                counts["failed"] += sum(s != "ok" for s in status)
                counts["windows"] += int(pc.sum(pc.equal(wt.column("status"), "ok")).as_py() or 0)


class _TableWriter:
    """Streams tables of one schema into a Parquet, CSV or JSON-lines file (temporary name, renamed at close)."""

    def __init__(self, path: Path, fmt: str, schema):
        self.path, self.fmt, self.schema = Path(path), fmt, schema
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._writer = None
        self._file = None

    def __enter__(self) -> _TableWriter:
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq

        if self.fmt == "parquet":
            self._writer = pq.ParquetWriter(self.tmp, self.schema)
        elif self.fmt == "csv":
            self._writer = pa_csv.CSVWriter(self.tmp, self.schema)
        else:
            self._file = open(self.tmp, "w", encoding="utf-8")
        return self

    def write(self, table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is not None:
            self._writer.write_table(table)
        else:
            for row in table.to_pylist():
                self._file.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            for handle in (self._writer, self._file):
                if handle is not None:
                    try:
                        handle.close()
                    except OSError:
                        if exc_type is None:  # else the error being raised already says what went wrong
                            raise
            if exc_type is None:
                _fsync_replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)  # gone after the rename; removed after any failure


class Progress:
    """tqdm bar over files with windows per second in the postfix (tqdm gives files/s and the ETA); shared by the
    local and the Ray runner (here, so that neither runner imports the other)."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="file", disable=not enabled or None, dynamic_ncols=True)
        self.start = time.monotonic()

    def update(self, committer) -> None:
        rate = committer.windows / max(1e-9, time.monotonic() - self.start)
        self.bar.set_postfix_str(f"{rate:.2f} windows/s, {committer.failed} failed", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


__all__ = [
    "OutputWriteError",
    "Progress",
    "FORMATS",
    "PartStore",
    "output_format",
    "summary_path",
]
