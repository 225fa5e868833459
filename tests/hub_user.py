"""Run Python code in a fresh process as a Hub user has it: offline, and `fer_hf` cannot be imported.

A clean working directory and no `PYTHONPATH` hide a plain checkout, but not an installed package: after
`pip install -e .` (which the README recommends for the `fer-*` commands) setuptools' finder sits on every
interpreter's `sys.meta_path`, and a regular install sits in site-packages. So the code runs after a prelude that
puts a finder first on `sys.meta_path` refusing `fer_hf` and its sub-modules: the remote code must load without the
package in every set-up (transformers' check of the remote files' imports then fails on any `import fer_hf` too).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HIDE_FER_HF = """\
import importlib.abc as _abc, sys as _sys


class _NoFerHf(_abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "fer_hf" or name.startswith("fer_hf."):
            raise ModuleNotFoundError(f"No module named {name!r} (a Hub user has no fer_hf)", name=name)
        return None


_sys.meta_path.insert(0, _NoFerHf())
del _abc, _sys, _NoFerHf
"""


def run_as_hub_user(code: str, cwd: str | Path, modules_cache: str | Path, timeout: float = 600):
    """`python -c code` in `cwd` with `fresh_process_env(modules_cache)` and `fer_hf` hidden; the finished process."""
    from fer_hf.tools.export import fresh_process_env

    return subprocess.run([sys.executable, "-c", HIDE_FER_HF + code], cwd=cwd, env=fresh_process_env(modules_cache),
                          capture_output=True, text=True, timeout=timeout)
