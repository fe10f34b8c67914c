"""Shared fixtures of the server and client tests: real servers on free local ports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import CASE_FILES
from xmargin.clients import convert
from xmargin.clients.messages import copy_shared_fields
from xmargin.clients.v1 import book_pb2, service_pb2, service_pb2_grpc
from xmargin.server import Limits, RunningServer, ServerConfig, build_server

TOKEN = "test-token-not-a-secret"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="session")
def cases() -> dict[str, dict[str, Any]]:
    return {path.stem: load(path) for path in CASE_FILES}


@pytest.fixture(scope="session", autouse=True)
def isolated_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``xmargin serve`` keeps scenario sets in $XDG_DATA_HOME/xmargin/store.db by default:
    server processes started by the tests write to a temporary one, never the user's."""
    folder = tmp_path_factory.mktemp("data-home")
    before = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = before


def start(**config: Any) -> RunningServer:
    return build_server(ServerConfig(port=0, grace=5.0, **config))


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    """The main test server: two solver threads, a short queue."""
    running = start(workers=2, max_queue=8)
    yield running
    running.stop(0)


@pytest.fixture(scope="session")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


@pytest.fixture(scope="session")
def stub(channel: grpc.Channel) -> service_pb2_grpc.XmarginServiceStub:
    return service_pb2_grpc.XmarginServiceStub(channel)


@pytest.fixture(scope="session")
def small_server() -> Iterator[RunningServer]:
    """One solver thread, no queue, 1 MiB messages, small size limits: for the refusals."""
    running = start(
        workers=1, max_queue=0, max_message_mb=1, limits=Limits(max_scenarios=2000, max_accounts=3)
    )
    yield running
    running.stop(0)


@pytest.fixture(scope="session")
def small_stub(small_server: RunningServer) -> Iterator[service_pb2_grpc.XmarginServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{small_server.port}") as opened:
        yield service_pb2_grpc.XmarginServiceStub(opened)


@pytest.fixture(scope="session")
def token_server() -> Iterator[RunningServer]:
    running = start(workers=1, max_queue=2, token=TOKEN)
    yield running
    running.stop(0)


def optimise_request(case: dict[str, Any], **options: Any) -> service_pb2.OptimiseRequest:
    return convert.optimise_request(case, convert.run_context(case), **options)


def what_if_request(case: dict[str, Any], **fields: Any) -> service_pb2.WhatIfRequest:
    """A WhatIf request on ``case``'s account, scenarios, models and program, with ``fields``
    (the trades to add, positions to exclude, ...)."""
    return copy_shared_fields(optimise_request(case), service_pb2.WhatIfRequest(**fields))


def batch_of(
    shared: service_pb2.OptimiseRequest, accounts: Iterable[book_pb2.AccountBook] = ()
) -> service_pb2.OptimiseBatchRequest:
    """A batch of ``accounts`` under the run, scenario set, models, program and options of
    ``shared`` (without accounts: an OptimiseStream's header)."""
    return copy_shared_fields(shared, service_pb2.OptimiseBatchRequest(accounts=list(accounts)))


def rich_error(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    return error.code(), error.details() or ""


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA, a server certificate for localhost, a client certificate it signed, and
    a client certificate from another CA (made at test time, never committed)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(folder: Path, name: str, ca: str, subject: str, extensions: str) -> None:
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-subj",
        subject,
        "-out",
        f"{name}.csr",
        cwd=folder,
    )
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.pem",
        cwd=folder,
    )


def _authority(folder: Path, name: str) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-subj",
        f"/CN={name}",
        "-days",
        "2",
        "-sha256",
        "-out",
        f"{name}.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make throwaway certificates")
    folder = tmp_path_factory.mktemp("pki")
    _authority(folder, "ca")
    _authority(folder, "rogue-ca")
    _issue(
        folder,
        "server",
        "ca",
        "/CN=localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    _issue(folder, "client", "ca", "/CN=xmargin-test-client", "extendedKeyUsage=clientAuth\n")
    _issue(folder, "rogue", "rogue-ca", "/CN=rogue-client", "extendedKeyUsage=clientAuth\n")
    return Certificates(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        rogue_cert=folder / "rogue.pem",
        rogue_key=folder / "rogue.key",
    )
