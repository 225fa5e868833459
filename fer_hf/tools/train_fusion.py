"""Stage 3 of the compact recipe: train the fusion on face-voice pseudo-pairs (`fer-train-fusion`).

    fer-train-fusion --face-from runs/face/final --voice-from runs/voice/release/final \\
        --face-crops runs/face/crops --data-root /data/ravdess --output-dir runs/fusion --threads 2

No labelled audio-visual data is reachable for training here, so the training pairs are built, and the model card
says so: each RAVDESS speech clip (the voice) is paired with a FER2013 training face of the same label (calm, which
FER2013 lacks, gets a neutral face), shown as a still over the window's frames (two views of the face, the clean
crop and an augmented one, picked at random per frame; a few frames are dropped at random as a tracker drops them).
As many face-only samples (FER2013 faces, no audio) are added per epoch, and the model's own modality dropout
(`config.modality_dropout`) hides one modality of a pair at random, so each modality alone keeps working.

What trains: the visual temporal encoder, the audio segment pooling, the LFM2 fusion layers, the temporal pooling
and the classifier. The pretrained SigLIP tower (with its ROI compression and frame pooling) and the FastConformer
stay frozen: the frame vectors are computed once (`embed_frames`) and fed as `frame_embeddings`; the audio goes
through the real forward as log-mel features.

`--fold K` trains on fold K's training and validation actors with fold K's voice encoder (`--voice-from
runs/voice/fold<K>/final`) and evaluates on its test actors: the speaker-independent scores of the fused model.
Without `--fold` (release) every actor trains and the face-only score on FER2013 PrivateTest is the test.

Output: `train.log`, `runs/` (TensorBoard), `checkpoint.pt` (`--resume`), `results.json` (face-only on PrivateTest,
voice-only and pseudo-paired on the fold's test actors) and `final/` (the whole model, `save_pretrained`, with a
training provenance record saying what each part learned from).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from .compact_card import face_runs, face_totals, read_voice_results, teacher_runs

logger = logging.getLogger("fer_hf.tools")

FACE_PARTS = ("vision_encoder.", "roi_compressor.", "frame_pool.")
VOICE_PARTS = ("audio_encoder.", "audio_segment_pool.")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fer-train-fusion", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--face-from", required=True, help="the face stage's final/ folder")
    p.add_argument("--voice-from", required=True, help="the voice stage's release/final (or fold<K>/final) folder, "
                   "or an exported model whose audio encoder is reused")
    p.add_argument("--face-crops", required=True, help="the face stage's prepared crops folder")
    p.add_argument("--data-root", required=True, help="RAVDESS folder (Actor_XX/03-01-…wav)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--face-results", help="the face stage's results.json (its scores go into the provenance record)")
    p.add_argument("--voice-results", help="the voice stage's top results.json (cross-validated scores), or the "
                   "eval_results.json of the exported model given as --voice-from")
    p.add_argument("--folds-file", help="actor folds (JSON or one fold per line; default 6 folds of 4 actors)")
    p.add_argument("--fold", type=int, default=None, help="train on fold K's training actors, test on its actors")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-actors", type=int, default=0, help="clips of the first N actors only (smoke tests)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--report-to", choices=["tensorboard", "none"], default="tensorboard")
    p.add_argument("--debug", action="store_true")
    return p.parse_args(argv)


def load_parts(model, folder, prefixes) -> int:
    """Copy the weights under `prefixes` from the FER folder `folder` into `model`; returns the tensor count."""
    from fer_hf.errors_fer import FERInputError
    from fer_hf.modeling_fer import load_checked_safetensors

    path = Path(folder) / "model.safetensors"
    if not path.exists():
        raise FERInputError(f"{path} does not exist: give the final/ folder of the earlier stage")
    weights = {k: v for k, v in load_checked_safetensors(path).items() if k.startswith(prefixes)}
    if not weights:
        raise FERInputError(f"{path} holds none of {list(prefixes)}")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected:
        raise FERInputError(f"{path} does not fit this preset: unexpected {unexpected[:3]}")
    return len(weights)


def face_vectors(model, crops: np.ndarray, roi: np.ndarray, processor, views: int, seed: int) -> np.ndarray:
    """Frame vectors `(n, views, Dv)` of grey crops `(n, S, S)`: view 0 clean, the others augmented."""
    import torch

    from .pretrain_face import augment, to_model_pixels

    grid = model.config.vision_config.image_size // model.config.vision_config.patch_size
    generator = torch.Generator().manual_seed(seed)
    out = np.zeros((len(crops), views, model.config.vision_config.hidden_size), np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(crops), 256):
            sl = slice(start, start + 256)
            grey = torch.from_numpy(crops[sl]).float().div_(255).unsqueeze(1)
            r = torch.from_numpy(roi[sl].astype(np.float32))
            for v in range(views):
                g, rr = (grey, r) if v == 0 else augment(grey.clone(), r, grid, generator)
                out[sl, v] = model.embed_frames(to_model_pixels(g, processor), rr).frame_embeddings.numpy()
    return out


def cached_face_vectors(model, train_faces: dict, test_faces: dict, processor, args) -> tuple[np.ndarray, ...]:
    """`face_vectors` of the training (2 views) and PrivateTest (1 view) crops, kept next to the crops and keyed by
    the face model's weights, so the fusion runs of every fold compute them once."""
    import hashlib
    import os

    weights = Path(args.face_from) / "model.safetensors"
    key = hashlib.sha1(f"{weights.resolve()}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}:"
                       f"{len(train_faces['labels'])}:{len(test_faces['labels'])}:{args.seed}:"
                       f"{model.config.vision_mirror_average}".encode()).hexdigest()
    path = Path(args.face_crops) / f"frame-vectors-{key[:16]}.npz"
    if path.exists():
        with np.load(path) as data:
            return data["train"], data["test"]
    train = face_vectors(model, train_faces["crops"], train_faces["roi"], processor, 2, args.seed)
    test = face_vectors(model, test_faces["crops"], test_faces["roi"], processor, 1, args.seed)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, train=train, test=test)
    os.replace(tmp, path)
    return train, test


