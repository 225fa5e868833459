"""`fer-annotate`: whole corpora of videos -> per-window emotion tables (docs/annotate.md).

    cli.py         the command: arguments, the run, exit codes (`main`, `annotate`, `build_parser`)
    inputs.py      files, folders, globs and manifests -> one list of media files
    stream.py      one file decoded front to back as chunks of model inputs (the worker side)
    model.py       loading the model, the configuration hash, batched inference over chunks
    local.py       the one-machine runner: decode workers, the model in this process
    ray_runner.py  the same steps on a Ray cluster (`--ray`)
    rows.py        the two tables' schemas and the rows of one file
    store.py       crash-safe storage: committed parts, the ledger of done files, final tables
"""

from .cli import EXIT_COULD_NOT_RUN, EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, annotate, build_parser, main

__all__ = ["EXIT_COULD_NOT_RUN", "EXIT_FAILURES", "EXIT_INTERRUPTED", "EXIT_OK", "annotate", "build_parser", "main"]
