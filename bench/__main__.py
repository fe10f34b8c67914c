"""``python -m xmargin.bench``: the same as ``xmargin bench``."""

from . import main

raise SystemExit(main())
