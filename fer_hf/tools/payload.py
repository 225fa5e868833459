"""The Hub payload's code files next to a saved model, kept identical to `fer_hf/` (`checkpoints/compact/`).

    python -m fer_hf.tools.payload checkpoints/compact           # lists the files that differ (exit 1 if any)
    python -m fer_hf.tools.payload checkpoints/compact --sync    # copies fer_hf's files over them

A folder loaded with `trust_remote_code=True` runs the `*_fer.py` files saved next to its weights, so the shipped
model would silently run old code after a change to `fer_hf/`. `tests/test_shipped_model.py` fails on any
difference, and `--sync` is the fix (weights and configs do not change).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def payload_modules() -> list[str]:
    """Every top-level `*_fer.py` of the package (what `save_pretrained` copies)."""
    return sorted(p.name for p in PACKAGE.glob("*_fer.py"))


def payload_drift(folder: str | Path) -> list[str]:
    """Names of the payload files that are missing from `folder` or differ from the package's, plus stale
    `*_fer.py` files the package no longer has."""
    folder = Path(folder)
    names = payload_modules()
    drift = [n for n in names if not (folder / n).is_file() or not filecmp.cmp(PACKAGE / n, folder / n, shallow=False)]
    drift += sorted(p.name for p in folder.glob("*_fer.py") if p.name not in names)
    return drift


def sync_payload(folder: str | Path) -> list[str]:
    """Make `folder`'s code files the package's; returns what changed."""
    folder = Path(folder)
    changed = payload_drift(folder)
    for name in changed:
        if (PACKAGE / name).is_file():
            shutil.copyfile(PACKAGE / name, folder / name)
        else:
            (folder / name).unlink()
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_hf.tools.payload", description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a saved model folder, e.g. checkpoints/compact")
    parser.add_argument("--sync", action="store_true", help="copy the package's code files into the folder")
    args = parser.parse_args(argv)
    if args.sync:
        changed = sync_payload(args.folder)
        print(f"updated {len(changed)} file(s): {', '.join(changed) or 'none'}")
        return 0
    drift = payload_drift(args.folder)
    print("in sync" if not drift else f"differ from fer_hf/: {', '.join(drift)} (run with --sync)")
    return 1 if drift else 0


if __name__ == "__main__":
    sys.exit(main())
