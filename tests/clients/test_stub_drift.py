"""The committed stubs in clients/v1 are exactly what generate_stubs.py makes from proto/; the
proto documents every element (buf's comment rules, and the same check without buf) and stays
compatible with the released contract (buf breaking against proto/released/)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

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


# The last released contract (proto/ at dcf29c6), as a buf image; see proto/released/README.md.
RELEASED = Path("released") / "xmargin-v0.1.0.binpb"


def _breaking(proto_root: Path) -> subprocess.CompletedProcess[str]:
    command = _buf()
    assert command is not None
    against = generate_stubs.PROTO_ROOT / RELEASED
    return subprocess.run(
        [*command, "breaking", "--against", str(against)],
        cwd=proto_root,
        capture_output=True,
        text=True,
    )


@pytest.mark.skipif(_buf() is None, reason="buf CLI not on PATH (.ci/run runs npx buf breaking)")
def test_proto_is_compatible_with_the_released_contract() -> None:
    result = _breaking(generate_stubs.PROTO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(_buf() is None, reason="buf CLI not on PATH (.ci/run runs npx buf breaking)")
def test_breaking_check_allows_additions_and_notices_a_changed_field(tmp_path: Path) -> None:
    proto_root = tmp_path / "proto"
    shutil.copytree(generate_stubs.PROTO_ROOT, proto_root)
    book = proto_root / "xmargin" / "v1" / "book.proto"
    text = book.read_text()
    added_field = "bool pinned = 5;\n  // A new field.\n  string note = 6;"
    book.write_text(text.replace("bool pinned = 5;", added_field))
    added = _breaking(proto_root)
    assert added.returncode == 0, added.stdout + added.stderr
    book.write_text(text.replace("uint32 version = 2;", "uint64 version = 2;"))
    changed = _breaking(proto_root)
    assert changed.returncode != 0
    assert '"version" on message "ScenarioSetRef" changed type' in changed.stdout


# --- every element documented, checked without buf (the descriptors' source info) ------------

# Field numbers in descriptor.proto that make up the source-info path of each kind of element.
_FILE_MESSAGES, _FILE_ENUMS, _FILE_SERVICES = 4, 5, 6
_MESSAGE_FIELDS, _MESSAGE_NESTED, _MESSAGE_ENUMS, _MESSAGE_ONEOFS = 2, 3, 4, 8
_ENUM_VALUES, _SERVICE_METHODS = 2, 2

Element = tuple[str, tuple[int, ...]]


def _message_elements(
    message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], name: str
) -> Iterator[Element]:
    yield f"message {name}", path
    for j, field in enumerate(message.field):
        yield f"field {name}.{field.name}", (*path, _MESSAGE_FIELDS, j)
    for j, oneof in enumerate(message.oneof_decl):
        synthetic = any(
            f.proto3_optional and f.HasField("oneof_index") and f.oneof_index == j
            for f in message.field
        )
        if not synthetic:  # proto3 `optional` makes a hidden oneof of its own
            yield f"oneof {name}.{oneof.name}", (*path, _MESSAGE_ONEOFS, j)
    for j, nested in enumerate(message.nested_type):
        if not nested.options.map_entry:  # a map's entry type is not written in the proto
            yield from _message_elements(
                nested, (*path, _MESSAGE_NESTED, j), f"{name}.{nested.name}"
            )
    for j, enum in enumerate(message.enum_type):
        yield from _enum_elements(enum, (*path, _MESSAGE_ENUMS, j), f"{name}.{enum.name}")


def _enum_elements(
    enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], name: str
) -> Iterator[Element]:
    yield f"enum {name}", path
    for j, value in enumerate(enum.value):
        yield f"enum value {value.name}", (*path, _ENUM_VALUES, j)


def _file_elements(proto: descriptor_pb2.FileDescriptorProto) -> Iterator[Element]:
    for i, message in enumerate(proto.message_type):
        yield from _message_elements(message, (_FILE_MESSAGES, i), message.name)
    for i, enum in enumerate(proto.enum_type):
        yield from _enum_elements(enum, (_FILE_ENUMS, i), enum.name)
    for i, service in enumerate(proto.service):
        yield f"service {service.name}", (_FILE_SERVICES, i)
        for j, method in enumerate(service.method):
            yield f"rpc {service.name}.{method.name}", (_FILE_SERVICES, i, _SERVICE_METHODS, j)


def undocumented(proto_root: Path, out: Path) -> list[str]:
    """Every message, field, oneof, enum, enum value, service and rpc of proto/xmargin/v1
    without a leading comment (what buf's COMMENT_* lint rules require)."""
    from grpc_tools import protoc  # dev dependency only

    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.glob("xmargin/v1/*.proto"))
    descriptor_set = out / "descriptors.binpb"
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={well_known}",
        "--include_source_info",
        f"--descriptor_set_out={descriptor_set}",
        *protos,
    ]
    assert protoc.main(args) == 0, "protoc failed on " + " ".join(protos)
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    assert sorted(f.name for f in files) == protos
    missing = []
    for proto in files:
        documented = {
            tuple(location.path)
            for location in proto.source_code_info.location
            if location.leading_comments.strip()
        }
        missing += [
            f"{proto.name}: {label}"
            for label, path in _file_elements(proto)
            if path not in documented
        ]
    return missing


def test_every_proto_element_has_a_leading_comment(tmp_path: Path) -> None:
    assert undocumented(generate_stubs.PROTO_ROOT, tmp_path) == []


def test_documentation_check_notices_an_undocumented_element(tmp_path: Path) -> None:
    proto_root = tmp_path / "proto"
    shutil.copytree(generate_stubs.PROTO_ROOT, proto_root)
    common = proto_root / "xmargin" / "v1" / "common.proto"
    lines = common.read_text().splitlines(keepends=True)
    at = start = lines.index("  CYCLE_EOD = 2;\n")
    while lines[start - 1].lstrip().startswith("//"):
        start -= 1
    assert start < at, "CYCLE_EOD has no comment to remove"
    common.write_text("".join(lines[:start] + lines[at:]))
    assert undocumented(proto_root, tmp_path) == ["xmargin/v1/common.proto: enum value CYCLE_EOD"]
