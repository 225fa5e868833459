"""Model card (`README.md` with Hub YAML front matter) for an exported model.

The front matter is built as a dict and dumped with `yaml.safe_dump`, so it always parses. Evaluation results come
from the JSON written by `fer_hf.tools.evaluate` (schema_version 1: a `metrics` list of `{name, type, value, std, args}`
plus `summary`, `protocol`, `complete`, `dataset`); flat JSONs `{"accuracy": .., "uar": .., "macro_f1": ..}` are
accepted too. UAR is reported on the Hub as `recall` with `average: macro`.
"""

from __future__ import annotations

import re

import yaml

from .compact_card import PSEUDO_PAIRS, render_compact_card
from .requirements import install_command

LICENSE = "cc-by-nc-sa-4.0"  # RAVDESS is CC BY-NC-SA 4.0; weights trained on it inherit the terms
PIPELINE_TAG = "video-classification"
TAGS = [
    "custom_code",
    "audio-visual",
    "emotion-recognition",
    "audio-classification",
    "ravdess",
    "siglip",
    "lfm2",
    "fastconformer",
]
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# (key in a flat or summary dict, Hub metric type, display name, args)
_METRICS = (
    ("accuracy", "accuracy", "Accuracy (WAR)", None),
    ("uar", "recall", "UAR (macro recall)", {"average": "macro"}),
    ("macro_f1", "f1", "Macro-F1", {"average": "macro"}),
)
_TYPE_TO_KEY = {"accuracy": "accuracy", "uar": "uar", "recall": "uar", "f1": "macro_f1", "macro_f1": "macro_f1"}


def normalise_eval_results(results: dict | None) -> list[dict]:
    """`[{key, type, name, value, std, args}]` for accuracy, UAR and macro-F1, from whatever the JSON holds."""
    if not results:
        return []
    found: dict[str, dict] = {}
    for item in results.get("metrics") or []:  # fer_hf.tools.evaluate schema
        key = _TYPE_TO_KEY.get(str(item.get("type", "")).lower())
        if key and isinstance(item.get("value"), (int, float)):
            found.setdefault(key, {"value": float(item["value"]), "std": item.get("std")})
    summary = results.get("summary") if isinstance(results.get("summary"), dict) else {}
    for key, *_ in _METRICS:
        if key in found:
            continue
        value = summary.get(key, results.get(key))
        if isinstance(value, dict):
            value, std = value.get("mean"), value.get("std")
        else:
            std = None
        if isinstance(value, (int, float)):
            found[key] = {"value": float(value), "std": std}
    return [
        {"key": key, "type": mtype, "name": name, "args": args, **found[key]}
        for key, mtype, name, args in _METRICS
        if key in found
    ]


def training_record(config) -> dict:
    """`config.provenance["training"]` (docs/architecture.md), or {} for a model saved without one."""
    return dict(((getattr(config, "provenance", None) or {}).get("training")) or {})


