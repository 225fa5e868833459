"""Stage 2 of the compact recipe: pretrain the audio encoder on emotional speech (`fer-pretrain-voice`).

    fer-pretrain-voice --data-root /data/ravdess --output-dir runs/voice --folds all --release --threads 1 --workers 2

What trains: the model's audio branch (FastConformer encoder and segment attention pooling) with a temporary linear
head over the 8 RAVDESS classes (the mean of the valid segments), class-weighted cross-entropy (neutral has half the
clips of the other classes). Data: RAVDESS speech, audio-only files (`03-01-…wav`), decoded by the processor's own
decoder (16 kHz mono). Evaluation is speaker-independent: for test fold k of the 6 folds of 4 actors, fold k+1
validates (picks the epoch by UAR) and the other 16 actors train. `--release` then trains on all 24 actors for the
median of the folds' best epochs: that encoder goes on to the fusion stage.

Augmentation (measured on fold 0 in docs/training.md): each training example is a 3 s window at a random offset
around the centre of the clip, speed change 0.9-1.1 (tempo and pitch), white noise at 15-40 dB SNR, then SpecAugment
on the log-mel features (two frequency masks of up to 10 bins, two time masks of up to 25 frames). Evaluation uses the
centred window without augmentation.

Output folder: `fold<k>/` and `release/`, each with `train.log`, `runs/` (TensorBoard), `checkpoint.pt` (`--resume`
continues an interrupted fold; finished folds are skipped; `--workers N` trains N folds at once, each in its own
process), `results.json`; the top folder's `results.json` has the per-fold table, mean ± std of WAR / UAR /
macro-F1 and the summed confusion matrix (`confusion_folds.png`);
`release/final/` is a `save_pretrained` FER folder whose audio branch is trained. `--init-from <earlier run>` is a
warm restart: each split continues from the same split of the earlier run, with a fresh schedule; the earlier
run's epochs and seconds are kept in `results.json` (`init_from`) and counted in the totals.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("fer_hf.tools")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fer-pretrain-voice", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", required=True, help="RAVDESS folder (Actor_XX/03-01-…wav)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--preset", default="compact")
    p.add_argument("--folds", default="all", help="'all', 'none' (release only) or comma-separated fold indices")
    p.add_argument("--folds-file", help="actor folds (JSON or one fold per line; default 6 folds of 4 actors)")
    p.add_argument("--release", action="store_true", help="after the folds, train on all actors (for fusion)")
    p.add_argument("--release-epochs", type=int, default=0, help="epochs of the release run (0: the folds' median)")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--no-augment", action="store_true", help="train without augmentation (for the ablation)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (of each worker)")
    p.add_argument("--workers", type=int, default=1,
                   help="folds trained at once, each in its own process with --threads threads (2 workers of 1 "
                   "thread on 2 cores: the folds in about half the wall time)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-actors", type=int, default=0, help="clips of the first N actors only (smoke tests)")
    p.add_argument("--init-from", help="an earlier fer-pretrain-voice --output-dir: each split (fold<k>, release) "
                   "starts from that run's weights of the same split, with a fresh schedule of --epochs (a warm "
                   "restart; the test actors stay unseen)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--report-to", choices=["tensorboard", "none"], default="tensorboard")
    p.add_argument("--debug", action="store_true")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------
def load_voices(root, sampling_rate: int, limit_actors: int = 0) -> tuple[list, list[np.ndarray], bool]:
    """RAVDESS speech wavs (modality 03) -> (clips, 16 kHz mono float32 waveforms, synthetic set?), decoded as
    serving decodes.

    The decoded set is kept in `~/.cache/fer_hf/` (keyed by the files' paths, sizes and times), so the stages and
    folds after the first read it in a second instead of decoding 1,440 files again.
    """
    import hashlib
    import os

    from fer_hf.media_fer import decode_window, probe_media

    from .ravdess import build_index

    index = build_index(root, layout="audio-only")
    clips = [c for c in index.clips if not limit_actors or c.actor <= limit_actors]
    key = hashlib.sha1(repr([(c.path, os.path.getsize(c.path), int(os.path.getmtime(c.path))) for c in clips]
                            + [sampling_rate]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("FER_CACHE_DIR", Path.home() / ".cache" / "fer_hf")) / f"voices-{key}.npz"
    if cache.exists():
        with np.load(cache) as data:
            flat, bounds = data["audio"], data["bounds"]
        waves = [flat[a:b].astype(np.float32) / 32767.0 for a, b in bounds]
    else:
        waves = []
        for clip in clips:
            info = probe_media(clip.path)
            media = decode_window(clip.path, 0.0, info.duration_s, 1, info.duration_s, sampling_rate)
            waves.append(np.asarray(media.audio, np.float32))
        cache.parent.mkdir(parents=True, exist_ok=True)
        ends = np.cumsum([len(w) for w in waves])
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, audio=np.concatenate(waves).clip(-1, 1).__mul__(32767).round().astype(np.int16),
                 bounds=np.stack([ends - [len(w) for w in waves], ends], 1))
        os.replace(tmp, cache)
    logger.info("%s speech: %d clips of %d actors", index.dataset_name, len(clips), len({c.actor for c in clips}))
    return clips, waves, index.synthetic


def window_of(wave: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """`n` samples centred on the clip's centre, shifted by `offset` samples (zeros outside the clip)."""
    start = (len(wave) - n) // 2 + offset
    out = np.zeros(n, np.float32)
    lo, hi = max(0, start), min(len(wave), start + n)
    if hi > lo:
        out[lo - start:hi - start] = wave[lo:hi]
    return out


def augmented_window(wave: np.ndarray, n: int, rng: np.random.Generator, augment: bool) -> np.ndarray:
    if not augment:
        return window_of(wave, n)
    speed = rng.uniform(0.9, 1.1)
    if abs(speed - 1.0) > 1e-3:
        positions = np.arange(0, len(wave) - 1, speed)
        wave = np.interp(positions, np.arange(len(wave)), wave).astype(np.float32)
    out = window_of(wave, n, int(rng.integers(-int(0.4 * 16000), int(0.4 * 16000) + 1)))
    if rng.random() < 0.5:
        power = float(np.mean(out ** 2)) + 1e-10
        snr_db = rng.uniform(15, 40)
        out = out + rng.standard_normal(n).astype(np.float32) * math.sqrt(power / 10 ** (snr_db / 10))
    return out


def spec_augment(features, rng: np.random.Generator):
    """Two frequency masks (<= 10 bins) and two time masks (<= 25 frames) per row, in place. `(B, T, F)`."""
    b, t, f = features.shape
    for i in range(b):
        for _ in range(2):
            w = int(rng.integers(0, 11))
            s = int(rng.integers(0, f - w + 1))
            features[i, :, s:s + w] = 0.0
            w = int(rng.integers(0, 26))
            s = int(rng.integers(0, max(1, t - w + 1)))
            features[i, s:s + w, :] = 0.0
    return features


class VoiceStage:
    """The audio branch of a FER model plus a temporary linear head: log-mel `(B, n_mel, 80)` -> `(B, 8)` logits."""

    def __init__(self, model, num_classes: int):
        import torch

        self.model = model
        self.head = torch.nn.Linear(model.config.audio_config.hidden_size, num_classes)
        self.modules = torch.nn.ModuleDict({"audio_encoder": model.audio_encoder,
                                            "audio_segment_pool": model.audio_segment_pool, "head": self.head})

    def __call__(self, features, mask):
        import torch

        rows = torch.arange(features.shape[0])
        segments, _, has_audio, _, _ = self.model.encode_audio(features, mask, rows)
        weights = has_audio.float().unsqueeze(-1)
        pooled = (segments * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.head(pooled)


def init_split_from(stage: VoiceStage, folder: Path) -> dict:
    """Load an earlier run's split (`folder` = `<earlier>/fold<k>` or `<earlier>/release`) into `stage`; return its
    summary (epochs, seconds, test scores), kept in this split's `results.json` so the totals stay honest."""
    import torch

    from fer_hf.errors_fer import FERInputError
    from fer_hf.modeling_fer import FERForEmotionClassification

    head = folder / "final" / "voice_head.pt"
    if not head.is_file():
        raise FERInputError(f"{folder} is not a finished voice split (no final/voice_head.pt); point --init-from at "
                            "the --output-dir of a completed fer-pretrain-voice run with the same folds")
    earlier = FERForEmotionClassification.from_pretrained(folder / "final")
    for name in ("audio_encoder", "audio_segment_pool"):
        getattr(stage.model, name).load_state_dict(getattr(earlier, name).state_dict())
    stage.head.load_state_dict(torch.load(head, map_location="cpu", weights_only=True))
    summary = {"folder": str(folder)}
    if (folder / "results.json").is_file():
        prior = json.loads((folder / "results.json").read_text())
        summary.update({k: prior.get(k) for k in ("epochs", "best_epoch", "train_seconds", "init_from")})
        summary["test"] = {k: (prior.get("test") or {}).get(k) for k in ("accuracy", "uar")}
    logger.info("voice split starts from %s", folder / "final")
    return summary


def _features(processor, waves):
    import torch

    feats, mask = processor.audio_processing.features(list(waves))
    return torch.from_numpy(feats), torch.from_numpy(mask)


def predict(stage: VoiceStage, processor, waves: list[np.ndarray], batch_size: int = 64) -> tuple[np.ndarray, ...]:
    """(predictions `(n,)`, logits `(n, C)`) of the centred windows."""
    import torch

    stage.modules.eval()
    n = processor.audio_processing.num_samples
    logits = []
    with torch.inference_mode():
        for start in range(0, len(waves), batch_size):
            feats, mask = _features(processor, [window_of(w, n) for w in waves[start:start + batch_size]])
            logits.append(stage(feats, mask))
    out = torch.cat(logits) if logits else torch.zeros(0, 8)
    return out.argmax(-1).numpy(), out.numpy()


def train_split(args, name: str, out: Path, split, clips, waves) -> dict:
    """Train on `split.train`, pick the epoch on `split.val` (if any), test on `split.test` (if any)."""
    import torch
    import torch.nn.functional as F

    from fer_hf.configuration_fer import RAVDESS_LABELS, FERConfig
    from fer_hf.modeling_fer import FERForEmotionClassification
    from fer_hf.processing_fer import FERProcessor

    from .metrics import classification_metrics
    from .stages import StageRun, adamw_cosine, collapse_verdict, seed_everything, select_best

    folder = out / name
    if _finished(folder, args):
        logger.info("%s is finished (results.json): skipped", name)
        return json.loads((folder / "results.json").read_text())
    run_dir = StageRun(folder, "voice", args.threads, args.resume, args.overwrite, args.report_to)
    try:
        seed_everything(args.seed)
        config = FERConfig.from_preset(args.preset)
        processor = FERProcessor.from_model_config(config)
        pick = lambda actors: [i for i, c in enumerate(clips) if c.actor in actors]  # noqa: E731
        train_idx, val_idx, test_idx = pick(split.train), pick(split.val), pick(split.test)
        labels = np.array([c.label for c in clips])
        counts = np.bincount(labels[train_idx], minlength=len(RAVDESS_LABELS)).astype(np.float64)
        class_weights = torch.tensor(len(train_idx) / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)
        model = FERForEmotionClassification(config)
        stage = VoiceStage(model, len(RAVDESS_LABELS))
        earlier = init_split_from(stage, Path(args.init_from) / name) if getattr(args, "init_from", None) else None
        params = [p for p in stage.modules.parameters() if p.requires_grad]
        epochs = args.epochs if split.val or not args.release_epochs else args.release_epochs
        steps_per_epoch = max(1, len(train_idx) // args.batch_size)
        optimizer, scheduler = adamw_cosine(params, args.lr, args.weight_decay, steps_per_epoch * epochs,
                                            int(args.warmup_epochs * steps_per_epoch))
        history, best_state, start_epoch, train_seconds = [], None, 0, 0.0
        state = run_dir.load_checkpoint()
        if state is not None:
            stage.modules.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history, best_state = state["history"], state["best"]
            start_epoch, train_seconds = state["epoch"], state["train_seconds"]
        rng = np.random.default_rng(args.seed + 1000 * start_epoch)
        n = processor.audio_processing.num_samples
        val_waves = [waves[i] for i in val_idx]
        for epoch in range(start_epoch, epochs):
            stage.modules.train()
            t_epoch = time.time()
            order = rng.permutation(train_idx)
            running = 0.0
            for step in range(steps_per_epoch):
                batch = order[step * args.batch_size:(step + 1) * args.batch_size]
                feats, mask = _features(processor, [augmented_window(waves[i], n, rng, not args.no_augment)
                                                    for i in batch])
                if not args.no_augment:
                    spec_augment(feats.numpy(), rng)
                loss = F.cross_entropy(stage(feats, mask), torch.from_numpy(labels[batch]), weight=class_weights)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the voice loss became {loss.item()} at epoch {epoch + 1}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                running += loss.item()
            train_seconds += time.time() - t_epoch
            entry = {"epoch": epoch + 1, "train_loss": running / steps_per_epoch,
                     "seconds": round(time.time() - t_epoch, 1)}
            if val_idx:
                preds, logits = predict(stage, processor, val_waves)
                metrics = classification_metrics(labels[val_idx], preds, RAVDESS_LABELS)
                entry.update(val_accuracy=metrics["accuracy"], val_uar=metrics["uar"],
                             val_loss=float(F.cross_entropy(torch.from_numpy(logits),
                                                            torch.from_numpy(labels[val_idx]))),
                             val_verdict=collapse_verdict(labels[val_idx], preds, len(RAVDESS_LABELS)))
            history.append(entry)
            run_dir.log_scalars(epoch + 1, **{k: v for k, v in entry.items() if isinstance(v, float)})
            logger.info("voice %s epoch %d/%d: train loss %.3f%s (%.0f s)", name, epoch + 1, epochs,
                        entry["train_loss"], "" if not val_idx else
                        f", validation accuracy {entry['val_accuracy']:.3f} UAR {entry['val_uar']:.3f}"
                        + (f" WARNING {entry['val_verdict']}" if entry["val_verdict"] else ""), entry["seconds"])
            if not val_idx or select_best(history) == len(history) - 1:
                best_state = {k: v.detach().clone() for k, v in stage.modules.state_dict().items()}
            run_dir.save_checkpoint({"model": stage.modules.state_dict(), "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict(), "history": history, "best": best_state,
                                     "epoch": epoch + 1, "train_seconds": train_seconds})
        best = select_best(history) if val_idx else len(history) - 1
        if best is None:
            logger.warning("voice %s: every epoch scored the same on the validation actors: nothing was learned to "
                           "choose by; keeping the last epoch", name)
            best = len(history) - 1
            best_state = stage.modules.state_dict()
        stage.modules.load_state_dict(best_state)
        results = {"stage": "voice", "split": split.to_dict(), "epochs": epochs, "best_epoch": history[best]["epoch"],
                   "history": history, "train_seconds": round(train_seconds, 1), "threads": run_dir.threads,
                   "augment": not args.no_augment, "train_clips": len(train_idx)}
        if earlier is not None:
            results["init_from"] = earlier
        if test_idx:
            preds, _ = predict(stage, processor, [waves[i] for i in test_idx])
            results["test"] = classification_metrics(labels[test_idx], preds, RAVDESS_LABELS)
            results["verdict"] = collapse_verdict(labels[test_idx], preds, len(RAVDESS_LABELS))
            if results["verdict"]:
                logger.warning("THE VOICE MODEL OF %s IS DEGENERATE on its test actors: %s", name, results["verdict"])
            logger.info("voice %s: test actors %s accuracy %.3f, UAR %.3f (best epoch %d)", name, split.test,
                        results["test"]["accuracy"], results["test"]["uar"], results["best_epoch"])
        model.save_pretrained(folder / "final")
        torch.save(stage.head.state_dict(), folder / "final" / "voice_head.pt")
        run_dir.write_results(results)
        return results
    finally:
        run_dir.close()


def summarise(fold_results: list[dict]) -> dict:
    from fer_hf.configuration_fer import RAVDESS_LABELS

    from .metrics import mean_std

    cm = np.sum([np.array(r["test"]["confusion_matrix"]) for r in fold_results], axis=0)
    table = [{"fold": r["split"]["fold"], "test_actors": r["split"]["test_actors"], "best_epoch": r["best_epoch"],
              "accuracy": r["test"]["accuracy"], "uar": r["test"]["uar"], "macro_f1": r["test"]["macro_f1"],
              "verdict": r.get("verdict")} for r in fold_results]
    return {"folds": table, "confusion_matrix": cm.tolist(), "labels": list(RAVDESS_LABELS),
            **{k: mean_std([r["test"][k] for r in fold_results]) for k in ("accuracy", "uar", "macro_f1")},
            "train_seconds": round(sum(r["train_seconds"] + _earlier_seconds(r) for r in fold_results), 1)}


def _finished(folder: Path, args) -> bool:
    """A split whose `results.json` exists is read back, not trained again (unless `--overwrite`)."""
    return (folder / "results.json").exists() and not args.overwrite


_WORKER: dict = {}


def _init_fold_worker(clips, waves, debug: bool) -> None:
    """A fold worker's start: the decoded clips (sent once per process), and log lines on its standard error."""
    from .cli import setup_logging

    setup_logging(debug)
    _WORKER.update(clips=clips, waves=waves)


def _train_fold_in_worker(args, k: int, protocol, out: Path) -> dict:
    from .ravdess import fold_split

    return train_split(args, f"fold{k}", out, fold_split(k, protocol), _WORKER["clips"], _WORKER["waves"])


def train_folds(args, out: Path, protocol, folds: list[int], clips, waves) -> list[dict]:
    """Train (or read the finished results of) each fold in `folds`; their results in the order of `folds`.

    With `args.workers` > 1, that many folds train at once, each in a spawned process with `args.threads` torch
    threads (each fold has its own folder, log and checkpoint, so `--resume` works the same way); finished folds are
    read here, only the others go to workers; the first failure is raised once the running folds have stopped.
    """
    from .ravdess import fold_split

    here = lambda k: train_split(args, f"fold{k}", out, fold_split(k, protocol), clips, waves)  # noqa: E731
    pending = [k for k in folds if not _finished(out / f"fold{k}", args)]
    workers = min(args.workers, len(pending))
    if workers <= 1:
        return [here(k) for k in folds]
    import concurrent.futures
    import multiprocessing

    logger.info("voice: %d folds in %d worker processes of %d thread(s)", len(pending), workers, args.threads)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_fold_worker,
                                                initargs=(clips, waves, args.debug)) as pool:
        futures = {k: pool.submit(_train_fold_in_worker, args, k, protocol, out) for k in pending}
        return [futures[k].result() if k in futures else here(k) for k in folds]


def _earlier_seconds(result: dict) -> float:
    """Training seconds of the runs a split continued (`--init-from` chains)."""
    total, earlier = 0.0, result.get("init_from")
    while earlier:
        total, earlier = total + (earlier.get("train_seconds") or 0.0), earlier.get("init_from")
    return total


def run(args: argparse.Namespace) -> dict:
    from fer_hf.configuration_fer import RAVDESS_LABELS, FERConfig
    from fer_hf.errors_fer import FERInputError

    from .data import atomic_write
    from .metrics import plot_confusion_matrix
    from .ravdess import DEFAULT_FOLDS, load_folds, release_split
    from .stages import set_threads

    if args.workers < 1:
        raise FERInputError(f"--workers must be at least 1, got {args.workers}")
    set_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = FERConfig.from_preset(args.preset)
    t0 = time.time()
    clips, waves, synthetic = load_voices(args.data_root, config.sampling_rate, args.limit_actors)
    load_seconds = time.time() - t0
    protocol = load_folds(args.folds_file) if args.folds_file else DEFAULT_FOLDS
    if args.folds == "none":
        folds = []
    elif args.folds == "all":
        folds = list(range(len(protocol)))
    else:
        folds = [int(k) for k in args.folds.split(",")]
    t_folds = time.time()
    fold_results = train_folds(args, out, protocol, folds, clips, waves)
    folds_wall = time.time() - t_folds
    summary = {"stage": "voice", "preset": args.preset, "synthetic": synthetic,
               "data": ("synthetic RAVDESS-named" if synthetic else "RAVDESS") + " speech, audio-only (03) files",
               "protocol": f"{len(protocol)} folds of actors {[list(f) for f in protocol]}; "
               "the next fold validates", "load_seconds": round(load_seconds, 1),
               "augment": not args.no_augment, "epochs": args.epochs}
    if fold_results:
        summary["cross_validation"] = summarise(fold_results)
        cv = summary["cross_validation"]
        # train_seconds sums the folds' own times; with several workers the wall clock of this call is shorter
        cv.update(workers=min(args.workers, len(folds)), threads=args.threads, wall_seconds=round(folds_wall, 1))
        plot_confusion_matrix(np.array(cv["confusion_matrix"]), RAVDESS_LABELS, out / "confusion_folds.png",
                              f"voice stage, RAVDESS speech, {len(folds)} folds (test actors)")
        logger.info("voice cross-validation over %d folds: accuracy %.3f ± %.3f, UAR %.3f ± %.3f", len(folds),
                    cv["accuracy"]["mean"], cv["accuracy"]["std"], cv["uar"]["mean"], cv["uar"]["std"])
    if args.release:
        if not args.release_epochs:
            best = [r["best_epoch"] for r in fold_results]
            args.release_epochs = int(np.median(best)) if best else args.epochs
        release = train_split(args, "release", out, release_split(protocol), clips, waves)
        summary["release"] = {"epochs": release["epochs"],
                              "train_seconds": release["train_seconds"] + _earlier_seconds(release),
                              "final": str(out / "release" / "final")}
    atomic_write(out / "results.json", json.dumps(summary, indent=1, allow_nan=False))
    return summary


def main(argv=None) -> None:
    args = parse_args(argv)
    from .cli import refusals_as_one_line, setup_logging

    setup_logging(args.debug)
    with refusals_as_one_line(args.debug):
        run(args)


if __name__ == "__main__":
    sys.exit(main())
