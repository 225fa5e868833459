"""The one-machine runner of `fer-annotate`: decode workers that stream chunks, the model in this process.

    run_local(pending, model, processor, committer, args, device, settings)

Each of `--workers` forked processes (one thread each) takes one file at a time, decodes it front to back
(`stream.file_chunks`) and sends its chunks over its own pipe. This process reads a worker's next chunk
only while fewer than `--batch-size` rows wait for the model, and a worker blocks on its pipe until its chunk is
read: so this process holds under one batch plus one chunk of model inputs, and each worker one chunk plus the
frames of a window or two, whatever the files' lengths (back-pressure). With `--workers 0` the same chunks are
made in this process.

A worker that dies (a decoder crash, the out-of-memory killer) is replaced; the rows of its file are dropped and
the file is tried again once, then gets an error row. Workers die with this process, however it ends:
`PR_SET_PDEATHSIG` on Linux (the kernel sends them SIGKILL), else a watchdog thread polling `os.getppid()`; a
worker whose pipe to this process breaks exits too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import wait

from fer_hf.errors_fer import FERInputError

logger = logging.getLogger("fer_hf.tools.annotate")

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_PERIOD_S = 0.5


# ----------------------------------------------------------------------------------------------
def exit_with_parent(parent_pid: int, use_prctl: bool = True) -> str:
    """Make this (forked) process exit when its parent `parent_pid` does; returns how: "prctl" or "watchdog"."""
    how = "watchdog"
    if use_prctl and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                how = "prctl"
        except (OSError, AttributeError):  # no libc or no prctl: poll instead
            pass
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
    if how == "watchdog":
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="fer-annotate-watchdog", daemon=True).start()
    return how


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCHDOG_PERIOD_S)
    os._exit(1)  # orphaned: reparented to init or a subreaper


def _worker_main(conn, inherited: list, processor, settings: dict, parent_pid: int) -> None:
    """A decode worker: files in, chunks and end messages out, over `conn`, until told to stop (None)."""
    from fer_hf.tools.annotate.model import set_threads
    from fer_hf.tools.annotate.stream import file_chunks

    exit_with_parent(parent_pid)
    for other in inherited:  # the parent's ends of the pipes: a pipe breaks as soon as its two processes are gone
        other.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C and stops the workers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the main process's handler, inherited by the fork
    set_threads(1)
    try:
        while True:
            path = conn.recv()
            if path is None:
                return
            for message in file_chunks(processor, path, **settings):
                conn.send(message)  # blocks until the main process reads it: back-pressure
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the main process is gone


class _Worker:
    def __init__(self, context, processor, settings: dict, others: list):
        self.conn, child = context.Pipe(duplex=True)
        inherited = [self.conn, *(w.conn for w in others)]
        self.process = context.Process(target=_worker_main, name="fer-annotate-decode", daemon=True,
                                       args=(child, inherited, processor, settings, os.getpid()))
        self.process.start()
        child.close()
        self.job = None

    def stop(self, graceful: bool) -> None:
        if graceful and self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


def run_workers(pending, processor, settings: dict, workers: int, accept, drop) -> None:
    """Decode `pending` [(file, key)] in `workers` processes; `accept(job, message)` takes each message (and runs
    the model when a batch is full); `drop(job)` forgets a file whose worker died before it was done."""
    context = multiprocessing.get_context("fork")  # fork before the model's first forward: no OpenMP state yet
    queue = deque(pending)
    attempts: dict[str, int] = {}
    pool: list[_Worker] = []
    graceful = False
    try:
        for _ in range(workers):
            pool.append(_Worker(context, processor, settings, pool))
        while True:
            for i, w in enumerate(pool):
                if w.job is None and not w.process.is_alive():  # died while idle: nothing to retry
                    logger.warning("an idle decoding process died (exit code %s); starting another",
                                   w.process.exitcode)
                    w.stop(graceful=False)
                    pool[i] = w = _Worker(context, processor, settings, [o for o in pool if o is not w])
                if w.job is None and queue:
                    w.job = queue.popleft()
                    try:
                        w.conn.send(w.job[0].path)
                    except OSError:  # it died just now: found below, and the file is retried
                        pass
            busy = [w for w in pool if w.job is not None]
            if not busy:
                break
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for i, w in enumerate(pool):
                if w.job is None:
                    continue
                message = None
                if w.conn.poll():
                    try:
                        message = w.conn.recv()
                    except (EOFError, OSError, pickle.UnpicklingError):
                        message = None
                if message is not None:
                    job = w.job
                    if message["kind"] == "end":
                        w.job = None
                    accept(job, message)
                elif not w.process.is_alive():
                    pool[i] = _replace(w, context, processor, settings, pool, queue, attempts, accept, drop)
        graceful = True
    finally:
        for w in pool:
            w.stop(graceful)


def _replace(w: _Worker, context, processor, settings, pool, queue, attempts, accept, drop) -> _Worker:
    """A worker died with a file in flight: retry the file once (then an error row); start another worker."""
    job = w.job
    drop(job)
    n = attempts[job[1]] = attempts.get(job[1], 0) + 1
    if n >= 2:
        accept(job, {"kind": "end", "ok": False, "error_type": "WorkerCrash", "chunks": 0, "seconds": 0.0,
                     "error": "the decoding process died twice while reading this file (a decoder crash or out of "
                              "memory)"})
    else:
        queue.appendleft(job)
    logger.warning("a decoding process died (exit code %s) while reading %s; %s", w.process.exitcode, job[0].path,
                   "giving up on the file" if n >= 2 else "trying the file again")
    w.job = None
    w.stop(graceful=False)
    return _Worker(context, processor, settings, [o for o in pool if o is not w])


# ----------------------------------------------------------------------------------------------
def plan_threads(workers: int | None, cores: int, device: str) -> tuple[int, int]:
    """(decode workers, model threads): workers x 1 thread + model threads never exceed the cores."""
    if workers is None:
        workers = max(1, cores - 1) if device.startswith("cuda") else max(1, cores // 2)
    if workers < 0:
        raise FERInputError(f"--workers must be 0 or more, got {workers}")
    if workers > cores:
        logger.warning("--workers %d is more than the %d usable cores: using %d", workers, cores, cores)
        workers = cores
    return workers, max(1, cores - workers)


def run_local(pending, model, processor, committer, args, device: str, settings: dict) -> None:
    """Decode in worker processes (or here with `--workers 0`), classify here, commit as files complete."""
    from fer_hf.tools.annotate.model import WindowBatcher, set_threads, usable_cores
    from fer_hf.tools.annotate.store import Progress
    from fer_hf.tools.annotate.stream import file_chunks

    workers, model_threads = plan_threads(args.workers, usable_cores(), device)
    logger.info("%d decoding worker(s) x 1 thread, model on %s with %d thread(s)", workers, device, model_threads)
    batcher = WindowBatcher(model, processor, args.batch_size, device, args.precision)
    committer.progress = Progress(len(pending), not args.no_progress)

    def classified(done) -> None:
        for job, chunk, probabilities in done:
            committer.chunk(job, chunk, probabilities)

    def accept(job, message) -> None:
        if message["kind"] == "chunk" and message["rows"]:
            batcher.add(job, message)
        elif message["kind"] == "chunk":
            committer.chunk(job, message, [])  # only skipped windows: nothing for the model
        else:
            if not message["ok"]:
                batcher.discard(job)  # the file failed: its queued rows are void
            committer.end(job, message)
        while batcher.pending_windows >= batcher.batch_size:
            classified(batcher.step())

    def drop(job) -> None:
        batcher.discard(job)
        committer.drop(job)

    set_threads(model_threads)
    try:
        if workers == 0:
            for job in pending:
                for message in file_chunks(processor, job[0].path, **settings):
                    accept(job, message)
        else:
            run_workers(pending, processor, settings, workers, accept, drop)
        classified(list(batcher.drain()))
    finally:
        committer.peak_rows = max(committer.peak_rows, batcher.peak_rows)
        committer.progress.close()
        committer.flush()


__all__ = ["exit_with_parent", "plan_threads", "run_local", "run_workers"]
