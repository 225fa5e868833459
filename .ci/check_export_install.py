"""CI step: an exported folder works in a fresh virtual environment holding exactly its own requirements.

Exports a tiny model (tiny preset, random weights: its card says "untrained"), creates a new venv
without the system site-packages, installs torch first (the pinned CPU build, from the local wheel folder pip is
configured with), then exactly the folder's `requirements.txt` and `requirements-no-deps.txt` (with --no-deps), and
runs a generated clip through `pipeline(model=folder, trust_remote_code=True)` inside the venv (no fer_hf there,
offline). The scores must equal the in-process model's. Run from the repository root:

    python .ci/check_export_install.py [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_hf import FERConfig, FERForEmotionClassification  # noqa: E402
from fer_hf.processing_fer import FERProcessor  # noqa: E402
from fer_hf.tools.export import fresh_process_env, make_verification_clip, write_export_folder  # noqa: E402
from fer_hf.tools.requirements import NO_DEPS_FILE_NAME, runtime_requirements  # noqa: E402

logger = logging.getLogger("check_export_install")

_RUN_IN_VENV = """
import importlib.util, json, sys
assert importlib.util.find_spec("fer_hf") is None, "fer_hf must not be importable in the venv"
from transformers import pipeline
classifier = pipeline(model=sys.argv[1], trust_remote_code=True)
print(json.dumps(classifier(sys.argv[2])))
"""


def run(cmd, **kwargs):
    logger.info("$ %s", " ".join(map(str, cmd)))
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where to put the export and the venv (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fer-export-venv-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        torch.manual_seed(0)
        model = FERForEmotionClassification(FERConfig.from_preset("tiny")).eval()
        processor = FERProcessor.from_model_config(model.config)
        folder = write_export_folder(model, processor, work / "export", "ci/fer-tiny", overwrite=True)
        clip = make_verification_clip(work / "clip.mp4")
        inputs = processor(videos=clip, return_tensors="pt")
        with torch.no_grad():
            probs = model(**{k: inputs[k] for k in processor.model_input_names}).logits.softmax(-1).mean(0)
        expected = {model.config.id2label[i]: float(p) for i, p in enumerate(probs)}

        venv = work / "venv"
        if venv.exists():
            shutil.rmtree(venv)
        run([sys.executable, "-m", "venv", venv])
        python = venv / "bin" / "python"
        pip = [python, "-m", "pip", "install", "-q"]
        torch_pin = [p for p in runtime_requirements() if p.split("==")[0] == "torch"]
        run(pip + torch_pin)  # first, so that the CPU build is the one installed
        run(pip + ["-r", folder / "requirements.txt"])
        run(pip + ["--no-deps", "-r", folder / NO_DEPS_FILE_NAME])
        (work / "cwd").mkdir(exist_ok=True)
        env = fresh_process_env(work / "modules")
        env.pop("VIRTUAL_ENV", None)
        result = subprocess.run(
            [python, "-c", _RUN_IN_VENV, folder, clip], cwd=work / "cwd", env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise SystemExit(f"the exported folder failed in the fresh venv:\n{result.stderr[-4000:]}")
        ranked = json.loads(result.stdout.strip().splitlines()[-1])
        worst = max(abs(r["score"] - expected[r["label"]]) for r in ranked)
        if {r["label"] for r in ranked} != set(expected) or worst > 1e-5:
            raise SystemExit(f"venv scores {ranked} differ from the model's {expected} (max {worst:.2e})")
        freeze = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
        logger.info("venv packages:\n%s", freeze)
        logger.info("OK: exported folder ran in a fresh venv (max score diff %.1e, %.0f s)", worst,
                    time.perf_counter() - start)
        return 0
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
