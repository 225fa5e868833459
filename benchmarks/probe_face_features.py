"""Where the face score is stuck: does a model's face tower fit its own training faces, and how much would MediaPipe's
52 face blendshapes add beside its frame vector?

    python benchmarks/probe_face_features.py --model checkpoints/compact --data-root data/fer2013 \
        --crops-dir runs/face/crops --teacher face_landmarker_v2_with_blendshapes.task [--json probe.json]

On FER2013 (7 classes) with the face stage's own crops (`fer-pretrain-face` builds them; this builds any split that
is missing) and the teacher's blendshape scores (cached beside the crops, as the face stage caches them):
1. the model with no audio on Training and PrivateTest (clean crops, the model's own inference path: mirror
   averaging when its config has it), and its accuracy on the faces the front-end aligned vs the rest;
2. probes trained on Training and scored on PrivateTest, on frozen features: the frame vector (`embed_frames`), the
   52 blendshapes, and both joined; each linear and as a small MLP (256 hidden, dropout 0.3), 60 epochs of AdamW.
Nothing here trains or changes the model. Prints a table; `--json` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_hf import FERForEmotionClassification, FERProcessor  # noqa: E402
from fer_hf.tools import face_data  # noqa: E402
from fer_hf.tools.face_teacher import prepare_blendshapes  # noqa: E402
from fer_hf.tools.metrics import classification_metrics  # noqa: E402
from fer_hf.tools.train_fusion import face_scores, face_vectors, predict  # noqa: E402

logger = logging.getLogger("probe_face_features")
SPLITS = ("Training", "PrivateTest")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="checkpoints/compact", help="a FER model folder")
    p.add_argument("--data-root", required=True, help="FER2013 image folders (<class>/<split>_*.jpg)")
    p.add_argument("--crops-dir", required=True, help="the face stage's crops (built here when missing)")
    p.add_argument("--teacher", required=True, help="MediaPipe's face_landmarker_v2_with_blendshapes.task")
    p.add_argument("--workers", type=int, default=2, help="processes for the crops and the blendshapes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=60, help="epochs of each probe")
    p.add_argument("--json", help="write the figures here")
    return p.parse_args(argv)


def subset_accuracy(logits: np.ndarray, labels: np.ndarray) -> float | None:
    """FER2013 7-class accuracy of a subset's 8-class logits (None for an empty subset)."""
    return face_scores(logits, labels)["seven_way"]["accuracy"] if len(labels) else None


def probe(train_x, train_y, test_x, test_y, hidden: int, epochs: int, seed: int = 0) -> dict:
    """A linear (`hidden` 0) or one-hidden-layer classifier on standardised frozen features.

    Input train_x (n, d), train_y (n,), test_x (m, d), test_y (m,). Output train / test accuracy and test UAR."""
    torch.manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xtr = torch.tensor((train_x - mean) / std, dtype=torch.float32)
    xte = torch.tensor((test_x - mean) / std, dtype=torch.float32)
    ytr = torch.tensor(train_y)
    classes = len(face_data.FER_LABELS)
    net = (torch.nn.Linear(xtr.shape[1], classes) if not hidden else torch.nn.Sequential(
        torch.nn.Linear(xtr.shape[1], hidden), torch.nn.GELU(), torch.nn.Dropout(0.3),
        torch.nn.Linear(hidden, classes)))
    optimizer = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-3)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(xtr))
        for start in range(0, len(xtr), 512):
            batch = order[start:start + 512]
            loss = torch.nn.functional.cross_entropy(net(xtr[batch]), ytr[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        train_pred, test_pred = net(xtr).argmax(-1).numpy(), net(xte).argmax(-1).numpy()
    test = classification_metrics(test_y, test_pred, face_data.FER_LABELS)
    return {"train_accuracy": float((train_pred == train_y).mean()), "test_accuracy": test["accuracy"],
            "test_uar": test["uar"]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    model = FERForEmotionClassification.from_pretrained(args.model).eval()
    config, processor = model.config, FERProcessor.from_model_config(model.config)
    crops_dir = Path(args.crops_dir)
    index = face_data.index_fer2013(args.data_root)
    face_data.prepare_face_crops(index, crops_dir, config.vision_config.image_size,
                                 config.vision_config.patch_size, config.face_crop_margin, args.workers)
    data = {s: face_data.load_face_split(crops_dir, s) for s in SPLITS}
    blend = {s: prepare_blendshapes(index[s], crops_dir / "blendshapes", s, args.teacher, args.workers)[0]
             for s in SPLITS}
    figures: dict = {"model": str(args.model), "model_no_audio": {}, "probes": {}}
    vectors = {}
    for split in SPLITS:
        start = time.time()
        vectors[split] = face_vectors(model, data[split]["crops"], data[split]["roi"], processor, 1, 0)[:, 0]
        logits = predict(model, processor, [(None, v[None]) for v in vectors[split]], np.random.default_rng(0), 256)
        truth, aligned = data[split]["labels"], data[split]["aligned"].astype(bool)
        whole = face_scores(logits, truth)["seven_way"]  # the argmax over FER2013's 7 classes, as the fusion stage
        figures["model_no_audio"][split] = {
            "accuracy": whole["accuracy"], "uar": whole["uar"],
            **{name: {"count": int(sel.sum()), "accuracy": subset_accuracy(logits[sel], truth[sel])}
               for name, sel in (("aligned", aligned), ("not_aligned", ~aligned))}}
        logger.info("%s: the model with no audio %.3f (%.0f s)", split, figures["model_no_audio"][split]["accuracy"],
                    time.time() - start)
    features = {"frame vector": vectors,
                "blendshapes": blend,
                "frame vector + blendshapes": {s: np.concatenate([vectors[s], blend[s]], 1) for s in SPLITS}}
    for name, feats in features.items():
        for hidden in (0, 256):
            kind = "linear" if not hidden else f"mlp{hidden}"
            figures["probes"][f"{name}, {kind}"] = probe(feats["Training"], data["Training"]["labels"],
                                                         feats["PrivateTest"], data["PrivateTest"]["labels"],
                                                         hidden, args.epochs)
    print(f"model {args.model}, no audio (7 FER2013 classes):")
    for split, f in figures["model_no_audio"].items():
        aligned, rest = f["aligned"], f["not_aligned"]
        pct = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
        print(f"  {split:12s} accuracy {f['accuracy']:.1%}  UAR {f['uar']:.1%}  aligned {pct(aligned['accuracy'])}"
              f" ({aligned['count']})  not aligned {pct(rest['accuracy'])} ({rest['count']})")
    print("probes (train on Training, test on PrivateTest):")
    for name, f in figures["probes"].items():
        print(f"  {name:36s} train {f['train_accuracy']:.1%}  test {f['test_accuracy']:.1%}  UAR {f['test_uar']:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
