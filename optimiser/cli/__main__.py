"""``python -m xmargin.optimiser.cli``: the same as ``xmargin``."""

from .app import main

raise SystemExit(main())
