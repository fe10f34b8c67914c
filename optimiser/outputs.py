"""Files the package writes where a caller asks (transfer lists, the savings report, a generated
case): their paths checked before any work, and each written whole or not at all.

A file is written to a temporary file beside it and renamed over its target (``os.replace``,
atomic on one file system), so an interrupted or failed write leaves the old file (or none),
never half of the new one; of several files, none is renamed until all are written. A target
that is not a regular file (``/dev/null``, a pipe) is written in place: renaming over it would
replace the device or pipe itself.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Mapping
from pathlib import Path

__all__ = ["OutputPathError", "check_output_paths", "write_files"]


class OutputPathError(ValueError):
    """An output path that cannot be written, or one given twice; ``field`` names it."""

    def __init__(self, field: str, path: str | Path, reason: str) -> None:
        self.field = field
        self.path = str(path)
        super().__init__(f"{field} {self.path!r}: {reason}")


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_paths(
    outputs: Mapping[str, str | Path | None], inputs: Mapping[str, str | Path | None] = {}
) -> None:
    """Refuse (:class:`OutputPathError`, naming the field) an output path whose folder does not
    exist, that is a folder, that another output names too (the second would overwrite the
    first), or that names an input (it would be overwritten). ``outputs`` and ``inputs`` map a
    field (a flag) to its path; None is no file."""
    read = {field: Path(path) for field, path in inputs.items() if path is not None}
    seen: dict[str, Path] = {}
    for field, named in outputs.items():
        if named is None:
            continue
        if str(named) == "":
            raise OutputPathError(field, named, "is empty: give a file name")
        if str(named) == "-":  # read as stdout elsewhere (sample -o -); here a file named "-"
            raise OutputPathError(field, named, "is not stdout here (it holds the answer)")
        path = Path(named)
        if path.is_dir():
            raise OutputPathError(field, named, "is a folder: give a file name")
        folder = path.parent
        if not folder.is_dir():
            raise OutputPathError(field, named, f"its folder {str(folder)!r} does not exist")
        for other, earlier in seen.items():
            if _same(path, earlier):
                raise OutputPathError(field, named, f"is {other}'s file too: give another name")
        for other, source in read.items():
            if _same(path, source):
                raise OutputPathError(field, named, f"is the input {other}: give another name")
        seen[field] = path


def write_files(texts: Mapping[str | Path, str]) -> list[Path]:
    """Write each text (UTF-8) to its path, whole or not at all (see the module); return the
    paths. Raises ``OSError`` with no target changed when any write fails."""
    staged: list[tuple[Path, Path]] = []
    in_place: list[tuple[Path, str]] = []
    try:
        for name, text in texts.items():
            target = Path(name)
            try:
                mode = target.stat().st_mode
            except FileNotFoundError:
                mode = None
            if mode is not None and not stat.S_ISREG(mode):
                in_place.append((target, text))
                continue
            temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
            staged.append((temporary, target))
            # created as an ordinary new file would be (0o666 less the umask), or as the old one
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with open(descriptor, "w", encoding="utf-8", newline="") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            if mode is not None:
                os.chmod(temporary, stat.S_IMODE(mode))
        for temporary, target in staged:
            os.replace(temporary, target)
    except BaseException:
        for temporary, _ in staged:
            with contextlib.suppress(OSError):
                temporary.unlink()
        raise
    for target, text in in_place:
        with open(target, "w", encoding="utf-8", newline="") as file:
            file.write(text)
    return [Path(name) for name in texts]
