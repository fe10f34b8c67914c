"""The committed stubs in clients/v1 are exactly what generate_stubs.py makes from proto/."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from xmargin.clients import generate_stubs

# Lines that stamp the generator's version, not the contract: a patch release of grpcio-tools
# changes them without any drift of proto/.
VERSION_STAMP = re.compile(
    r"^(# Protobuf Python Version: .*|\s+\d+,\s*$|GRPC_GENERATED_VERSION = .*)$", re.MULTILINE
)


def _normalised(path: Path) -> str:
    return VERSION_STAMP.sub("<version>", path.read_text())


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    fresh = {p.name: p for p in generate_stubs.generate(tmp_path)}
    committed = {
        p.name: p
        for p in generate_stubs.STUBS_DIR.iterdir()
        if p.suffix in (".py", ".pyi") and p.name != "__pycache__"
    }
    assert sorted(fresh) == sorted(committed), (
        "files differ: run python -m xmargin.clients.generate_stubs"
    )
    drifted = [name for name in fresh if _normalised(fresh[name]) != _normalised(committed[name])]
    assert not drifted, f"stubs drifted from proto/ in {drifted}: rerun generate_stubs"


def test_drift_check_notices_a_changed_proto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proto_root = tmp_path / "proto"
    shutil.copytree(generate_stubs.PROTO_ROOT, proto_root)
    book = proto_root / "xmargin" / "v1" / "book.proto"
    book.write_text(
        book.read_text().replace("bool pinned = 5;", "bool pinned = 5;\n  string note = 6;")
    )
    monkeypatch.setattr(generate_stubs, "PROTO_ROOT", proto_root)
    fresh = generate_stubs.generate(tmp_path / "out")
    changed = next(p for p in fresh if p.name == "book_pb2.py")
    assert _normalised(changed) != _normalised(generate_stubs.STUBS_DIR / "book_pb2.py")


@functools.cache
def _buf() -> list[str] | None:
    """The buf CLI: on PATH, or from npm's cache (offline; .ci/run's `npx buf lint` fills it)."""
    if shutil.which("buf"):
        return ["buf"]
    if shutil.which("npx"):
        command = ["npx", "--yes", "--offline", "--package=@bufbuild/buf", "buf"]
        try:
            probe = subprocess.run(
                [*command, "--version"], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if probe.returncode == 0:
            return command
    return None


@pytest.mark.skipif(
    _buf() is None, reason="buf CLI not on PATH (.ci/run lints proto/ with npx buf)"
)
def test_proto_is_buf_lint_clean() -> None:
    command = _buf()
    assert command is not None
    result = subprocess.run(
        [*command, "lint"], cwd=generate_stubs.PROTO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
