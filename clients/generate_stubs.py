"""Generate the Python stubs of proto/xmargin/v1 into clients/v1 (``xmargin.clients.v1``).

Run from anywhere (needs the ``dev`` extra: grpcio-tools and mypy-protobuf)::

    python -m xmargin.clients.generate_stubs            # rewrite clients/v1
    python -m xmargin.clients.generate_stubs --out DIR  # write elsewhere (the drift test)

protoc names modules after the proto path (``xmargin/v1/book.proto`` -> ``xmargin.v1.book_pb2``)
while the package installs them as ``xmargin.clients.v1``; the generated imports are rewritten
accordingly. The descriptors keep their proto names (``xmargin/v1/book.proto``, package
``xmargin.v1``), which is what reflection and other languages see.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["PROTO_ROOT", "STUBS_DIR", "generate", "main"]

CLIENTS_DIR = Path(__file__).resolve().parent
PROTO_ROOT = CLIENTS_DIR.parent / "proto"
STUBS_DIR = CLIENTS_DIR / "v1"
PROTO_PACKAGE_DIR = Path("xmargin") / "v1"
GENERATED_PACKAGE = "xmargin.clients.v1"

# protoc's module path for the proto package, as it appears in generated imports and names:
# ``from xmargin.v1 import book_pb2`` and ``xmargin.v1.book_pb2.Instrument``.
_MODULE_PATH = re.compile(r"\bxmargin\.v1(?=\.\w+_pb2\b| import )")

INIT = '"""Generated stubs of the xmargin.v1 gRPC contract (see generate_stubs.py)."""\n'


def _plugin(name: str) -> str:
    """Path of a protoc plugin installed next to this interpreter (or on PATH)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install the dev extra (mypy-protobuf)")
    return found


def _rewrite(text: str) -> str:
    return _MODULE_PATH.sub(GENERATED_PACKAGE, text)


def generate(out_dir: Path) -> list[Path]:
    """Generate every module of proto/xmargin/v1 into ``out_dir``; return the files written."""
    from grpc_tools import protoc  # dev dependency only

    package_dir = PROTO_ROOT / PROTO_PACKAGE_DIR
    protos = sorted(p.relative_to(PROTO_ROOT) for p in package_dir.glob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT / PROTO_PACKAGE_DIR}")
    well_known = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={well_known}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={scratch}",
            f"--grpc_python_out={scratch}",
            f"--mypy_out={scratch}",
            f"--mypy_grpc_out={scratch}",
            *(str(p) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed: " + " ".join(args))
        generated = Path(scratch) / PROTO_PACKAGE_DIR
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for source in sorted(generated.iterdir()):
            if source.suffix not in (".py", ".pyi"):
                continue
            if "_grpc" in source.stem and "Stub" not in source.read_text():
                continue  # a proto file without services
            target = out_dir / source.name
            target.write_text(_rewrite(source.read_text()))
            written.append(target)
    init = out_dir / "__init__.py"
    init.write_text(INIT)
    written.append(init)
    return sorted(written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=STUBS_DIR, help="output folder")
    args = parser.parse_args(argv)
    if args.out.resolve() == STUBS_DIR.resolve() and STUBS_DIR.exists():
        for stale in STUBS_DIR.glob("*_pb2*.py*"):
            stale.unlink()
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
