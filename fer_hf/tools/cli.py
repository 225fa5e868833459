"""What the command-line tools share: a refusal is one clear line (the trace only with `--debug`), one log format,
and the names the parsers offer as choices.

Every `fer-*` command parses its arguments before it imports torch or transformers, so `--help` and a wrong argument
answer at once; the names below are written out here for that reason (tests check them against their sources).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import sys

from fer_hf.errors_fer import FERError

logger = logging.getLogger("fer_hf.tools")

# Exit statuses of every `fer-*` command: 2 = could not run (a refusal: bad arguments, an unusable model or
# checkpoint, a full disk; one ERROR line says why); `fer-annotate` adds 1 = ran, but some files failed.
EXIT_REFUSED = 2
# An OSError with one of these numbers is the machine refusing (full disk, no permission), not a bug.
_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
PRESET_NAMES = ("seed", "realtime", "tiny", "compact")  # FERConfig.PRESETS
BACKBONE_PARTS = ("vision", "audio", "fusion")  # trainer.BACKBONE_PREFIXES


@contextlib.contextmanager
def refusals_as_one_line(debug: bool = False):
    """Turn the package's own errors (and missing files, a full disk, a permission refused) into one `ERROR` log line
    and exit status 2.

    Anything else is a bug and keeps its traceback. With `debug=True` every error keeps its traceback.
    """
    try:
        yield
    except (FERError, OSError) as err:
        if debug or not isinstance(err, (FERError, FileNotFoundError)) and err.errno not in _ENVIRONMENT_ERRNOS:
            raise
        if isinstance(err, OSError) and not isinstance(err, FERError) and err.errno is not None:  # no "[Errno N]"
            reason = "the disk is full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else (err.strerror or "").lower()
            where = f"{err.filename}: " if err.filename else ""
            err = f"could not run: {where}{reason or type(err).__name__}"
        logger.error("%s (add --debug for the full trace)", err)
        sys.exit(EXIT_REFUSED)


def shipped_model():
    """The trained compact model that ships with the project (`checkpoints/compact/` of the repository)."""
    from pathlib import Path

    from fer_hf.errors_fer import FERInputError

    folder = Path(__file__).resolve().parents[2] / "checkpoints" / "compact"
    if not (folder / "model.safetensors").is_file():
        raise FERInputError(f"the shipped model is not at {folder} (an installed copy without the repository?): "
                            "give --model <folder or Hub repo id>")
    return folder


def setup_logging(debug: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


__all__ = ["BACKBONE_PARTS", "EXIT_REFUSED", "PRESET_NAMES", "refusals_as_one_line", "setup_logging",
           "shipped_model"]
