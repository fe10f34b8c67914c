"""``python -m xmargin.server --port N``: the same as ``xmargin serve --port N``."""

import sys

from .cli import main

raise SystemExit(main(sys.argv[1:]))
