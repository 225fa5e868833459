"""Export a trained checkpoint as a self-contained Hub folder, verify it in a fresh process, and optionally push it.

    python -m fer_hf.tools.export --checkpoint checkpoints/seed/final --output-dir exports/fer-seed \
        --eval-results results/results.json [--push-to-hub user/fer-seed [--private]]

The folder holds `model.safetensors` (sharded above `--max-shard-size`), `config.json` with `auto_map` and
`custom_pipelines`, `processor_config.json` with `auto_map`, the code files (relative imports only), `README.md`
(model card with Hub YAML, `model_card.py`), `requirements.txt` + `requirements-no-deps.txt` (the pinned run-time
list of `fer_hf/tools/runtime_requirements*.txt`, also the card's install line) and `eval_results.json` when given.
No pickle file is written. The card says what the weights are from `config.provenance`: a model that is not trained
is refused unless `--allow-untrained`, and a model trained on the synthetic set is called that.

Before anything is pushed, the folder is loaded in a fresh Python process (another working directory, no
`fer_hf` on the path, `HF_HUB_OFFLINE=1`) with `AutoModel` / `AutoProcessor` / `pipeline(..., trust_remote_code=True)`
and its logits on a generated clip are compared with the in-memory model's (atol 1e-5), as NVlabs RADIO does.
Only then, and only with `--push-to-hub`, `HfApi().create_repo(..., exist_ok=True)` + `upload_folder` run (token
from `huggingface-cli login` or `HF_TOKEN`). Without `--push-to-hub` nothing touches the network.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from fer_hf.errors_fer import FERError

from .compact_card import degenerate_reason
from .requirements import NO_DEPS_FILE_NAME, no_deps_requirements_text, requirements_text

# torch, transformers, safetensors and huggingface_hub are imported where they are used, so that `fer-export --help`
# and argument errors answer at once.
HfApi = None  # huggingface_hub.HfApi, imported at the first push (tests put a stand-in here)

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
PROCESSOR_FILE = "processor_config.json"
EVAL_FILE = "eval_results.json"
VERIFY_ATOL = 1e-5
VERIFY_TIMEOUT_S = 1800

# Run in the fresh process: load the folder the way a Hub user would and save logits + pipeline output.
_VERIFY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from safetensors.torch import save_file
    from transformers import pipeline
    folder, clip, out = sys.argv[1:4]
    classifier = pipeline(model=folder, trust_remote_code=True)  # task from config.json custom_pipelines
    model, processor = classifier.model.eval(), classifier.processor  # loaded by AutoModel / AutoProcessor
    # The pipeline's own steps (what __call__ runs), keeping the logits: one forward pass for both checks.
    outputs = classifier.forward(classifier.preprocess(clip))
    save_file({"logits": outputs["logits"].contiguous()}, out + ".safetensors")
    info = {"pipeline": classifier.postprocess(outputs), "task": classifier.task, "model_class": type(model).__name__,
            "model_module": type(model).__module__, "processor_class": type(processor).__name__}
    with open(out + ".json", "w") as f:
        json.dump(info, f)
    """
)


class ExportError(FERError):
    """The checkpoint cannot be exported (missing files, non-empty output folder, pickle files...)."""


class ExportVerificationError(ExportError):
    """The exported folder, loaded in a fresh process, does not reproduce the in-memory model."""


# ----------------------------------------------------------------------------------------------
def load_checkpoint(checkpoint: str | Path):
    """The model (eval mode) and its processor from a `save_pretrained` folder (processor rebuilt if absent)."""
    from fer_hf.modeling_fer import FERForEmotionClassification
    from fer_hf.processing_fer import FERProcessor

    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise ExportError(f"no model checkpoint (config.json) in {str(checkpoint)!r}")
    model = FERForEmotionClassification.from_pretrained(checkpoint).eval()
    if (checkpoint / PROCESSOR_FILE).is_file():
        processor = FERProcessor.from_pretrained(checkpoint)
    else:
        logger.info("no %s in %s: building the processor from the model config", PROCESSOR_FILE, checkpoint)
        processor = FERProcessor.from_model_config(model.config)
    return model, processor


