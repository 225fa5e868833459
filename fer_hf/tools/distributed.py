"""Process-group helpers for training under `torchrun` / `accelerate launch` (CPU gloo or GPU NCCL).

Every rank runs the same command. The data steps must give every rank exactly the same clips, so:

- `distributed_state()` starts the process group for any launcher: `PartialState(cpu=True)` when there is no CUDA
  (without it accelerate's `main_process_first()` does nothing on CPU and every rank builds the cache at once);
- `on_main_then_broadcast(fn)` runs `fn` on rank 0 only and hands its result to every rank (the cache is built
  once, and the other ranks use rank 0's report instead of decoding again);
- `check_same_on_all_ranks(digest, what)` compares a hash (e.g. of the clip list) across ranks and stops every rank
  with one clear message when they differ;
- `check_on_all_ranks(ok, message)` stops every rank when one rank finds a problem (instead of one rank raising
  and the others waiting forever at the next collective call).

With one process all of these are no-ops that return at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Callable

from fer_hf.errors_fer import FERError

logger = logging.getLogger(__name__)


class DistributedMismatchError(FERError):
    """The ranks of one run disagree (different clip lists, a failed check on one rank)."""


def distributed_state():
    """accelerate's `PartialState`, started with `cpu=True` when CUDA is missing (gloo on CPU, NCCL on GPUs)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _dist():
    """`torch.distributed`, imported on first use (so the commands parse their arguments without torch)."""
    import torch.distributed

    return torch.distributed


def _initialised() -> bool:
    return _dist().is_available() and _dist().is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size); (0, 1) without a process group."""
    if not _initialised():
        return 0, 1
    return _dist().get_rank(), _dist().get_world_size()


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if not _initialised() or _dist().get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * _dist().get_world_size()
    _dist().all_gather_object(out, obj)
    return out


def on_main_then_broadcast(fn: Callable[[], Any]) -> Any:
    """Run `fn()` on rank 0 only and return its result on every rank.

    If `fn` raises on rank 0, every rank raises a `DistributedMismatchError` with rank 0's message (rank 0 itself
    re-raises its own exception), so no rank is left waiting.
    """
    rank, world = rank_and_world()
    if world == 1:
        return fn()
    payload: list[Any] = [None]
    error: BaseException | None = None
    if rank == 0:
        try:
            payload[0] = ("ok", fn())
        except BaseException as err:  # noqa: BLE001 - reported to the other ranks, then re-raised
            error = err
            payload[0] = ("error", f"{type(err).__name__}: {err}")
    _dist().broadcast_object_list(payload, src=0)
    status, value = payload[0]
    if status == "error":
        if error is not None:
            raise error
        raise DistributedMismatchError(f"rank 0 stopped: {value}")
    return value


def check_on_all_ranks(ok: bool, message: str, error: type[Exception] = DistributedMismatchError) -> None:
    """Raise `error` on every rank when any rank passes `ok=False`, with the failing ranks' messages (a single
    process raises its own message as it is)."""
    results = gather((bool(ok), message))
    failed = [(r, msg) for r, (good, msg) in enumerate(results) if not good]
    if len(results) == 1 and failed:
        raise error(message)
    if failed:
        raise error("; ".join(f"rank {r}: {msg}" for r, msg in failed))


def digest_of(items) -> str:
    """sha1 (16 hex digits) of a JSON-serialisable value (order matters)."""
    return hashlib.sha1(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_same_on_all_ranks(digest: str, what: str, detail: str = "") -> list[str]:
    """Compare `digest` across ranks; every rank raises the same clear `DistributedMismatchError` if they differ.

    Args:
        digest: this rank's hash of the thing that must be identical (e.g. `digest_of(clip paths and labels)`).
        what: what was hashed, in words ("training clip list").
        detail: a short description of this rank's value shown in the message ("24 clips under data/RAVDESS").

    Returns:
        The digests of all ranks (all equal).
    """
    results = gather((digest, detail))
    digests = [d for d, _ in results]
    if len(set(digests)) > 1:
        lines = ", ".join(f"rank {r}: {d} ({det})" if det else f"rank {r}: {d}" for r, (d, det) in enumerate(results))
        raise DistributedMismatchError(
            f"the ranks see different {what}s ({lines}). Every process must read the same data: put --data-root and "
            "--cache-dir on a filesystem shared by all nodes (or identical copies) and start every rank with the same "
            "arguments"
        )
    return digests


__all__ = [
    "DistributedMismatchError",
    "check_on_all_ranks",
    "check_same_on_all_ranks",
    "digest_of",
    "distributed_state",
    "gather",
    "on_main_then_broadcast",
    "rank_and_world",
]