def metric_claims(config, results: dict | None) -> dict:
    """What the card may claim, from the model's provenance record and the evaluation JSON.

    - fold model: that fold's own test score (`results["folds"]` entry of its fold, else the score recorded at
      training time) on its test actors; the k-fold mean is mentioned only as the recipe's estimate;
    - release model: the cross-validated mean ± std, as the estimate of the recipe that produced the weights, which
      were trained on every actor (no held-out score exists);
    - no training record (an older export): the evaluation JSON's mean over folds, as before.

    Returns `{"metrics": normalised list, "scope": words for the model-index dataset name, "lines": card text,
    "synthetic": bool}`.
    """
    training = training_record(config)
    results = results or {}
    synthetic = bool(training.get("synthetic")) or bool((results.get("dataset") or {}).get("synthetic"))
    data = "the synthetic set (not RAVDESS)" if synthetic else "RAVDESS"
    layout = training.get("modality_layout") or (results.get("dataset") or {}).get("modality_layout") or "audio-video"
    protocol = results.get("protocol", "speaker-independent")
    mode = training.get("mode")
    cv = normalise_eval_results(results) if results.get("folds") and len(results["folds"]) > 1 else []
    cv_text = ", ".join(f"{m['name']} {100 * m['value']:.1f} ± {100 * (m.get('std') or 0):.1f} %" for m in cv)
    if mode == "fold":
        fold = training.get("fold")
        entry = next((f for f in results.get("folds") or [] if f.get("fold") == fold), None)
        metrics = normalise_eval_results(entry) if entry else normalise_eval_results(training.get("metrics"))
        for m in metrics:
            m["std"] = None  # one fold's score has no spread
        actors = training.get("test_actors")
        scope = f"fold {fold} test actors {actors}"
        lines = [f"This is the **fold {fold} model**: trained on actors {training.get('train_actors')}, selected on "
                 f"actors {training.get('validation_actors')}, scored on its held-out test actors {actors} "
                 f"({data}, {layout} files). Its own score:"]
        after = [f"Cross-validated mean of the same recipe over {len(results['folds'])} folds ({protocol}): {cv_text}. "
                 "That is an estimate of the recipe, not a score of these weights."] if cv else []
    elif mode == "release":
        std = training.get("metrics_std") or {}
        metrics = cv or [dict(m, std=std.get(m["key"])) for m in normalise_eval_results(training.get("metrics"))]
        folds = len(results.get("folds") or []) or training.get("cv_folds")
        scope = f"{protocol} cross-validation of this recipe; weights trained on all actors"
        actors = len(training.get("train_actors") or [])
        source = training.get("epochs_source", "chosen by cross-validation")
        lines = [f"This is the **release model**: its weights were trained on all {actors} actors of {data} "
                 f"({layout} files) for {training.get('epochs')} epochs ({source}), so no actor was held out and it "
                 f"has no test score of its own. The figures below are the cross-validated mean ± std over {folds} "
                 "fold models trained with the same recipe: the protocol's estimate of what this recipe achieves on "
                 "unseen actors."]
        after = []
    else:
        metrics = normalise_eval_results(results)
        scope = protocol
        lines = [f"{data}, {protocol} (actors never seen in training), mean over folds:"]
        after = []
    return {"metrics": metrics, "scope": scope, "lines": lines, "after": after, "synthetic": synthetic,
            "training": training}


def _front_matter(repo_id: str, claims: dict, results: dict | None, base_models: list[str], status: str) -> dict:
    metrics = claims["metrics"]
    meta = {
        "license": LICENSE,
        "library_name": "transformers",
        "pipeline_tag": PIPELINE_TAG,
        "tags": list(TAGS) + (["synthetic-data"] if claims["synthetic"] else []) + ([status] if status != "trained"
                                                                                   else []),
        "metrics": ["accuracy", "recall", "f1"],
        "language": ["en"],
    }
    if status == "trained" and not claims["synthetic"]:  # the Hub links the data set only if the weights learned it
        meta["datasets"] = ["RAVDESS"]
    if base_models:
        meta["base_model"] = base_models
    if metrics:
        dataset = (results or {}).get("dataset") or {}
        name = "synthetic (RAVDESS-named)" if claims["synthetic"] else str(dataset.get("name", "RAVDESS"))
        entry = {
            "task": {"type": PIPELINE_TAG, "name": "Audio-visual emotion recognition"},
            "dataset": {
                "name": f"{name} ({claims['scope']})",
                "type": "synthetic" if claims["synthetic"] else str(dataset.get("type", "ravdess")),
            },
            "metrics": [],
        }
        layout = claims["training"].get("modality_layout")
        config_name = dataset.get("config") or (f"{layout} speech" if layout else None)
        if config_name:
            entry["dataset"]["config"] = str(config_name)
        if dataset.get("split") or claims["training"]:
            entry["dataset"]["split"] = str(dataset.get("split", "test"))
        for m in metrics:
            item = {"type": m["type"], "value": round(m["value"], 4), "name": m["name"]}
            if m["args"]:
                item["args"] = dict(m["args"])
            entry["metrics"].append(item)
        meta["model-index"] = [{"name": repo_id.split("/")[-1], "results": [entry]}]
    return meta


