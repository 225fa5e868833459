"""The app's serving limits: bounded work per request, per client and per file (README, "Limits").

    limits = ServingLimits.from_env(max_seconds=30, max_upload_mb=50)
    analyzer budget:   limits.media_budget()                   # pixels per frame / per clip, frames, audio
    one request:       token = limits.work_token()              # cancelled when the client leaves, or out of time
                       async for step in run_in_worker(make_steps, token): ...
    uploads:           launch(app_kwargs={"middleware": [upload_quota_middleware(limits, folders)]})
    results:           scrub_paths(result)                      # no server path in what a client gets

Where the work happens, the engine enforces the budget (`fer_hf.media_stream_fer.MediaBudget`, checked on the
file's headers before decoding and on what is really decoded) and stops on the token (`WorkToken`, checked between
packets and windows). This module turns the app's settings into those objects, runs a request's work in a thread
whose lifetime follows the request (Gradio cancels the awaiting task on "cancel" and stops iterating a generator
whose client has left; either way the token is cancelled and the thread ends within one step), and refuses uploads
past a per-client rate or past the space given to temporary files.

Settings (environment): FER_MAX_FRAME_PIXELS (default 3840 x 2160 x 2 = 16.6 M), FER_MAX_FRAMES (default 120 per
second of `--max-seconds`), FER_MAX_CLIP_GIGAPIXELS (default 8), FER_MAX_WORK_SECONDS (default 240),
FER_UPLOAD_MB_PER_MINUTE (per client, default 4 x `--max-upload-mb`), FER_TEMP_DISK_MB (default 2048),
FER_CACHE_MINUTES (uploads and results are deleted after this long, default 10).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from fer_hf.media_stream_fer import MediaBudget, WorkToken

logger = logging.getLogger("fer_app.limits")


@dataclass(frozen=True)
class ServingLimits:
    """What one request, one client and all uploads together may use."""

    max_seconds: float = 30.0  # clip length (the processor's `max_duration_s`)
    max_frame_pixels: int = 3840 * 2160 * 2
    max_frames: int = 3600
    max_clip_pixels: int = 8_000_000_000
    max_work_seconds: float = 240.0
    upload_mb_per_minute: float = 200.0
    temp_disk_mb: float = 2048.0
    cache_minutes: float = 10.0

    @classmethod
    def from_env(cls, max_seconds: float, max_upload_mb: float, environ=os.environ) -> "ServingLimits":
        env = environ.get
        return cls(
            max_seconds=float(max_seconds),
            max_frame_pixels=int(float(env("FER_MAX_FRAME_PIXELS", cls.max_frame_pixels))),
            max_frames=int(env("FER_MAX_FRAMES", str(max(1, round(120 * float(max_seconds)))))),
            max_clip_pixels=int(float(env("FER_MAX_CLIP_GIGAPIXELS", "8")) * 1e9),
            max_work_seconds=float(env("FER_MAX_WORK_SECONDS", "240")),
            upload_mb_per_minute=float(env("FER_UPLOAD_MB_PER_MINUTE", str(4 * float(max_upload_mb)))),
            temp_disk_mb=float(env("FER_TEMP_DISK_MB", "2048")),
            cache_minutes=float(env("FER_CACHE_MINUTES", "10")),
        )

    def media_budget(self) -> MediaBudget:
        """The decoding budget of one clip (the audio: the clip cap plus two seconds of slack)."""
        return MediaBudget(max_frame_pixels=self.max_frame_pixels, max_frames=self.max_frames,
                           max_pixels=self.max_clip_pixels, max_audio_seconds=self.max_seconds + 2.0)

    def work_token(self) -> WorkToken:
        return WorkToken(self.max_work_seconds)

    def delete_cache(self) -> tuple[int, int]:
        """Gradio's `delete_cache`: (how often to sweep, age of the files removed), in seconds."""
        age = max(60, round(60 * self.cache_minutes))
        return max(30, age // 4), age

    def describe(self) -> str:
        """The limits in a sentence (the page's limits note)."""
        return (f"frames up to {self.max_frame_pixels / 1e6:.1f} megapixels, at most {self.max_frames} frames and "
                f"{self.max_clip_pixels / 1e9:g} gigapixels per clip, {self.max_work_seconds:.0f} s of work per "
                f"request; uploads up to {self.upload_mb_per_minute:.0f} MB a minute per client")


# ----------------------------------------------------------------------------------------------------------------
# One request's work, in a thread that ends with the request
_DONE = object()


async def run_in_worker(make_steps: Callable[[], Iterable], token: WorkToken, stall_s: float = 10.0):
    """Iterate the synchronous generator `make_steps()` in its own thread and yield its items.

    The thread stops at its next step (the engine checks `token` between packets and windows) when:
    the awaiting task is cancelled (Gradio's cancel), this generator is closed, or nobody took the previous item
    for `stall_s` while the next one is ready (Gradio stops iterating once its client has left). Exceptions of the
    work are raised here. The thread runs in a copy of the caller's context (Gradio's progress bar works)."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue = asyncio.Queue()
    cond = threading.Condition()
    state = {"waiting": 0}

    def post(kind, value) -> None:
        try:
            loop.call_soon_threadsafe(items.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (server shutdown)
            token.cancel("the server is shutting down")

    def work() -> None:
        steps = None
        try:
            steps = iter(make_steps())
            for item in steps:
                with cond:
                    state["waiting"] += 1
                    since = time.monotonic()
                    while state["waiting"] > 1 and not token.cancelled:  # the consumer is one item behind
                        if time.monotonic() - since > stall_s:
                            token.cancel("its client stopped listening")
                            break
                        cond.wait(0.25)
                token.check()
                post("item", item)
            post("done", None)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side, which raises it
            post("error", exc)
        finally:
            close = getattr(steps, "close", None)
            if close is not None:
                close()  # the generator's own clean-up runs in this thread, now

    thread = threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True, name="fer-request")
    thread.start()
    ended = False  # the work finished (its last item or its error came through)
    try:
        while True:
            kind, value = await items.get()
            ended = kind != "item"
            with cond:
                state["waiting"] = max(0, state["waiting"] - 1)
                cond.notify_all()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        if not ended:
            token.cancel("the request was cancelled or its client left")
            logger.info("request stopped: %s", token.reason)
        with cond:
            cond.notify_all()


# ----------------------------------------------------------------------------------------------------------------
# Uploads: a rate per client and a cap on the temporary files
def folder_bytes(folders: Iterable[Path | str]) -> int:
    total = 0
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    continue
    return total


class UploadQuota:
    """Bytes uploaded per client over the last minute, and the bytes of the temporary folders (cached 2 s)."""

    def __init__(self, mb_per_minute: float, disk_mb: float, folders: Callable[[], Iterable], window_s: float = 60.0,
                 max_clients: int = 4096, clock=time.monotonic):
        self.per_client = int(mb_per_minute * 2**20)
        self.disk = int(disk_mb * 2**20)
        self.folders, self.window_s, self.max_clients, self.clock = folders, window_s, max_clients, clock
        self._sent: OrderedDict[str, deque] = OrderedDict()
        self._disk_at, self._disk_used = -1e9, 0
        self._lock = threading.Lock()

    def disk_used(self) -> int:
        now = self.clock()
        if now - self._disk_at > 2.0:
            self._disk_used, self._disk_at = folder_bytes(self.folders()), now
        return self._disk_used

    def admit(self, client: str, size: int) -> tuple[int, str] | None:
        """None when an upload of `size` bytes from `client` may go ahead (it is then counted), else (HTTP status,
        the reason in a person's words)."""
        now = self.clock()
        with self._lock:
            sent = self._sent.pop(client, deque())
            while sent and sent[0][0] < now - self.window_s:
                sent.popleft()
            self._sent[client] = sent  # most recent last; the oldest clients are forgotten first
            while len(self._sent) > self.max_clients:
                self._sent.popitem(last=False)
            recent = sum(n for _, n in sent)
            if recent + size > self.per_client:
                wait = max(1, round(sent[0][0] + self.window_s - now)) if sent else round(self.window_s)
                return 429, (f"You have uploaded {recent / 2**20:.0f} MB in the last minute; this server takes up to "
                             f"{self.per_client / 2**20:.0f} MB a minute from one client. Try again in {wait} s.")
            if self.disk_used() + size > self.disk:
                return 507, ("The server's space for uploads is full right now; uploads are deleted after a few "
                             "minutes. Try again shortly.")
            sent.append((now, size))
            self._disk_used += size
        return None


class UploadQuotaMiddleware:
    """ASGI middleware: POSTs to Gradio's upload route pass `UploadQuota.admit` first (by Content-Length; an
    upload without one is refused). Everything else goes straight through."""

    def __init__(self, app, quota: UploadQuota):
        self.app, self.quota = app, quota

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").endswith("/upload"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        client = (scope.get("client") or ("unknown",))[0]
        try:
            size = int(headers.get(b"content-length", b""))
        except ValueError:
            size = None
        refusal = (411, "Uploads must state their size (Content-Length).") if size is None else \
            self.quota.admit(client, size)
        if refusal is None:
            return await self.app(scope, receive, send)
        status, text = refusal
        logger.warning("upload of %s bytes from %s refused (%d)", size, client, status)
        body = json.dumps({"error": text}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def quota_middleware(quota: UploadQuota):
    """The middleware entry for `launch(app_kwargs={"middleware": [...]})`."""
    from starlette.middleware import Middleware

    return Middleware(UploadQuotaMiddleware, quota=quota)


def upload_folders(*extra: Path | str) -> list[Path]:
    """Gradio's upload/cache folder (GRADIO_TEMP_DIR or <tmp>/gradio) and the app's own temporary folders."""
    gradio_dir = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
    return [Path(gradio_dir), *(Path(p) for p in extra)]


# ----------------------------------------------------------------------------------------------------------------
# Nothing of the server's file system in what a client gets
def _path_pattern(prefixes: Iterable[str]) -> re.Pattern:
    alternatives = sorted({re.escape(str(p).rstrip("/")) for p in prefixes if p and str(p) != "/"}, key=len,
                          reverse=True)
    return re.compile(rf"(?:{'|'.join(alternatives)})/(?:[^\s'\"/]+/)*")


def server_prefixes() -> list[str]:
    """Folders whose paths must not reach a client: the temp folder, Gradio's, the project's (app.py's) and the home
    folder."""
    project = Path(__file__).resolve().parents[1]  # the checkout that holds app.py, fer_app/ and checkpoints/
    return [tempfile.gettempdir(), os.path.realpath(tempfile.gettempdir()), str(upload_folders()[0]), str(project),
            str(Path.home())]


def scrub_paths(value, prefixes: Iterable[str] | None = None):
    """`value` (dicts, lists, strings) with every path under a server folder cut to its last part (the file or
    folder name): `/tmp/gradio/3f…/clip.mp4` -> `clip.mp4`."""
    pattern = _path_pattern(server_prefixes() if prefixes is None else prefixes)

    def clean(v):
        if isinstance(v, str):
            return pattern.sub("", v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(clean(x) for x in v)
        return v

    return clean(value)


__all__ = ["ServingLimits", "UploadQuota", "UploadQuotaMiddleware", "quota_middleware", "run_in_worker",
           "scrub_paths", "upload_folders"]
