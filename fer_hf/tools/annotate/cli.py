"""`fer-annotate`: folders, globs or manifests of videos -> per-window emotion tables (resumable).

    fer-annotate talks/ --model path/to/model --output results.parquet
    fer-annotate corpus.csv "more/**/*.webm" --model user/fer-model --output results.csv --workers 3
    fer-annotate corpus.jsonl --model /shared/model --output /shared/out/results.parquet --ray auto
    python -m fer_hf.tools.annotate --help

Writes `results.parquet` (one row per window, and per person with `--people all`; schema in docs/annotate.md)
and `results.files.parquet` (one row per file), committed in parts under `results.parquet.parts/` so that a
rerun of the same command skips what is done and an interrupted run (Ctrl-C, kill, crash) loses at most the
uncommitted part. A file that cannot be read gives an error row with the processor's message; the exit status
is 1 when any file failed, 0 otherwise, and 2 when the run could not go on (one ERROR line says why: bad
arguments, an unusable model, a full disk).

One machine (`local.py`): each file is decoded once, front to back, in one of `--workers` processes (one
thread each) with the face front-end, and handed over in chunks of windows; the model runs in the main process
with the remaining cores, batched across the windows of different files (`--batch-size`). Memory is bounded by
the batch and the chunks in flight, not by the length of a file. `--ray [ADDRESS]` runs the same steps on a Ray
cluster (`ray_runner.py`, `pip install -r requirements-ray.txt`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from fer_hf.errors_fer import FERError, FERInputError

logger = logging.getLogger("fer_hf.tools.annotate")

# 2 is every "could not run" (bad arguments, no input, an unusable model, a full disk): one ERROR line says why.
EXIT_OK, EXIT_FAILURES, EXIT_COULD_NOT_RUN, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_USAGE = EXIT_COULD_NOT_RUN


# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fer-annotate",
        description="Annotate media files with per-window emotion probabilities (one row per window).",
        epilog="Table schema and cluster use: docs/annotate.md. Exit status: 0 all files done, 1 ran but some "
               "files failed (see the error rows), 2 could not run (bad arguments, no input, an unusable model, "
               "an unwritable output or a full disk: one ERROR line says why), 130 interrupted (rerun the command "
               "to resume).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="media files, folders (searched recursively), quoted globs ('data/**/*.mp4') or manifests "
                        "(.csv with a header / .jsonl; other columns are carried into the tables)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", help="saved model folder or Hugging Face repo id (default: the trained compact "
                                       "model shipped in checkpoints/compact/)")
    model.add_argument("--preset", help="build a preset with random weights (smoke tests, benchmarks)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights of --preset (default 0)")
    p.add_argument("--output", "-o", default="annotations.parquet",
                   help="window table; its suffix picks the format (.parquet, .csv, .jsonl); the per-file summary "
                        "goes next to it as NAME.files.SUFFIX (default annotations.parquet)")
    p.add_argument("--format", choices=("parquet", "csv", "jsonl"), help="table format (default: from --output)")
    p.add_argument("--path-column", default="path", help="manifest column holding the media paths (default path)")
    p.add_argument("--window-seconds", type=float,
                   help="window length; only the model's clip length is accepted (the default), another is refused")
    p.add_argument("--hop-seconds", type=float, help="seconds between window starts, the hop (default: half a window)")
    p.add_argument("--people", choices=("speaker", "all"), default="speaker",
                   help="speaker: one row per window, for the person the front-end chooses (the speaker, else the "
                        "largest, most present face); all: one row per window and tracked person present in it, "
                        "each with that person's face and the window's audio (default speaker)")
    p.add_argument("--max-windows", type=int,
                   help="windows per file at most; beyond it the hop widens (default: no cap; memory does not "
                        "depend on it)")
    p.add_argument("--max-duration", type=float, dest="max_duration_s",
                   help="longer files get an error row (default: the processor's, 600 s)")
    p.add_argument("--workers", type=int,
                   help="decoding processes (0: decode in the main process). Default: cores - 1 with a GPU, "
                        "half the cores on CPU; never more than the cores")
    p.add_argument("--batch-size", type=int, default=16, help="windows per model call, across files (default 16)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when present)")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="auto: mixed precision (bf16/fp16) on CUDA, fp32 on CPU")
    p.add_argument("--retry-errors", action="store_true", help="redo the files that failed in an earlier run")
    p.add_argument("--part-files", type=int, default=256, help="commit a part every N files (default 256)")
    p.add_argument("--part-seconds", type=float, default=60.0, help="... or every S seconds (default 60)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray: no value starts a local Ray (or joins RAY_ADDRESS); 'auto' joins the cluster "
                        "of this node; 'ray://HEAD:10001' connects a client")
    p.add_argument("--ray-actors", type=int, default=1, help="model actors (one model each; default 1)")
    p.add_argument("--ray-gpus-per-actor", type=float,
                   help="GPUs per model actor (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--ray-chunks-per-batch", "--ray-files-per-batch", type=int, default=4,
                   dest="ray_chunks_per_batch",
                   help="decoded chunks (of up to 4 windows each) per model-actor call; their rows are batched by "
                        "--batch-size (default 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return p


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FERInputError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return device


# ----------------------------------------------------------------------------------------------
class _Committer:
    """Collects the classified chunks of files (in any order) and commits finished files in parts (every N
    files or S seconds). A file counts as done only once all its rows are in a committed part."""

    def __init__(self, store, builder, part_files: int, part_seconds: float):
        from fer_hf.tools.annotate.rows import FileRows

        self._file_rows = FileRows
        self.store, self.builder = store, builder
        self.part_files, self.part_seconds = max(1, part_files), part_seconds
        self.window_rows, self.file_rows = [], []
        self.open: dict = {}  # file key -> FileRows of a file in flight
        self.closed: set = set()  # keys of the files finished (or failed) in this run: late chunks are ignored
        self.last = time.monotonic()
        self.ok = self.failed = self.windows = 0
        self.peak_rows = self.peak_frames = 0  # memory figures: rows waiting for the model, frames a decoder held
        self.progress = None

    def chunk(self, job, chunk: dict, probabilities: list) -> None:
        """A classified chunk of `job` = (file, key) (`probabilities`: one dict per row of the chunk)."""
        file, key = job
        if key in self.closed:
            return
        rows = self.open.setdefault(key, self._file_rows(self.builder, file, key))
        rows.add(chunk, probabilities)
        self._maybe_finish(key)

    def end(self, job, end: dict) -> None:
        """The end message of `job`: a failure gives its error row and voids its rows; else it may finish it."""
        file, key = job
        if key in self.closed:
            return
        if not end["ok"]:
            self.open.pop(key, None)
            self._add(*self.builder.error(file, key, end["error_type"], end["error"], end.get("seconds", 0.0)),
                      key=key)
            self.failed += 1
            logger.warning("failed: %s: %s", file.path, end["error"])
            return
        self.open.setdefault(key, self._file_rows(self.builder, file, key)).end = end
        self.peak_frames = max(self.peak_frames, end.get("peak_frames", 0))
        self._maybe_finish(key)

    def drop(self, job) -> None:
        """Forget the rows of `job` so far (its worker died: the file is read again)."""
        self.open.pop(job[1], None)

    def _maybe_finish(self, key: str) -> None:
        rows = self.open[key]
        if not rows.complete:
            return
        del self.open[key]
        windows, summary = rows.finish()
        self.ok += 1
        self.windows += sum(r["status"] == "ok" for r in windows)
        self._add(windows, summary, key=key)

    def _add(self, windows: list, summary: dict, key: str) -> None:
        self.closed.add(key)
        self.window_rows += windows
        self.file_rows.append(summary)
        if self.progress is not None:
            self.progress.update(self)
        if len(self.file_rows) >= self.part_files or time.monotonic() - self.last >= self.part_seconds:
            self.flush()

    def flush(self) -> None:
        if self.file_rows:
            self.store.commit(self.window_rows, self.file_rows)
        self.window_rows, self.file_rows = [], []
        self.last = time.monotonic()


# ----------------------------------------------------------------------------------------------
@dataclass
class AnnotateSummary:
    """What a run did: `exit_status`, this run's counts and time, the tables' counts, and memory figures."""

    exit_status: int
    run_files: int
    run_ok: int
    run_failed: int
    run_windows: int
    run_seconds: float
    table_files: int
    table_ok: int
    table_failed: int
    table_windows: int
    inputs: int
    peak_rows: int = 0  # the most model rows that waited for the model at once (local path)
    peak_frames: int = 0  # the most decoded frames one file's decoder held at once


def annotate(args) -> AnnotateSummary:
    """Run `fer-annotate` with parsed `args` (see `build_parser`)."""
    from fer_hf.tools.annotate.inputs import discover
    from fer_hf.tools.annotate.model import config_hash, load_annotator, model_info
    from fer_hf.tools.annotate.rows import TABLE_VERSION, RowBuilder, metadata_fields
    from fer_hf.tools.annotate.store import PartStore, output_format, summary_path

    fmt = output_format(args.output, args.format)
    files = discover(args.inputs, path_column=args.path_column)
    if not files:
        raise FERInputError(f"no media files found in {args.inputs}")
    device = resolve_device(args.device) if not args.ray else args.device
    if args.model is None and args.preset is None:
        from fer_hf.tools.cli import shipped_model

        args.model = str(shipped_model())
    model, processor = load_annotator(
        args.model, args.preset, args.seed, window_seconds=args.window_seconds, hop_seconds=args.hop_seconds,
        max_windows=args.max_windows, max_duration_s=args.max_duration_s,
    )
    # the run's own settings, for the worker side and the configuration hash ("decode": how windows are made)
    settings = {"people": args.people, "max_windows": args.max_windows}
    chash = config_hash(model, processor, args.model, args.preset, args.seed,
                        dict(settings, decode="stream", table=TABLE_VERSION))
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    info = dict(model_info(model.config), config_hash=chash)
    probe = RowBuilder(labels, ([], {}), info, processor.confidence_margin)
    builder = RowBuilder(labels, metadata_fields(files, probe.reserved), info, processor.confidence_margin)
    jobs = [(f, f.key(chash)) for f in files]
    output = Path(args.output)
    with PartStore(output.with_name(output.name + ".parts"), *builder.schemas()) as store:
        ledger = store.ledger()
        pending = [(f, k) for f, k in jobs
                   if k not in ledger or (args.retry_errors and ledger[k]["status"] != "ok")]
        logger.info("%d file(s): %d already done, %d to annotate (model: %s)", len(jobs), len(jobs) - len(pending),
                    len(pending), info["model_summary"])
        committer = _Committer(store, builder, args.part_files, args.part_seconds)
        start = time.monotonic()
        interrupted = False
        try:
            if pending and args.ray:
                from fer_hf.tools.annotate.ray_runner import run_ray

                run_ray(pending, model, processor, committer, args, settings)
            elif pending:
                from fer_hf.tools.annotate.local import run_local

                run_local(pending, model, processor, committer, args, device, settings)
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("interrupted: the committed parts are kept; rerun the same command to resume")
        elapsed = time.monotonic() - start
        counts = store.write_tables({k for _, k in jobs}, output, fmt)
    logger.info("this run: %d file(s) done (%d ok, %d failed), %d windows in %.1f s",
                committer.ok + committer.failed, committer.ok, committer.failed, committer.windows, elapsed)
    if committer.peak_rows or committer.peak_frames:
        logger.info("memory: at most %d model rows waited for the model, at most %d decoded frames held per file",
                    committer.peak_rows, committer.peak_frames)
    logger.info("tables: %d of %d file(s) annotated: %d ok, %d failed; %d windows -> %s, %s",
                counts["files"], len(jobs), counts["ok"], counts["failed"], counts["windows"], output,
                summary_path(output, fmt))
    status = EXIT_INTERRUPTED if interrupted else EXIT_FAILURES if counts["failed"] else EXIT_OK
    return AnnotateSummary(status, committer.ok + committer.failed, committer.ok, committer.failed,
                           committer.windows, elapsed, counts["files"], counts["ok"], counts["failed"],
                           counts["windows"], len(jobs), committer.peak_rows, committer.peak_frames)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # a polite kill commits like Ctrl-C
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            return annotate(args).exit_status
    except FERError as exc:
        logger.error("%s", exc)
        return EXIT_COULD_NOT_RUN
    except OSError as exc:  # the file system refused (permissions, a full disk) outside the table writers
        logger.error("could not run: %s", exc.strerror or exc)
        return EXIT_COULD_NOT_RUN
    finally:
        signal.signal(signal.SIGTERM, previous)

