"""``python -m xmargin.schema [PATH]``: write the JSON Schema of case format v1 (by default
over the shipped ``case-v1.schema.json``, next to this module)."""

from __future__ import annotations

import sys
from pathlib import Path

from .case_v1 import SCHEMA_FILE, schema_text


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path(__file__).with_name(SCHEMA_FILE)
    target.write_text(schema_text())
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