def usage_snippet(repo_id: str) -> str:
    """Python code a user can paste: the pipeline, then the processor + model step by step."""
    from fer_hf.pipeline_fer import FER_PIPELINE_TASK

    return f'''from transformers import pipeline

classifier = pipeline(model="{repo_id}", trust_remote_code=True)
print(classifier("clip.mp4"))  # [{{'label': 'happy', 'score': 0.41, 'top': True}}, ...], sorted high to low
# "top" marks the answer; no entry has it when the first two are closer than 0.10 (no clear emotion)

# Step by step, with the per-segment outputs (the pipeline task is "{FER_PIPELINE_TASK}")
import torch
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
inputs, info = processor.prepare(videos="clip.mp4", return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
result = processor.post_process(outputs, info, model.config)[0]  # FERClipResult (windows, segments, modalities)
print(result.top_label, result.probabilities)  # top_label is None when no emotion is clearly ahead
print(outputs.segment_attention[0], outputs.modalities_used[0])  # weight of each segment; audio/video used
'''


def _count(module) -> str:
    n = sum(p.numel() for p in module.parameters())
    return f"{n / 1e6:.1f} M" if n >= 100_000 else f"{n:,}"


def status_notice(config) -> str:
    """The card's first paragraph: how the weights came to be, from `config.provenance` (never assumed)."""
    status = config.provenance_status
    if status == "trained" and not config.trained_on_synthetic_data:
        return f"**Weights:** {config.provenance_summary()}."
    warning = {
        "untrained": "**Untrained model.** Its weights are random: the predictions are meaningless. It is published "
        "to test the code, not to recognise emotions.",
        "backbones": "**Not trained for emotions.** Only the pretrained backbones are loaded; the fusion and the "
        "classifier are random, so the predictions are meaningless.",
    }.get(status, "**Trained on synthetic data (not RAVDESS).** A smoke-test model: its predictions on real clips "
       "are meaningless.")
    return f"> {warning}\n>\n> Record (`config.provenance`): {config.provenance_summary()}."


