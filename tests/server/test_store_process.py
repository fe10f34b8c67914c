"""``xmargin serve`` processes sharing one store: a scenario set registered through one server
is used through a second server on the same SQLite file, and after the first restarts."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import grpc
import pytest

from tests.conftest import CASE_FILES
from tests.server.harness import optimise_request
from tests.server.test_process import ServerProcess
from xmargin.clients.v1 import book_pb2, service_pb2
from xmargin.clients.v1.service_pb2_grpc import XmarginServiceStub


def _stop(server: ServerProcess) -> None:
    server.process.send_signal(signal.SIGTERM)
    if server.process.wait(30) != 0:
        raise AssertionError("".join(server.lines))


def test_a_set_registered_through_one_server_is_used_through_another_and_after_a_restart(
    tmp_path: Path,
) -> None:
    case = json.loads(CASE_FILES[0].read_text())
    inline = optimise_request(case)
    store = f"sqlite:///{tmp_path / 'sets.db'}"
    flags = ("--workers", "1", "--grace", "5", "--store", store)
    first, second = ServerProcess(*flags), ServerProcess(*flags)
    try:
        assert first.events()[-1]["store"] == str(tmp_path / "sets.db")
        with grpc.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            stub = XmarginServiceStub(channel)
            ref = stub.RegisterScenarioSet(
                service_pb2.RegisterScenarioSetRequest(
                    run=inline.run, id="eod-hist", scenario_set=inline.scenario_set
                ),
                timeout=30,
            ).ref
            direct = stub.Optimise(inline, timeout=60).result.optimised.total
        by_ref = service_pb2.OptimiseRequest()
        by_ref.CopyFrom(inline)
        by_ref.scenario_set_ref.CopyFrom(ref)

        with grpc.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            through_second = XmarginServiceStub(channel).Optimise(by_ref, timeout=60)
        assert through_second.result.optimised.total == pytest.approx(direct, rel=1e-9)

        _stop(first)
        first = ServerProcess(*flags)  # restarted: nothing in its memory
        with grpc.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            stub = XmarginServiceStub(channel)
            after_restart = stub.Optimise(by_ref, timeout=60)
            listed = stub.ListScenarioSets(service_pb2.ListScenarioSetsRequest(), timeout=10)
            with pytest.raises(grpc.RpcError) as missing:
                missing_ref = book_pb2.ScenarioSetRef(id="eod-hist", version=ref.version + 1)
                stub.Optimise(
                    service_pb2.OptimiseRequest(
                        run=inline.run, account=inline.account, scenario_set_ref=missing_ref
                    ),
                    timeout=30,
                )
        assert after_restart.result.optimised.total == pytest.approx(direct, rel=1e-9)
        assert [(s.ref.id, s.ref.version) for s in listed.scenario_sets] == [("eod-hist", 1)]
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    finally:
        for server in (first, second):
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait()


def test_the_store_flags_are_documented_and_the_default_store_is_per_user(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from xmargin.server.cli import build_parser
    from xmargin.server.scenario_store import default_store_url

    help_text = build_parser().format_help()
    for flag in ("--store", "--scenario-cache-mb", "--stream-window"):
        assert flag in help_text
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_store_url() == f"sqlite:///{tmp_path / 'xmargin' / 'store.db'}"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_store_url().endswith("/home/.local/share/xmargin/store.db")
