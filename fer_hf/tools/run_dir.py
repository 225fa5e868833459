"""The training output folder: one run at a time (a lock file), and the history of a run's sessions.

    <output-dir>/.fer-train.lock       {"pid", "host", "started", "command"} while a run writes the folder
    <output-dir>/<fold>/sessions.json  one entry per start or `--resume` of that fold: start time, seconds,
                                       first and last optimizer step, train loss, world size

A resumed run adds a session instead of forgetting the earlier ones, so `training_info.json` reports the time and
the train loss of the whole run, not only of its last part.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from fer_hf.errors_fer import FERError

from .data import atomic_write

logger = logging.getLogger(__name__)

LOCK_NAME = ".fer-train.lock"


class RunLockedError(FERError):
    """Another run is writing the same output folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class OutputDirLock:
    """An exclusive lock on an output folder (a file created with O_EXCL), as a context manager.

    A lock left by a process that no longer exists on this host is taken over with a warning. A lock held by a live
    process, or by another host (which cannot be checked from here), refuses with a `RunLockedError` that says
    who holds it and how to clear a stale one.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def acquire(self) -> "OutputDirLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "command": " ".join(sys.argv)}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
                    logger.warning("taking over the stale lock of pid %s (no longer running) on %s",
                                   holder.get("pid"), self.folder)
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunLockedError(
                    f"another run (pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}) "
                    f"is writing {str(self.folder)!r}; wait for it to end or choose another --output-dir (if no run "
                    f"is active, delete {str(self.path)!r})"
                ) from None
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle)
            self.held = True
            return self
        raise RunLockedError(f"could not lock {str(self.folder)!r}")

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.held and self._holder().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class SessionLog:
    """`sessions.json` of one fold folder: the sessions of a run (fresh start + every resume)."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / "sessions.json"

    def load(self) -> list[dict]:
        try:
            return list(json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return []

    def write(self, sessions: list[dict]) -> None:
        atomic_write(self.path, json.dumps(sessions, indent=1))

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)


def totals(sessions: list[dict]) -> dict:
    """Whole-run figures: seconds summed over sessions and the step-weighted train loss."""
    seconds = sum(float(s.get("seconds") or 0.0) for s in sessions)
    weighted = [(s["train_loss"], s["end_step"] - s["start_step"]) for s in sessions
                if s.get("train_loss") is not None and s.get("end_step", 0) > s.get("start_step", 0)]
    steps = sum(n for _, n in weighted)
    loss = sum(v * n for v, n in weighted) / steps if steps else None
    return {"sessions": len(sessions), "seconds": round(seconds, 1), "train_loss": loss,
            "global_step": max((s.get("end_step", 0) for s in sessions), default=0)}


class SessionCallback(TrainerCallback):
    """Keep this session's entry in `sessions.json` up to date (at every log and save, and at the end; rank 0
    writes). A session's seconds count from `started` (the fold's start: data preparation included).

    Sessions of an earlier, interrupted run that ended after the checkpoint being resumed from are kept: their time
    was spent (and their steps are redone), so the total is the compute the run really took.
    """

    def __init__(self, log: SessionLog, resumed_from: str | None, world_size: int, started: float | None = None):
        self.log, self.started = log, time.time() if started is None else started
        self.sessions = log.load() if resumed_from else []
        self.entry = {"started": _now(), "seconds": 0.0, "start_step": 0, "end_step": 0, "train_loss": None,
                      "resumed_from": resumed_from, "world_size": world_size}
        self.sessions.append(self.entry)

    def _update(self, state, loss=None):
        self.entry.update(seconds=round(time.time() - self.started, 1), end_step=state.global_step)
        if loss is not None:
            self.entry["train_loss"] = float(loss)
        if state.is_world_process_zero:
            self.log.write(self.sessions)

    def finish(self, write: bool) -> list[dict]:
        """Close the session (after the final evaluation and save); returns every session of the run."""
        self.entry["seconds"] = round(time.time() - self.started, 1)
        if write:
            self.log.write(self.sessions)
        return self.sessions

    def on_train_begin(self, args, state, control, **kwargs):
        self.entry["start_step"] = state.global_step
        self._update(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._update(state, (logs or {}).get("train_loss"))

    def on_save(self, args, state, control, **kwargs):
        self._update(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._update(state)


__all__ = ["LOCK_NAME", "OutputDirLock", "RunLockedError", "SessionCallback", "SessionLog", "totals"]
