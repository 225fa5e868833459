"""The `fer-*` commands and the two set-ups the suite runs in: this checkout on the path, or installed with
`pip install -e .` (the README's way to get the commands).

Every console script parses its arguments before it imports torch or transformers, so `--help` and a wrong
argument answer at once; the tests check that property (not a timing) on the entry points `pyproject.toml` declares.
"""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hub_user import run_as_hub_user

import fer_hf
from fer_hf.tools.cli import BACKBONE_PARTS, PRESET_NAMES

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
# Commands whose module still imports torch at the top (being rewritten elsewhere): strict, so the fix shows.
HEAVY_YET: dict[str, str] = {}  # console scripts still importing torch before parsing (none)

_PROBE = """
import json, sys
from {module} import {function} as command
out = {{}}
for args in (["--help"], ["--no-such-option"]):
    sys.argv = [{name!r}, *args]
    try:
        command()
        code = 0
    except SystemExit as stop:
        code = stop.code
    out[args[0]] = code
out["heavy"] = sorted({{"torch", "transformers"}} & set(sys.modules))
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xfail(reason=HEAVY_YET[n], strict=True)) if n in HEAVY_YET else n
     for n in sorted(SCRIPTS)],
)
def test_help_and_argument_errors_come_before_torch(name):
    module, function = SCRIPTS[name].split(":")
    code = _PROBE.format(module=module, function=function, name=name)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.stdout.startswith(f"usage: {name} "), result.stdout[:200]  # its own name, not another command's
    assert out["--help"] == 0 and out["--no-such-option"] == 2, out
    assert f"usage: {name} " in result.stderr and f"{name}: error:" in result.stderr
    assert out["heavy"] == [], f"{name} imported {out['heavy']} before parsing its arguments"


def test_prepare_cache_is_train_prepare_only_under_its_own_name():
    from fer_hf.tools.train import parse_args

    args = parse_args(["--data-root", "data"], prepare_only=True)
    assert args.prepare_only and not parse_args(["--data-root", "data"]).prepare_only
    assert parse_args(["--data-root", "data", "--prepare-only"], prepare_only=True).prepare_only  # still accepted


def test_names_the_parsers_offer_match_their_sources():
    from fer_hf.configuration_fer import FERConfig
    from fer_hf.tools.trainer import BACKBONE_PREFIXES

    assert PRESET_NAMES == tuple(FERConfig.PRESETS)
    assert BACKBONE_PARTS == tuple(BACKBONE_PREFIXES)


def test_import_fer_hf_is_light_and_loads_the_payload_on_first_use():
    code = ("import sys, fer_hf\nlight = not {'torch', 'transformers'} & set(sys.modules)\n"
            "from fer_hf import FERForEmotionClassification, FER_PIPELINE_TASK\n"
            "from transformers.pipelines import PIPELINE_REGISTRY\n"
            "assert FERForEmotionClassification._auto_class == 'AutoModel', FERForEmotionClassification._auto_class\n"
            "print(light, FER_PIPELINE_TASK in PIPELINE_REGISTRY.get_supported_tasks())")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["True", "True"], result.stdout + result.stderr[-2000:]


def test_the_suite_tests_this_checkout():
    """With `pip install -e .` of another checkout, its finder is on every interpreter: pytest's `pythonpath`
    puts this checkout first."""
    assert Path(fer_hf.__file__).resolve().parent == ROOT / "fer_hf"


def test_a_hub_user_process_cannot_import_fer_hf_even_where_it_is_installed(tmp_path):
    """The fresh-process tests' prelude hides the package whatever the set-up; here even in the checkout's root."""
    code = ("import json\nfor name in ('fer_hf', 'fer_hf.modeling_fer'):\n    try:\n        __import__(name)\n"
            "    except ModuleNotFoundError:\n        continue\n    raise SystemExit(name + ' was importable')\n"
            "print('HIDDEN')")
    result = run_as_hub_user(code, ROOT, tmp_path / "modules", timeout=60)
    assert result.stdout.strip() == "HIDDEN", result.stdout + result.stderr