def render_model_card(model, repo_id: str, eval_results: dict | None = None) -> str:
    """The full `README.md` text for `model` (a `FERForEmotionClassification`)."""
    config = model.config
    if training_record(config).get("modality_layout") == PSEUDO_PAIRS:  # the staged compact recipe
        return render_compact_card(model, repo_id, eval_results, usage_snippet(repo_id))
    sources = dict((config.provenance or {}).get("backbones") or {})
    base_models = [s for s in sources.values() if _HUB_ID.match(str(s))]
    claims = metric_claims(config, eval_results)
    metrics = claims["metrics"]
    meta = _front_matter(repo_id, claims, eval_results, base_models, config.provenance_status)
    parts = model.backbone_modules()
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {repo_id.split('/')[-1]}: audio-visual emotion recognition",
        "",
        status_notice(config),
        "",
        "Classifies the emotion of a short talking-face clip into the 8 RAVDESS classes "
        f"({', '.join(config.id2label[i] for i in sorted(config.id2label))}) from its audio and its face frames. "
        f"One window is {config.clip_seconds:g} s: {config.num_frames} frames + 16 kHz audio. Either modality "
        "may be missing (no audio track, silence, no detectable face); `outputs.modalities_used` says what was used.",
        "",
        "## Usage",
        "",
        "Install the pinned versions this model was exported with (also in this repository's `requirements.txt`; "
        "torch goes first, so that a CPU machine gets the CPU build):",
        "",
        "```bash",
        install_command(),
        "```",
        "",
        "PyAV decodes the media, OpenCV (below 5: OpenCV 5 has no Haar cascades) and LiteRT find the face, "
        "onnxruntime runs the voice activity detector. The code is in this repository, hence "
        "`trust_remote_code=True`.",
        "",
        "```python",
        usage_snippet(repo_id).rstrip(),
        "```",
        "",
        "## Model",
        "",
        "| part | component | parameters |",
        "|---|---|---|",
        f"| audio | FastConformer encoder (transformers `ParakeetEncoder`), segment attention pooling | "
        f"{_count(parts['audio'])} |",
        f"| video | SigLIP vision tower, ROI token compression, temporal GSCB + attention encoder | "
        f"{_count(parts['vision'])} (SigLIP) |",
        f"| fusion | {len(config.lfm2_config.layer_types)} LFM2 decoder layers "
        f"({', '.join(config.lfm2_config.layer_types)}) over interleaved audio/visual segment tokens | "
        f"{_count(parts['fusion'])} |",
        f"| total | + classifier (temporal attention pooling, MLP) | {_count(model)} |",
        "",
    ]
    if sources:
        lines += ["Backbones initialised from: " + ", ".join(f"{k}: `{v}`" for k, v in sources.items()) + ".", ""]
    lines += ["## Evaluation", ""]
    if metrics:
        if config.provenance_status != "trained":
            lines += [f"**These weights are not trained** ({config.provenance_summary()}): the figures below were "
                      "measured on them as they are.", ""]
        lines += [*claims["lines"], ""]
        lines += ["| metric | value |", "|---|---|"]
        for m in metrics:
            std = f" ± {100 * m['std']:.1f}" if isinstance(m.get("std"), (int, float)) else ""
            lines.append(f"| {m['name']} | {100 * m['value']:.1f}{std} % |")
        if claims["after"]:
            lines += ["", *claims["after"]]
        if (eval_results or {}).get("complete") is False and claims["training"].get("mode") != "fold":
            lines += ["", "**Partial evaluation:** not every fold of the protocol was evaluated."]
    else:
        lines.append("No evaluation results were provided with this export.")
    if claims["synthetic"]:
        lines += ["", "**Synthetic data:** this model was trained on generated clips with RAVDESS-style names "
                      "(`fer_hf.tools.synthetic`), not on RAVDESS. It is a smoke-test model: its predictions on real "
                      "faces and voices are meaningless."]
    if config.provenance_status != "trained":
        data_line = f"- Not trained on any emotion data ({config.provenance_summary()}). "
    elif claims["synthetic"]:
        data_line = "- Trained on generated clips, not on RAVDESS (see above). "
    else:
        data_line = ("- Trained on RAVDESS (Livingstone & Russo, 2018): 24 professional actors, North American "
                     "English, acted emotions. RAVDESS is licensed CC BY-NC-SA 4.0, so these weights are released "
                     "under the same terms (non-commercial, share-alike). ")
    data_line += ("Backbone licenses also apply: SigLIP (Apache-2.0), LFM2 (LFM Open License v1.0), NVIDIA "
                  "FastConformer checkpoints (CC-BY-4.0).")
    lines += [
        "",
        "## Training data, license and limitations",
        "",
        data_line,
        "- Acted, posed emotions in a studio differ from spontaneous ones; expect lower accuracy on real-world "
        "clips, other languages and other recording conditions. Do not use it to make decisions about people.",
        "",
        "## Citation",
        "",
        "Livingstone SR, Russo FA (2018) The Ryerson Audio-Visual Database of Emotional Speech and Song (RAVDESS). "
        "PLoS ONE 13(5): e0196391. https://doi.org/10.1371/journal.pone.0196391",
        "",
    ]
    return "\n".join(lines)


def parse_front_matter(text: str) -> dict:
    """The YAML metadata block of a model card (what the Hub reads)."""
    match = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    if match is None:
        raise ValueError("the model card has no YAML front matter")
    return yaml.safe_load(match.group(1))


def extract_python_snippets(text: str) -> list[str]:
    """The ```python blocks of a model card."""
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


__all__ = [
    "LICENSE",
    "status_notice",
    "metric_claims",
    "training_record",
    "extract_python_snippets",
    "normalise_eval_results",
    "parse_front_matter",
    "render_model_card",
    "usage_snippet",
]
