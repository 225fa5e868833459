"""The exported model's run-time requirements: one pinned list, `runtime_requirements.txt` next to this file.

The project's `requirements.txt` includes that file (`-r`), `fer_hf.tools.export` copies it into every exported
folder as `requirements.txt`, the model card's install line is built from it, and `tests/test_layout.py` checks that
every third-party import of the payload is on it.
"""

from __future__ import annotations

from pathlib import Path

RUNTIME_REQUIREMENTS_FILE = Path(__file__).with_name("runtime_requirements.txt")


def runtime_requirements() -> list[str]:
    """The pinned requirement lines, in file order (comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in RUNTIME_REQUIREMENTS_FILE.read_text().splitlines())
    return [line for line in lines if line]


def requirements_text() -> str:
    """The `requirements.txt` written into an exported folder."""
    return (
        "# Run-time requirements of this model (pinned). On a CPU-only machine install torch first:\n"
        "#   pip install torch==<the version below>   (an open range pulls a multi-GB CUDA build)\n"
        + "\n".join(runtime_requirements())
        + "\n"
    )


def install_command() -> str:
    """The model card's install line: torch first (its CPU build), then the rest of the same pinned list."""
    pins = runtime_requirements()
    torch_pin = [p for p in pins if p.split("==")[0] == "torch"]
    rest = " ".join(f'"{p}"' if any(c in p for c in "<>") else p for p in pins if p not in torch_pin)
    return (f"pip install {torch_pin[0]} && " if torch_pin else "") + f"pip install {rest}"


__all__ = ["RUNTIME_REQUIREMENTS_FILE", "runtime_requirements", "requirements_text", "install_command"]