def frames_of(vectors: np.ndarray, num_frames: int, rng: np.random.Generator, drop: bool) -> tuple:
    """`(T, Dv)` frames of one still face (a random view per frame) and the `(T,)` frame mask."""
    views = rng.integers(0, vectors.shape[0], num_frames) if drop else np.zeros(num_frames, int)
    frames = vectors[views]
    mask = np.ones(num_frames, bool)
    if drop and rng.random() < 0.3:
        mask[rng.choice(num_frames, int(rng.integers(1, num_frames // 2 + 1)), replace=False)] = False
    return frames, mask


def batch_inputs(processor, num_frames, dv, waves, face_vecs, labels, rng, train: bool) -> dict:
    """Model inputs for a batch of (wave or None, face vectors `(V, Dv)` or None, label)."""
    import torch

    from .pretrain_voice import augmented_window, spec_augment, window_of

    n = processor.audio_processing.num_samples
    wins = [None if w is None else (augmented_window(w, n, rng, True) if train else window_of(w, n)) for w in waves]
    feats, amask = processor.audio_processing.features(wins)
    if train:
        spec_augment(feats, rng)
    frames = np.zeros((len(waves), num_frames, dv), np.float32)
    fmask = np.zeros((len(waves), num_frames), bool)
    for i, vecs in enumerate(face_vecs):
        if vecs is not None:
            frames[i], fmask[i] = frames_of(vecs, num_frames, rng, train)
    return {"input_features": torch.from_numpy(feats), "audio_attention_mask": torch.from_numpy(amask),
            "frame_embeddings": torch.from_numpy(frames), "video_frame_mask": torch.from_numpy(fmask),
            "audio_mask": torch.tensor([w is not None for w in waves]),
            "video_mask": torch.tensor([v is not None for v in face_vecs]),
            "labels": torch.tensor(labels, dtype=torch.long)}


def predict(model, processor, items, rng, batch_size: int = 64) -> np.ndarray:
    """Logits `(n, C)` of evaluation items (wave or None, face vectors or None)."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            inputs = batch_inputs(processor, model.config.num_frames, model.config.vision_config.hidden_size,
                                  [w for w, _ in chunk], [f for _, f in chunk],
                                  [0] * len(chunk), rng, train=False)
            inputs.pop("labels")
            out.append(model(**inputs).logits.numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels), np.float32)


def face_scores(logits: np.ndarray, fer_labels: np.ndarray) -> dict:
    """FER2013 7-class scores of 8-class logits: the argmax over the 7 classes FER2013 has (calm left out), and the
    plain 8-way argmax (a calm answer counts as wrong)."""
    from .face_data import FER_LABELS, FER_TO_RAVDESS
    from .metrics import classification_metrics

    to_ravdess = np.array([FER_TO_RAVDESS[name] for name in FER_LABELS])
    seven = to_ravdess[logits[:, to_ravdess].argmax(-1)]
    truth = to_ravdess[fer_labels]
    from fer_hf.configuration_fer import RAVDESS_LABELS

    names = list(RAVDESS_LABELS)
    return {"seven_way": classification_metrics(truth, seven, names),
            "eight_way": classification_metrics(truth, logits.argmax(-1), names)}


def recipe_provenance(args, split, results: dict, synthetic: bool = False) -> dict:
    """The training record of the fused model: what each part learned from, and the scores that describe it
    (face only on FER2013 PrivateTest by this model; the voice stage's cross-validated RAVDESS scores; this run's
    own test actors in fold mode)."""
    import json

    from fer_hf.provenance_fer import make_training_provenance

    from .recipe import git_commit

    metrics, scope = {}, []
    face7 = results["face_only_privatetest"]["seven_way"]
    metrics.update(face_accuracy=face7["accuracy"], face_uar=face7["uar"])
    scope.append("face: FER2013 PrivateTest, 7 classes, this model with no audio")
    if args.voice_results and Path(args.voice_results).exists():
        cv = read_voice_results(args.voice_results).get("cross_validation")
        if cv:
            metrics.update(voice_accuracy=cv["accuracy"]["mean"], voice_uar=cv["uar"]["mean"])
            scope.append(f"voice: RAVDESS speech, {len(cv['folds'])}-fold speaker-independent (voice stage)")
    if "voice_only_test_actors" in results:
        metrics.update(voice_accuracy=results["voice_only_test_actors"]["accuracy"],
                       voice_uar=results["voice_only_test_actors"]["uar"])
        scope.append(f"voice: RAVDESS test actors {list(split.test)}, this model with no face")
    face_epochs, face_notes = None, ""  # how the face tower was trained: teacher runs, augmentation
    if args.face_results and Path(args.face_results).exists():
        face = json.loads(Path(args.face_results).read_text())
        runs = face_runs(face)  # a run continued with --init-from counts its earlier runs' epochs too
        face_epochs = f"{face_totals(face)[0]} epochs" + (f" (in {runs} runs)" if runs > 1 else "")
        taught = teacher_runs(face)
        if taught:
            kind = (face.get("teacher") or {}).get("kind", "a teacher")
            last = taught == 1 and face.get("teacher")
            who = "it" if runs == 1 else "the last run" if last else f"{taught} of the runs"
            face_notes = f"; {who} also learned {kind} as a second target"
        if (face.get("args") or {}).get("augment") == "light":  # fer-pretrain-face --augment light
            face_notes += (f"; {'the last run' if runs > 1 else 'trained'} with light augmentation (flip, small "
                           "shift, mild photometric change)")
    return make_training_provenance(
        dataset="FER2013 faces + RAVDESS speech (face-voice pseudo-pairs of the same label)" if not synthetic else
        "synthetic (generated faces and RAVDESS-named voices)", synthetic=synthetic,
        modality_layout="pseudo-pairs", mode="fold" if split.fold is not None else "release",
        epochs=args.epochs, fold=split.fold, train_actors=split.train + split.val, test_actors=split.test,
        metrics=metrics, metrics_scope="; ".join(scope), commit=git_commit(), modalities=("audio", "video"),
        sources={"vision": "FER2013 Training (28,709 grey 48x48 faces through the face front-end)"
                           + (f", {face_epochs}" if face_epochs else "") + face_notes,
                 "audio": "RAVDESS speech, audio-only files of "
                          + ("all 24 actors" if split.fold is None else f"actors {list(split.train + split.val)}"),
                 "fusion": "pseudo-pairs: a RAVDESS voice with a FER2013 face of the same label (calm: a neutral "
                           "face), plus FER2013 faces alone; modality dropout"},
    )


def run(args: argparse.Namespace) -> dict:
    import torch

    from fer_hf.configuration_fer import RAVDESS_LABELS, FERConfig
    from fer_hf.modeling_fer import FERForEmotionClassification
    from fer_hf.processing_fer import FERProcessor

    from .face_data import FER_LABELS, FER_TO_RAVDESS, load_face_split
    from .metrics import classification_metrics
    from .pretrain_voice import load_voices
    from .ravdess import DEFAULT_FOLDS, fold_split, load_folds, release_split
    from .stages import StageRun, adamw_cosine, collapse_verdict, seed_everything

    out = Path(args.output_dir)
    run_dir = StageRun(out, "fusion", args.threads, args.resume, args.overwrite, args.report_to)
    try:
        seed_everything(args.seed)
        rng = np.random.default_rng(args.seed)
        face_config = FERConfig.from_pretrained(args.face_from)
        config = FERConfig.from_preset(face_config.preset or "compact")
        processor = FERProcessor.from_model_config(config)
        model = FERForEmotionClassification(config)
        counts = {"face": load_parts(model, args.face_from, FACE_PARTS),
                  "voice": load_parts(model, args.voice_from, VOICE_PARTS)}
        logger.info("loaded %d face and %d voice tensors", counts["face"], counts["voice"])
        for prefix in ("vision_encoder", "roi_compressor", "frame_pool", "audio_encoder"):
            for p in getattr(model, prefix).parameters():
                p.requires_grad_(False)

        t0 = time.time()
        train_faces, test_faces = load_face_split(args.face_crops, "Training"), load_face_split(args.face_crops,
                                                                                               "PrivateTest")
        train_vecs, test_vecs = cached_face_vectors(model, train_faces, test_faces, processor, args)
        to_ravdess = np.array([FER_TO_RAVDESS[name] for name in FER_LABELS])
        face_labels = to_ravdess[train_faces["labels"]]
        by_label = {c: np.flatnonzero(face_labels == c) for c in range(len(RAVDESS_LABELS))}
        by_label[1] = by_label[0]  # calm: FER2013 has none; a neutral face
        clips, waves, synthetic = load_voices(args.data_root, config.sampling_rate, args.limit_actors)
        protocol = load_folds(args.folds_file) if args.folds_file else DEFAULT_FOLDS
        split = release_split(protocol) if args.fold is None else fold_split(args.fold, protocol)
        train_idx = [i for i, c in enumerate(clips) if c.actor in split.train + split.val]
        test_idx = [i for i, c in enumerate(clips) if c.actor in split.test]
        voice_labels = np.array([c.label for c in clips])
        prep_seconds = time.time() - t0
        logger.info("fusion data: %d voices to pair, %d FER2013 faces, %d test voices (%.0f s to prepare)",
                    len(train_idx), len(face_labels), len(test_idx), prep_seconds)

        params = [p for p in model.parameters() if p.requires_grad]
        per_epoch = 2 * len(train_idx)  # the pairs + as many face-only samples
        steps_per_epoch = max(1, per_epoch // args.batch_size)
        optimizer, scheduler = adamw_cosine(params, args.lr, args.weight_decay, steps_per_epoch * args.epochs,
                                            steps_per_epoch // 2)
        history, start_epoch, train_seconds = [], 0, 0.0
        state = run_dir.load_checkpoint()
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history, start_epoch, train_seconds = state["history"], state["epoch"], state["train_seconds"]
            rng = np.random.default_rng(args.seed + start_epoch)

        for epoch in range(start_epoch, args.epochs):
            model.train()
            t_epoch = time.time()
            samples = [("pair", i) for i in train_idx] + [
                ("face", int(j)) for j in rng.choice(len(face_labels), len(train_idx),
                                                     replace=len(train_idx) > len(face_labels))]
            order = rng.permutation(len(samples))
            running = 0.0
            for step in range(steps_per_epoch):
                batch = [samples[k] for k in order[step * args.batch_size:(step + 1) * args.batch_size]]
                waves_b, faces_b, labels_b = [], [], []
                for kind, i in batch:
                    if kind == "pair":
                        label = int(voice_labels[i])
                        waves_b.append(waves[i])
                        faces_b.append(train_vecs[int(rng.choice(by_label[label]))])
                    else:
                        label = int(face_labels[i])
                        waves_b.append(None)
                        faces_b.append(train_vecs[i])
                    labels_b.append(label)
                inputs = batch_inputs(processor, config.num_frames, config.vision_config.hidden_size, waves_b, faces_b,
                                      labels_b, rng, train=True)
                loss = model(**inputs).loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the fusion loss became {loss.item()} at epoch {epoch + 1}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                running += loss.item()
            train_seconds += time.time() - t_epoch
            entry = {"epoch": epoch + 1, "train_loss": running / steps_per_epoch,
                     "seconds": round(time.time() - t_epoch, 1)}
            history.append(entry)
            run_dir.log_scalars(epoch + 1, train_loss=entry["train_loss"])
            logger.info("fusion epoch %d/%d: train loss %.3f (%.0f s)", epoch + 1, args.epochs, entry["train_loss"],
                        entry["seconds"])
            run_dir.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch + 1,
                                     "train_seconds": train_seconds})

        eval_rng = np.random.default_rng(12345)
        results = {"stage": "fusion", "fold": args.fold, "split": split.to_dict(), "epochs": args.epochs,
                   "history": history, "train_seconds": round(train_seconds, 1),
                   "prepare_seconds": round(prep_seconds, 1), "threads": run_dir.threads,
                   "pairs": "RAVDESS speech voice + FER2013 Training face of the same label (calm: neutral face)"}
        face_logits = predict(model, processor, [(None, v) for v in test_vecs], eval_rng)
        results["face_only_privatetest"] = face_scores(face_logits, test_faces["labels"])
        verdicts = {"face_only": collapse_verdict(to_ravdess[test_faces["labels"]], face_logits.argmax(-1),
                                                  len(RAVDESS_LABELS))}
        if test_idx:
            truth = voice_labels[test_idx]
            voice_logits = predict(model, processor, [(waves[i], None) for i in test_idx], eval_rng)
            results["voice_only_test_actors"] = classification_metrics(truth, voice_logits.argmax(-1),
                                                                       RAVDESS_LABELS)
            verdicts["voice_only"] = collapse_verdict(truth, voice_logits.argmax(-1), len(RAVDESS_LABELS))
            test_face_labels = to_ravdess[test_faces["labels"]]
            test_by_label = {c: np.flatnonzero(test_face_labels == c) for c in range(len(RAVDESS_LABELS))}
            test_by_label[1] = test_by_label[0]
            pairs = [(waves[i], test_vecs[int(eval_rng.choice(test_by_label[int(voice_labels[i])]))])
                     for i in test_idx]
            pair_logits = predict(model, processor, pairs, eval_rng)
            results["pseudo_pairs_test_actors"] = classification_metrics(truth, pair_logits.argmax(-1),
                                                                         RAVDESS_LABELS)
            verdicts["pseudo_pairs"] = collapse_verdict(truth, pair_logits.argmax(-1), len(RAVDESS_LABELS))
        results["verdicts"] = verdicts
        for name, verdict in verdicts.items():
            if verdict:
                logger.warning("THE FUSED MODEL IS DEGENERATE (%s): %s", name, verdict)
        face7 = results["face_only_privatetest"]["seven_way"]
        logger.info("fusion: face only (PrivateTest, 7 classes) accuracy %.3f UAR %.3f%s", face7["accuracy"],
                    face7["uar"], "" if not test_idx else
                    f"; voice only (test actors) accuracy {results['voice_only_test_actors']['accuracy']:.3f} UAR "
                    f"{results['voice_only_test_actors']['uar']:.3f}; pseudo-pairs accuracy "
                    f"{results['pseudo_pairs_test_actors']['accuracy']:.3f}")
        model.config.provenance = recipe_provenance(args, split, results, synthetic)
        model.save_pretrained(out / "final")
        run_dir.write_results(results)
        return results
    finally:
        run_dir.close()


def main(argv=None) -> None:
    args = parse_args(argv)
    from .cli import refusals_as_one_line, setup_logging

    setup_logging(args.debug)
    with refusals_as_one_line(args.debug):
        run(args)


if __name__ == "__main__":
    sys.exit(main())
