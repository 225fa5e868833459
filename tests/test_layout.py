"""The Hub boundary is checked, not a naming convention (docs/architecture.md "Layout").

- the top-level `fer_hf/*_fer.py` files are the payload, `PAYLOAD_MODULES` lists exactly them, and `save_pretrained`
  writes exactly them as code;
- a payload file imports only the standard library, packages of the exported `requirements.txt`, and other payload
  modules (relative imports); never `fer_hf.tools`, the app or the tests;
- no import cycles among the `fer_hf` modules.
"""

import ast
import importlib.metadata
import os
import re
import sys
from pathlib import Path

import torch

import fer_hf
from fer_hf import PAYLOAD_MODULES, FERConfig, FERForEmotionClassification
from fer_hf.tools.requirements import no_deps_requirements, runtime_requirements

PACKAGE = Path(fer_hf.__file__).parent
PAYLOAD = sorted(p.name for p in PACKAGE.glob("*_fer.py"))


def imports_of(path: Path):
    """(level, module, names) for every import statement of a file, at any depth (lazy imports count too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [alias.name for alias in node.names]


def distribution_names(requirements) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower().replace("_", "-") for line in requirements}


def test_payload_modules_are_exactly_the_top_level_files():
    assert sorted(PAYLOAD_MODULES) == PAYLOAD
    others = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in PAYLOAD)
    assert others == ["__init__.py"], f"a top-level fer_hf file that is not payload: {others}; move it to fer_hf/tools"


def test_save_pretrained_writes_exactly_the_payload(tmp_path):
    torch.manual_seed(0)
    FERForEmotionClassification(FERConfig.from_preset("tiny")).save_pretrained(tmp_path)
    written = sorted(name for name in os.listdir(tmp_path) if name.endswith(".py"))
    assert written == PAYLOAD
    for name in PAYLOAD:  # the copies are the package's own files
        assert (tmp_path / name).read_bytes() == (PACKAGE / name).read_bytes(), name


def test_payload_imports_only_stdlib_listed_packages_and_payload():
    listed = distribution_names(runtime_requirements())
    providers = importlib.metadata.packages_distributions()  # import name -> distributions
    problems = []
    for name in PAYLOAD:
        for level, module, names in imports_of(PACKAGE / name):
            if level:  # relative: another payload module, never a sub-package
                targets = [module] if module else names
                for target in targets:
                    if f"{target}.py" not in PAYLOAD:
                        problems.append(f"{name}: relative import of {target!r}, which is not a payload module")
                continue
            top = module.split(".")[0]
            if top == "__future__" or top in sys.stdlib_module_names:
                continue
            if top in ("fer_hf", "fer_app", "app", "tests"):
                problems.append(f"{name}: imports {module!r} (the Hub copy has no such package)")
                continue
            dists = {d.lower().replace("_", "-") for d in providers.get(top, [])}
            if not dists & listed:
                problems.append(
                    f"{name}: imports {top!r} (distribution {sorted(dists) or 'unknown'}), which is not in "
                    "fer_hf/tools/runtime_requirements.txt: add it there"
                )
    assert problems == []


def test_packages_the_payload_reads_files_from_are_listed():
    """`importlib.util.find_spec("x")` locates a package's files without importing it: it must be installed too."""
    listed = distribution_names(runtime_requirements() + no_deps_requirements())
    providers = importlib.metadata.packages_distributions()
    found = []
    for name in PAYLOAD:
        for node in ast.walk(ast.parse((PACKAGE / name).read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None)) == "find_spec"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                top = node.args[0].value.split(".")[0]
                dists = {d.lower().replace("_", "-") for d in providers.get(top, [])}
                found.append(top)
                assert dists & listed, f"{name} reads files of {top!r}, which no runtime requirement installs"
    assert found == [] or set(found) <= set(providers)


def test_runtime_requirements_are_pinned_and_opencv_stays_below_5():
    requirements = runtime_requirements() + no_deps_requirements()
    assert all("==" in line for line in requirements), requirements
    opencv = [line for line in requirements if line.startswith("opencv-python-headless")]
    assert len(opencv) == 1 and int(opencv[0].split("==")[1].split(".")[0]) < 5
    project = (PACKAGE.parent / "requirements.txt").read_text()
    assert "-r fer_hf/tools/runtime_requirements.txt" in project.splitlines()
    models = (PACKAGE.parent / "requirements-models.txt").read_text()
    assert "-r fer_hf/tools/runtime_requirements_no_deps.txt" in models.splitlines()
    project += models
    # listed once: the project's requirements do not pin these packages a second time
    again = distribution_names(line for line in project.splitlines() if line and not line.startswith(("#", "-")))
    assert not again & distribution_names(requirements)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles_among_fer_hf_modules():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for level, module, names in imports_of(path):
            if level:
                base = package.split(".")
                base = base[: len(base) - (level - 1)]
                module = ".".join(base + ([module] if module else []))
            candidates = [module] + [f"{module}.{n}" for n in names]
            edges |= {c for c in candidates if c in files and c != name}
        # importing fer_hf.x runs fer_hf/__init__ first: that is the package, not an edge of the importer
        graph[name] = edges - {"fer_hf"} if name != "fer_hf" else edges
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []
    assert "fer_hf.modeling_fer" in graph and graph["fer_hf.modeling_fer"] >= {"fer_hf.configuration_fer"}
