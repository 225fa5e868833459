"""What the staged training commands share (`fer-pretrain-face`, `fer-pretrain-voice`, `fer-train-fusion`).

    run = StageRun(output_dir, stage="face", threads=1, resume=True)   # log file, TensorBoard, lock, threads
    state = run.load_checkpoint()                                       # None on a fresh start
    run.save_checkpoint({...})                                          # atomic, every epoch
    verdict = collapse_verdict(y_true, y_pred, num_classes)             # None, or why the model is degenerate
    run.write_results({...})                                            # results.json

Every stage writes into its output folder: `train.log` (the whole log of every session, appended), `runs/`
(TensorBoard), `checkpoint.pt` (resume point: weights, optimizer, scheduler, epoch, history, RNG), `results.json`
and a `final/` model folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from fer_hf.errors_fer import CorruptCheckpointError, FERError

from .data import atomic_write
from .metrics import classification_metrics
from .run_dir import OutputDirLock

logger = logging.getLogger("fer_hf.tools")

# A model whose most frequent prediction covers this share of the evaluated samples has collapsed onto one class.
COLLAPSE_SHARE = 0.8
# ... and one whose UAR is within this of chance (1 / classes present) has learned nothing usable.
CHANCE_MARGIN = 0.05


class DegenerateModelError(FERError):
    """A model that predicts one class, or does no better than chance, where a trained model was asked for."""


def set_threads(threads: int | None) -> int:
    """Use `threads` CPU threads for torch (intra-op) and one inter-op thread; returns the count in force.

    Under contention (another job on the same cores) torch's default of one thread per core ran a step of the
    compact model 12x slower than one thread: pass the cores you can really have.
    """
    if threads:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(int(threads))
        os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def collapse_verdict(y_true, y_pred, num_classes: int) -> str | None:
    """None for a model that discriminates; otherwise why it is degenerate, in words (one class predicted for most
    samples, or a UAR within `CHANCE_MARGIN` of chance)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_pred.size == 0:
        return "no sample was evaluated"
    counts = np.bincount(y_pred, minlength=num_classes)
    top = int(counts.argmax())
    share = counts[top] / y_pred.size
    metrics = classification_metrics(y_true, y_pred, [str(i) for i in range(num_classes)])
    chance = 1.0 / max(1, len(set(y_true.tolist())))
    if share >= COLLAPSE_SHARE:
        return f"collapsed: class {top} is predicted for {share:.0%} of the samples"
    if metrics["uar"] <= chance + CHANCE_MARGIN:
        return f"chance level: UAR {metrics['uar']:.3f} against chance {chance:.3f}"
    return None


def select_best(history: list[dict], key: str = "val_uar") -> int | None:
    """Index of the epoch to keep: the highest `key`, ties broken by the lower validation loss and then the later
    epoch. None when every epoch scored the same (nothing was learned to choose by)."""
    scored = [(i, h) for i, h in enumerate(history) if h.get(key) is not None]
    if not scored:
        return None
    if len(scored) > 1 and len({round(h[key], 6) for _, h in scored}) == 1:
        return None
    return max(scored, key=lambda ih: (ih[1][key], -ih[1].get("val_loss", 0.0), ih[0]))[0]


def adamw_cosine(params, lr: float, weight_decay: float, total_steps: int, warmup_steps: int):
    """(AdamW, LambdaLR) of a stage: no weight decay on biases and norms, linear warm-up over `warmup_steps`, then
    cosine decay to 0 at `total_steps`."""
    decay = [p for p in params if p.dim() > 1]
    rest = [p for p in params if p.dim() <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=lr)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class StageRun:
    """The output folder of one stage run: lock, log file, TensorBoard writer, checkpoint, results.

    Args:
        output_dir: the stage's folder (created).
        stage: `"face"`, `"voice"` or `"fusion"` (names the log lines and results).
        threads: torch CPU threads (`set_threads`).
        resume: continue from `checkpoint.pt` when it exists (otherwise an existing checkpoint is refused unless
            `overwrite`).
        overwrite: start again, deleting an earlier checkpoint of this folder.
    """

    def __init__(self, output_dir: str | os.PathLike, stage: str, threads: int | None = 1, resume: bool = False,
                 overwrite: bool = False, report_to: str = "tensorboard"):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stage = stage
        self.lock = OutputDirLock(self.dir)
        self.lock.acquire()
        self.checkpoint_path = self.dir / "checkpoint.pt"
        if self.checkpoint_path.exists() and not resume:
            if not overwrite:
                self.lock.release()
                raise FERError(f"{self.dir} already holds a {stage} run: add --resume to continue it or "
                               "--overwrite to start again")
            self.checkpoint_path.unlink()
        self.resume = resume
        self.threads = set_threads(threads)
        self._handler = logging.FileHandler(self.dir / "train.log")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("fer_hf").addHandler(self._handler)
        self.writer = None
        if report_to == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.dir / "runs"))
            except ImportError:
                logger.warning("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        self.started = time.time()
        logger.info("%s stage in %s, %d torch thread(s)%s", stage, self.dir, self.threads,
                    ", resuming" if resume and self.checkpoint_path.exists() else "")

    # -- checkpoints ------------------------------------------------------------------------------------------
    def load_checkpoint(self) -> dict | None:
        if not (self.resume and self.checkpoint_path.exists()):
            return None
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - a truncated or foreign file: say what to do
            raise CorruptCheckpointError(f"{self.checkpoint_path} cannot be read ({type(err).__name__}); delete it "
                                         "or use --overwrite to start again") from None
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise CorruptCheckpointError(f"{self.checkpoint_path} is not a checkpoint of this command; delete it or "
                                         "use --overwrite to start again")
        for part in ("model", "best"):  # the weights trained so far, and the best epoch's kept for the end
            for name, tensor in (state.get(part) or {}).items():
                if torch.is_floating_point(tensor) and not torch.isfinite(tensor).all():
                    raise CorruptCheckpointError(
                        f"{self.checkpoint_path} holds non-finite weights ({part} {name}): the run diverged and "
                        "cannot be resumed; use --overwrite to start again (a lower learning rate usually helps)")
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        logger.info("resuming from epoch %d", state["epoch"])
        return state

    def save_checkpoint(self, state: dict) -> None:
        state = dict(state, rng={"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                 "python": random.getstate()})
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)

    # -- logs and results -------------------------------------------------------------------------------------
    def log_scalars(self, step: int, **values) -> None:
        if self.writer is not None:
            for name, value in values.items():
                if value is not None and math.isfinite(float(value)):
                    self.writer.add_scalar(f"{self.stage}/{name}", float(value), step)
            self.writer.flush()

    def write_results(self, results: dict) -> Path:
        path = self.dir / "results.json"
        atomic_write(path, json.dumps(results, indent=1, allow_nan=False))
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        logging.getLogger("fer_hf").removeHandler(self._handler)
        self._handler.close()
        self.lock.release()


__all__ = ["CHANCE_MARGIN", "COLLAPSE_SHARE", "DegenerateModelError", "StageRun", "adamw_cosine", "collapse_verdict",
           "select_best", "set_threads", "seed_everything"]