def _strip_repo_prefixes(path: Path) -> None:
    """`auto_map` / `custom_pipelines` values of a model loaded from the Hub carry `repo--` prefixes: drop them."""

    def strip(value):
        if isinstance(value, str):
            return value.split("--")[-1]
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    data = json.loads(path.read_text())
    if "auto_map" in data:
        data["auto_map"] = {k: strip(v) for k, v in data["auto_map"].items()}
    for info in (data.get("custom_pipelines") or {}).values():
        info["impl"] = strip(info["impl"])
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_export_folder(
    model,
    processor,
    output_dir: str | Path,
    repo_id: str,
    eval_results: dict | None = None,
    max_shard_size: str | int = "2GB",
    overwrite: bool = False,
) -> Path:
    """Write the Hub folder: weights (safetensors), config with `custom_pipelines`, processor, code, model card."""
    from fer_hf.modeling_fer import refuse_nonfinite_weights
    from fer_hf.pipeline_fer import FER_PIPELINE_TASK, FEREmotionRecognitionPipeline, register_fer_pipeline

    from .model_card import render_model_card

    refuse_nonfinite_weights(model.state_dict().items(), getattr(model.config, "_name_or_path", "") or "the model",
                             advice="Nothing was exported: export an earlier checkpoint, or train again.")
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out} is not empty; choose another --output-dir or pass --overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    register_fer_pipeline()
    pipe = FEREmotionRecognitionPipeline(model=model, processor=processor, task=FER_PIPELINE_TASK, device=-1)
    pipe.feature_extractor = None  # already inside processor_config.json; no separate preprocessor_config.json
    # Pipeline.save_pretrained writes config.custom_pipelines, copies pipeline_fer.py, then saves the model.
    pipe.save_pretrained(out, max_shard_size=max_shard_size)
    processor.save_pretrained(out)
    for name in ("config.json", PROCESSOR_FILE):
        _strip_repo_prefixes(out / name)
    if eval_results is not None:
        (out / EVAL_FILE).write_text(json.dumps(eval_results, indent=1))
    (out / "requirements.txt").write_text(requirements_text())  # the same pinned list as the card's install line
    (out / NO_DEPS_FILE_NAME).write_text(no_deps_requirements_text())
    (out / "README.md").write_text(render_model_card(model, repo_id, eval_results))
    pickles = sorted(p.name for p in out.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ExportError(f"pickle files were written to {out}: {pickles}; only safetensors are allowed")
    logger.info("wrote %s: %s", out, sorted(p.name for p in out.iterdir()))
    return out


def make_verification_clip(path: str | Path, seconds: float = 1.0, seed: int = 0) -> str:
    """A short mp4 with a real face (scikit-image's astronaut) and a tone, from `fer_hf.tools.synthetic`."""
    from . import synthetic

    synthetic.write_clip(path, cls=2, actor=1, seconds=seconds, spec=synthetic.SyntheticSpec(seed=seed),
                         rng=np.random.default_rng(seed))
    return str(path)


def fresh_process_env(modules_cache: str | Path) -> dict:
    """Environment of a Hub user: no `fer_hf` on the path, offline, a private dynamic-module cache."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(modules_cache), TRANSFORMERS_VERBOSITY="error")
    return env


def verify_export(model, processor, folder: str | Path, clip: str | Path | None = None, atol: float = VERIFY_ATOL):
    """Load `folder` in a fresh process and compare its logits and pipeline scores with the in-memory model.

    Returns `{"max_abs_diff", "pipeline_max_diff", "pipeline", "seconds", ...}`; raises `ExportVerificationError`.
    """
    import torch
    from safetensors.torch import load_file

    start = time.perf_counter()
    model.eval()  # dropout off, as in the fresh process
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="fer-verify-") as tmp:
        tmp = Path(tmp)
        clip = str(clip) if clip is not None else make_verification_clip(tmp / "clip.mp4")
        inputs = processor(videos=clip, return_tensors="pt")
        with torch.no_grad():
            expected = model(**{k: inputs[k] for k in processor.model_input_names if k in inputs}).logits
        (tmp / "cwd").mkdir()
        result = subprocess.run(
            [sys.executable, "-c", _VERIFY_SCRIPT, str(folder), clip, str(tmp / "out")],
            cwd=tmp / "cwd",
            env=fresh_process_env(tmp / "modules"),
            capture_output=True,
            text=True,
            timeout=VERIFY_TIMEOUT_S,
        )
        if result.returncode != 0:
            raise ExportVerificationError(f"loading {folder} in a fresh process failed:\n{result.stderr[-4000:]}")
        logits = load_file(tmp / "out.safetensors")["logits"]
        info = json.loads((tmp / "out.json").read_text())
    if logits.shape != expected.shape:
        raise ExportVerificationError(f"fresh-process logits {tuple(logits.shape)} vs {tuple(expected.shape)}")
    diff = (logits - expected).abs().max().item()
    probs = expected.float().softmax(-1).mean(0)
    labels = model.config.id2label
    pipe_diff = max(abs(r["score"] - probs[int(model.config.label2id[r["label"]])].item()) for r in info["pipeline"])
    scores = [r["score"] for r in info["pipeline"]]
    report = dict(info, max_abs_diff=diff, pipeline_max_diff=pipe_diff, seconds=round(time.perf_counter() - start, 1))
    if not diff <= atol:
        raise ExportVerificationError(f"the exported folder's logits differ by {diff:.3e} (> {atol:g}) from the model")
    if sorted(r["label"] for r in info["pipeline"]) != sorted(labels.values()) or scores != sorted(scores)[::-1]:
        raise ExportVerificationError(f"the exported pipeline returns {info['pipeline']}: not every label, sorted")
    if pipe_diff > max(atol, 1e-6):
        raise ExportVerificationError(f"the exported pipeline's scores differ by {pipe_diff:.3e} from the model")
    logger.info("verified %s in a fresh process: max |logit diff| %.2e (%.1f s)", folder, diff, report["seconds"])
    return report


def push_folder(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create the model repo (if needed) and upload the folder; returns the commit URL."""
    api_class = HfApi
    if api_class is None:
        from huggingface_hub import HfApi as api_class
    api = api_class(token=token)
    api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), repo_type="model", commit_message="Upload FER model (fer-export)"
    )
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("pushed %s to %s", folder, url)
    return url


