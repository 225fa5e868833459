"""`python -m fer_hf.tools.annotate`: the same as the `fer-annotate` command."""

import sys

from .cli import main

sys.exit(main())