def export(
    checkpoint: str | Path,
    output_dir: str | Path,
    eval_results: str | Path | dict | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
    repo_id: str | None = None,
    max_shard_size: str | int = "2GB",
    overwrite: bool = False,
    clip: str | Path | None = None,
    allow_untrained: bool = False,
    allow_degenerate: bool = False,
) -> dict:
    """Write, verify and (with `push_to_hub`) upload; returns a summary dict.

    The checkpoint's `config.provenance` decides what the card says. A model that is not trained (no record,
    "untrained" or "backbones") is refused unless `allow_untrained`; the card then says exactly what it is.
    """
    if isinstance(eval_results, (str, Path)):
        eval_results = json.loads(Path(eval_results).read_text())
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:  # before the model is loaded: refuse at once
        raise ExportError(f"{out} is not empty; choose another --output-dir or pass --overwrite")
    if clip is not None:  # verification runs in another folder: a relative path must be made absolute here
        clip = Path(clip).expanduser().resolve()
        if not clip.is_file():
            raise ExportError(f"the verification clip {clip} does not exist")
    created = not out.exists() or not any(out.iterdir())
    model, processor = load_checkpoint(checkpoint)
    if not model.config.is_trained and not allow_untrained:
        raise ExportError(
            f"{checkpoint} is not a trained model ({model.config.provenance_summary()}); its card would have to say "
            "so. Export a model saved by fer-train, or pass --allow-untrained to publish it as what it is."
        )
    reason = degenerate_reason(model.config)
    if reason and not allow_degenerate:
        raise ExportError(
            f"{checkpoint} looks collapsed or at chance: {reason}. Publishing it would mislead its users; fix the "
            "training, or pass --allow-degenerate to publish it anyway (its card still shows the scores)."
        )
    logger.info("exporting a model that is %s", model.config.provenance_summary())
    card_id = push_to_hub or repo_id or str(output_dir)
    folder = write_export_folder(model, processor, output_dir, card_id, eval_results, max_shard_size, overwrite)
    summary = {"folder": str(folder), "files": sorted(p.name for p in folder.iterdir()),
               "provenance": model.config.provenance_info()}
    try:
        summary["verification"] = verify_export(model, processor, folder, clip=clip)
    except BaseException:
        if created:  # never leave a half-checked folder that looks like a finished export
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if push_to_hub:
        summary["pushed"] = push_folder(folder, push_to_hub, private=private)
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI: export a checkpoint as a verified Hub folder, optionally pushing it."""
    parser = argparse.ArgumentParser(prog="fer-export", description=main.__doc__)
    parser.add_argument("--checkpoint", required=True, help="save_pretrained folder of a trained model")
    parser.add_argument("--output-dir", required=True, help="folder to write (must be empty unless --overwrite)")
    parser.add_argument("--eval-results", help="results.json written by fer-evaluate (model-index + card table)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload to this Hub repo after verification")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--repo-id", help="model id shown in the card's usage snippet (default: push id or folder)")
    parser.add_argument("--max-shard-size", default="2GB", help="safetensors shard size, e.g. 2GB or 500MB")
    parser.add_argument("--overwrite", action="store_true", help="empty --output-dir first")
    parser.add_argument("--clip", help="media file for the verification (default: a generated 1 s clip)")
    parser.add_argument(
        "--allow-untrained",
        action="store_true",
        help="export a model that is not trained (random weights, or pretrained backbones only); the card says so",
    )
    parser.add_argument("--allow-degenerate", action="store_true",
                        help="export a model whose recorded scores are at chance or collapsed (refused otherwise)")
    parser.add_argument("--debug", action="store_true", help="full traceback of a refusal")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .cli import refusals_as_one_line

    with refusals_as_one_line(args.debug):
        return _run(args)


def _run(args) -> int:
    summary = export(
        args.checkpoint,
        args.output_dir,
        eval_results=args.eval_results,
        push_to_hub=args.push_to_hub,
        private=args.private,
        repo_id=args.repo_id,
        max_shard_size=args.max_shard_size,
        overwrite=args.overwrite,
        clip=args.clip,
        allow_untrained=args.allow_untrained,
        allow_degenerate=args.allow_degenerate,
    )
    check = summary["verification"]
    sys.stdout.write(
        f"exported {summary['folder']} ({len(summary['files'])} files; {summary['provenance']['summary']}); "
        "fresh-process max |logit diff| "
        f"{check['max_abs_diff']:.2e}; pipeline top label {check['pipeline'][0]['label']!r}"
        + (f"; pushed {summary['pushed']}" if "pushed" in summary else "; not pushed")
        + "\n"
    )
    return 0


__all__ = [
    "ExportError",
    "ExportVerificationError",
    "export",
    "load_checkpoint",
    "make_verification_clip",
    "push_folder",
    "verify_export",
    "write_export_folder",
]


if __name__ == "__main__":
    raise SystemExit(main())
